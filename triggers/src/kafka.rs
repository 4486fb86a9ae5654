//! Triggers of Kafka-class brokers: one consumer group per trigger reads the broker's topic and
//! makes the first attempts, exactly as a cursor worker does for the store's log
//! ([`crate::cursor::process`]: filters, ordered lanes, retries and dead letters recorded in the
//! store, where the [`crate::retry`] worker takes them over).
//!
//! A batch's offsets are stored only after its deliveries, retry rows and dead letters are
//! recorded; librdkafka commits stored offsets every half second, on a rebalance and on close. A
//! crash re-reads at most what was not committed: at-least-once, re-deliveries bounded by the
//! batches in flight. Several dispatcher processes share a trigger's partitions through the group.
//!
//! A trigger sees events accepted from when it was bound to its broker on: its creation, or the
//! moment a trigger moved from another broker was first consumed here (kept as a checkpoint, so a
//! restart does not move it). Older records (by their timestamp, the time the ingress produced them)
//! are skipped, so a new trigger on an old topic starts where a store-backed trigger would, without
//! racing the consumer group's first join.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kinetic_api::eventing::BrokerClass;
use kinetic_kafka::rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use kinetic_kafka::rdkafka::message::Message as _;
use kinetic_kafka::rdkafka::{Offset, TopicPartitionList};
use kinetic_log::kafka::KafkaLog;
use kinetic_store::{Millis, StoredEvent, TriggerRef};
use tokio_util::sync::CancellationToken;

use crate::cursor::{First, process};
use crate::dispatcher::Context;
use crate::log_cache::Logged;

/// How long a batch waits for more records after its first.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// Offsets count within a partition below this; see [`seq_of`].
const OFFSET_BITS: u32 = 40;

/// The consumer group of a trigger: Knative's name, with the trigger's uid so a trigger deleted and
/// created again starts afresh instead of inheriting its predecessor's offsets.
pub fn group_of(trigger: &TriggerRef) -> String {
    format!(
        "knative-trigger-{}-{}-{}",
        trigger.namespace, trigger.name, trigger.uid
    )
}

/// A record's position as an event sequence number (for delivery rows and dead letters): the
/// partition in the high bits, the offset in the low ones, so order within a partition is kept.
pub fn seq_of(partition: i32, offset: i64) -> i64 {
    (i64::from(partition) << OFFSET_BITS) | (offset & ((1 << OFFSET_BITS) - 1))
}

/// Runs one consumer per Kafka-class trigger until `cancel`: starts consumers for new triggers,
/// stops those of deleted triggers (or triggers moved to another broker).
pub async fn run(context: Arc<Context>, cancel: CancellationToken) {
    struct Running {
        broker: String,
        token: CancellationToken,
        handle: tokio::task::JoinHandle<()>,
    }
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        // A disabled trigger's consumer stops (committing what it finished) and is not started
        // again until the trigger is enabled: its records wait in the topic.
        let plans: Vec<_> = context
            .plans
            .all()
            .into_iter()
            .filter(|plan| plan.class == BrokerClass::Kafka && !context.is_disabled(plan))
            .collect();
        running.retain(|uid, consumer| {
            let keep = !consumer.handle.is_finished()
                && plans
                    .iter()
                    .any(|p| p.trigger.uid == *uid && p.trigger.broker == consumer.broker);
            if !keep {
                consumer.token.cancel();
            }
            keep
        });
        for plan in &plans {
            let uid = &plan.trigger.uid;
            if running.contains_key(uid) {
                continue;
            }
            let Some(log) = context.kafka.clone() else {
                if reported.insert(uid.clone()) {
                    tracing::warn!(trigger = %plan.label, broker = %plan.trigger.broker, "Trigger of a Kafka-class broker is not ready: this kinetic runs without a Kafka cluster (start it with --kafka-bootstrap-servers).");
                }
                continue;
            };
            let token = cancel.child_token();
            let bound_since = if plan.generation == 1 {
                plan.created_at
            } else {
                chrono::Utc::now().timestamp_millis()
            };
            let handle = tokio::spawn(consume(
                context.clone(),
                log,
                plan.trigger.clone(),
                bound_since,
                token.clone(),
            ));
            running.insert(
                uid.clone(),
                Running {
                    broker: plan.trigger.broker.clone(),
                    token,
                    handle,
                },
            );
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(context.config.plan_interval) => {}
        }
    }
    for consumer in running.values() {
        consumer.token.cancel();
    }
    for (_, consumer) in running {
        let _ = consumer.handle.await;
    }
}

