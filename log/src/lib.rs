//! The event log: where a broker class keeps accepted events, below both the broker's ingress
//! (`kinetic-broker`) and the dispatcher (`kinetic-triggers`), which never call each other.
//!
//! - [`Log`]: appends accepted events durably: the store's event log for the store-backed classes
//!   ([`StoreLog`]), a Kafka topic per broker for the Kafka class ([`kafka::KafkaLog`]).
//! - [`committer`]: the group commit the ingress and the dispatcher's replies append through, and
//!   the [`committer::Feed`] that hands what each commit stored to the in-process dispatcher.
//! - [`metrics`]: the group commit's batch sizes and durations.

pub mod committer;
pub mod kafka;
pub mod metrics;

pub use committer::{CommitError, Committer, Feed, Stored};
pub use metrics::CommitMetrics;

use std::sync::Arc;

use async_trait::async_trait;
use kinetic_store::{Appended, Millis, NewEvent, Store};

/// Why an append failed. Nothing of a failed append counts as accepted: a retried event is new
/// unless part of it was durably accepted, and then it is a duplicate (never lost, never twice).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the store refused the write: {0}")]
    Store(#[from] kinetic_store::Error),
    #[error("Kafka did not acknowledge the event: {0}")]
    Kafka(String),
    #[error("no Kafka cluster is configured for the Kafka broker class")]
    KafkaNotConfigured,
    #[error("{0}")]
    KafkaConfig(String),
    /// A group commit this append went through failed or stopped.
    #[error("the group commit failed: {0}")]
    Commit(String),
}

impl LogError {
    /// The log as a whole failed (unreachable store, no cluster), so every append would fail
    /// alike. Otherwise the failure may be caused by one of the events appended, and appending
    /// the others without it may succeed.
    pub fn is_outage(&self) -> bool {
        match self {
            LogError::Store(error) => error.is_connection_lost(),
            LogError::KafkaNotConfigured | LogError::KafkaConfig(_) | LogError::Commit(_) => true,
            LogError::Kafka(_) => false,
        }
    }
}

/// Appends accepted events durably.
#[async_trait]
pub trait Log: Send + Sync {
    /// Appends `events`, one outcome per input in order. Keys (broker, source, id) accepted within
    /// the dedupe window (after `dedupe_since`) are `Duplicate`.
    async fn append(
        &self,
        events: &[NewEvent],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<Appended>, LogError>;
}

/// The store's event log.
pub struct StoreLog(pub Arc<dyn Store>);

#[async_trait]
impl Log for StoreLog {
    async fn append(
        &self,
        events: &[NewEvent],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<Appended>, LogError> {
        Ok(self.0.append(events, now, dedupe_since).await?)
    }
}
