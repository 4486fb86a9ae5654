//! One delivery attempt over HTTP: encode the event (binary or structured mode), sign it when the
//! trigger signs, POST it with a timeout, and read what came back: the status, `Retry-After`, the
//! start of the body for dead letters, and a reply event if the answer carries one.
//!
//! Two HTTP clients: kinetic's own destinations (the broker ingress a Broker ref resolves to,
//! Services behind the gateway) are reached directly; every other URL goes through the egress guard
//! ([`crate::egress`]), which refuses addresses inside the network unless the process allows them.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cloudevents::AttributesReader as _;
use cloudevents::Event;
use futures::StreamExt as _;
use http::HeaderMap;
use kinetic_api::cloudevent;
use kinetic_api::eventing::DeliveryFormat;

use crate::egress::{Egress, GuardedDns, Refused};
use crate::policy::{self, Verdict};
use crate::signing::Signer;

/// Most bytes of a response body kept for the dead letter (`knativeerrordata` uses at most 768).
pub const RESPONSE_KEEP: usize = 4096;
/// Largest reply read back from a subscriber.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// The HTTP clients of the dispatcher. Redirects are not followed: a subscriber is an exact URL.
#[derive(Clone)]
pub struct Sender {
    /// kinetic's own destinations.
    internal: reqwest::Client,
    /// Everything else, through the egress guard.
    outside: reqwest::Client,
    egress: Arc<Egress>,
    /// The broker ingress (scheme, host, port): Broker refs resolve under it.
    ingress: Option<url::Origin>,
    /// `.{domain}`: Services, reached through the gateway.
    service_suffix: Option<String>,
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .user_agent(concat!("kinetic/", env!("CARGO_PKG_VERSION")))
}

