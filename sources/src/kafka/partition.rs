//! One task per assigned partition: reads the partition's own queue, hands its records to the sink
//! and stores the offset every record before which was accepted, so the consumer commits nothing
//! undelivered.
//!
//! Ordered: one send at a time, in offset order. To a sink that takes CloudEvents batch mode (a
//! kinetic broker's ingress), that send carries every record waiting, up to [`BATCH_RECORDS`] and
//! [`BATCH_BYTES`], in one POST the broker commits as one: the order is kept and the partition does
//! not wait for a round trip per record. Unordered: up to [`UNORDERED_IN_FLIGHT`] records at once;
//! the stored offset still only moves past records that are done ([`OffsetTracker`]). Key: to a
//! broker's ingress as ordered (the log keeps the partition's order, and a trigger's ordered lanes
//! on `partitionkey`, the record key, deliver different keys at once); to any other sink up to
//! [`UNORDERED_IN_FLIGHT`] records at once, one at a time per key, in offset order per key.
//!
//! A task holding [`PAUSE_AT`] records stops reading until [`RESUME_AT`] are left. Meanwhile
//! librdkafka prefetches up to `queued.min.messages` records of the partition and then stops
//! fetching it; those are ready the moment the task reads again, so a partition behind its sink
//! never waits for a fetch.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use cloudevents::Event;
use kinetic_api::sources::KafkaOrdering;
use kinetic_kafka::rdkafka::Message as _;
use kinetic_kafka::rdkafka::consumer::{Consumer as _, StreamConsumer};
use kinetic_kafka::rdkafka::message::{Headers as _, OwnedMessage};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::consumer::{PartitionQueue, SourceContext, mark_healthy};
use super::mapping::{self, Emitter, Record};
use super::offsets::OffsetTracker;
use crate::controller::{Key, Sources};
use crate::sink::{SinkError, Target};

/// Records of one partition in flight at once in unordered mode.
pub const UNORDERED_IN_FLIGHT: usize = 32;
/// Most records, and most bytes of their values, in one batch-mode POST (well under the ingress's
/// default `--max-body-bytes` of 4 MiB, base64 included).
pub const BATCH_RECORDS: usize = 100;
pub const BATCH_BYTES: usize = 256 * 1024;
/// A partition's task holding this many records stops reading its queue; it reads again at
/// [`RESUME_AT`].
pub const PAUSE_AT: usize = 1_000;
pub const RESUME_AT: usize = 100;

/// What a partition task needs; shared by every partition of one source.
pub(super) struct Shared {
    pub sources: Arc<Sources>,
    pub key: Key,
    pub emitter: Emitter,
    pub sink: Target,
    pub consumer: Arc<StreamConsumer<SourceContext>>,
    pub ordering: KafkaOrdering,
    /// The sink takes several events in one batch-mode POST.
    pub batches: bool,
    /// False while librdkafka reports every broker down; the first record read again clears it.
    pub healthy: AtomicBool,
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The sink accepted the event.
    Accepted,
    /// The sink refused it for good (a 4xx it will always answer); the partition moves on.
    Refused,
    /// Stopped before the sink accepted it; it is read again after the next start or rebalance.
    Cancelled,
}

