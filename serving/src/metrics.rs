//! Serving metrics per revision, with Prometheus names. Knative has no cold-start metric
//! (serving#13459); kinetic counts cold starts and how long requests waited through them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::queue_proxy::stats::Sample;

pub const DESIRED_INSTANCES: &str = "kinetic_serving_desired_instances";
pub const READY_INSTANCES: &str = "kinetic_serving_ready_instances";
pub const PANIC_MODE: &str = "kinetic_serving_panic_mode";
pub const REQUESTS: &str = "kinetic_serving_requests";
pub const CONCURRENCY: &str = "kinetic_serving_average_concurrency";
pub const QUEUE_DEPTH: &str = "kinetic_serving_queue_depth";
pub const COLD_STARTS: &str = "kinetic_serving_cold_starts";
pub const COLD_START_SECONDS: &str = "kinetic_serving_cold_start_seconds";
pub const REQUEST_SECONDS: &str = "kinetic_serving_request_duration_seconds";
/// Knative's name (its queue-proxy's and activator's `request_latencies`, exported as
/// `revision_request_latencies`), in Knative's unit, milliseconds, and with its labels, so that
/// dashboards made for Knative read it.
pub const KNATIVE_REQUEST_LATENCIES: &str = "revision_request_latencies";

/// Knative's labels of a revision's request metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KnativeLabels {
    pub namespace_name: String,
    pub service_name: String,
    pub configuration_name: String,
    pub revision_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RevisionLabels {
    pub namespace: String,
    pub revision: String,
}

/// Handles to every serving metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    desired: Family<RevisionLabels, Gauge>,
    ready: Family<RevisionLabels, Gauge>,
    panic: Family<RevisionLabels, Gauge>,
    requests: Family<RevisionLabels, Counter>,
    concurrency: Family<RevisionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    queue_depth: Family<RevisionLabels, Gauge>,
    pub cold_starts: Family<RevisionLabels, Counter>,
    pub cold_start_seconds: Family<RevisionLabels, Histogram>,
    pub request_seconds: Family<RevisionLabels, Histogram>,
    pub knative_request_latencies: Family<KnativeLabels, Histogram>,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            desired: Family::default(),
            ready: Family::default(),
            panic: Family::default(),
            requests: Family::default(),
            concurrency: Family::default(),
            queue_depth: Family::default(),
            cold_starts: Family::default(),
            cold_start_seconds: Family::new_with_constructor(latency_buckets),
            request_seconds: Family::new_with_constructor(latency_buckets),
            knative_request_latencies: Family::new_with_constructor(|| {
                Histogram::new([
                    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                    10000.0, 30000.0,
                ])
            }),
        };
        registry.register(
            DESIRED_INSTANCES,
            "Instances the autoscaler wants",
            metrics.desired.clone(),
        );
        registry.register(
            READY_INSTANCES,
            "Instances ready to take requests",
            metrics.ready.clone(),
        );
        registry.register(
            PANIC_MODE,
            "1 while the autoscaler is in panic mode",
            metrics.panic.clone(),
        );
        registry.register(
            REQUESTS,
            "Requests that reached the revision",
            metrics.requests.clone(),
        );
        registry.register(
            CONCURRENCY,
            "Requests in flight, averaged over the last second",
            metrics.concurrency.clone(),
        );
        registry.register(
            QUEUE_DEPTH,
            "Requests waiting for an instance",
            metrics.queue_depth.clone(),
        );
        registry.register(
            COLD_STARTS,
            "Requests that arrived with no instance ready",
            metrics.cold_starts.clone(),
        );
        registry.register(
            COLD_START_SECONDS,
            "How long requests that arrived at zero waited for an instance",
            metrics.cold_start_seconds.clone(),
        );
        registry.register(
            REQUEST_SECONDS,
            "Time from the gateway receiving a request to the function's response headers",
            metrics.request_seconds.clone(),
        );
        registry.register(
            KNATIVE_REQUEST_LATENCIES,
            "Knative's name for the same time, in milliseconds: gateway or activator to the function's response headers",
            metrics.knative_request_latencies.clone(),
        );
        metrics
    }

    pub fn ready(&self, labels: &RevisionLabels, ready: usize) {
        self.ready
            .get_or_create(labels)
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
    }

    pub fn decided(&self, labels: &RevisionLabels, desired: u32, panic: bool) {
        self.desired.get_or_create(labels).set(i64::from(desired));
        self.panic.get_or_create(labels).set(i64::from(panic));
    }

    pub fn observe(&self, labels: &RevisionLabels, sample: &Sample, waiting: usize) {
        self.requests.get_or_create(labels).inc_by(sample.requests);
        self.concurrency
            .get_or_create(labels)
            .set(sample.average_concurrency);
        self.queue_depth
            .get_or_create(labels)
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }
}