/// kinetic's outbound HTTP client: no redirects, pooled, and, given the gateway, resolving
/// `*.{domain}` (Services) to it.
pub fn http_client(gateway: Option<&GatewayAddress>) -> reqwest::Client {
    let mut builder = client_builder();
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

impl Sender {
    /// A sender that reaches `*.{domain}` (Services) through the serving `gateway` and the broker
    /// ingress at `ingress_url` directly, and every other URL within `egress`.
    pub fn new(
        gateway: Option<&GatewayAddress>,
        ingress_url: Option<&str>,
        egress: Egress,
    ) -> Self {
        let egress = Arc::new(egress);
        let outside = client_builder()
            .dns_resolver(GuardedDns {
                egress: egress.clone(),
            })
            .build()
            .unwrap_or_default();
        Self {
            internal: http_client(gateway),
            outside,
            egress,
            ingress: ingress_url
                .and_then(|u| url::Url::parse(u).ok())
                .map(|u| u.origin()),
            service_suffix: gateway.map(|g| format!(".{}", g.domain.to_ascii_lowercase())),
        }
    }

    /// Whether `url` is one of kinetic's own destinations: the broker ingress, or a Service.
    fn is_internal(&self, url: &url::Url) -> bool {
        if self.ingress.as_ref() == Some(&url.origin()) {
            return true;
        }
        match (&self.service_suffix, url.host()) {
            (Some(suffix), Some(url::Host::Domain(host))) => {
                host.trim_end_matches('.').ends_with(suffix.as_str())
            }
            _ => false,
        }
    }

    /// The client that may reach `url`: kinetic's own for its destinations, the guarded one for
    /// the rest, or why the guard refuses it. Sources reach their sinks through it too.
    pub fn client_for(&self, url: &url::Url) -> Result<&reqwest::Client, Refused> {
        if self.is_internal(url) {
            return Ok(&self.internal);
        }
        // Names are checked when resolved; an IP literal is never resolved, so here.
        self.egress.check_url(url)?;
        Ok(&self.outside)
    }

    /// Posts `event` to `url`, signed by `signer` if given. Never fails: a transport error is an
    /// [`Attempt`] without a status.
    pub async fn send(
        &self,
        url: &str,
        event: &Event,
        format: DeliveryFormat,
        timeout: Duration,
        signer: Option<&Signer>,
    ) -> Attempt {
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(error) => {
                return Attempt::failed(
                    Verdict::Permanent,
                    format!("`{url}` is not a valid URL: {error}"),
                );
            }
        };
        let client = match self.client_for(&parsed) {
            Ok(client) => client,
            Err(refused) => return Attempt::refused(&refused),
        };
        let mut request = client
            .post(parsed)
            .timeout(timeout)
            .header("prefer", "reply");
        let body = match format {
            DeliveryFormat::Binary => {
                let (headers, body) = cloudevent::encode_binary(event);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                body
            }
            DeliveryFormat::Json => {
                request = request.header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                );
                cloudevent::encode_structured_inline(event)
            }
        };
        if let Some(signer) = signer {
            let timestamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            for (name, value) in signer.headers(event.id(), timestamp, &body) {
                request = request.header(name, value);
            }
        }
        let response = match request.body(body).send().await {
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

impl Attempt {
    fn failed(verdict: Verdict, error: String) -> Attempt {
        Attempt {
            verdict,
            status: None,
            error: Some(error),
            body: Vec::new(),
            retry_after: None,
            reply: None,
        }
    }

    /// The egress guard stopped it: nothing was sent, and trying again would not help.
    fn refused(refused: &Refused) -> Attempt {
        Attempt::failed(Verdict::Permanent, refused.to_string())
    }
}

fn transport_failure(error: &reqwest::Error, timeout: Duration) -> Attempt {
    // A name whose every address the guard refused fails to "connect" with the guard's reason.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Attempt::refused(refused);
        }
        cause = current.source();
    }
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

/// Subscribers already warned about answering with a body that is not a CloudEvent. Many functions
/// answer every event with some JSON; one warning per URL says it, the rest are debug lines.
static WARNED_NOT_EVENT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
/// Most URLs remembered; past it (a trigger per tenant...) the set starts over.
const WARNED_MOST: usize = 10_000;

fn warn_not_event(url: &str, bytes: usize) {
    let first = {
        let mut warned = WARNED_NOT_EVENT
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned.contains(url) {
            false
        } else {
            if warned.len() >= WARNED_MOST {
                warned.clear();
            }
            warned.insert(url.to_owned())
        }
    };
    if first {
        tracing::warn!(%url, bytes, "The subscriber answered with a body that is not a CloudEvent; it is not a reply and is ignored (this subscriber's next ones are logged at debug level).");
    } else {
        tracing::debug!(%url, bytes, "The subscriber answered with a body that is not a CloudEvent; ignoring it.");
    }
}

/// A reply event in the answer, if there is one; a non-empty body that is not a CloudEvent is ignored
/// with a warning (once per subscriber).
fn reply_of(headers: &HeaderMap, body: &Bytes, url: &str) -> Option<Event> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let looks_like_event = headers.contains_key("ce-specversion")
        || content_type.starts_with("application/cloudevents");
    if !looks_like_event {
        if !body.is_empty() {
            warn_not_event(url, body.len());
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use cloudevents::{EventBuilder as _, EventBuilderV10};

    use super::*;
    use crate::egress::{AddressClass, Allow};

    type Seen = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

    /// An HTTP server on loopback that records what it gets and answers 200.
    async fn receiver() -> (std::net::SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(move |headers: http::HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push((headers, body));
                "ok"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, seen)
    }

    fn event() -> Event {
        EventBuilderV10::new()
            .id("evt-1")
            .source("/shop")
            .ty("com.example.order")
            .data("application/json", serde_json::json!({"order": 7}))
            .build()
            .unwrap()
    }

    fn loopback() -> Egress {
        Egress::new(&[Allow::Class(AddressClass::Loopback)])
    }

    #[tokio::test]
    async fn signed_deliveries_carry_the_standard_webhooks_headers_over_the_body_sent() {
        let (address, seen) = receiver().await;
        let sender = Sender::new(None, None, loopback());
        let signer = Signer::from_secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        let url = format!("http://{address}/hook");
        let timeout = Duration::from_secs(5);
        for format in [DeliveryFormat::Binary, DeliveryFormat::Json] {
            let attempt = sender
                .send(&url, &event(), format, timeout, Some(&signer))
                .await;
            assert_eq!(attempt.verdict, Verdict::Delivered, "{:?}", attempt.error);
        }
        let attempt = sender
            .send(&url, &event(), DeliveryFormat::Binary, timeout, None)
            .await;
        assert_eq!(attempt.verdict, Verdict::Delivered);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for (headers, body) in &seen[..2] {
            let header = |name: &str| headers.get(name).unwrap().to_str().unwrap();
            assert_eq!(header("webhook-id"), "evt-1");
            let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
            let now = chrono::Utc::now().timestamp();
            assert!((now - 5..=now).contains(&timestamp), "{timestamp} vs {now}");
            assert_eq!(
                header("webhook-signature"),
                signer.signature("evt-1", timestamp, body)
            );
        }
        assert_eq!(seen[0].1.as_ref(), br#"{"order":7}"#, "binary: the data");
        let structured: serde_json::Value = serde_json::from_slice(&seen[1].1).unwrap();
        assert_eq!(structured["id"], "evt-1", "structured: the event");
        assert!(seen[2].0.get("webhook-signature").is_none(), "unsigned");
    }

    #[tokio::test]
    async fn the_guard_refuses_names_and_literals_before_anything_is_sent() {
        let (address, seen) = receiver().await;
        let sender = Sender::new(None, None, Egress::default());
        let port = address.port();
        let timeout = Duration::from_secs(5);
        let send = |url: String| {
            let sender = sender.clone();
            async move {
                sender
                    .send(&url, &event(), DeliveryFormat::Binary, timeout, None)
                    .await
            }
        };
        let literal = send(format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(literal.verdict, Verdict::Permanent);
        assert_eq!(literal.status, None);
        assert_eq!(
            literal.error.as_deref(),
            Some("refused: 127.0.0.1 is a loopback address; allow it with --egress-allow loopback")
        );
        let mapped = send(format!("http://[::ffff:127.0.0.1]:{port}/")).await;
        assert_eq!(mapped.verdict, Verdict::Permanent);
        let named = send(format!("http://localhost:{port}/")).await;
        assert_eq!(named.verdict, Verdict::Permanent, "{:?}", named.error);
        let error = named.error.unwrap();
        assert!(
            error.starts_with("refused: localhost resolves to ")
                && error.ends_with(", a loopback address; allow it with --egress-allow loopback"),
            "{error}"
        );
        assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
        // Allowed, the same name is reached.
        let allowed = Sender::new(None, None, loopback())
            .send(
                &format!("http://localhost:{port}/"),
                &event(),
                DeliveryFormat::Binary,
                timeout,
                None,
            )
            .await;
        assert_eq!(allowed.verdict, Verdict::Delivered, "{:?}", allowed.error);
    }

    #[tokio::test]
    async fn the_ingress_and_services_are_reached_whatever_the_guard_says() {
        let (address, seen) = receiver().await;
        let (other, _) = receiver().await;
        let gateway = GatewayAddress {
            domain: "kinetic.localhost".into(),
            address,
        };
        let ingress = format!("http://{address}");
        let sender = Sender::new(Some(&gateway), Some(&ingress), Egress::default());
        let timeout = Duration::from_secs(5);
        for url in [
            format!("{ingress}/default/replies"),
            format!("http://hello.default.kinetic.localhost:{}/", address.port()),
        ] {
            let attempt = sender
                .send(&url, &event(), DeliveryFormat::Binary, timeout, None)
                .await;
            assert_eq!(
                attempt.verdict,
                Verdict::Delivered,
                "{url}: {:?}",
                attempt.error
            );
        }
        assert_eq!(seen.lock().unwrap().len(), 2);
        // Another port on the same address is not the ingress.
        let attempt = sender
            .send(
                &format!("http://{other}/"),
                &event(),
                DeliveryFormat::Binary,
                timeout,
                None,
            )
            .await;
        assert_eq!(attempt.verdict, Verdict::Permanent, "{:?}", attempt.error);
    }
}
