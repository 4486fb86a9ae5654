//! One delivery attempt over HTTP: encode the event (binary or structured mode), POST it with a
//! timeout, and read what came back: the status, `Retry-After`, the start of the body for dead
//! letters, and a reply event if the answer carries one.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cloudevents::Event;
use futures::StreamExt as _;
use http::HeaderMap;
use kinetic_api::cloudevent;
use kinetic_api::eventing::DeliveryFormat;

use crate::policy::{self, Verdict};

/// Most bytes of a response body kept for the dead letter (`knativeerrordata` uses at most 768).
pub const RESPONSE_KEEP: usize = 4096;
/// Largest reply read back from a subscriber.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// The HTTP client of the dispatcher. Redirects are not followed: a subscriber is an exact URL.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
}

/// kinetic's outbound HTTP client: no redirects, pooled, and, given the gateway, resolving
/// `*.{domain}` (Services) to it. Sources use it to reach their sinks too.
pub fn http_client(gateway: Option<&GatewayAddress>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .user_agent(concat!("kinetic/", env!("CARGO_PKG_VERSION")));
    if let Some(gateway) = gateway {
        builder = builder.dns_resolver(GatewayDns {
            suffix: format!(".{}", gateway.domain),
            address: gateway.address,
        });
    }
    builder.build().unwrap_or_default()
}

/// Where Services are served: names under `domain` resolve to the gateway's `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddress {
    pub domain: String,
    pub address: std::net::SocketAddr,
}

/// Resolves Service host names (`{service}.{namespace}.{domain}`) to the gateway and every other
/// name through the system resolver.
struct GatewayDns {
    suffix: String,
    address: std::net::SocketAddr,
}

impl reqwest::dns::Resolve for GatewayDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        if host.ends_with(&self.suffix) {
            let address = self.address;
            return Box::pin(async move {
                Ok(Box::new(std::iter::once(address)) as reqwest::dns::Addrs)
            });
        }
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(Box::new(found.collect::<Vec<_>>().into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub verdict: Verdict,
    pub status: Option<u16>,
    /// Why it failed, for people: `HTTP 503`, `timed out after 1s`, `connection refused`.
    pub error: Option<String>,
    /// Start of the response body (at most [`RESPONSE_KEEP`] bytes).
    pub body: Vec<u8>,
    pub retry_after: Option<Duration>,
    /// A CloudEvent the subscriber answered with.
    pub reply: Option<Event>,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    pub fn new() -> Self {
        Self::with_gateway(None)
    }

    /// A sender that reaches `*.{domain}` (Services) through the serving gateway.
    pub fn with_gateway(gateway: Option<&GatewayAddress>) -> Self {
        Self {
            client: http_client(gateway),
        }
    }

    /// Posts `event` to `url`. Never fails: a transport error is an [`Attempt`] without a status.
    pub async fn send(
        &self,
        url: &str,
        event: &Event,
        format: DeliveryFormat,
        timeout: Duration,
    ) -> Attempt {
        let mut request = self
            .client
            .post(url)
            .timeout(timeout)
            .header("prefer", "reply");
        match format {
            DeliveryFormat::Binary => {
                let (headers, body) = cloudevent::encode_binary(event);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                request = request.body(body);
            }
            DeliveryFormat::Json => {
                request = request
                    .header(
                        "content-type",
                        "application/cloudevents+json; charset=utf-8",
                    )
                    .body(cloudevent::encode_structured_inline(event));
            }
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return transport_failure(&error, timeout),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let verdict = policy::classify(Some(status));
        let retry_after = if status == 429 || status == 503 {
            headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| policy::parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
        let wants_reply = verdict == Verdict::Delivered && status != 202;
        let limit = if wants_reply {
            MAX_REPLY_BYTES
        } else {
            RESPONSE_KEEP
        };
        let body = match read_body(response, limit).await {
            Ok(body) => body,
            Err(error) if verdict == Verdict::Delivered => {
                tracing::warn!(%url, %error, "Reading the subscriber's answer failed; the reply is lost.");
                Bytes::new()
            }
            Err(_) => Bytes::new(),
        };
        let reply = if wants_reply {
            reply_of(&headers, &body, url)
        } else {
            None
        };
        Attempt {
            verdict,
            status: Some(status),
            error: (verdict != Verdict::Delivered).then(|| format!("HTTP {status}")),
            body: body[..body.len().min(RESPONSE_KEEP)].to_vec(),
            retry_after,
            reply,
        }
    }
}

fn transport_failure(error: &reqwest::Error, timeout: Duration) -> Attempt {
    let message = if error.is_timeout() {
        format!("timed out after {}", kinetic_api::duration::format(timeout))
    } else if error.is_connect() {
        let mut cause: &dyn std::error::Error = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("connection failed: {cause}")
    } else {
        format!("request failed: {error}")
    };
    Attempt {
        verdict: Verdict::Retryable,
        status: None,
        error: Some(message),
        body: Vec::new(),
        retry_after: None,
        reply: None,
    }
}

async fn read_body(response: reqwest::Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(body))
}

/// A reply event in the answer, if there is one; a non-empty body that is not a CloudEvent is ignored
/// with a warning.
fn reply_of(headers: &HeaderMap, body: &Bytes, url: &str) -> Option<Event> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let looks_like_event = headers.contains_key("ce-specversion")
        || content_type.starts_with("application/cloudevents");
    if !looks_like_event {
        if !body.is_empty() {
            tracing::warn!(%url, bytes = body.len(), "The subscriber answered with a body that is not a CloudEvent; ignoring it.");
        }
        return None;
    }
    match cloudevent::decode(headers, body) {
        Ok((_, mut events)) if events.len() == 1 => events.pop(),
        Ok(_) => {
            tracing::warn!(%url, "The subscriber replied with a batch; only single events are replies. Ignoring it.");
            None
        }
        Err(error) => {
            tracing::warn!(%url, %error, "The subscriber's reply is not a valid CloudEvent; ignoring it.");
            None
        }
    }
}
