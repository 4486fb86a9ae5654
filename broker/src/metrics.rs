//! Metrics of the ingress.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub const EVENTS_ACCEPTED: &str = "kinetic_broker_events_accepted";
pub const EVENTS_REJECTED: &str = "kinetic_broker_events_rejected";
pub const EVENTS_DUPLICATE: &str = "kinetic_broker_events_duplicate";
pub const COMMIT_BATCH_SIZE: &str = "kinetic_broker_commit_batch_size";
pub const COMMIT_DURATION: &str = "kinetic_broker_commit_duration_seconds";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    pub broker: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub accepted: Family<BrokerLabels, Counter>,
    pub duplicate: Family<BrokerLabels, Counter>,
    pub rejected: Family<RejectLabels, Counter>,
    pub batch_size: Histogram,
    pub commit_duration: Histogram,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            accepted: Family::default(),
            duplicate: Family::default(),
            rejected: Family::default(),
            batch_size: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
            ]),
            commit_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
        };
        registry.register(
            EVENTS_ACCEPTED,
            "Events committed to a broker's log",
            metrics.accepted.clone(),
        );
        registry.register(
            EVENTS_DUPLICATE,
            "Events acknowledged as duplicates within the dedupe window",
            metrics.duplicate.clone(),
        );
        registry.register(
            EVENTS_REJECTED,
            "Requests refused, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            COMMIT_BATCH_SIZE,
            "Events per group-commit transaction",
            metrics.batch_size.clone(),
        );
        registry.register(
            COMMIT_DURATION,
            "Duration of one group-commit transaction",
            metrics.commit_duration.clone(),
        );
        metrics
    }
}
