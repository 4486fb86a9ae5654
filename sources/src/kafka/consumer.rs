//! The consumer task of one KafkaSource: reads records, hands each to its partition's task, pauses
//! a partition whose task falls behind, and follows the group's rebalances.
//!
//! librdkafka calls [`SourceContext`] from inside `recv()`: on a revoke it commits the offsets
//! stored so far (what was delivered is never read again by the partition's next owner), then the
//! loop stops the revoked partitions' tasks. Its errors (brokers unreachable, authentication) and
//! statistics (the lag per partition) go to the source's status and metrics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kinetic_api::sources::{KafkaOrdering, KafkaSource};
use kinetic_kafka::rdkafka::client::ClientContext;
use kinetic_kafka::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use kinetic_kafka::rdkafka::error::KafkaError;
use kinetic_kafka::rdkafka::message::OwnedMessage;
use kinetic_kafka::rdkafka::statistics::Statistics;
use kinetic_kafka::rdkafka::types::RDKafkaErrorCode;
use kinetic_kafka::rdkafka::{Message as _, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::mapping::Emitter;
use super::partition::{self, Shared};
use super::{KafkaSourceError, consumer_settings, read_secret};
use crate::controller::{Key, Sources, sleep_or_cancel};
use crate::metrics::PartitionLabels;

/// A partition with this many records waiting for its task is paused; resumed at the low mark.
const PAUSE_AT: usize = 1_000;
const RESUME_AT: usize = 100;
/// How often paused partitions are looked at.
const TICK: Duration = Duration::from_millis(100);
/// Pauses between attempts to run a consumer that failed: doubling from the first to the last.
const FIRST_RESTART: Duration = Duration::from_secs(1);
const MAX_RESTART: Duration = Duration::from_secs(30);

/// What librdkafka's callbacks tell the consumer loop.
#[derive(Debug)]
pub(super) enum GroupEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
    /// No broker can be reached.
    Down,
}

/// librdkafka's callbacks for one KafkaSource.
pub(crate) struct SourceContext {
    sources: Arc<Sources>,
    key: Key,
    servers: String,
    events: mpsc::UnboundedSender<GroupEvent>,
    lag_series: LagSeries,
    /// Whether the group gave this consumer partitions (and they were not revoked since).
    assigned: AtomicBool,
}

/// The lag series a source has set, so they go when its partitions or the source go.
#[derive(Clone, Default)]
struct LagSeries(Arc<std::sync::Mutex<HashSet<PartitionLabels>>>);

impl LagSeries {
    fn set(&self, sources: &Sources, labels: PartitionLabels, lag: i64) {
        sources.metrics().kafka_lag.get_or_create(&labels).set(lag);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(labels);
    }

    /// Removes the series matching `which`.
    fn forget(&self, sources: &Sources, which: impl Fn(&PartitionLabels) -> bool) {
        let mut series = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        series.retain(|labels| {
            let forget = which(labels);
            if forget {
                sources.metrics().kafka_lag.remove(labels);
            }
            !forget
        });
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0u64;
        let mut known = false;
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // -1 is librdkafka's internal partition; a lag of -1 is unknown (no offset
                // stored yet, or the partition is not assigned here).
                if *partition < 0 || stats.consumer_lag_stored < 0 {
                    continue;
                }
                let lag = stats.consumer_lag_stored;
                known = true;
                total += lag.unsigned_abs();
                self.lag_series
                    .set(&self.sources, self.labels(topic, *partition), lag);
            }
        }
        if known {
            self.sources.update(&self.key, |s| s.backlog = Some(total));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let (namespace, name) = (&self.key.1, &self.key.2);
        tracing::warn!(%namespace, %name, servers = %self.servers, %error, %reason, "A KafkaSource's Kafka client reported an error.");
        // Unreachable brokers make the source not ready until it has partitions to read; a
        // broker lost while it has some is reported, and the others go on.
        let down = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => true,
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                !self.assigned.load(Ordering::Relaxed)
            }
            _ => false,
        };
        let message = format!("Kafka at {}: {reason}", self.servers);
        self.sources.update(&self.key, |s| {
            s.last_error = Some(message);
            if down {
                s.ready = false;
            }
        });
        if down {
            let _ = self.events.send(GroupEvent::Down);
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        let (namespace, name) = (&self.key.1, &self.key.2);
        // What was delivered so far is committed before another member takes the partitions.
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "Committing before a rebalance failed; the partitions' next owner reads some records again.");
            }
        }
        self.assigned.store(false, Ordering::Relaxed);
        let revoked = pairs(partitions);
        tracing::info!(%namespace, %name, partitions = ?revoked, "Partitions revoked.");
        let _ = self.events.send(GroupEvent::Revoked(revoked));
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.assigned
                .store(partitions.count() > 0, Ordering::Relaxed);
            let assigned = pairs(partitions);
            tracing::info!(namespace = %self.key.1, name = %self.key.2, partitions = ?assigned, "Partitions assigned.");
            let _ = self.events.send(GroupEvent::Assigned(assigned));
        }
    }
}

