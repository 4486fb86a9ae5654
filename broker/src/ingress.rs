//! `POST /{namespace}/{broker}`: the HTTP edge of the broker. Every refusal is a JSON body
//! `{"error": "...", "attribute": "..."}` mapped in one place ([`Refusal`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use cloudevents::AttributesReader;
use kinetic_api::cloudevent::{self, EventErrorKind};
use kinetic_log::{CommitError, Committer, LogError};
use kinetic_store::{Appended, NewEvent};
use tracing::Instrument as _;

use crate::admission::{Admission, Denied};
use crate::directory::BrokerDirectory;
use crate::metrics::{BrokerLabels, Metrics, RejectLabels};
use kinetic_api::eventing::BrokerClass;

/// Settings of the ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Request bytes held at once, from reading a body until its events are committed: past it,
    /// a request waits (briefly, then 503) instead of growing memory.
    pub max_inflight_bytes: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How long a request waits for room among the in-flight bytes before it is refused with 503.
const INFLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Request bytes in flight, counted in KiB (a semaphore's permits are `u32`).
#[derive(Clone)]
struct Inflight {
    kib: Arc<tokio::sync::Semaphore>,
    most: u32,
}

impl Inflight {
    fn new(bytes: usize) -> Self {
        let most = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            kib: Arc::new(tokio::sync::Semaphore::new(most as usize)),
            most,
        }
    }

    /// Room for `bytes`, held until dropped; `None` if none was free within [`INFLIGHT_WAIT`]. A
    /// request larger than the whole budget takes all of it.
    async fn hold(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.most);
        tokio::time::timeout(INFLIGHT_WAIT, self.kib.clone().acquire_many_owned(kib))
            .await
            .ok()?
            .ok()
    }
}

/// The group commit of each broker class.
#[derive(Clone)]
pub struct Committers {
    /// The store-backed classes.
    pub store: Committer,
    /// The Kafka class.
    pub kafka: Committer,
}

impl Committers {
    fn of(&self, class: BrokerClass) -> &Committer {
        match class {
            BrokerClass::Store => &self.store,
            BrokerClass::Kafka => &self.kafka,
        }
    }
}

#[derive(Clone)]
struct Ingress {
    config: IngressConfig,
    inflight: Inflight,
    committers: Committers,
    directory: BrokerDirectory,
    metrics: Metrics,
    admission: Option<std::sync::Arc<dyn Admission>>,
}

/// The ingress routes, to merge into the main listener's router.
///
/// With an `admission`, every request is judged by it after its events are parsed and before they
/// are written (401/403); without one, anyone may send.
pub fn router(
    config: IngressConfig,
    committers: Committers,
    directory: BrokerDirectory,
    metrics: Metrics,
    admission: Option<Arc<dyn Admission>>,
) -> Router {
    let state = Arc::new(Ingress {
        inflight: Inflight::new(config.max_inflight_bytes),
        config,
        committers,
        directory,
        metrics,
        admission,
    });
    Router::new()
        .route("/{namespace}/{broker}", any(handle))
        .with_state(state)
}

