//! Running sources: reads the resources of every kind in the [`kind`] registry from the store
//! every second, runs one task per source that runs as a task (a PingSource, a pulling S3Source,
//! a KafkaSource), serves the pushed requests of the others at their kind's route
//! (`POST /webhooks/{namespace}/{name}`, `POST /sources/{namespace}/{name}`), and keeps each
//! source's status (sink, last event, counts, last error) for `kinetic get sources`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use cloudevents::Event;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use kinetic_api::Destination;
use kinetic_store::Store;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::metrics::{Metrics, SourceLabels};
use crate::sink::{Sink, SinkError, Target};

pub(crate) mod kind;
mod tasks;

use kind::{Endpoint, Kind, Prepared, Route};
use tasks::TaskSet;

/// How often stored sources are read again.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a request to a source applied a moment ago waits for the source to start.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// Longest a webhook's sender waits for the sink; then it gets 503 and sends again later.
const WEBHOOK_SINK_WAIT: Duration = Duration::from_secs(20);

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

/// A kind the controller runs, and the tasks of its sources.
struct Registered {
    kind: Box<dyn Kind>,
    tasks: TaskSet,
}

/// Every source of one process.
pub struct Sources {
    /// The sources' state (checkpoints, dedupe of pushed notifications, last ticks).
    pub(crate) store: Arc<dyn Store>,
    /// The sources themselves, as every component of this process reads them.
    resources: kinetic_resources::Watch,
    pub(crate) sink: Sink,
    resolve: Resolve,
    pub(crate) clock: Clock,
    kinds: Vec<Registered>,
    /// The sources that serve pushed requests, prepared by the last pass.
    endpoints: Mutex<HashMap<Key, Arc<dyn Endpoint>>>,
    status: Mutex<HashMap<Key, SourceStatus>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    metrics: Metrics,
    /// Asks the reconcile loop for a pass now (a request for a source it has not seen yet).
    wake: tokio::sync::Notify,
    /// Completed reconcile passes.
    passes: tokio::sync::watch::Sender<u64>,
    /// SNS signing certificates, for pushed S3Sources with `sns.topicArns`.
    pub(crate) sns_certificates: Arc<crate::s3::sns_signature::Certificates>,
}

