//! Metrics of the ingress (the group commit's are `kinetic_log::metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub const EVENTS_ACCEPTED: &str = "kinetic_broker_events_accepted";
pub const EVENTS_REJECTED: &str = "kinetic_broker_events_rejected";
pub const EVENTS_DUPLICATE: &str = "kinetic_broker_events_duplicate";

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
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            accepted: Family::default(),
            duplicate: Family::default(),
            rejected: Family::default(),
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
        metrics
    }
}
