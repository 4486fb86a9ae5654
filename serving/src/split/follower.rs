//! Gateways and activators in their own processes: they follow the autoscaler's table, keep one
//! [`RevisionProxy`] per served revision, poke the autoscaler when a request finds a revision at
//! zero, and (activators) report their requests every second.
//!
//! How the two divide the work, as in Knative with its activator: the gateway routes by Host and
//! traffic split, then sends a revision's request straight to one of its queue-proxies while the
//! revision has the burst capacity to take it; while it has not (at zero, or below its target
//! burst capacity) the gateway sends the request to an activator, which holds it until an instance
//! has room. A gateway started without activators holds such requests itself: gateway and
//! activator in one process, as in `kinetic up`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{LONG_POLL, NAMESPACE_HEADER, Poke, REPORT_INTERVAL, REVISION_HEADER, Report};
use super::{RevisionReport, Table, Wire};
use crate::activator::{PROXIED_HEADER, RevisionProxy, RevisionSettings, Untouched};
use crate::gateway::{Gateway, RouteTable, host_of};
use crate::metrics::Metrics;
use crate::queue_proxy::Forward;
use crate::refusal::{error_response, refusal};
use crate::runtime::Instance;

type Key = (String, String);

/// How long an activator waits for a revision a gateway named to appear in its own table (the
/// two follow the same table, a moment apart).
const UNKNOWN_REVISION_WAIT: Duration = Duration::from_secs(2);

/// Pause after the autoscaler could not be reached, before asking again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which part of the data path this process is.
#[derive(Debug, Clone)]
pub enum Role {
    /// Routes by Host. A revision's requests go to an activator while the activator is in its
    /// path; with no activators given, this gateway holds them itself.
    Gateway {
        /// The activators' `host:port`s (on Kubernetes, their Service's).
        activators: Vec<Authority>,
    },
    /// Takes requests from gateways for the revision they name in `Knative-Serving-Namespace`
    /// and `Knative-Serving-Revision`.
    Activator,
}

/// Settings of a follower.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// The autoscaler's URL, `http://HOST:PORT`.
    pub autoscaler: String,
    /// This process's name in its reports (its pod's name, or host and pid).
    pub reporter: String,
    pub role: Role,
}

/// A served revision as followed here.
struct Followed {
    uid: String,
    settings: (usize, u64, u64, usize),
    proxy: Arc<RevisionProxy>,
    /// By endpoint id, so that an instance keeps its breaker across tables.
    instances: HashMap<u64, Arc<Instance>>,
    cancel: CancellationToken,
}

/// A gateway or activator following the autoscaler's table.
pub struct Follower {
    wire: Wire,
    config: FollowerConfig,
    gateway: Arc<Gateway>,
    metrics: Metrics,
    forward: Forward,
    followed: Mutex<HashMap<Key, Followed>>,
    version: AtomicU64,
    ready: AtomicBool,
    applied: tokio::sync::Notify,
    activators: Option<Activators>,
    tracker: TaskTracker,
}