impl Sources {
    pub fn new(
        store: Arc<dyn Store>,
        resources: kinetic_resources::Watch,
        sink: Sink,
        resolve: Resolve,
        metrics: Metrics,
        clock: Clock,
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
            resources,
            sink,
            resolve,
            clock,
            kinds: kind::registry()
                .into_iter()
                .map(|kind| Registered {
                    kind,
                    tasks: TaskSet::default(),
                })
                .collect(),
            endpoints: Mutex::new(HashMap::new()),
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
        let mut resources = self.resources.clone();
        let mut latest = resources.latest();
        loop {
            if let Some(snapshot) = &latest {
                self.reconcile(snapshot);
            }
            self.passes.send_modify(|passes| *passes += 1);
            tokio::select! {
                () = cancel.cancelled() => break,
                next = resources.next_pass(RECONCILE_INTERVAL) => latest = next,
                () = self.wake.notified() => latest = resources.latest(),
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
        let api_version = kinetic_api::Kind::of(kind)
            .map(kinetic_api::Kind::api_version)
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
        if lock(&self.status).get(key).is_some_and(|s| !s.ready) {
            // Seen by a pass already and not ready: waiting would not change that. (Seen and
            // ready: the pass that prepared it may not have finished.)
            return false;
        }
        let (kind, namespace, name) = key;
        match self.store.get_resource(kind, namespace, name).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        // The snapshot this process reads may not have it yet: read again now, and wait for a
        // snapshot that has it.
        self.resources.refresh();
        let mut resources = self.resources.clone();
        let has_it = |snapshot: Option<&kinetic_resources::Snapshot>| {
            snapshot.is_some_and(|snapshot| {
                kinetic_api::Kind::of(kind)
                    .is_some_and(|kind| snapshot.find(kind, namespace, name).is_some())
            })
        };
        while !has_it(resources.latest().as_deref()) {
            match tokio::time::timeout_at(deadline, resources.changed()).await {
                Ok(Some(_)) => {}
                // The time is up, or the snapshots ended.
                Ok(None) | Err(_) => return served(self),
            }
        }
        let mut passes = self.passes.subscribe();
        // A pass already under way may have read the snapshot before it had the source: wait for
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

    /// One pass: start, restart (on a new generation) and stop sources, and prepare again the
    /// ones that serve pushed requests.
    ///
    /// Idempotent; cancelling it between awaits leaves the previous state in place.
    pub fn reconcile(self: &Arc<Self>, resources: &kinetic_resources::Snapshot) {
        let mut seen: Vec<Key> = Vec::new();
        let mut endpoints: HashMap<Key, Arc<dyn Endpoint>> = HashMap::new();
        for registered in &self.kinds {
            let kind = registered.kind.kind();
            let stored = kinetic_api::Kind::of(kind).map_or(&[][..], |k| resources.stored(k));
            seen.extend(
                stored
                    .iter()
                    .map(|s| (kind.to_owned(), s.namespace.clone(), s.name.clone())),
            );
            // Tasks of sources gone or changed stop here; the others keep running.
            for stored in registered.tasks.sync(stored) {
                let key: Key = (
                    kind.to_owned(),
                    stored.namespace.clone(),
                    stored.name.clone(),
                );
                match registered.kind.prepare(self, stored) {
                    Ok(Prepared::Task { sink, run }) => {
                        self.update(&key, |s| {
                            s.ready = true;
                            s.sink = Some(sink.url.clone());
                            s.last_error = None;
                            s.backlog = None;
                        });
                        let cancel = self.cancel.child_token();
                        self.tracker.spawn(run(self.clone(), key, cancel.clone()));
                        registered.tasks.started(stored, cancel);
                    }
                    Ok(Prepared::Endpoint { sink, endpoint }) => {
                        self.update(&key, |s| {
                            s.ready = true;
                            s.sink = Some(sink.url.clone());
                            // What the last request got wrong stays until the next one.
                            if s.last_error
                                .as_deref()
                                .is_some_and(|e| e.starts_with("not ready"))
                            {
                                s.last_error = None;
                            }
                        });
                        endpoints.insert(key, endpoint);
                    }
                    Err(problem) => self.not_ready(&key, problem),
                }
            }
        }
        *lock(&self.endpoints) = endpoints;
        lock(&self.status).retain(|key, _| seen.contains(key));
    }

    /// The routes of the kinds that take pushed requests, on the main listener:
    /// `POST /webhooks/{namespace}/{name}` (WebhookSource) and `POST /sources/{namespace}/{name}`
    /// (S3Source bucket notifications).
    pub fn router(self: &Arc<Self>) -> Router {
        let mut router = Router::new();
        for registered in &self.kinds {
            let Some(route) = registered.kind.route() else {
                continue;
            };
            let kind = registered.kind.kind();
            router = router.route(
                &format!("{}/{{namespace}}/{{name}}", route.prefix),
                post(
                    move |State(sources): State<Arc<Sources>>,
                          Path((namespace, name)): Path<(String, String)>,
                          headers: HeaderMap,
                          body: Bytes| async move {
                        let key: Key = (kind.to_owned(), namespace, name);
                        receive(sources, route, key, headers, body).await
                    },
                ),
            );
        }
        router.with_state(self.clone())
    }
}

/// Where `kind` keeps state for a source in the store, if it keeps any.
pub(crate) fn state_key(kind: &str, namespace: &str, name: &str) -> Option<String> {
    kind::registry()
        .iter()
        .find(|k| k.kind() == kind)
        .and_then(|k| k.state_key(namespace, name))
}

/// One request pushed to a source: handed to the source's endpoint; `404` for a source that does
/// not exist (or does not take pushed requests), `503` for one that is not ready.
async fn receive(
    sources: Arc<Sources>,
    route: Route,
    key: Key,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let find = |sources: &Sources| lock(&sources.endpoints).get(&key).cloned();
    let mut endpoint = find(&sources);
    if endpoint.is_none() && sources.catch_up(&key, |s| find(s).is_some()).await {
        endpoint = find(&sources);
    }
    let Some(endpoint) = endpoint else {
        let (kind, namespace, name) = &key;
        let known_not_ready = lock(&sources.status).get(&key).is_some_and(|s| !s.ready);
        return if known_not_ready {
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                &format!("{kind} {namespace}/{name} is not ready; see `kinetic get sources`"),
            )
        } else {
            answer(
                StatusCode::NOT_FOUND,
                "unknown-source",
                &(route.unknown)(namespace, name),
            )
        };
    };
    endpoint.receive(&sources, &key, &headers, body).await
}

fn labels(key: &Key) -> SourceLabels {
    SourceLabels {
        kind: key.0.clone(),
        namespace: key.1.clone(),
        name: key.2.clone(),
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn answer(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": message, "reason": reason })),
    )
        .into_response()
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

pub(crate) fn retry_later(message: &str) -> Response {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, "sink-unavailable", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// `true` when cancelled.
pub(crate) async fn sleep_or_cancel(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(duration) => false,
    }
}