impl SourceContext {
    fn labels(&self, topic: &str, partition: i32) -> PartitionLabels {
        PartitionLabels {
            namespace: self.key.1.clone(),
            name: self.key.2.clone(),
            topic: topic.to_owned(),
            partition: partition.to_string(),
        }
    }
}

fn pairs(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// Runs one KafkaSource until `cancel`: a consumer that fails is started again with backoff, so
/// unreachable brokers or a bad setting show in the status and never end the process.
pub(crate) async fn run(
    sources: Arc<Sources>,
    key: Key,
    source: KafkaSource,
    uid: String,
    sink: String,
    cancel: CancellationToken,
) {
    let (namespace, name) = (key.1.clone(), key.2.clone());
    let settings = match consumer_settings(&source, &uid, read_secret) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::warn!(%namespace, %name, %error, "A KafkaSource cannot start.");
            sources.not_ready(&key, error.to_string());
            return;
        }
    };
    let emitter = Emitter {
        namespace: namespace.clone(),
        name: name.clone(),
        extensions: source
            .spec
            .ce_overrides
            .as_ref()
            .map(|o| o.extensions.clone())
            .unwrap_or_default(),
    };
    let ordering = source.ordering().unwrap_or(KafkaOrdering::Ordered);
    let mut backoff = FIRST_RESTART;
    let lag_series = LagSeries::default();
    loop {
        let (events, receiver) = mpsc::unbounded_channel();
        let context = SourceContext {
            sources: sources.clone(),
            key: key.clone(),
            servers: settings.bootstrap_servers.clone(),
            events,
            lag_series: lag_series.clone(),
            assigned: AtomicBool::new(false),
        };
        let created: Result<StreamConsumer<SourceContext>, KafkaError> =
            settings.client_config().create_with_context(context);
        let outcome = match created {
            Ok(consumer) => {
                let shared = Arc::new(Shared {
                    sources: sources.clone(),
                    key: key.clone(),
                    emitter: emitter.clone(),
                    sink: sink.clone(),
                    consumer: Arc::new(consumer),
                    ordering,
                });
                let outcome =
                    consume(&shared, &source.spec.topics, receiver, &lag_series, &cancel).await;
                close(shared).await;
                outcome
            }
            Err(error) => Err(KafkaSourceError::Client(error)),
        };
        lag_series.forget(&sources, |_| true);
        match outcome {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, retry_in = ?backoff, "A KafkaSource's consumer stopped; starting it again.");
                sources.update(&key, |s| s.last_error = Some(error.to_string()));
            }
        }
        if sleep_or_cancel(backoff, &cancel).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_RESTART);
    }
}

/// A partition's task, seen from the consumer loop.
struct PartitionTask {
    records: mpsc::UnboundedSender<OwnedMessage>,
    queued: Arc<AtomicUsize>,
    paused: bool,
    cancel: CancellationToken,
}

