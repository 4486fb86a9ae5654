//! Running sources: reads WebhookSource, PingSource, S3Source and KafkaSource resources from the
//! store every second, serves `POST /webhooks/{namespace}/{name}` and
//! `POST /sources/{namespace}/{name}`, runs one task per PingSource, per pulling S3Source (SQS,
//! polling) and per KafkaSource, and keeps each source's status (sink, last event, counts, last
//! error) for `kinetic get sources`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader as _, Event, EventBuilder, EventBuilderV10};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use kinetic_api::Destination;
use kinetic_api::sources::{PingSource, WebhookSource};
use kinetic_store::Store;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Metrics, SourceLabels};
use crate::ping::{self, Due, PingPayload, Schedule};
use crate::sink::{Sink, SinkError, Target};
use crate::webhook::{self, Webhook};

mod kafka_sources;
mod s3_sources;
mod tasks;

use s3_sources::Bucket;
use tasks::TaskSet;

/// How often stored sources are read again.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a request to a source applied a moment ago waits for the source to start.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// Longest a webhook's sender waits for the sink; then it gets 503 and sends again later.
const WEBHOOK_SINK_WAIT: Duration = Duration::from_secs(20);
/// Longest a PingSource task sleeps before looking at the clock again.
const PING_MAX_SLEEP: Duration = Duration::from_secs(60);

/// Resolves a sink (a `Destination`) in a namespace to its URL and audience (the Destination's
/// `audience`, or a Broker's); provided by the process wiring.
pub type Resolve =
    Arc<dyn Fn(&Destination, &str) -> Result<(String, Option<String>), String> + Send + Sync>;

/// What users see of a source.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    pub events: u64,
    pub failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// PingSource: when it fires next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// S3Source over SQS: messages waiting or in flight in the queue (SQS's approximation).
    /// KafkaSource: records of its assigned partitions not yet delivered (the consumer lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
}

/// A source's kind, namespace and name.
pub(crate) type Key = (String, String, String);

struct Hook {
    webhook: Arc<Webhook>,
    sink: Target,
}

/// Every source of one process.
pub struct Sources {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sink: Sink,
    resolve: Resolve,
    hooks: Mutex<HashMap<(String, String), Hook>>,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    pings: TaskSet,
    /// S3Sources that pull (SQS, polling).
    pulls: TaskSet,
    kafkas: TaskSet,
    status: Mutex<HashMap<Key, SourceStatus>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    metrics: Metrics,
    /// Asks the reconcile loop for a pass now (a request for a source it has not seen yet).
    wake: tokio::sync::Notify,
    /// Completed reconcile passes.
    passes: tokio::sync::watch::Sender<u64>,
    /// SNS signing certificates, for pushed S3Sources with `sns.topicArns`.
    sns_certificates: Arc<crate::s3::sns_signature::Certificates>,
}