impl Follower {
    pub fn new(
        config: FollowerConfig,
        gateway: Arc<Gateway>,
        metrics: Metrics,
    ) -> Result<Arc<Follower>, String> {
        let wire = Wire::new(&config.autoscaler)?;
        let activators = match &config.role {
            Role::Gateway { activators } if !activators.is_empty() => Some(Activators {
                forward: Forward::new(),
                targets: activators.clone(),
                next: AtomicUsize::new(0),
            }),
            _ => None,
        };
        Ok(Arc::new(Follower {
            wire,
            config,
            gateway,
            metrics,
            forward: Forward::new(),
            followed: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            applied: tokio::sync::Notify::new(),
            activators,
            tracker: TaskTracker::new(),
        }))
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The version of the table applied last (0 before the first).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether the first table has arrived.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether this process holds requests for revisions, and so reports them and marks those it
    /// forwards: an activator, or a gateway without activators.
    fn activates(&self) -> bool {
        self.activators.is_none()
    }

    /// Follows the table until `cancel`; with [`Follower::activates`], also reports every
    /// [`REPORT_INTERVAL`].
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.activates() {
            self.tracker
                .spawn(self.clone().report_loop(cancel.child_token()));
        }
        let mut failing = false;
        loop {
            let version = self.version.load(Ordering::Acquire);
            let path = format!("/v1/table?after={version}");
            let asked = self.wire.call::<Table>(
                Method::GET,
                &path,
                None,
                LONG_POLL + Duration::from_secs(10),
            );
            let answer = tokio::select! {
                () = cancel.cancelled() => break,
                answer = asked => answer,
            };
            match answer {
                Ok(Some(table)) => {
                    if failing {
                        tracing::info!(autoscaler = %self.wire.base(), "Following the autoscaler's table again.");
                        failing = false;
                    }
                    self.apply(&table, &cancel);
                }
                Ok(None) => {}
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "Cannot follow the autoscaler's table; serving the last one and asking again (is `kinetic autoscaler` running at --autoscaler-url?).");
                        failing = true;
                    }
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Makes the data paths and the gateway's routes what `table` says.
    pub fn apply(self: &Arc<Self>, table: &Table, cancel: &CancellationToken) {
        let mut followed = lock(&self.followed);
        let mut seen = std::collections::HashSet::new();
        for entry in &table.revisions {
            let key = (entry.namespace.clone(), entry.revision.clone());
            seen.insert(key.clone());
            let settings = (
                entry.container_concurrency,
                entry.timeout_ms,
                entry.activation_timeout_ms,
                entry.capacity,
            );
            let current = followed
                .get(&key)
                .is_some_and(|f| f.uid == entry.uid && f.settings == settings);
            if !current {
                if let Some(old) = followed.remove(&key) {
                    old.cancel.cancel();
                    old.proxy.close();
                }
                let proxy = RevisionProxy::new(
                    RevisionSettings {
                        namespace: entry.namespace.clone(),
                        revision: entry.revision.clone(),
                        service: entry.service.clone(),
                        container_concurrency: entry.container_concurrency,
                        timeout: Duration::from_millis(entry.timeout_ms),
                        activation_timeout: Duration::from_millis(entry.activation_timeout_ms),
                        capacity: entry.capacity,
                        mark_proxied: self.activates(),
                    },
                    self.forward.clone(),
                    self.metrics.clone(),
                );
                let token = cancel.child_token();
                self.tracker
                    .spawn(self.clone().poke_loop(proxy.clone(), token.clone()));
                followed.insert(
                    key.clone(),
                    Followed {
                        uid: entry.uid.clone(),
                        settings,
                        proxy,
                        instances: HashMap::new(),
                        cancel: token,
                    },
                );
            }
            let Some(followed) = followed.get_mut(&key) else {
                continue;
            };
            let instances: Vec<Arc<Instance>> = entry
                .endpoints
                .iter()
                .map(|endpoint| {
                    followed
                        .instances
                        .get(&endpoint.id)
                        .filter(|i| i.address() == endpoint.address)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Instance::new(endpoint.id, endpoint.address)))
                })
                .collect();
            followed.instances = instances.iter().map(|i| (i.id, i.clone())).collect();
            followed.proxy.set_instances(&instances);
            followed.proxy.set_in_path(entry.in_path);
            followed
                .proxy
                .set_failures(entry.failed_starts, entry.permanent_failure.clone());
        }
        followed.retain(|key, f| {
            let keep = seen.contains(key);
            if !keep {
                f.cancel.cancel();
                f.proxy.close();
            }
            keep
        });
        let revisions = followed
            .iter()
            .map(|(key, f)| (key.clone(), f.proxy.clone()))
            .collect();
        drop(followed);
        let routes = table
            .routes
            .iter()
            .map(|r| ((r.namespace.clone(), r.service.clone()), r.clone()))
            .collect();
        self.gateway.set_table(RouteTable { routes, revisions });
        self.version.store(table.version, Ordering::Release);
        self.ready.store(true, Ordering::Release);
        self.applied.notify_waiters();
    }

    /// Tells the autoscaler at once when a request finds the revision with no instance.
    async fn poke_loop(self: Arc<Self>, proxy: Arc<RevisionProxy>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = proxy.wake.notified() => {}
            }
            let settings = proxy.settings();
            let poke = Poke {
                namespace: settings.namespace.clone(),
                revision: settings.revision.clone(),
                in_flight: proxy.stats.in_flight(),
            };
            if let Err(error) = self
                .wire
                .post("/v1/poke", &poke, Duration::from_secs(2))
                .await
            {
                tracing::warn!(revision = %poke.revision, %error, "Could not wake the autoscaler; it learns of the request from the next report.");
            }
        }
    }

    /// Reports every revision's numbers each [`REPORT_INTERVAL`].
    async fn report_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let revisions = lock(&self.followed)
                .values()
                .map(|f| {
                    let sample = f.proxy.stats.sample(now);
                    let settings = f.proxy.settings();
                    RevisionReport {
                        namespace: settings.namespace.clone(),
                        revision: settings.revision.clone(),
                        average_concurrency: sample.average_concurrency,
                        requests: sample.requests,
                        in_flight: sample.in_flight,
                        waiting: f.proxy.waiting() as u64,
                        cold_starts: f.proxy.cold_starts.count.load(Ordering::Relaxed) as u64,
                    }
                })
                .collect();
            let report = Report {
                reporter: self.config.reporter.clone(),
                revisions,
            };
            if let Err(error) = self
                .wire
                .post("/v1/stats", &report, Duration::from_secs(2))
                .await
            {
                tracing::debug!(%error, "Reporting to the autoscaler failed.");
            }
        }
    }

    /// The data path of a revision a gateway named, waiting a moment for a table that has it.
    async fn revision(&self, namespace: &str, revision: &str) -> Option<Arc<RevisionProxy>> {
        let deadline = Instant::now() + UNKNOWN_REVISION_WAIT;
        loop {
            let applied = self.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if let Some(proxy) = self.gateway.revision(namespace, revision) {
                return Some(proxy);
            }
            if tokio::time::timeout_at(deadline, applied).await.is_err() {
                return None;
            }
        }
    }
}

