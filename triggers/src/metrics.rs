//! Metrics of the dispatcher.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const DELIVERIES: &str = "kinetic_dispatcher_deliveries";
pub const RETRIES: &str = "kinetic_dispatcher_retries";
pub const DEAD_LETTERS: &str = "kinetic_dispatcher_dead_letters";
pub const DELIVERY_LATENCY: &str = "kinetic_dispatcher_delivery_latency_seconds";
pub const ATTEMPT_DURATION: &str = "kinetic_dispatcher_attempt_duration_seconds";
pub const BACKLOG: &str = "kinetic_dispatcher_backlog";
pub const CORRUPT_EVENTS: &str = "kinetic_dispatcher_corrupt_events";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub trigger: String,
    /// delivered, retry_scheduled, dead_lettered, dead_letter_sink_delivered, dead_letter_sink_failed
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub trigger: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BacklogLabels {
    pub trigger: String,
    /// `unread`: events after the cursor; `pending`: retrying, waiting in a lane or going to the
    /// dead-letter sink.
    pub state: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub retries: Family<TriggerLabels, Counter>,
    pub dead_letters: Family<TriggerLabels, Counter>,
    pub delivery_latency: Histogram,
    pub attempt_duration: Histogram,
    pub backlog: Family<BacklogLabels, Gauge>,
    pub corrupt_events: Counter,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            deliveries: Family::default(),
            retries: Family::default(),
            dead_letters: Family::default(),
            delivery_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 20)),
            attempt_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 20)),
            backlog: Family::default(),
            corrupt_events: Counter::default(),
        };
        registry.register(
            DELIVERIES,
            "Delivery outcomes by trigger",
            metrics.deliveries.clone(),
        );
        registry.register(
            RETRIES,
            "Retries scheduled by trigger",
            metrics.retries.clone(),
        );
        registry.register(
            DEAD_LETTERS,
            "Events dead-lettered by trigger",
            metrics.dead_letters.clone(),
        );
        registry.register(
            DELIVERY_LATENCY,
            "Time from acceptance by the broker to the subscriber's 2xx",
            metrics.delivery_latency.clone(),
        );
        registry.register(
            ATTEMPT_DURATION,
            "Duration of one delivery attempt",
            metrics.attempt_duration.clone(),
        );
        registry.register(
            BACKLOG,
            "Events not yet delivered, by trigger",
            metrics.backlog.clone(),
        );
        registry.register(
            CORRUPT_EVENTS,
            "Stored events that could not be read back",
            metrics.corrupt_events.clone(),
        );
        metrics
    }

    pub fn outcome(&self, trigger: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                trigger: trigger.to_owned(),
                outcome,
            })
            .inc();
    }
}