/// A record read from the topic, owned.
struct Record {
    partition: i32,
    offset: i64,
    timestamp: Option<Millis>,
    payload: Vec<u8>,
}

/// Where the checkpoint of `trigger`'s binding to its broker lives: under the trigger's path, so
/// deleting the trigger deletes it ([`checkpoint_prefix`]).
pub fn binding_key(trigger: &TriggerRef) -> String {
    format!(
        "{}/{}/kafka/{}",
        checkpoint_prefix(&trigger.namespace, &trigger.name),
        trigger.uid,
        trigger.broker
    )
}

/// Every checkpoint of trigger `namespace/name`.
pub fn checkpoint_prefix(namespace: &str, name: &str) -> String {
    format!("trigger/{namespace}/{name}")
}

/// Since when `trigger` delivers its broker's records: the time recorded when it was first
/// consumed on this broker, or `candidate` (recorded now) the first time. `None` when cancelled.
async fn bound_since(
    context: &Context,
    trigger: &TriggerRef,
    candidate: Millis,
    cancel: &CancellationToken,
) -> Option<Millis> {
    let key = binding_key(trigger);
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let value = serde_json::json!({ "since": candidate });
        let outcome = async {
            if let Some(found) = context.store.get_checkpoint(&key).await? {
                return Ok(found.value["since"].as_i64());
            }
            // Created only if absent: of several dispatchers starting at once, one time wins.
            let created = context
                .store
                .put_checkpoint(&key, &value, None, now)
                .await?;
            Ok::<_, kinetic_store::Error>(created.map(|_| candidate))
        }
        .await;
        match outcome {
            Ok(Some(since)) => return Some(since),
            // Lost the race to create it, or it is unreadable: read what won again.
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(trigger = %trigger.name, %error, "Reading the trigger's binding failed; retrying.");
            }
        }
        if !pause(cancel, Duration::from_millis(500)).await {
            return None;
        }
    }
}

async fn consume(
    context: Arc<Context>,
    log: Arc<KafkaLog>,
    trigger: TriggerRef,
    candidate_since: Millis,
    cancel: CancellationToken,
) {
    let label = format!("{}/{}", trigger.namespace, trigger.name);
    let Some(since) = bound_since(&context, &trigger, candidate_since, &cancel).await else {
        return;
    };
    let mut reported = None;
    let target = loop {
        match log.target(&trigger.broker).await {
            Ok(target) => break target,
            Err(error) => {
                let problem = error.to_string();
                if reported.as_ref() != Some(&problem) {
                    tracing::warn!(trigger = %label, error = %problem, "The broker's topic is not available; the trigger waits and retries.");
                    reported = Some(problem);
                }
                if !pause(&cancel, Duration::from_secs(2)).await {
                    return;
                }
            }
        }
    };
    let topic = target.topic.clone();
    let created = target
        .cluster
        .settings
        .client_config_with(&[
            ("enable.auto.commit", "true"),
            // Offsets are stored by hand once a batch is accounted for.
            ("enable.auto.offset.store", "false"),
            ("auto.commit.interval.ms", "500"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "range"),
            ("fetch.wait.max.ms", "50"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ])
        .set("group.id", group_of(&trigger))
        .create::<StreamConsumer>();
    let consumer = match created.and_then(|c| c.subscribe(&[&topic]).map(|()| c)) {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::error!(trigger = %label, %error, "Creating the trigger's Kafka consumer failed.");
            // The supervisor starts a new one at its next pass.
            pause(&cancel, Duration::from_secs(2)).await;
            return;
        }
    };
    tracing::debug!(trigger = %label, %topic, group = %group_of(&trigger), "Consuming the broker's topic.");
    // Next offset to commit, per partition.
    let mut done: BTreeMap<i32, i64> = BTreeMap::new();
    while let Some(records) = next_batch(&consumer, &context, &label, &cancel).await {
        if !deliver_batch(&context, &trigger, since, &records, &cancel).await {
            break;
        }
        for record in &records {
            if let Err(error) = consumer.store_offset(&topic, record.partition, record.offset) {
                // A partition revoked meanwhile: its new owner reads it again (at-least-once).
                tracing::debug!(trigger = %label, %error, "Storing an offset failed.");
            }
            done.insert(record.partition, record.offset + 1);
        }
    }
    // Commit what is done before leaving the group, so the next owner starts after it.
    let mut offsets = TopicPartitionList::new();
    for (partition, next) in &done {
        let _ = offsets.add_partition_offset(&topic, *partition, Offset::Offset(*next));
    }
    if offsets.count() > 0
        && let Err(error) =
            tokio::task::block_in_place(|| consumer.commit(&offsets, CommitMode::Sync))
    {
        tracing::debug!(trigger = %label, %error, "Committing offsets at shutdown failed; the stored ones are committed on close.");
    }
}

