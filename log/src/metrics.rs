//! Metrics of the group commit (named for the broker, whose ingress it serves).

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const COMMIT_BATCH_SIZE: &str = "kinetic_broker_commit_batch_size";
pub const COMMIT_DURATION: &str = "kinetic_broker_commit_duration_seconds";

/// How large and how long each group-commit transaction is.
#[derive(Clone)]
pub struct CommitMetrics {
    pub batch_size: Histogram,
    pub commit_duration: Histogram,
}

impl CommitMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            batch_size: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
            ]),
            commit_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        };
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
