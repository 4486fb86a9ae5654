//! Handing events to a source's sink: a CloudEvents binary-mode POST, accepted on any 2xx; or, to a
//! sink that takes it (a kinetic broker's ingress), several events in one batch-mode POST, accepted
//! or refused together. A source acknowledges its own input only after [`Sink::send`] (or
//! [`Sink::send_until_accepted`], [`Sink::send_batch_until_accepted`]) succeeded.

use std::sync::Arc;
use std::time::Duration;

use cloudevents::Event;
use kinetic_api::cloudevent::encode_binary;
use kinetic_outbound::retry::{self, Backoff, Verdict};
use tokio_util::sync::CancellationToken;

/// Pauses before sending again: 100 ms, doubling up to 5 s.
pub const BACKOFF: Backoff = Backoff::Doubling {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
};
/// Longest a sink's `Retry-After` holds a source before its next attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of an answer's body read, to say why it refused.
const BODY_KEPT: usize = 512;

/// The start of an answer's body (at most [`BODY_KEPT`] bytes, the rest never read), as text.
async fn start_of(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < BODY_KEPT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = BODY_KEPT - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The error for an answer that is not 2xx: its status, `Retry-After` and the start of its body.
async fn refused(response: reqwest::Response) -> SinkError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .filter(|_| retry::honours_retry_after(status))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| retry::parse_retry_after(value, std::time::SystemTime::now()));
    SinkError::Refused {
        status,
        body: start_of(response).await,
        retry_after,
    }
}

/// The sink did not accept an event.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the sink answered HTTP {status}: {body}")]
    Refused {
        status: u16,
        body: String,
        /// The answer's `Retry-After` (read on 429 and 503).
        retry_after: Option<Duration>,
    },
    #[error("the sink could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The egress guard does not let kinetic reach this URL (`--egress-allow`), or it is not a URL.
    #[error("the sink may not be reached: {0}")]
    Forbidden(String),
    #[error("stopped before the sink accepted the event")]
    Cancelled,
}

impl SinkError {
    /// Whether sending again may succeed: connection problems, timeouts, and the answers the
    /// dispatcher retries ([`retry::classify`]: 404, a broker not yet created, 408, 409, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Refused { status, .. } => {
                retry::classify(Some(*status)) == Verdict::Retryable
            }
            SinkError::Unreachable(_) => true,
            // A process setting: the source keeps its input until the operator allows the address
            // (or points the sink elsewhere), and says why in its status meanwhile.
            SinkError::Forbidden(_) => true,
            SinkError::Cancelled => false,
        }
    }
}

/// Picks the HTTP client that may reach a URL: kinetic's own for its destinations (the broker
/// ingress, Services through the gateway), one behind the egress guard for outside addresses; or
/// says why the URL may not be reached.
pub type Route = Arc<dyn Fn(&reqwest::Url) -> Result<reqwest::Client, String> + Send + Sync>;

/// Checks that a host a source connects to by itself (an S3 endpoint, an SQS queue, Kafka brokers)
/// is one the egress rules let kinetic reach; the error says why not.
pub type EndpointCheck =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Signs a token for a sender (a source's identity) and an audience; provided by the process
/// wiring (kinetic's own issuer). `None` when it cannot.
pub type Signer = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// Whether a sink URL takes CloudEvents batch mode (one POST of several events, committed
/// together): kinetic's own broker ingress does; an arbitrary URL may not, and might take a batch
/// for a single event.
pub type BatchCheck = Arc<dyn Fn(&reqwest::Url) -> bool + Send + Sync>;

/// Where a source's events go, and who sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The sink's URL.
    pub url: String,
    /// The source's identity, Knative's OIDC subject
    /// (`system:serviceaccount:{namespace}:{name}-oidc-{group}-{kind}`): an EventPolicy names it
    /// with `from.ref` to the source.
    pub sender: String,
    /// The sink's audience (a Broker's, or the Destination's `audience`): events go with a token
    /// for it, signed for `sender`.
    pub audience: Option<String>,
}

/// The URL as logs and status show it: secrets in it masked.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&kinetic_api::meta::redact_url(&self.url))
    }
}

/// Sends events to sink URLs. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    route: Route,
    signer: Option<Signer>,
    endpoints: Option<EndpointCheck>,
    batches: Option<BatchCheck>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

