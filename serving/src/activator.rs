//! The activator: the part of the data path that holds requests for a revision with no free capacity
//! (none of its instances ready, or all of them at containerConcurrency), wakes the autoscaler at
//! once when a request finds the revision at zero, and releases requests to instances as capacity
//! appears, choosing instances with capacity in mind:
//! containerConcurrency 0 → the less loaded of two random instances; 1–3 → the first instance with
//! a free slot; more → round robin over instances with a free slot.
//!
//! In `kinetic up` it is always in the path, in front of the per-instance queue-proxy pieces; the
//! autoscaler's target-burst-capacity decision only sets how many requests it may hold: up to the
//! activator's capacity (`--activator-capacity`, 1,000 by default) while it is "in the path", otherwise up to the
//! instances' own queues (10 × containerConcurrency each), as Knative's queue-proxies would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::metrics::{Metrics, RevisionLabels};
use crate::queue_proxy::breaker::{Breaker, QUEUE_DEPTH_PER_SLOT, Slot};
use crate::queue_proxy::stats::Stats;
use crate::queue_proxy::{self, Forward};
use crate::runtime::Instance;
use http::uri::Authority;

/// Requests one revision may hold while it has no capacity (Knative's activator capacity). Each
/// holds a connection and its request head; past this the caller gets 503 at once.
pub const DEFAULT_CAPACITY: usize = 1_000;

/// Why the activator gave up on a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    #[error(
        "revision `{revision}` had no instance free to take the request after {waited:?}; it may be failing to start (see `kinetic logs`)"
    )]
    Timeout { revision: String, waited: Duration },
    #[error(
        "revision `{revision}` already holds {limit} requests waiting for an instance, {}; retry later",
        if *activator {
            "the most one revision may hold (--activator-capacity); raise --activator-capacity, or the revision's max-scale (autoscaling.knative.dev/max-scale), if it should take more at once"
        } else {
            "the queue its instances may hold (10 per containerConcurrency slot); raise containerConcurrency or the revision's max-scale (autoscaling.knative.dev/max-scale) if it should take more at once"
        }
    )]
    QueueFull {
        revision: String,
        limit: usize,
        /// The activator's own capacity was the bound (not the instances' queues).
        activator: bool,
    },
    #[error("revision `{revision}` is no longer served")]
    Gone { revision: String },
    #[error(
        "revision `{revision}` cannot start an instance: {reason}; see `kinetic get revisions`"
    )]
    CannotStart { revision: String, reason: String },
}

impl ActivationError {
    /// A stable code for response bodies and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ActivationError::Timeout { .. } => "activation-timeout",
            ActivationError::QueueFull { .. } => "overloaded",
            ActivationError::Gone { .. } => "gone",
            ActivationError::CannotStart { .. } => "cannot-start",
        }
    }
}

/// Settings of one revision's data path.
#[derive(Debug, Clone)]
pub struct RevisionSettings {
    pub namespace: String,
    pub revision: String,
    /// The Service it belongs to (its Configuration has the same name), for Knative's labels.
    pub service: String,
    /// containerConcurrency; 0 = no limit.
    pub container_concurrency: usize,
    /// `timeoutSeconds`: the whole request, waiting included.
    pub timeout: Duration,
    /// How long a request waits for an instance before 503/504.
    pub activation_timeout: Duration,
    /// Requests held while the activator is in the path.
    pub capacity: usize,
    /// Marks forwarded requests with `K-Proxy-Request: activator`, so that the queue-proxy in
    /// front of the instance counts them apart (this data path reported them already).
    pub mark_proxied: bool,
}

/// The header an activator puts on the requests it forwards to queue-proxies (Knative's name).
pub const PROXIED_HEADER: &str = "k-proxy-request";

/// One ready instance with its breaker.
struct Backend {
    instance: Arc<Instance>,
    authority: Authority,
    breaker: Arc<Breaker>,
}

