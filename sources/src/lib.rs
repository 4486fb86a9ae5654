//! Sources: where events come from. Each source kind turns something outside kinetic (an inbound
//! webhook, a schedule, an object store's notifications, Kafka records) into CloudEvents for its
//! `spec.sink`, and acknowledges its input only after the sink accepted the event.
//!
//! # Layout
//! - [`webhook`]: `WebhookSource`, signature verification (GitHub, Standard Webhooks, bearer) on the
//!   raw body, and the templates that name an event's type and id.
//! - [`ping`]: `PingSource`, its cron schedule and the once-per-tick rule across restarts.
//! - [`s3`]: `S3Source`: AWS S3, MinIO and Tencent COS notifications (direct or through SNS) and
//!   bucket listings as CloudEvents per the CloudEvents S3 adapter, filtered by the source's spec;
//!   the SQS reader and the bucket poller (`s3::poll`) with its listing state in the store.
//! - [`kafka`]: `KafkaSource`: a consumer per source, records mapped to CloudEvents as Knative
//!   maps them, offsets committed only once the sink accepted (in order, also when delivery is
//!   unordered).
//! - [`sink`]: handing an event to a sink until it is accepted.
//! - [`controller`]: runs the stored sources of every kind alike (a task per PingSource, per SQS
//!   or polling S3Source and per KafkaSource; an endpoint per WebhookSource and pushed S3Source at
//!   `POST /webhooks/{namespace}/{name}` and `POST /sources/{namespace}/{name}`), and keeps each
//!   source's status. Start reading at [`Sources`]. Each kind tells the controller how its
//!   sources run in a `kind` module of its own folder (`webhook/kind.rs`, `ping/kind.rs`, ...),
//!   listed in the controller's registry.
//! - [`clock`]: the time schedules read, which a test can set.
//!
//! This crate knows nothing about brokers or triggers: it hands events to a sink URL.

pub mod clock;
pub mod controller;
pub mod kafka;
pub mod metrics;
pub mod ping;
pub mod s3;
pub mod sink;
pub mod webhook;

pub use clock::Clock;
pub use controller::{Resolve, SourceStatus, Sources};
pub use sink::{Signer, Sink, Target};

/// Removes what a deleted source kept in the store (a PingSource's last tick, a polling
/// S3Source's listing), so that a source created again under the name starts afresh. Kinds that
/// keep nothing (WebhookSource; KafkaSource, whose offsets live in its consumer group) have nothing
/// to remove.
pub async fn forget(
    store: &dyn kinetic_store::Store,
    kind: &str,
    namespace: &str,
    name: &str,
) -> kinetic_store::Result<()> {
    if let Some(key) = controller::state_key(kind, namespace, name) {
        store.delete_checkpoints(&key).await?;
    }
    Ok(())
}
