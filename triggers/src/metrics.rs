//! Metrics of the dispatcher.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use kinetic_outbound::limit::Limits;

pub const DELIVERIES: &str = "kinetic_dispatcher_deliveries";
pub const RETRIES: &str = "kinetic_dispatcher_retries";
pub const DEAD_LETTERS: &str = "kinetic_dispatcher_dead_letters";
pub const DELIVERY_LATENCY: &str = "kinetic_dispatcher_delivery_latency_seconds";
pub const ATTEMPT_DURATION: &str = "kinetic_dispatcher_attempt_duration_seconds";
pub const BACKLOG: &str = "kinetic_dispatcher_backlog";
pub const OLDEST_UNDELIVERED: &str = "kinetic_dispatcher_oldest_undelivered_seconds";
pub const CORRUPT_EVENTS: &str = "kinetic_dispatcher_corrupt_events";
pub const SUBSCRIBER_LIMIT: &str = "kinetic_dispatcher_subscriber_concurrency_limit";
pub const SUBSCRIBER_IN_FLIGHT: &str = "kinetic_dispatcher_subscriber_in_flight";

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    /// `scheme://host:port` of a subscriber.
    pub origin: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub retries: Family<TriggerLabels, Counter>,
    pub dead_letters: Family<TriggerLabels, Counter>,
    pub delivery_latency: Histogram,
    pub attempt_duration: Histogram,
    pub backlog: Family<BacklogLabels, Gauge>,
    /// How long the oldest event not yet delivered has waited, by trigger (0: none waits).
    pub oldest_undelivered: Family<TriggerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub corrupt_events: Counter,
    /// The adaptive concurrency limits of outside subscribers (their sender's), read at each
    /// scrape.
    pub limits: Arc<Limits>,
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
            oldest_undelivered: Family::default(),
            corrupt_events: Counter::default(),
            limits: Arc::default(),
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
            OLDEST_UNDELIVERED,
            "Seconds the oldest event not yet delivered has waited, by trigger (0 when none)",
            metrics.oldest_undelivered.clone(),
        );
        registry.register(
            CORRUPT_EVENTS,
            "Stored events that could not be read back",
            metrics.corrupt_events.clone(),
        );
        registry.register_collector(Box::new(SubscriberLimits(metrics.limits.clone())));
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

/// Each outside subscriber's concurrency limit and deliveries in flight, as they are when scraped.
struct SubscriberLimits(Arc<Limits>);

impl std::fmt::Debug for SubscriberLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscriberLimits")
    }
}

impl Collector for SubscriberLimits {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let limit = Family::<OriginLabels, Gauge>::default();
        let in_flight = Family::<OriginLabels, Gauge>::default();
        for (origin, current, flying) in self.0.snapshot() {
            let labels = OriginLabels { origin };
            limit
                .get_or_create(&labels)
                .set(i64::try_from(current).unwrap_or(i64::MAX));
            in_flight
                .get_or_create(&labels)
                .set(i64::try_from(flying).unwrap_or(i64::MAX));
        }
        limit.encode(encoder.encode_descriptor(
            SUBSCRIBER_LIMIT,
            "Deliveries allowed in flight to an outside subscriber at once, learned from its answers",
            None,
            limit.metric_type(),
        )?)?;
        in_flight.encode(encoder.encode_descriptor(
            SUBSCRIBER_IN_FLIGHT,
            "Deliveries in flight to an outside subscriber",
            None,
            in_flight.metric_type(),
        )?)?;
        Ok(())
    }
}