impl Sources {
    pub fn new(
        store: Arc<dyn Store>,
        sink: Sink,
        resolve: Resolve,
        metrics: Metrics,
    ) -> Result<Arc<Sources>, String> {
        // The certificate URL is checked to be SNS's own (https, sns.REGION.amazonaws.com)
        // before anything is fetched; redirects are not followed. Built now, so a process whose
        // client cannot be built stops at start-up instead of failing each verification.
        let sns_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|error| format!("the HTTP client for SNS certificates: {error}"))?;
        Ok(Arc::new(Sources {
            metrics,
            store,
            sink,
            resolve,
            hooks: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            pings: TaskSet::default(),
            pulls: TaskSet::default(),
            kafkas: TaskSet::default(),
            status: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            wake: tokio::sync::Notify::new(),
            passes: tokio::sync::watch::Sender::new(0),
            sns_certificates: Arc::new(crate::s3::sns_signature::Certificates::new(
                crate::s3::sns_signature::fetch_with(sns_client),
            )),
        }))
    }

    /// Reconciles until `cancel`, then stops every source task (a tick being sent is given up
    /// and fired again after restart; its id is stable, so the broker drops a duplicate).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            if let Err(error) = self.reconcile().await {
                tracing::warn!(%error, "Reading sources failed; retrying.");
            }
            self.passes.send_modify(|passes| *passes += 1);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(RECONCILE_INTERVAL) => {}
                () = self.wake.notified() => {}
            }
        }
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Every source's status, sorted by kind, namespace and name.
    pub fn status(&self) -> Vec<SourceStatus> {
        let status = lock(&self.status);
        let mut all: Vec<SourceStatus> = status.values().cloned().collect();
        all.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
        all
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts an event the sink accepted, `since` its input happened.
    pub(crate) fn accepted(&self, key: &Key, since: DateTime<Utc>) {
        let labels = labels(key);
        self.metrics.events.get_or_create(&labels).inc();
        let lag = (Utc::now() - since).to_std().unwrap_or_default();
        self.metrics
            .lag
            .get_or_create(&labels)
            .observe(lag.as_secs_f64());
        self.update(key, |s| {
            s.events += 1;
            s.last_event_at = Some(Utc::now());
        });
    }

    /// Counts a failure to hand an event to the sink.
    pub(crate) fn failed(&self, key: &Key, error: String) {
        self.metrics.sink_failures.get_or_create(&labels(key)).inc();
        self.update(key, |s| {
            s.failures += 1;
            s.last_error = Some(error);
        });
    }

    /// Where source `kind` `namespace/name` sends: its sink resolved, and its identity.
    pub(crate) fn target(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        sink: &Destination,
    ) -> Result<Target, String> {
        let (url, audience) = (self.resolve)(sink, namespace)?;
        let api_version = kinetic_api::sources::SOURCE_KINDS
            .iter()
            .find(|k| k.kind == kind)
            .map(|k| k.api_version)
            .unwrap_or_default();
        Ok(Target {
            url,
            sender: kinetic_api::policy::subject_of(api_version, kind, namespace, name),
            audience,
        })
    }

    /// Marks a source not ready, e.g. when its task cannot start.
    pub(crate) fn not_ready(&self, key: &Key, problem: String) {
        self.update(key, |s| {
            s.ready = false;
            s.last_error = Some(format!("not ready: {problem}"));
        });
    }

    /// For a request to a source this process does not serve yet: when the store has it (applied
    /// a moment ago, maybe by another process), reconciles at once and waits, at most
    /// [`CATCH_UP_WAIT`], until `served` says the source is there. Whether it is.
    pub(crate) async fn catch_up(&self, key: &Key, served: impl Fn(&Sources) -> bool) -> bool {
        if lock(&self.status).contains_key(key) {
            // Seen by a pass already: not ready, and waiting would not change that.
            return false;
        }
        let (kind, namespace, name) = key;
        match self.store.get_resource(kind, namespace, name).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
        let mut passes = self.passes.subscribe();
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        // A pass already under way may have read the store before the source was applied: wait for
        // up to two more.
        for _ in 0..2 {
            passes.mark_unchanged();
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, passes.changed())
                .await
                .is_err()
            {
                return served(self);
            }
            if served(self) {
                return true;
            }
        }
        served(self)
    }

    pub(crate) fn update(&self, key: &Key, change: impl FnOnce(&mut SourceStatus)) {
        let mut status = lock(&self.status);
        let entry = status.entry(key.clone()).or_insert_with(|| SourceStatus {
            kind: key.0.clone(),
            namespace: key.1.clone(),
            name: key.2.clone(),
            ..SourceStatus::default()
        });
        change(entry);
    }

    /// One pass: start, restart (on a new generation) and stop sources.
    ///
    /// Idempotent; cancelling it between awaits leaves the previous state in place.
    pub async fn reconcile(self: &Arc<Self>) -> kinetic_store::Result<()> {
        let webhooks = self.store.list_resources("WebhookSource", None).await?;
        let pings = self.store.list_resources("PingSource", None).await?;
        let mut seen: Vec<Key> = Vec::new();
        let mut hooks = HashMap::new();
        for stored in webhooks {
            let key: Key = (
                "WebhookSource".into(),
                stored.namespace.clone(),
                stored.name.clone(),
            );
            seen.push(key.clone());
            // Compiled on every pass, so a rotated secret (a file replaced, as Kubernetes does
            // with mounted secrets) takes effect within a pass, without applying again.
            let compiled = serde_json::from_value::<WebhookSource>(stored.body.clone())
                .map_err(|e| format!("stored resource is unreadable: {e}"))
                .and_then(|source| {
                    let webhook = Webhook::compile(&source.spec, webhook::read_secret)
                        .map_err(|e| e.to_string())?;
                    let sink = self.target(
                        "WebhookSource",
                        &stored.namespace,
                        &stored.name,
                        &source.spec.sink,
                    )?;
                    Ok((Arc::new(webhook), sink))
                });
            match compiled {
                Ok((webhook, sink)) => {
                    self.update(&key, |s| {
                        s.ready = true;
                        s.sink = Some(sink.url.clone());
                        if s.last_error
                            .as_deref()
                            .is_some_and(|e| e.starts_with("not ready"))
                        {
                            s.last_error = None;
                        }
                    });
                    hooks.insert(
                        (stored.namespace.clone(), stored.name.clone()),
                        Hook { webhook, sink },
                    );
                }
                Err(problem) => self.update(&key, |s| {
                    s.ready = false;
                    s.last_error = Some(format!("not ready: {problem}"));
                }),
            }
        }
        *lock(&self.hooks) = hooks;
        self.reconcile_s3(&mut seen).await?;
        self.reconcile_kafka(&mut seen).await?;
        for stored in &pings {
            seen.push((
                "PingSource".into(),
                stored.namespace.clone(),
                stored.name.clone(),
            ));
        }
        for stored in self.pings.sync(&pings) {
            let id = (stored.namespace.clone(), stored.name.clone());
            let key: Key = ("PingSource".into(), id.0.clone(), id.1.clone());
            let started = serde_json::from_value::<PingSource>(stored.body.clone())
                .map_err(|e| format!("stored resource is unreadable: {e}"))
                .and_then(|source| {
                    let (zone, cron) = source.spec.schedule_parts();
                    let schedule = Schedule::parse(cron, zone).map_err(|e| e.to_string())?;
                    let sink = self.target("PingSource", &id.0, &id.1, &source.spec.sink)?;
                    Ok((source, schedule, sink))
                });
            match started {
                Ok((source, schedule, sink)) => {
                    let cancel = self.cancel.child_token();
                    self.update(&key, |s| {
                        s.ready = true;
                        s.sink = Some(sink.url.clone());
                        s.last_error = None;
                    });
                    self.tracker.spawn(run_ping(
                        self.clone(),
                        key,
                        source,
                        stored.uid.clone(),
                        schedule,
                        sink,
                        cancel.clone(),
                    ));
                    self.pings.started(stored, cancel);
                }
                Err(problem) => self.update(&key, |s| {
                    s.ready = false;
                    s.last_error = Some(format!("not ready: {problem}"));
                }),
            }
        }
        lock(&self.status).retain(|key, _| seen.contains(key));
        Ok(())
    }

    /// The routes sources serve on the main listener: `POST /webhooks/{namespace}/{name}`
    /// (WebhookSource) and `POST /sources/{namespace}/{name}` (S3Source push notifications).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/webhooks/{namespace}/{name}", post(receive))
            .route("/sources/{namespace}/{name}", post(s3_sources::notified))
            .with_state(self.clone())
    }
}