/// Delivers the records of `queue` (one partition's, in offset order) until `cancel`.
///
/// Cancellation safe: an offset is stored only after its record (and every one before it) is
/// done, so stopping anywhere leaves the rest to be read again.
pub(super) async fn run(
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    queue: PartitionQueue,
    cancel: CancellationToken,
) {
    let (namespace, name) = (&shared.key.1, &shared.key.2);
    let mut tracker = OffsetTracker::new();
    // To a batch-taking sink, `key` sends as `ordered`: see the module's documentation.
    let ordering = match shared.ordering {
        KafkaOrdering::Key if shared.batches => KafkaOrdering::Ordered,
        ordering => ordering,
    };
    let limit = match ordering {
        KafkaOrdering::Ordered => 1,
        KafkaOrdering::Unordered | KafkaOrdering::Key => UNORDERED_IN_FLIGHT,
    };
    let mut waiting: VecDeque<OwnedMessage> = VecDeque::new();
    let mut paused = false;
    let mut in_flight: JoinSet<(Vec<i64>, Outcome, Option<Vec<u8>>)> = JoinSet::new();
    // In `key` ordering: the keys with a record in flight.
    let mut busy: HashSet<Vec<u8>> = HashSet::new();
    let batches = shared.batches && ordering == KafkaOrdering::Ordered;
    loop {
        while ordering == KafkaOrdering::Key && in_flight.len() < limit {
            // Its offset was handed to the tracker when it was read: a record that waits behind
            // its key keeps the position from passing it.
            let Some(record) = next_of_free_key(&mut waiting, &busy) else {
                break;
            };
            let key = record.key().map(<[u8]>::to_vec);
            if let Some(key) = &key {
                busy.insert(key.clone());
            }
            let (shared, cancel) = (shared.clone(), cancel.clone());
            in_flight.spawn(async move {
                let outcome = deliver(&shared, &record, &cancel).await;
                (vec![record.offset()], outcome, key)
            });
        }
        while ordering != KafkaOrdering::Key && in_flight.len() < limit && !waiting.is_empty() {
            let mut records = Vec::new();
            let mut bytes = 0;
            while let Some(record) = waiting.front() {
                let size = record.payload().map_or(0, <[u8]>::len);
                let room = records.is_empty()
                    || (batches && records.len() < BATCH_RECORDS && bytes + size <= BATCH_BYTES);
                if !room {
                    break;
                }
                let Some(record) = waiting.pop_front() else {
                    break;
                };
                if tracker.begin(record.offset()) {
                    bytes += size;
                    records.push(record);
                }
            }
            if records.is_empty() {
                continue;
            }
            let (shared, cancel) = (shared.clone(), cancel.clone());
            in_flight.spawn(async move {
                let offsets = records.iter().map(OwnedMessage::offset).collect();
                let outcome = match records.as_slice() {
                    [record] => deliver(&shared, record, &cancel).await,
                    _ => deliver_batch(&shared, &records, &cancel).await,
                };
                (offsets, outcome, None)
            });
        }
        if paused && waiting.len() <= RESUME_AT {
            paused = false;
            tracing::debug!(%namespace, %name, %topic, partition, "Reading a paused partition again.");
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok((offsets, outcome, key)) = done else { break };
                if outcome == Outcome::Cancelled {
                    break;
                }
                if let Some(key) = key {
                    busy.remove(&key);
                }
                let mut position = None;
                for offset in offsets {
                    position = tracker.finish(offset).or(position);
                }
                if let Some(position) = position {
                    store(&shared, &topic, partition, position);
                }
            }
            received = queue.recv(), if !paused => match received {
                Ok(message) => {
                    if ordering == KafkaOrdering::Key && !tracker.begin(message.offset()) {
                        continue;
                    }
                    waiting.push_back(message.detach());
                    if !shared.healthy.load(Ordering::Relaxed) {
                        mark_healthy(&shared);
                    }
                    if waiting.len() >= PAUSE_AT {
                        paused = true;
                        tracing::debug!(%namespace, %name, %topic, partition, "Paused a partition until its task catches up.");
                    }
                }
                Err(error) => {
                    // librdkafka goes on fetching (after a backoff) by itself.
                    tracing::warn!(%namespace, %name, %topic, partition, %error, "Reading a partition failed; retrying.");
                    let message = format!("reading {topic} partition {partition}: {error}");
                    shared.sources.update(&shared.key, |s| s.last_error = Some(message));
                }
            },
        }
    }
    // Deliveries still running are given up; their records are read again.
    in_flight.abort_all();
    while in_flight.join_next().await.is_some() {}
    // Before the consumer loop hears that this task ended (see `PartitionTask::stop`).
    drop(queue);
}

/// Takes out of `waiting` its first record whose key has nothing in flight (`busy`) nor an earlier
/// record waiting, so each key's records go in offset order. Records without a key are always free.
fn next_of_free_key(
    waiting: &mut VecDeque<OwnedMessage>,
    busy: &HashSet<Vec<u8>>,
) -> Option<OwnedMessage> {
    let mut passed: HashSet<&[u8]> = HashSet::new();
    let mut found = None;
    for (at, record) in waiting.iter().enumerate() {
        match record.key() {
            None => {
                found = Some(at);
                break;
            }
            Some(key) if !busy.contains(key) && !passed.contains(key) => {
                found = Some(at);
                break;
            }
            Some(key) => {
                passed.insert(key);
            }
        }
    }
    waiting.remove(found?)
}

/// Stores `position` (the next offset to read) for the next commit. A partition revoked
/// meanwhile refuses it; its new owner reads those records again.
fn store(shared: &Shared, topic: &str, partition: i32, position: i64) {
    // librdkafka stores the offset after the one given.
    if let Err(error) = shared.consumer.store_offset(topic, partition, position - 1) {
        tracing::debug!(namespace = %shared.key.1, name = %shared.key.2, %topic, partition, %error, "An offset was not stored; the partition was revoked.");
    }
}