/// A request refused, with the status, what is wrong and the attribute at fault.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
    attribute: Option<String>,
    /// `WWW-Authenticate` of a 401.
    challenge: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            attribute: None,
            challenge: None,
        }
    }

    fn denied(denied: Denied) -> Self {
        match denied {
            Denied::NoToken(message) => Self {
                challenge: Some("Bearer"),
                ..Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            },
            Denied::InvalidToken(message) => Self {
                challenge: Some("Bearer error=\"invalid_token\""),
                ..Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            },
            Denied::Forbidden(message) => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(attribute) = self.attribute {
            body["attribute"] = serde_json::Value::String(attribute);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read, so the connection cannot carry another request:
            // say so, or the sender's pool reuses it and its next request fails to send.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

async fn handle(
    State(ingress): State<Arc<Ingress>>,
    Path((namespace, broker)): Path<(String, String)>,
    request: Request,
) -> Response {
    match accept(&ingress, &namespace, &broker, request).await {
        Ok(response) => response,
        Err(refusal) => {
            ingress
                .metrics
                .rejected
                .get_or_create(&RejectLabels {
                    reason: refusal.reason,
                })
                .inc();
            if refusal.status.is_server_error() {
                tracing::warn!(broker = %format!("{namespace}/{broker}"), status = %refusal.status, error = %refusal.message, "Event refused.");
            } else {
                tracing::debug!(broker = %format!("{namespace}/{broker}"), status = %refusal.status, error = %refusal.message, "Event refused.");
            }
            refusal.into_response()
        }
    }
}

async fn accept(
    ingress: &Ingress,
    namespace: &str,
    broker: &str,
    request: Request,
) -> Result<Response, Refusal> {
    // A broker that needs a token tells a caller without one nothing: not whether it exists (an
    // unknown broker answers like a guarded one until the caller authenticates), and no handshake.
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let authenticate = async |ingress: &Ingress| -> Result<(), Refusal> {
        match &ingress.admission {
            Some(admission) => admission
                .admit(namespace, broker, authorization.as_deref(), &[])
                .await
                .map_err(Refusal::denied),
            None => Ok(()),
        }
    };
    if request.method() == Method::OPTIONS {
        authenticate(ingress).await?;
        return Ok(handshake(request.headers()));
    }
    if request.method() != Method::POST {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!("{} is not allowed; send events with POST", request.method()),
        ));
    }
    let limit = ingress.config.max_body_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let class = match ingress.directory.class(namespace, broker).await {
        Ok(Some(class)) => class,
        Ok(None) => {
            authenticate(ingress).await?;
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "unknown_broker",
                format!(
                    "broker `{namespace}/{broker}` does not exist; apply a Broker named `{broker}` in namespace `{namespace}` first"
                ),
            ));
        }
        Err(error) => return Err(store_unavailable(&error)),
    };
    // A body without a length may be as large as the limit.
    let Some(_room) = ingress.inflight.hold(length.unwrap_or(limit)).await else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "kinetic holds as many request bytes as it may (--max-inflight-bytes); retry later",
        ));
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), limit)
        .await
        .map_err(|error| {
            let error = error.into_inner();
            if error.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                // Cut off by the listener's body timeout, or the client went away.
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("the request body could not be read: {error}"),
                )
            }
        })?;
    let (mode, events) = cloudevent::decode(&parts.headers, &body).map_err(|error| Refusal {
        status: match error.kind {
            EventErrorKind::Invalid => StatusCode::BAD_REQUEST,
            EventErrorKind::UnsupportedFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        },
        reason: "invalid",
        message: error.message,
        attribute: error.attribute,
        challenge: None,
    })?;
    // The request's span starts with its events: they may carry the trace it continues.
    let span = match events.first() {
        Some(first) => kinetic_telemetry::root_span!(
            kinetic_telemetry::Parent::Either(&parts.headers, first),
            "ingress",
            otel.kind = "server",
            broker = %format_args!("{namespace}/{broker}"),
            events = events.len(),
            otel.status_code = tracing::field::Empty,
        ),
        None => tracing::Span::none(),
    };
    let accepted = admit_and_commit(
        ingress,
        class,
        namespace,
        broker,
        &parts.headers,
        mode,
        events,
    )
    .instrument(span.clone())
    .await;
    if accepted.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    accepted
}

/// The events of one request, admitted and committed as one group-commit entry.
async fn admit_and_commit(
    ingress: &Ingress,
    class: BrokerClass,
    namespace: &str,
    broker: &str,
    headers: &HeaderMap,
    mode: cloudevent::Mode,
    events: Vec<cloudevents::Event>,
) -> Result<Response, Refusal> {
    if let Some(admission) = &ingress.admission {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        admission
            .admit(namespace, broker, authorization, &events)
            .await
            .map_err(Refusal::denied)?;
    }
    let now = chrono::Utc::now();
    let arrival = kinetic_api::event::arrival_time(now);
    let key = format!("{namespace}/{broker}");
    let mut records = Vec::with_capacity(events.len());
    for (index, mut event) in events.into_iter().enumerate() {
        kinetic_api::event::admit(&mut event, &arrival).map_err(|error| Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "ttl",
            // In a batch every refusal names the event, the first one included.
            message: if mode == cloudevent::Mode::Batch {
                format!("event {index} of the batch: {}", error.message)
            } else {
                error.message
            },
            attribute: error.attribute,
            challenge: None,
        })?;
        // Its delivery, later and elsewhere, continues this request's trace (or the caller's,
        // when this request is not traced here).
        if !kinetic_telemetry::stamp(&mut event) {
            kinetic_telemetry::carry(headers, &mut event);
        }
        let record = NewEvent {
            broker: key.clone(),
            source: event.source().clone(),
            id: event.id().to_owned(),
            payload: cloudevent::encode_structured(&event),
        };
        records.push((record, event));
    }
    // For the console's timeline: what was accepted, as stored.
    let keys: Vec<(String, String, kinetic_store::Bytes)> = records
        .iter()
        .map(|(record, _)| {
            (
                record.id.clone(),
                record.source.clone(),
                record.payload.clone(),
            )
        })
        .collect();
    let outcomes = ingress
        .committers
        .of(class)
        .commit(records)
        .instrument(kinetic_telemetry::span!("commit", otel.kind = "internal"))
        .await
        .map_err(|error| match error {
            CommitError::Log(error) => log_unavailable(&error),
            CommitError::Stopped => Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "kinetic is shutting down; retry",
            ),
        })?;
    kinetic_telemetry::journal::accepted(
        &key,
        now.timestamp_millis(),
        kinetic_telemetry::current_trace_id(),
        keys.iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Appended::Accepted(_)))
            .map(|((id, source, payload), _)| (id.as_str(), source.as_str(), payload)),
    );
    let labels = BrokerLabels { broker: key };
    let accepted = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Appended::Accepted(_)))
        .count();
    let duplicates = outcomes.len() - accepted;
    for (counter, count) in [
        (&ingress.metrics.accepted, accepted),
        (&ingress.metrics.duplicate, duplicates),
    ] {
        if count > 0 {
            counter.get_or_create(&labels).inc_by(count as u64);
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

fn log_unavailable(error: &LogError) -> Refusal {
    match error {
        LogError::Store(error) => store_unavailable(error),
        LogError::Commit(_) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event store is unavailable; nothing was stored, retry later",
        ),
        LogError::Kafka(_) => {
            tracing::warn!(%error, "Kafka is unavailable.");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                "Kafka did not acknowledge the event; nothing was accepted, retry later",
            )
        }
        LogError::KafkaNotConfigured => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka_not_configured",
            "the broker is of class Kafka, but no Kafka cluster is configured; nothing was stored. Start kinetic with --kafka-bootstrap-servers HOST:PORT, or reference a ConfigMap with `bootstrap.servers` in the broker's spec.config",
        ),
        LogError::KafkaConfig(problem) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka_not_configured",
            format!("{problem}; nothing was stored"),
        ),
    }
}