fn labels(key: &Key) -> SourceLabels {
    SourceLabels {
        kind: key.0.clone(),
        namespace: key.1.clone(),
        name: key.2.clone(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn answer(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": message, "reason": reason })),
    )
        .into_response()
}

/// One webhook delivery: verify, build the event, hand it to the sink; 202 only once the sink
/// accepted it, so the sender retries anything not accepted.
async fn receive(
    State(sources): State<Arc<Sources>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key: Key = ("WebhookSource".into(), namespace.clone(), name.clone());
    let id = (namespace.clone(), name.clone());
    let find = |sources: &Sources| {
        lock(&sources.hooks)
            .get(&id)
            .map(|h| (h.webhook.clone(), h.sink.clone()))
    };
    let mut hook = find(&sources);
    if hook.is_none() && sources.catch_up(&key, |s| find(s).is_some()).await {
        hook = find(&sources);
    }
    let Some((webhook, sink)) = hook else {
        let known = lock(&sources.status).contains_key(&key);
        return if known {
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                &format!(
                    "WebhookSource {namespace}/{name} is not ready; see `kinetic get sources`"
                ),
            )
        } else {
            answer(
                StatusCode::NOT_FOUND,
                "unknown-source",
                &format!(
                    "no WebhookSource {namespace}/{name}; apply one, or check the URL (`/webhooks/NAMESPACE/NAME`)"
                ),
            )
        };
    };
    let arrived = Utc::now();
    let event = match webhook::to_event(&webhook, &namespace, &name, &headers, &body, arrived) {
        Ok(event) => event,
        Err(error) => {
            let status = error.status();
            if status == StatusCode::UNAUTHORIZED {
                tracing::info!(%namespace, %name, %error, "Refused an unauthenticated webhook request.");
            }
            sources.update(&key, |s| s.last_error = Some(error.to_string()));
            let reason = if status == StatusCode::UNAUTHORIZED {
                "unauthorized"
            } else {
                "invalid"
            };
            return answer(status, reason, &error.to_string());
        }
    };
    let id = event.id().to_owned();
    push_to_sink(
        &sources,
        &key,
        &sink,
        &[event],
        arrived,
        json!({ "id": id }),
        "send it again",
    )
    .await
}

/// Sends what one pushed request (a webhook, a bucket notification) carried to the source's sink,
/// within [`WEBHOOK_SINK_WAIT`], and answers the request's sender: 202 with `accepted` once the
/// sink took every event; 400 when the sink refused one for good (what it answered stays in the
/// source's status, the sender is told only that it was refused); otherwise 503 with
/// `Retry-After`, so the sender sends again (`again` says what to send) and the repeats dedupe
/// at the broker on their ids.
pub(crate) async fn push_to_sink(
    sources: &Sources,
    key: &Key,
    sink: &Target,
    events: &[Event],
    arrived: DateTime<Utc>,
    accepted: serde_json::Value,
    again: &str,
) -> Response {
    if let Err(error) = sources.sink.reachable(sink) {
        sources.failed(key, error.to_string());
        return retry_later(&error.to_string());
    }
    let noun = if events.len() == 1 { "event" } else { "events" };
    let all = async {
        for event in events {
            sources
                .sink
                .send_until_accepted(sink, event, &sources.cancel)
                .await?;
            sources.accepted(key, arrived);
        }
        Ok::<(), SinkError>(())
    };
    match tokio::time::timeout(WEBHOOK_SINK_WAIT, all).await {
        Ok(Ok(())) => (StatusCode::ACCEPTED, axum::Json(accepted)).into_response(),
        Ok(Err(error @ SinkError::Refused { status, .. })) => {
            sources.failed(key, error.to_string());
            answer(
                StatusCode::BAD_REQUEST,
                "sink-refused",
                &format!(
                    "the source's sink refused the {noun} (HTTP {status}); see `kinetic get sources`"
                ),
            )
        }
        Ok(Err(error)) => {
            sources.failed(key, error.to_string());
            retry_later(&error.to_string())
        }
        Err(_) => {
            sources.failed(key, format!("the sink did not accept the {noun} in time"));
            retry_later(&format!(
                "the sink did not accept the {noun} in time; {again}"
            ))
        }
    }
}

fn retry_later(message: &str) -> Response {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, "sink-unavailable", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// One PingSource: sleeps until its next tick, claims the tick in the store (so one process fires
/// it, once, even with several processes on one PostgreSQL), and sends it until the sink accepts.
async fn run_ping(
    sources: Arc<Sources>,
    key: Key,
    source: PingSource,
    uid: String,
    schedule: Schedule,
    sink: Target,
    cancel: CancellationToken,
) {
    let (namespace, name) = (key.1.clone(), key.2.clone());
    let checkpoint = ping::tick_key(&namespace, &name);
    // Ticks before this task started are not fired unless a checkpoint says they were due.
    let created = Utc::now();
    loop {
        let now = Utc::now();
        let last = match sources.store.get_checkpoint(&checkpoint).await {
            Ok(found) => ping::last_fired(found.as_ref()),
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "Reading a PingSource's checkpoint failed; retrying.");
                if sleep_or_cancel(Duration::from_secs(1), &cancel).await {
                    return;
                }
                continue;
            }
        };
        let last = match last {
            Ok(last) => last,
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "A PingSource's checkpoint is unreadable; starting from now.");
                None
            }
        };
        match ping::due(&schedule, last, created, now) {
            Due::Wait { next } => {
                sources.update(&key, |s| s.next_at = next);
                let wait = next
                    .and_then(|next| (next - now).to_std().ok())
                    .unwrap_or(PING_MAX_SLEEP)
                    .min(PING_MAX_SLEEP);
                if sleep_or_cancel(wait, &cancel).await {
                    return;
                }
            }
            Due::Fire { tick, skipped } => {
                let claimed = ping::claim_tick(
                    sources.store.as_ref(),
                    &checkpoint,
                    tick,
                    now.timestamp_millis(),
                )
                .await;
                match claimed {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(error) => {
                        tracing::warn!(%namespace, %name, %error, "Claiming a tick failed; retrying.");
                        if sleep_or_cancel(Duration::from_secs(1), &cancel).await {
                            return;
                        }
                        continue;
                    }
                }
                if skipped {
                    tracing::info!(%namespace, %name, %tick, "Ticks were missed while kinetic was down; firing only the latest.");
                }
                let payload = PingPayload {
                    data: source.spec.data.as_deref(),
                    data_base64: source.spec.data_base64.as_deref(),
                    content_type: source.spec.content_type.as_deref(),
                    extensions: source.spec.ce_overrides.as_ref().map(|o| &o.extensions),
                };
                let event = ping::ping_event(&namespace, &name, &uid, tick, &payload)
                    .map_err(|e| e.to_string())
                    .and_then(|e| to_cloud_event(e).map_err(|e| e.to_string()));
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        sources.failed(&key, error);
                        continue;
                    }
                };
                match sources
                    .sink
                    .send_until_accepted(&sink, &event, &cancel)
                    .await
                {
                    Ok(()) => {
                        sources.accepted(&key, tick);
                        sources.update(&key, |s| s.last_error = None);
                    }
                    Err(SinkError::Cancelled) => return,
                    Err(error) => {
                        tracing::warn!(%namespace, %name, %error, "The sink refused a tick; it is dropped.");
                        sources.failed(&key, error.to_string());
                    }
                }
            }
        }
    }
}

/// `true` when cancelled.
pub(crate) async fn sleep_or_cancel(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(duration) => false,
    }
}

fn to_cloud_event(tick: ping::PingEvent) -> Result<Event, cloudevents::event::EventBuilderError> {
    let mut builder = EventBuilderV10::new()
        .id(tick.id)
        .source(tick.source)
        .ty(tick.ty)
        .time(tick.time);
    for (name, value) in tick.extensions {
        builder = builder.extension(&name, value);
    }
    let mut event = builder.build()?;
    if let Some(data) = tick.data {
        match tick.datacontenttype {
            Some(content_type) => {
                event.set_data(content_type, cloudevents::Data::Binary(data));
            }
            None => {
                event.set_data_unchecked(cloudevents::Data::Binary(data));
            }
        }
    }
    Ok(event)
}