/// A request's place on an instance: the breaker slot and the instance's in-flight count, released
/// (and a waiting request woken) when dropped.
pub struct Lease {
    pub instance: Arc<Instance>,
    /// The request waited for an instance to start (no instance was ready when it arrived).
    pub cold_start: bool,
    authority: Authority,
    _slot: Slot,
    _in_flight: crate::runtime::InFlight,
    released: Arc<Notify>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.released.notify_one();
    }
}

/// Observations the autoscaler and metrics read.
#[derive(Debug, Default)]
pub struct ColdStarts {
    /// Requests that arrived at zero ready instances and the total time they waited for one.
    pub count: AtomicUsize,
    pub total_wait_micros: AtomicUsize,
}

/// The data path of one revision.
pub struct RevisionProxy {
    settings: RevisionSettings,
    pub stats: Arc<Stats>,
    backends: Mutex<Arc<Vec<Backend>>>,
    changed: Arc<Notify>,
    waiting: AtomicUsize,
    in_path: AtomicBool,
    closed: AtomicBool,
    /// How many starts of this revision's instances failed, and why the last one did when
    /// trying again cannot help until something changes (a missing image, a refused user).
    failures: Mutex<(u64, Option<String>)>,
    /// Notified when a request finds no ready instance: the autoscaler decides at once.
    pub wake: Arc<Notify>,
    round_robin: AtomicUsize,
    forward: Forward,
    pub cold_starts: ColdStarts,
    /// This revision's metric handles, looked up once rather than per request.
    observed: Observed,
}

struct Observed {
    cold_starts: prometheus_client::metrics::counter::Counter,
    cold_start_seconds: prometheus_client::metrics::histogram::Histogram,
    request_seconds: prometheus_client::metrics::histogram::Histogram,
    knative_latencies: prometheus_client::metrics::histogram::Histogram,
}

impl RevisionProxy {
    pub fn new(
        settings: RevisionSettings,
        forward: Forward,
        metrics: Metrics,
    ) -> Arc<RevisionProxy> {
        let labels = RevisionLabels {
            namespace: settings.namespace.clone(),
            revision: settings.revision.clone(),
        };
        let knative = crate::metrics::KnativeLabels {
            namespace_name: settings.namespace.clone(),
            service_name: settings.service.clone(),
            configuration_name: settings.service.clone(),
            revision_name: settings.revision.clone(),
        };
        Arc::new(RevisionProxy {
            settings,
            stats: Stats::new(Instant::now()),
            backends: Mutex::new(Arc::new(Vec::new())),
            changed: Arc::new(Notify::new()),
            waiting: AtomicUsize::new(0),
            in_path: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            failures: Mutex::new((0, None)),
            wake: Arc::new(Notify::new()),
            round_robin: AtomicUsize::new(0),
            forward,
            cold_starts: ColdStarts::default(),
            observed: Observed {
                cold_starts: metrics.cold_starts.get_or_create(&labels).clone(),
                cold_start_seconds: metrics.cold_start_seconds.get_or_create(&labels).clone(),
                request_seconds: metrics.request_seconds.get_or_create(&labels).clone(),
                knative_latencies: metrics
                    .knative_request_latencies
                    .get_or_create(&knative)
                    .clone(),
            },
        })
    }

    pub fn settings(&self) -> &RevisionSettings {
        &self.settings
    }

    /// Requests waiting for an instance now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Ready instances the activator sends requests to.
    pub fn ready(&self) -> usize {
        self.current().len()
    }

    /// Whether the activator is in the revision's path (the autoscaler's last decision).
    pub fn in_path(&self) -> bool {
        self.in_path.load(Ordering::Acquire)
    }

    /// Set from the autoscaler's target-burst-capacity decision.
    pub fn set_in_path(&self, in_path: bool) {
        self.in_path.store(in_path, Ordering::Release);
    }