impl Sink {
    /// Every URL through `route`; the wiring builds it from the dispatcher's clients so that a
    /// source's sink is held to the same egress rules as a trigger's subscriber.
    pub fn new(route: Route) -> Sink {
        Sink {
            route,
            signer: None,
            endpoints: None,
            batches: None,
        }
    }

    /// Sinks `check` says take batch mode get several events to a POST ([`Sink::send_batch`]).
    pub fn with_batches(mut self, check: BatchCheck) -> Sink {
        self.batches = Some(check);
        self
    }

    /// Whether `target` takes several events in one batch-mode POST.
    pub fn takes_batches(&self, target: &Target) -> bool {
        match (&self.batches, reqwest::Url::parse(&target.url)) {
            (Some(check), Ok(url)) => check(&url),
            _ => false,
        }
    }

    /// Hosts sources connect to by themselves are checked by `check` first.
    pub fn with_endpoint_check(mut self, check: EndpointCheck) -> Sink {
        self.endpoints = Some(check);
        self
    }

    /// Whether the egress rules let a source connect to `endpoint` (a URL or `host:port`) itself;
    /// every endpoint may be reached without a check.
    pub async fn check_endpoint(&self, endpoint: &str) -> Result<(), String> {
        let Some(check) = &self.endpoints else {
            return Ok(());
        };
        let host = match reqwest::Url::parse(endpoint) {
            Ok(url) if url.has_host() => url.host_str().unwrap_or_default().to_owned(),
            // `host:port`, as Kafka's bootstrap servers are written.
            _ => endpoint
                .rsplit_once(':')
                .map_or(endpoint, |(host, _)| host)
                .to_owned(),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        check(host)
            .await
            .map_err(|why| format!("`{endpoint}` may not be reached: {why}"))
    }

    /// Events to a sink with an audience go with a token from `signer`.
    pub fn with_signer(mut self, signer: Signer) -> Sink {
        self.signer = Some(signer);
        self
    }

    fn client(&self, url: &str) -> Result<(reqwest::Client, reqwest::Url), SinkError> {
        let parsed = reqwest::Url::parse(url).map_err(|error| {
            SinkError::Forbidden(format!("`{url}` is not a valid URL: {error}"))
        })?;
        let client = (self.route)(&parsed).map_err(SinkError::Forbidden)?;
        Ok((client, parsed))
    }

    /// Whether the egress rules let kinetic reach `url` at all. A webhook handler asks first, so
    /// that its sender hears at once why nothing can be accepted instead of waiting for retries.
    pub fn reachable(&self, target: &Target) -> Result<(), SinkError> {
        self.client(&target.url).map(|_| ())
    }

    /// One attempt. Cancellation safe.
    pub async fn send(&self, target: &Target, event: &Event) -> Result<(), SinkError> {
        let (client, url) = self.client(&target.url)?;
        let (headers, body) = encode_binary(event);
        let request = client.post(url).headers(headers).body(body);
        self.post(target, request).await
    }

    /// One attempt of `events` in one batch-mode POST (`application/cloudevents-batch+json`),
    /// accepted or refused together; only for a sink that [takes batches](Sink::takes_batches).
    /// Cancellation safe.
    pub async fn send_batch(&self, target: &Target, events: &[Event]) -> Result<(), SinkError> {
        let (client, url) = self.client(&target.url)?;
        let mut body = Vec::with_capacity(events.len() * 512);
        body.push(b'[');
        for (index, event) in events.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&kinetic_api::cloudevent::encode_structured(event));
        }
        body.push(b']');
        let request = client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/cloudevents-batch+json",
            )
            .body(body);
        self.post(target, request).await
    }

    /// Sends `request` with the attempt timeout and, for a sink with an audience, a token.
    async fn post(
        &self,
        target: &Target,
        mut request: reqwest::RequestBuilder,
    ) -> Result<(), SinkError> {
        request = request.timeout(ATTEMPT_TIMEOUT);
        if let (Some(audience), Some(signer)) = (&target.audience, &self.signer)
            && let Some(token) = signer(&target.sender, audience)
        {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| SinkError::Unreachable(error.without_url()))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(refused(response).await)
    }

    /// A GET that must answer 2xx (e.g. confirming an SNS subscription).
    pub async fn get(&self, url: &str) -> Result<(), SinkError> {
        let (client, url) = self.client(url)?;
        let response = client
            .get(url)
            .timeout(ATTEMPT_TIMEOUT)
            .send()
            .await
            .map_err(|error| SinkError::Unreachable(error.without_url()))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(refused(response).await)
    }

    /// Sends until the sink accepts, backing off between attempts ([`BACKOFF`], or the sink's
    /// `Retry-After` when longer, up to [`MAX_RETRY_AFTER`]), or until `cancel`. A refusal that
    /// cannot succeed later (a 4xx other than 404/408/409/429) ends it at once: the event is wrong
    /// for this sink, and the caller decides what to tell its own sender.
    pub async fn send_until_accepted(
        &self,
        url: &Target,
        event: &Event,
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        self.until_accepted(url, cancel, || self.send(url, event))
            .await
    }

    /// [`Sink::send_until_accepted`] for a batch ([`Sink::send_batch`]).
    pub async fn send_batch_until_accepted(
        &self,
        url: &Target,
        events: &[Event],
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        self.until_accepted(url, cancel, || self.send_batch(url, events))
            .await
    }

    async fn until_accepted<F, Sent>(
        &self,
        url: &Target,
        cancel: &CancellationToken,
        mut attempt: F,
    ) -> Result<(), SinkError>
    where
        F: FnMut() -> Sent,
        Sent: std::future::Future<Output = Result<(), SinkError>>,
    {
        let mut failures = 0u32;
        loop {
            let error = tokio::select! {
                () = cancel.cancelled() => return Err(SinkError::Cancelled),
                sent = attempt() => match sent {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                },
            };
            if !error.is_retryable() {
                return Err(error);
            }
            failures = failures.saturating_add(1);
            let asked = match &error {
                SinkError::Refused {
                    retry_after: Some(after),
                    ..
                } => (*after).min(MAX_RETRY_AFTER),
                _ => Duration::ZERO,
            };
            let backoff = BACKOFF.exact(failures).max(asked);
            tracing::warn!(%url, %error, retry_in = ?backoff, "The sink did not accept an event; sending it again.");
            tokio::select! {
                () = cancel.cancelled() => return Err(SinkError::Cancelled),
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::EventBuilder as _;
    use kinetic_testkit::receiver::{Answer, Receiver};

    fn sink(batches: bool) -> Sink {
        Sink::new(Arc::new(|_: &reqwest::Url| Ok(reqwest::Client::new()))).with_batches(Arc::new(
            move |url: &reqwest::Url| batches && url.path() == "/default/default",
        ))
    }

    fn target(url: String) -> Target {
        Target {
            url,
            sender: "source".into(),
            audience: None,
        }
    }

    fn event(id: &str) -> Event {
        cloudevents::EventBuilderV10::new()
            .id(id)
            .source("/test")
            .ty("dev.kinetic.test")
            .data("application/json", serde_json::json!({"n": id}))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_batch_is_one_post_of_every_event_in_order() {
        let receiver = Receiver::start().await;
        let target = target(receiver.url("/default/default"));
        assert!(sink(true).takes_batches(&target));
        assert!(!sink(false).takes_batches(&target));
        assert!(!sink(true).takes_batches(&super::Target {
            url: receiver.url("/elsewhere"),
            ..target.clone()
        }));
        sink(true)
            .send_batch(&target, &[event("a"), event("b"), event("c")])
            .await
            .unwrap();
        let received = receiver.received("/default/default");
        assert_eq!(received.len(), 1);
        assert_eq!(
            received[0].header("content-type"),
            Some("application/cloudevents-batch+json")
        );
        let batch: Vec<serde_json::Value> = serde_json::from_slice(&received[0].body).unwrap();
        let ids: Vec<&str> = batch.iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(batch[1]["data"], serde_json::json!({"n": "b"}));
    }

    #[tokio::test]
    async fn a_refused_batch_says_why_and_whether_to_send_it_again() {
        let receiver = Receiver::start().await;
        let target = target(receiver.url("/default/default"));
        receiver.script(
            "/default/default",
            vec![
                Answer::status(400).body(r#"{"error":"event 1 of the batch: no type"}"#),
                Answer::status(503),
            ],
        );
        let refused = sink(true)
            .send_batch(&target, &[event("a"), event("b")])
            .await
            .unwrap_err();
        assert!(!refused.is_retryable());
        assert!(
            refused.to_string().contains("event 1 of the batch"),
            "{refused}"
        );
        let unavailable = sink(true)
            .send_batch(&target, &[event("a"), event("b")])
            .await
            .unwrap_err();
        assert!(unavailable.is_retryable());
    }
}
