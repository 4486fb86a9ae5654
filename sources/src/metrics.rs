//! Source metrics with Prometheus names: events handed to sinks, sink failures, lag (from when
//! the input happened, a tick's time, a webhook's arrival or a Kafka record's timestamp, to the
//! sink's acceptance), and each KafkaSource partition's consumer lag in records.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub const EVENTS: &str = "kinetic_source_events";
pub const SINK_FAILURES: &str = "kinetic_source_sink_failures";
pub const LAG_SECONDS: &str = "kinetic_source_lag_seconds";
pub const KAFKA_CONSUMER_LAG: &str = "kinetic_source_kafka_consumer_lag";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// One partition of a KafkaSource's topics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PartitionLabels {
    pub namespace: String,
    pub name: String,
    pub topic: String,
    pub partition: String,
}

/// Handles to every source metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub events: Family<SourceLabels, Counter>,
    pub sink_failures: Family<SourceLabels, Counter>,
    pub lag: Family<SourceLabels, Histogram>,
    pub kafka_lag: Family<PartitionLabels, Gauge>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            events: Family::default(),
            sink_failures: Family::default(),
            lag: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0])
            }),
            kafka_lag: Family::default(),
        };
        registry.register(
            EVENTS,
            "Events a source's sink accepted",
            metrics.events.clone(),
        );
        registry.register(
            SINK_FAILURES,
            "Attempts to hand an event to a source's sink that failed",
            metrics.sink_failures.clone(),
        );
        registry.register(
            LAG_SECONDS,
            "From a source's input (a tick's time, a webhook's arrival, a Kafka record's timestamp) to the sink accepting the event",
            metrics.lag.clone(),
        );
        registry.register(
            KAFKA_CONSUMER_LAG,
            "Records of a KafkaSource's partition not yet delivered: the partition's end minus the offset stored for commit (librdkafka's statistics, every 5 s)",
            metrics.kafka_lag.clone(),
        );
        metrics
    }
}