/// Hands the events of `messages` (consecutive records of one partition) to the sink in one
/// batch-mode POST until it is accepted or `cancel`. A batch refused for good (one record's event
/// the broker refuses, or a batch too large for it) is sent again a record at a time, in order, so
/// only what the sink refuses is passed over.
async fn deliver_batch(
    shared: &Shared,
    messages: &[OwnedMessage],
    cancel: &CancellationToken,
) -> Outcome {
    let mut events = Vec::with_capacity(messages.len());
    let mut since = Vec::with_capacity(messages.len());
    for message in messages {
        let headers = headers_of(message);
        let record = record_of(message, &headers);
        events.push(mapping::to_event(&shared.emitter, &record));
        since.push(
            record
                .timestamp
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .unwrap_or_else(Utc::now),
        );
    }
    let (sources, key) = (&shared.sources, &shared.key);
    let first = tokio::select! {
        () = cancel.cancelled() => return Outcome::Cancelled,
        sent = sources.sink.send_batch(&shared.sink, &events) => sent,
    };
    let sent = match first {
        Err(error) if error.is_retryable() => {
            sources.failed(key, error.to_string());
            sources
                .sink
                .send_batch_until_accepted(&shared.sink, &events, cancel)
                .await
        }
        other => other,
    };
    match sent {
        Ok(()) => {
            for at in since {
                sources.accepted(key, at);
            }
            Outcome::Accepted
        }
        Err(SinkError::Cancelled) => Outcome::Cancelled,
        Err(error) => {
            tracing::debug!(namespace = %key.1, name = %key.2, %error, records = messages.len(), "The sink refused a batch for good; sending its records one at a time.");
            for message in messages {
                if deliver(shared, message, cancel).await == Outcome::Cancelled {
                    return Outcome::Cancelled;
                }
            }
            Outcome::Accepted
        }
    }
}

fn headers_of(message: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

fn record_of<'a>(
    message: &'a OwnedMessage,
    headers: &'a [(String, Option<Vec<u8>>)],
) -> Record<'a> {
    Record {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key(),
        value: message.payload(),
        headers,
    }
}

/// Hands one record's event to the sink until it is accepted, refused for good, or `cancel`.
async fn deliver(shared: &Shared, message: &OwnedMessage, cancel: &CancellationToken) -> Outcome {
    let headers = headers_of(message);
    let record = record_of(message, &headers);
    let event = mapping::to_event(&shared.emitter, &record);
    let since = record
        .timestamp
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    let (sources, key) = (&shared.sources, &shared.key);
    match send(shared, &event, cancel).await {
        Ok(()) => {
            sources.accepted(key, since);
            Outcome::Accepted
        }
        Err(SinkError::Cancelled) => Outcome::Cancelled,
        Err(error) => {
            tracing::warn!(namespace = %key.1, name = %key.2, topic = %record.topic, partition = record.partition, offset = record.offset, %error, "The sink refused a Kafka record's event for good; it is skipped.");
            sources.failed(
                key,
                format!(
                    "{} partition {} offset {}: {error}",
                    record.topic, record.partition, record.offset
                ),
            );
            Outcome::Refused
        }
    }
}

/// One attempt, and if it failed in a way that may pass, the failure counted and the sending
/// repeated with backoff until accepted.
async fn send(shared: &Shared, event: &Event, cancel: &CancellationToken) -> Result<(), SinkError> {
    let first = tokio::select! {
        () = cancel.cancelled() => return Err(SinkError::Cancelled),
        sent = shared.sources.sink.send(&shared.sink, event) => sent,
    };
    match first {
        Ok(()) => Ok(()),
        Err(error) if error.is_retryable() => {
            shared.sources.failed(&shared.key, error.to_string());
            shared
                .sources
                .sink
                .send_until_accepted(&shared.sink, event, cancel)
                .await
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use kinetic_kafka::rdkafka::Timestamp;

    use super::*;

    fn record(offset: i64, key: Option<&str>) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            key.map(|k| k.as_bytes().to_vec()),
            "orders".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            None,
        )
    }

    fn offsets(waiting: &VecDeque<OwnedMessage>) -> Vec<i64> {
        waiting.iter().map(OwnedMessage::offset).collect()
    }

    #[test]
    fn a_key_waits_for_its_record_in_flight_and_others_pass_it_in_order() {
        let mut waiting: VecDeque<OwnedMessage> = [
            record(1, Some("a")),
            record(2, Some("a")),
            record(3, Some("b")),
            record(4, None),
            record(5, Some("b")),
            record(6, Some("c")),
        ]
        .into();
        let mut busy: HashSet<Vec<u8>> = HashSet::new();
        let take = |waiting: &mut VecDeque<OwnedMessage>, busy: &mut HashSet<Vec<u8>>| {
            let taken = next_of_free_key(waiting, busy)?;
            if let Some(key) = taken.key() {
                busy.insert(key.to_vec());
            }
            Some(taken.offset())
        };
        // a (1), then b (3): a's second record waits behind the first.
        assert_eq!(take(&mut waiting, &mut busy), Some(1));
        assert_eq!(take(&mut waiting, &mut busy), Some(3));
        // No key: free at once. Then c; b's second waits for b's first.
        assert_eq!(take(&mut waiting, &mut busy), Some(4));
        assert_eq!(take(&mut waiting, &mut busy), Some(6));
        assert_eq!(take(&mut waiting, &mut busy), None);
        assert_eq!(offsets(&waiting), vec![2, 5]);
        // b's first is done: its second goes; a's second still waits.
        busy.remove(b"b".as_slice());
        assert_eq!(take(&mut waiting, &mut busy), Some(5));
        assert_eq!(take(&mut waiting, &mut busy), None);
        busy.remove(b"a".as_slice());
        assert_eq!(take(&mut waiting, &mut busy), Some(2));
        assert!(waiting.is_empty());
    }
}