/// The activators a gateway sends held requests to.
struct Activators {
    forward: Forward,
    targets: Vec<Authority>,
    next: AtomicUsize,
}

impl Activators {
    /// Sends the request to an activator, naming its revision. Another activator is tried when
    /// one refuses the connection and the body was not read.
    async fn send(&self, proxy: &RevisionProxy, request: Request<Body>) -> Response<Body> {
        let settings = proxy.settings();
        let (mut parts, body) = request.into_parts();
        for (name, value) in [
            (NAMESPACE_HEADER, &settings.namespace),
            (REVISION_HEADER, &settings.revision),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                parts.headers.insert(name, value);
            }
        }
        let body = Untouched::new(body);
        let attempts = self.targets.len() * 2;
        let mut last = None;
        for _ in 0..attempts {
            let target =
                &self.targets[self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len()];
            let request = Request::from_parts(parts.clone(), Body::new(body.clone()));
            match tokio::time::timeout(settings.timeout, self.forward.send(target, request)).await {
                Ok(Ok(response)) => return response.map(Body::new),
                Ok(Err(error)) if error.is_connect() && body.untouched() => {
                    tracing::debug!(activator = %target, %error, "An activator refused the connection; trying another.");
                    last = Some(error);
                }
                Ok(Err(error)) => return error_response(&error.into()),
                Err(_) => return error_response(&tower::timeout::error::Elapsed::new().into()),
            }
        }
        refusal(
            StatusCode::BAD_GATEWAY,
            "no-activator",
            &format!(
                "no activator took the request for revision `{}`{}; is `kinetic activator` running at --activator?",
                settings.revision,
                last.map(|e| format!(" (last: {e})")).unwrap_or_default()
            ),
        )
    }
}

/// Headers only kinetic's own components may set; a client's are removed at the gateway.
fn strip_internal(request: &mut Request<Body>) {
    for name in [NAMESPACE_HEADER, REVISION_HEADER, PROXIED_HEADER] {
        request.headers_mut().remove(name);
    }
}

/// The gateway's router, following the autoscaler's table.
pub fn gateway_router(follower: Arc<Follower>) -> Router {
    Router::new().fallback(gateway).with_state(follower)
}

async fn gateway(
    State(follower): State<Arc<Follower>>,
    mut request: Request<Body>,
) -> Response<Body> {
    strip_internal(&mut request);
    let host = host_of(&request);
    let proxy = match follower.gateway.select(&host) {
        Ok(proxy) => proxy,
        Err(response) => return response,
    };
    if let Some(activators) = &follower.activators
        && (proxy.in_path() || proxy.ready() == 0)
    {
        return activators.send(&proxy, request).await;
    }
    match proxy.serve(request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

/// The activator's router: requests for the revision the gateway named.
pub fn activator_router(follower: Arc<Follower>) -> Router {
    Router::new().fallback(activator).with_state(follower)
}

async fn activator(
    State(follower): State<Arc<Follower>>,
    mut request: Request<Body>,
) -> Response<Body> {
    let named = |headers: &http::HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(namespace), Some(revision)) = (
        named(request.headers(), NAMESPACE_HEADER),
        named(request.headers(), REVISION_HEADER),
    ) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "no-revision",
            "the activator takes requests from kinetic's gateways, which name the revision in the Knative-Serving-Namespace and Knative-Serving-Revision headers; send requests to the gateway",
        );
    };
    request.headers_mut().remove(NAMESPACE_HEADER);
    request.headers_mut().remove(REVISION_HEADER);
    let Some(proxy) = follower.revision(&namespace, &revision).await else {
        let mut response = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            &format!(
                "revision `{namespace}/{revision}` is not served (yet); retry, or see `kinetic get revisions`"
            ),
        );
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    match proxy.serve(request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}