    fn current(&self) -> Arc<Vec<Backend>> {
        self.backends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the set of ready instances, keeping the breakers of instances that stay.
    pub fn set_instances(&self, instances: &[Arc<Instance>]) {
        let mut backends = self
            .backends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next: Vec<Backend> = instances
            .iter()
            .map(|instance| {
                let kept = backends.iter().find(|b| Arc::ptr_eq(&b.instance, instance));
                Backend {
                    instance: instance.clone(),
                    authority: kept.map_or_else(
                        || queue_proxy::authority(instance.address()),
                        |b| b.authority.clone(),
                    ),
                    breaker: kept.map_or_else(
                        || Arc::new(Breaker::new(self.settings.container_concurrency)),
                        |b| b.breaker.clone(),
                    ),
                }
            })
            .collect();
        *backends = Arc::new(next);
        drop(backends);
        self.changed.notify_waiters();
    }

    /// Records the runtime's count of failed starts and, when the last failure cannot mend itself,
    /// why: a request waiting at zero when another start fails that way is refused at once
    /// (`CannotStart`), rather than at the activation timeout. Every request still asks for a
    /// start, so a revision that can start again (its image loaded) recovers.
    pub fn set_failures(&self, failed_starts: u64, permanent: Option<String>) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *failures != (failed_starts, permanent.clone()) {
            *failures = (failed_starts, permanent);
            drop(failures);
            self.changed.notify_waiters();
        }
    }