/// Reads records until `cancel` (`Ok`) or until a partition's task died (`Err`: the consumer is
/// closed without committing past that partition's undelivered records, and started again).
async fn consume(
    shared: &Arc<Shared>,
    topics: &[String],
    mut events: mpsc::UnboundedReceiver<GroupEvent>,
    lag_series: &LagSeries,
    cancel: &CancellationToken,
) -> Result<(), KafkaSourceError> {
    let (namespace, name) = (&shared.key.1, &shared.key.2);
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    shared.consumer.subscribe(&topics)?;
    tracing::info!(%namespace, %name, ?topics, "Reading Kafka topics.");
    let mut partitions: HashMap<(String, i32), PartitionTask> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    let result = loop {
        // Biased, with the tick before the records: a busy partition must not keep a paused one
        // from being resumed.
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            Some(event) = events.recv() => match event {
                GroupEvent::Revoked(revoked) => {
                    for id in revoked {
                        if let Some(task) = partitions.remove(&id) {
                            task.cancel.cancel();
                        }
                        let partition = id.1.to_string();
                        lag_series.forget(&shared.sources, |l| l.topic == id.0 && l.partition == partition);
                    }
                }
                GroupEvent::Assigned(assigned) => {
                    // A partition paused under an earlier assignment starts unpaused.
                    resume(shared, assigned.iter().map(|(t, p)| (t.as_str(), *p)));
                    mark_healthy(shared, &mut healthy);
                }
                GroupEvent::Down => healthy = false,
            },
            _ = tick.tick() => {
                for ((topic, partition), task) in &mut partitions {
                    if task.paused && task.queued.load(Ordering::Relaxed) <= RESUME_AT {
                        resume(shared, [(topic.as_str(), *partition)]);
                        task.paused = false;
                    }
                }
                while let Some(done) = tasks.try_join_next() {
                    if done.is_err() {
                        tracing::error!(%namespace, %name, "A KafkaSource's partition task failed.");
                    }
                }
                if let Some(id) = partitions.iter().find(|(_, t)| t.records.is_closed()).map(|(id, _)| id.clone()) {
                    break Err(KafkaSourceError::PartitionStopped { topic: id.0, partition: id.1 });
                }
            }
            received = shared.consumer.recv() => match received {
                Ok(message) => {
                    let message = message.detach();
                    if !healthy {
                        mark_healthy(shared, &mut healthy);
                    }
                    let id = (message.topic().to_owned(), message.partition());
                    let task = partitions
                        .entry(id.clone())
                        .or_insert_with(|| start_partition(shared, &id, &mut tasks, cancel));
                    task.queued.fetch_add(1, Ordering::Relaxed);
                    if task.records.send(message).is_err() {
                        break Err(KafkaSourceError::PartitionStopped { topic: id.0, partition: id.1 });
                    }
                    if !task.paused && task.queued.load(Ordering::Relaxed) >= PAUSE_AT {
                        task.paused = pause(shared, &id.0, id.1);
                    }
                }
                Err(error) => {
                    tracing::warn!(%namespace, %name, %error, "Reading from Kafka failed; retrying.");
                    // Connection problems reached the status through the error callback, with
                    // librdkafka's reason (which broker, what failed).
                    let transport = matches!(
                        error.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
                    );
                    if !transport {
                        let message = format!("reading {topics:?} from Kafka: {error}");
                        shared.sources.update(&shared.key, |s| s.last_error = Some(message));
                    }
                    if sleep_or_cancel(Duration::from_secs(1), cancel).await {
                        break Ok(());
                    }
                }
            },
        }
    };
    for task in partitions.values() {
        task.cancel.cancel();
    }
    while tasks.join_next().await.is_some() {}
    result
}

fn start_partition(
    shared: &Arc<Shared>,
    (topic, partition): &(String, i32),
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> PartitionTask {
    let (records, receiver) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let cancel = cancel.child_token();
    tasks.spawn(partition::run(
        shared.clone(),
        topic.clone(),
        *partition,
        receiver,
        queued.clone(),
        cancel.clone(),
    ));
    PartitionTask {
        records,
        queued,
        paused: false,
        cancel,
    }
}

fn mark_healthy(shared: &Shared, healthy: &mut bool) {
    *healthy = true;
    shared.sources.update(&shared.key, |s| {
        s.ready = true;
        if s.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("Kafka at "))
        {
            s.last_error = None;
        }
    });
}

/// `true` when paused. Records already fetched for the partition are dropped by librdkafka and
/// fetched again from the last one handed out once it resumes.
fn pause(shared: &Shared, topic: &str, partition: i32) -> bool {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    match shared.consumer.pause(&list) {
        Ok(()) => {
            tracing::debug!(namespace = %shared.key.1, name = %shared.key.2, %topic, partition, "Paused a partition until its task catches up.");
            true
        }
        Err(error) => {
            tracing::debug!(%topic, partition, %error, "Pausing a partition failed.");
            false
        }
    }
}

fn resume<'a>(shared: &Shared, partitions: impl IntoIterator<Item = (&'a str, i32)>) {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, partition);
    }
    if list.count() == 0 {
        return;
    }
    if let Err(error) = shared.consumer.resume(&list) {
        tracing::debug!(%error, "Resuming partitions failed.");
    }
}

/// Commits what was delivered and leaves the group. librdkafka blocks while it does, so it runs
/// off the async workers.
async fn close(shared: Arc<Shared>) {
    let closing = tokio::task::spawn_blocking(move || {
        match shared.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(namespace = %shared.key.1, name = %shared.key.2, %error, "The last commit failed; some records will be read again.");
            }
        }
        drop(shared);
    });
    let _ = closing.await;
}