/// Waits for the first record, then takes what else arrives within [`BATCH_LINGER`], up to the
/// batch size. `None` when cancelled or the trigger is gone.
async fn next_batch(
    consumer: &StreamConsumer,
    context: &Context,
    label: &str,
    cancel: &CancellationToken,
) -> Option<Vec<Record>> {
    let own = |message: &kinetic_kafka::rdkafka::message::BorrowedMessage<'_>| Record {
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        payload: message.payload().unwrap_or_default().to_vec(),
    };
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => return None,
            received = consumer.recv() => received,
        };
        match first {
            Ok(message) => {
                let mut batch = vec![own(&message)];
                drop(message);
                let linger = tokio::time::Instant::now() + BATCH_LINGER;
                while batch.len() < context.config.batch_size {
                    match tokio::time::timeout_at(linger, consumer.recv()).await {
                        Ok(Ok(message)) => batch.push(own(&message)),
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                return Some(batch);
            }
            Err(error) => {
                tracing::warn!(trigger = %label, %error, "Reading the broker's topic failed; retrying.");
                if !pause(cancel, Duration::from_secs(1)).await {
                    return None;
                }
            }
        }
    }
}

/// Delivers a batch and records what was not delivered at once. `false` when the trigger is gone
/// or shutdown interrupted recording (then the batch's offsets are not stored).
async fn deliver_batch(
    context: &Arc<Context>,
    trigger: &TriggerRef,
    since: Millis,
    records: &[Record],
    cancel: &CancellationToken,
) -> bool {
    let Some(plan) = context.plans.get(&trigger.uid) else {
        return false;
    };
    // Moved to another broker (or class) since this consumer started: its records are no longer
    // the trigger's. It stops here, before delivering them, rather than at the next pass of
    // [`run`] (up to a plan interval later, while the new broker may already deliver).
    if plan.trigger.broker != trigger.broker || plan.class != BrokerClass::Kafka {
        return false;
    }
    if context.is_disabled(&plan) {
        // Not stored: the batch is read again once the trigger is enabled.
        return false;
    }
    let events: Vec<Arc<Logged>> = records
        .iter()
        // Accepted before the trigger existed: not its to deliver.
        .filter(|record| record.timestamp.is_none_or(|t| t >= since))
        .map(|record| {
            let event = kinetic_api::cloudevent::from_json(&record.payload).ok();
            if event.is_none() {
                context.metrics.corrupt_events.inc();
                tracing::error!(trigger = %plan.label, partition = record.partition, offset = record.offset, "A record of the broker's topic is not a CloudEvent; skipping it.");
            }
            Arc::new(Logged {
                stored: StoredEvent {
                    seq: seq_of(record.partition, record.offset),
                    payload: record.payload.clone().into(),
                    accepted_at: record.timestamp.unwrap_or_default(),
                },
                event,
            })
        })
        .collect();
    if events.is_empty() {
        return true;
    }
    let outcomes = process(context, plan.clone(), events).await;
    let (rows, dead) = First::to_record(outcomes);
    if rows.is_empty() && dead.is_empty() {
        return true;
    }
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        match context.store.record_outcomes(&rows, &dead, now).await {
            Ok(()) => {
                context.rows_added.notify_one();
                return true;
            }
            Err(error) => {
                tracing::warn!(trigger = %plan.label, %error, "Recording retries and dead letters failed; trying again.");
                // After a shutdown request, give up: the batch is read again after restart.
                if cancel.is_cancelled() || !pause(cancel, Duration::from_secs(1)).await {
                    return false;
                }
            }
        }
    }
}

/// Sleeps for `period`; `false` when cancelled first.
async fn pause(cancel: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(period) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_keep_order_within_a_partition_and_separate_partitions() {
        assert!(seq_of(0, 1) < seq_of(0, 2));
        assert!(seq_of(0, (1 << OFFSET_BITS) - 1) < seq_of(1, 0));
        assert_eq!(seq_of(3, 7) >> OFFSET_BITS, 3);
        assert_eq!(seq_of(3, 7) & ((1 << OFFSET_BITS) - 1), 7);
    }
}