    fn failures(&self) -> (u64, Option<String>) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops serving: requests waiting now, and any arriving later, are refused (`Gone`).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.set_instances(&[]);
    }

    /// Serves one request: waits for capacity (bounded), then forwards it, all within `timeoutSeconds`.
    ///
    /// A request that did not reach the function is sent again, to another instance if one is
    /// ready, as long as the activation timeout allows: when the instance refused the connection
    /// (it died, or its address is stale), or its queue-proxy refused it while draining, and the
    /// request's body was never read. A request whose body was read, even in part, is never sent
    /// twice.
    pub async fn serve(&self, request: Request<Body>) -> Result<Response<Body>, tower::BoxError> {
        let span = kinetic_telemetry::root_span!(
            kinetic_telemetry::Parent::Headers(request.headers()),
            "gateway",
            otel.kind = "server",
            revision = %self.settings.revision,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let served = self.serve_traced(request).instrument(span.clone()).await;
        if !span.is_none() {
            match &served {
                Ok(response) => {
                    span.record(
                        "http.response.status_code",
                        i64::from(response.status().as_u16()),
                    );
                }
                Err(_) => {
                    span.record("otel.status_code", "ERROR");
                }
            }
        }
        served
    }

    async fn serve_traced(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Body>, tower::BoxError> {
        let in_flight = self.stats.begin();
        let started = Instant::now();
        let deadline = started + self.settings.timeout;
        let activation_deadline =
            started + self.settings.activation_timeout.min(self.settings.timeout);
        let (mut parts, body) = request.into_parts();
        if self.settings.mark_proxied {
            parts
                .headers
                .insert(PROXIED_HEADER, http::HeaderValue::from_static("activator"));
        }
        let body = Untouched::new(body);
        let mut attempt: u32 = 0;
        // Instances that did not take this request: the next attempt goes elsewhere if it can.
        let mut failed: Vec<u64> = Vec::new();
        let (lease, response) = loop {
            // Waiting for an instance is a span of its own, with a `cold start` span inside
            // while no instance was ready.
            let wait = kinetic_telemetry::span!(
                "activator wait",
                otel.kind = "internal",
                cold_start = tracing::field::Empty,
            );
            let lease = tokio::time::timeout_at(
                activation_deadline,
                self.acquire_avoiding(started, &failed),
            )
            .instrument(wait)
            .await
            .map_err(|_| ActivationError::Timeout {
                revision: self.settings.revision.clone(),
                waited: started.elapsed(),
            })??;
            let function = kinetic_telemetry::span!(
                "function",
                otel.kind = "client",
                instance = lease.instance.id,
                attempt,
            );
            let mut request = Request::from_parts(parts.clone(), Body::new(body.clone()));
            function.in_scope(|| kinetic_telemetry::inject(request.headers_mut()));
            let sent =
                tokio::time::timeout_at(deadline, self.forward.send(&lease.authority, request))
                    .instrument(function)
                    .await
                    .map_err(|_| tower::timeout::error::Elapsed::new())?;
            let again = match &sent {
                Err(error) => error.is_connect(),
                Ok(response) => refused_unread(response),
            };
            let retry = again
                && body.untouched()
                && attempt < MAX_ATTEMPTS
                && Instant::now() + retry_pause(attempt) < activation_deadline;
            if !retry {
                break (lease, sent?);
            }
            tracing::debug!(
                revision = %self.settings.revision,
                instance = lease.instance.id,
                attempt,
                "The instance did not take the request; sending it again."
            );
            failed.push(lease.instance.id);
            drop(lease);
            drop(sent);
            tokio::time::sleep(retry_pause(attempt)).await;
            attempt += 1;
        };
        let elapsed = started.elapsed().as_secs_f64();
        self.observed.request_seconds.observe(elapsed);
        self.observed.knative_latencies.observe(elapsed * 1000.0);
        // For the console's timeline: the instance that served the event this request carried.
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if let (Some(id), Some(source)) = (header("ce-id"), header("ce-source")) {
            kinetic_telemetry::journal::served(
                id,
                source,
                &self.settings.revision,
                lease.instance.id,
                lease.cold_start,
                kinetic_telemetry::journal::now(),
            );
        }
        // The request occupies its slot until the function has sent the whole body.
        let (parts, body) = response.into_parts();
        let body = Body::new(Held {
            body,
            _held: (lease, in_flight),
        });
        Ok(Response::from_parts(parts, body))
    }

    /// Waits for a free slot on a ready instance, in arrival order as far as wake-ups allow.
    ///
    /// Cancellation safe: a dropped wait leaves the queue.
    pub async fn acquire(&self, started: Instant) -> Result<Lease, ActivationError> {
        self.acquire_avoiding(started, &[]).await
    }

    /// [`RevisionProxy::acquire`], never on the instances in `avoid` (they did not take this
    /// request before): with only those ready, it waits for another.
    async fn acquire_avoiding(
        &self,
        started: Instant,
        avoid: &[u64],
    ) -> Result<Lease, ActivationError> {
        let mut queued: Option<Queued<'_>> = None;
        let mut was_cold = false;
        let mut _cold_start = tracing::Span::none();
        // Failed starts before this request arrived are not its answer.
        let failed_before = self.failures().0;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return Err(ActivationError::Gone {
                    revision: self.settings.revision.clone(),
                });
            }
            let backends = self.current();
            if backends.is_empty() {
                if let (failed, Some(reason)) = self.failures()
                    && failed > failed_before
                {
                    return Err(ActivationError::CannotStart {
                        revision: self.settings.revision.clone(),
                        reason,
                    });
                }
                if !was_cold {
                    // Ends when this returns: an instance took the request, or none could.
                    _cold_start = kinetic_telemetry::span!(
                        "cold start",
                        otel.kind = "internal",
                        revision = %self.settings.revision,
                    );
                }
                was_cold = true;
                self.wake.notify_one();
            } else if let Some(mut lease) = self.pick(&backends, avoid) {
                lease.cold_start = was_cold;
                if was_cold {
                    tracing::Span::current().record("cold_start", true);
                    let waited = started.elapsed();
                    self.observed.cold_starts.inc();
                    self.observed
                        .cold_start_seconds
                        .observe(waited.as_secs_f64());
                    self.cold_starts.count.fetch_add(1, Ordering::Relaxed);
                    let micros = usize::try_from(waited.as_micros()).unwrap_or(usize::MAX);
                    self.cold_starts
                        .total_wait_micros
                        .fetch_add(micros, Ordering::Relaxed);
                }
                return Ok(lease);
            }
            if queued.is_none() {
                let position = self.waiting.fetch_add(1, Ordering::AcqRel);
                queued = Some(Queued(&self.waiting));
                let (limit, activator) = self.queue_limit(backends.len());
                if position >= limit {
                    return Err(ActivationError::QueueFull {
                        revision: self.settings.revision.clone(),
                        limit,
                        activator,
                    });
                }
            }
            changed.await;
        }
    }

    /// How many requests may wait, and whether that is the activator's own capacity.
    fn queue_limit(&self, ready: usize) -> (usize, bool) {
        let cc = self.settings.container_concurrency;
        if ready == 0 || cc == 0 || self.in_path.load(Ordering::Acquire) {
            (self.settings.capacity, true)
        } else {
            (ready * cc * QUEUE_DEPTH_PER_SLOT, false)
        }
    }

    fn pick(&self, backends: &[Backend], avoid: &[u64]) -> Option<Lease> {
        // An instance may have started draining since the list was taken: `begin` refuses then.
        let lease = |backend: &Backend| {
            if avoid.contains(&backend.instance.id) {
                return None;
            }
            let slot = backend.breaker.try_acquire()?;
            let in_flight = backend.instance.begin()?;
            Some(Lease {
                cold_start: false,
                instance: backend.instance.clone(),
                authority: backend.authority.clone(),
                _slot: slot,
                _in_flight: in_flight,
                released: self.changed.clone(),
            })
        };
        let n = backends.len();
        match self.settings.container_concurrency {
            0 => {
                if n > 1 {
                    let mut rng = rand::rng();
                    let a = rng.random_range(0..n);
                    let b = (a + rng.random_range(1..n)) % n;
                    let (x, y) = (&backends[a], &backends[b]);
                    let (first, second) = if y.instance.in_flight() < x.instance.in_flight() {
                        (y, x)
                    } else {
                        (x, y)
                    };
                    if let Some(lease) = lease(first).or_else(|| lease(second)) {
                        return Some(lease);
                    }
                }
                backends.iter().find_map(lease)
            }
            1..=3 => backends.iter().find_map(lease),
            _ => {
                let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
                (0..n).find_map(|i| lease(&backends[(start + i) % n]))
            }
        }
    }
}