fn store_unavailable(error: &kinetic_store::Error) -> Refusal {
    tracing::warn!(error = %error, source = ?std::error::Error::source(error), "The store is unavailable.");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the event store is unavailable; nothing was stored, retry later",
    )
}

/// The CloudEvents webhook validation handshake (HTTP 1.1 Web Hooks for Event Delivery, section 4).
fn handshake(headers: &HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    if let Some(origin) = headers.get("webhook-request-origin") {
        out.insert("webhook-allowed-origin", origin.clone());
    }
    out.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn in_flight_bytes_wait_then_give_up() {
        let inflight = Inflight::new(8 * 1024);
        let first = inflight.hold(6 * 1024).await.expect("room");
        // 3 KiB more do not fit: the wait is bounded.
        let started = tokio::time::Instant::now();
        assert!(inflight.hold(3 * 1024).await.is_none());
        assert_eq!(started.elapsed(), INFLIGHT_WAIT);
        // A request larger than the whole budget takes all of it once the rest is free.
        drop(first);
        let all = inflight
            .hold(100 * 1024 * 1024)
            .await
            .expect("the whole budget");
        assert!(inflight.hold(1).await.is_none());
        drop(all);
        assert!(inflight.hold(1).await.is_some());
    }
    use tower::ServiceExt as _;

    async fn ingress() -> Router {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        let broker = serde_json::json!({"metadata": {"name": "default"}});
        store
            .apply_resource("Broker", "default", "default", &broker, 0)
            .await
            .unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (committed, _) = tokio::sync::watch::channel(0);
        let (committer, _) = Committer::start(
            Arc::new(kinetic_log::StoreLog(store.clone())),
            std::time::Duration::from_secs(60),
            committed,
            kinetic_log::CommitMetrics::new(&mut registry),
        );
        router(
            IngressConfig::default(),
            Committers {
                store: committer.clone(),
                kafka: committer,
            },
            BrokerDirectory::new(store),
            metrics,
            None,
        )
    }

    async fn refusal(router: Router, content_type: &str, body: &str) -> serde_json::Value {
        let request = Request::post("/default/default")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn a_spent_ttl_in_a_batch_names_the_event_even_the_first() {
        let event = |id: &str, ttl: i64| serde_json::json!({"specversion": "1.0", "id": id, "source": "/s", "type": "t", "knativebrokerttl": ttl});
        for (batch, index) in [
            (serde_json::json!([event("a", 1), event("b", 5)]), 0),
            (serde_json::json!([event("a", 5), event("b", 0)]), 1),
        ] {
            let answer = refusal(
                ingress().await,
                cloudevent::BATCH_CONTENT_TYPE,
                &batch.to_string(),
            )
            .await;
            assert_eq!(answer["attribute"], "knativebrokerttl");
            let message = answer["error"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("event {index} of the batch: ")),
                "{message}"
            );
        }
        // A single event has no index to name.
        let answer = refusal(
            ingress().await,
            cloudevent::STRUCTURED_CONTENT_TYPE,
            &event("a", 1).to_string(),
        )
        .await;
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("`knativebrokerttl` is 1"),
            "{answer}"
        );
    }
}