/// A response body that keeps something alive (the instance's slot, the in-flight count) until it
/// has been sent or dropped.
struct Held<B, T> {
    body: B,
    _held: T,
}

impl<B: http_body::Body + Unpin, T: Unpin> http_body::Body for Held<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Attempts at one request beyond the first, when it never reached the function.
const MAX_ATTEMPTS: u32 = 20;

/// Pause before the next attempt: long enough for a dead instance to leave the ready set.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(5 << attempt.min(6))
}

/// Whether the answer is a queue-proxy's refusal of a request it never forwarded: it was
/// draining. The `Kinetic-Refusal` header names the reason of kinetic's refusals.
fn refused_unread(response: &Response<hyper::body::Incoming>) -> bool {
    response.status() == http::StatusCode::SERVICE_UNAVAILABLE
        && response
            .headers()
            .get(crate::refusal::REASON_HEADER)
            .is_some_and(|reason| reason == "draining")
}

/// A request body that can be sent again as long as nobody has read from it: every clone shares
/// one slot, and the first clone polled takes the body out of it.
#[derive(Clone)]
pub(crate) struct Untouched {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Arc<Mutex<Option<Body>>>,
    end_stream: bool,
    hint: http_body::SizeHint,
}

impl Untouched {
    pub(crate) fn new(body: Body) -> Self {
        use http_body::Body as _;
        Self {
            end_stream: body.is_end_stream(),
            hint: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(body))),
            taken: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether no attempt has read from the body yet.
    pub(crate) fn untouched(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

impl http_body::Body for Untouched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if taken.is_none() {
            *taken = self
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
        match taken.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end_stream
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.hint
    }
}

struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn proxy(cc: usize, capacity: usize) -> Arc<RevisionProxy> {
        RevisionProxy::new(
            RevisionSettings {
                namespace: "ns".into(),
                revision: "fn-00001".into(),
                service: "fn".into(),
                container_concurrency: cc,
                timeout: Duration::from_secs(300),
                activation_timeout: Duration::from_secs(10),
                capacity,
                mark_proxied: false,
            },
            Forward::new(),
            Metrics::new(&mut Registry::default()),
        )
    }

    fn instances(n: u64) -> Vec<Arc<Instance>> {
        (1..=n)
            .map(|id| {
                let port = u16::try_from(9000 + id).unwrap();
                Arc::new(Instance::new(id, ([127, 0, 0, 1], port).into()))
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn holds_requests_at_zero_and_wakes_the_autoscaler() {
        let proxy = proxy(0, 100);
        let waiting = {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.acquire(Instant::now()).await.map(|l| l.instance.id) })
        };
        // The autoscaler is told at once, not at its next tick.
        tokio::time::timeout(Duration::from_millis(1), proxy.wake.notified())
            .await
            .expect("woken");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(proxy.waiting(), 1);
        proxy.set_instances(&instances(1));
        assert_eq!(waiting.await.unwrap(), Ok(1));
        assert_eq!(proxy.cold_starts.count.load(Ordering::Relaxed), 1);
        assert_eq!(proxy.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn container_concurrency_one_fills_instances_in_order_then_queues() {
        let proxy = proxy(1, 100);
        let ready = instances(2);
        proxy.set_instances(&ready);
        let first = proxy.acquire(Instant::now()).await.unwrap();
        let second = proxy.acquire(Instant::now()).await.unwrap();
        assert_eq!((first.instance.id, second.instance.id), (1, 2));
        let third = {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.acquire(Instant::now()).await.map(|l| l.instance.id) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(proxy.waiting(), 1);
        assert!(!third.is_finished());
        drop(second);
        assert_eq!(third.await.unwrap(), Ok(2));
        assert_eq!(ready[0].in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_past_the_bound() {
        // At zero the activator's capacity bounds the queue.
        let cold = proxy(1, 2);
        let held: Vec<_> = (0..2)
            .map(|_| {
                let proxy = cold.clone();
                tokio::spawn(async move { proxy.acquire(Instant::now()).await.is_ok() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let refused = cold.acquire(Instant::now()).await.err().unwrap();
        assert!(
            matches!(
                refused,
                ActivationError::QueueFull {
                    limit: 2,
                    activator: true,
                    ..
                }
            ),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("--activator-capacity"),
            "{refused}"
        );
        cold.close();
        for task in held {
            task.abort();
        }
        // Out of the path (burst capacity left), the instances' own queues bound it: 10 × CC each.
        let warm = proxy(1, 10_000);
        warm.set_instances(&instances(1));
        warm.set_in_path(false);
        let _busy = warm.acquire(Instant::now()).await.unwrap();
        let queued: Vec<_> = (0..10)
            .map(|_| {
                let proxy = warm.clone();
                tokio::spawn(async move { proxy.acquire(Instant::now()).await.is_ok() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let refused = warm.acquire(Instant::now()).await.err().unwrap();
        assert!(
            matches!(
                refused,
                ActivationError::QueueFull {
                    limit: 10,
                    activator: false,
                    ..
                }
            ),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("containerConcurrency"),
            "{refused}"
        );
        for task in queued {
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_revision_refuses_waiting_requests() {
        let proxy = proxy(0, 100);
        let waiting = {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.acquire(Instant::now()).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        proxy.close();
        let refused = waiting.await.unwrap().unwrap_err();
        assert_eq!(refused.reason(), "gone");
        assert!(proxy.acquire(Instant::now()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn draining_instances_take_no_new_requests() {
        let proxy = proxy(0, 100);
        let ready = instances(2);
        proxy.set_instances(&ready);
        ready[0].drain();
        for _ in 0..20 {
            let lease = proxy.acquire(Instant::now()).await.unwrap();
            assert_eq!(lease.instance.id, 2);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_activation_timeout() {
        let proxy = proxy(0, 100);
        let request = Request::new(Body::empty());
        let error = proxy.serve(request).await.unwrap_err();
        let activation = error
            .downcast_ref::<ActivationError>()
            .expect("an activation error");
        assert!(
            matches!(activation, ActivationError::Timeout { .. }),
            "{activation}"
        );
        assert_eq!(proxy.waiting(), 0);
        assert_eq!(proxy.stats.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_that_cannot_succeed_refuses_the_waiting_request_at_once() {
        let proxy = proxy(0, 100);
        // A failure from before the request is not its answer: it still waits and asks for a
        // start.
        proxy.set_failures(1, Some("image `x` is not on this machine".into()));
        let waiting = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.acquire(Instant::now()).await }
        });
        tokio::time::timeout(Duration::from_secs(1), proxy.wake.notified())
            .await
            .expect("the request asked for a start");
        assert!(!waiting.is_finished());
        // The start it asked for fails the same way: refused now, not at the activation timeout.
        proxy.set_failures(2, Some("image `x` is not on this machine".into()));
        let error = waiting.await.unwrap().err().expect("refused");
        assert_eq!(error.reason(), "cannot-start");
        assert!(error.to_string().contains("not on this machine"), "{error}");
        assert_eq!(proxy.waiting(), 0);
        // A failure that may mend itself (a crash) keeps requests waiting.
        proxy.set_failures(3, None);
        let waiting = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.acquire(Instant::now()).await }
        });
        tokio::task::yield_now().await;
        proxy.set_failures(4, None);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        proxy.set_instances(&instances(1));
        assert!(waiting.await.unwrap().is_ok());
    }

    /// An instance at `address` answering every request with its body, counting them.
    async fn echo() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let router = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                body
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (address, served)
    }

    /// A loopback address nothing listens on.
    fn closed() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn post(body: &'static str) -> Request<Body> {
        Request::post("/")
            .header(http::header::HOST, "fn.ns.example")
            .body(Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_an_instance_never_took_goes_to_another() {
        let (live, served) = echo().await;
        // containerConcurrency 1 fills instances in order: the dead one is tried first.
        let proxy = proxy(1, 100);
        proxy.set_instances(&[
            Arc::new(Instance::new(1, closed())),
            Arc::new(Instance::new(2, live)),
        ]);
        let response = proxy.serve(post("the body")).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"the body", "the body arrives whole");
        assert_eq!(served.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_request_whose_body_was_read_is_never_sent_twice() {
        let (live, served) = echo().await;
        // An instance that reads the request and dies without answering.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reader = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = vec![0; 4096];
                let mut read = 0;
                while !String::from_utf8_lossy(&buffer[..read]).contains("the body") {
                    match stream.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
                drop(stream);
            }
        });
        let proxy = proxy(1, 100);
        proxy.set_instances(&[
            Arc::new(Instance::new(1, reader)),
            Arc::new(Instance::new(2, live)),
        ]);
        assert!(proxy.serve(post("the body")).await.is_err());
        assert_eq!(served.load(Ordering::Relaxed), 0, "never sent again");
    }

    #[tokio::test]
    async fn a_draining_refusal_is_sent_elsewhere_only_when_the_body_was_not_read() {
        let (live, served) = echo().await;
        // A queue-proxy that is draining: it refuses every request without forwarding it.
        let router = axum::Router::new().fallback(|| async {
            crate::refusal::refusal(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "shutting down",
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let draining = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let proxy = proxy(1, 100);
        proxy.set_instances(&[
            Arc::new(Instance::new(1, draining)),
            Arc::new(Instance::new(2, live)),
        ]);
        // No body: nothing of the request was consumed, it goes to the other instance.
        let get = Request::get("/").body(Body::empty()).unwrap();
        assert_eq!(proxy.serve(get).await.unwrap().status(), 200);
        assert_eq!(served.load(Ordering::Relaxed), 1);
        // A body already sent to the draining instance is not sent again: the refusal stands.
        let refused = proxy.serve(post("the body")).await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(served.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_concurrency_prefers_the_less_loaded_instance() {
        let proxy = proxy(0, 100);
        let ready = instances(2);
        proxy.set_instances(&ready);
        // Load instance 1 heavily; two random choices of two instances always include both.
        let _held: Vec<_> = (0..50).filter_map(|_| ready[0].begin()).collect();
        for _ in 0..20 {
            let lease = proxy.acquire(Instant::now()).await.unwrap();
            assert_eq!(lease.instance.id, 2);
        }
    }
}
