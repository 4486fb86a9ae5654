//! The consumer task of one KafkaSource: follows the group's rebalances and gives every assigned
//! partition a task of its own, which reads the partition's own librdkafka queue.
//!
//! librdkafka calls [`SourceContext`] from inside `recv()`. Before an assignment takes effect, each
//! new partition is split off the consumer's queue, so its records only ever reach its own task;
//! on a revoke the offsets stored so far are committed (what was delivered is never read again by
//! the partition's next owner), then the loop stops the revoked partitions' tasks. Its errors
//! (brokers unreachable, authentication) and statistics (the lag per partition) go to the source's
//! status and metrics.
//!
//! Nothing here pauses partitions in librdkafka: a paused partition drops what it prefetched, and
//! resuming it does not wake librdkafka's fetcher, which sleeps up to a second when it has no
//! partition to fetch. A partition's task instead stops reading its queue, and librdkafka stops
//! fetching that partition once its queue holds `queued.min.messages` records.

use kinetic_outbound::retry::Backoff;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use kinetic_api::sources::{KafkaOrdering, KafkaSource};
use kinetic_kafka::rdkafka::client::ClientContext;
use kinetic_kafka::rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use kinetic_kafka::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use kinetic_kafka::rdkafka::error::KafkaError;
use kinetic_kafka::rdkafka::statistics::Statistics;
use kinetic_kafka::rdkafka::types::RDKafkaErrorCode;
use kinetic_kafka::rdkafka::{Message as _, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::mapping::Emitter;
use super::partition::{self, Shared};
use super::{KafkaSourceError, consumer_settings, read_secret};
use crate::controller::{Key, Sources, sleep_or_cancel};
use crate::metrics::PartitionLabels;
use crate::sink::Target;

/// Pauses between attempts to run a consumer that failed: 1 s, doubling up to 30 s.
const RESTART: Backoff = Backoff::Doubling {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// One partition's own queue of records.
pub(super) type PartitionQueue = StreamPartitionQueue<SourceContext>;

/// What librdkafka's callbacks tell the consumer loop.
pub(super) enum GroupEvent {
    /// The partitions given to this consumer, each with its queue (`None`: it could not be split
    /// off, and its records would reach the consumer's queue).
    Assigned(Vec<((String, i32), Option<PartitionQueue>)>),
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
    /// The consumer itself, to split assigned partitions' queues off from inside the rebalance
    /// callback; set once it is created.
    consumer: OnceLock<Weak<StreamConsumer<SourceContext>>>,
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
        let (namespace, name) = (&self.key.1, &self.key.2);
        match rebalance {
            Rebalance::Assign(partitions) => {
                // Split off before librdkafka starts fetching: a partition split off later leaves
                // the records fetched until then in the consumer's queue. The split outlives the
                // queue handle, so the partition's records never go to the consumer's queue again.
                let consumer = self.consumer.get().and_then(Weak::upgrade);
                let queues = pairs(partitions)
                    .into_iter()
                    .map(|(topic, partition)| {
                        let queue = consumer
                            .as_ref()
                            .and_then(|c| c.split_partition_queue(&topic, partition));
                        ((topic, partition), queue)
                    })
                    .collect();
                let _ = self.events.send(GroupEvent::Assigned(queues));
            }
            Rebalance::Revoke(partitions) => {
                // What was delivered so far is committed before another member takes the
                // partitions.
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
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.assigned
                .store(partitions.count() > 0, Ordering::Relaxed);
            tracing::info!(namespace = %self.key.1, name = %self.key.2, partitions = ?pairs(partitions), "Partitions assigned.");
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
    sink: Target,
    cancel: CancellationToken,
) {
    let (namespace, name) = (key.1.clone(), key.2.clone());
    // Each entry may list several servers, comma separated.
    let servers: Vec<String> = source
        .spec
        .bootstrap_servers
        .iter()
        .flat_map(|entry| entry.split(','))
        .map(|server| server.trim().to_owned())
        .filter(|server| !server.is_empty())
        .collect();
    for server in &servers {
        if let Err(error) = sources.sink.check_endpoint(server).await {
            sources.not_ready(&key, error);
            return;
        }
    }
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
    let mut failures = 0u32;
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
            consumer: OnceLock::new(),
        };
        let created: Result<StreamConsumer<SourceContext>, KafkaError> =
            settings.client_config().create_with_context(context);
        let outcome = match created {
            Ok(consumer) => {
                let consumer = Arc::new(consumer);
                let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
                let shared = Arc::new(Shared {
                    sources: sources.clone(),
                    key: key.clone(),
                    emitter: emitter.clone(),
                    sink: sink.clone(),
                    consumer,
                    ordering,
                    batches: sources.sink.takes_batches(&sink),
                    healthy: AtomicBool::new(true),
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
                failures = failures.saturating_add(1);
                let backoff = RESTART.exact(failures);
                tracing::warn!(%namespace, %name, %error, retry_in = ?backoff, "A KafkaSource's consumer stopped; starting it again.");
                sources.update(&key, |s| s.last_error = Some(error.to_string()));
            }
        }
        if sleep_or_cancel(RESTART.exact(failures), &cancel).await {
            return;
        }
    }
}

/// A partition's task, seen from the consumer loop.
struct PartitionTask {
    task: tokio::task::Id,
    cancel: CancellationToken,
    /// Closed once the task ended and dropped its queue.
    stopped: oneshot::Receiver<()>,
}

impl PartitionTask {
    /// Stops the task and waits until it dropped its queue: dropping a queue handle switches off
    /// the wake-ups of every handle on that partition, so a new one must not exist before.
    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.stopped.await;
    }
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
    let result = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            Some(event) = events.recv() => match event {
                GroupEvent::Revoked(revoked) => {
                    for id in revoked {
                        if let Some(task) = partitions.remove(&id) {
                            task.stop().await;
                        }
                        let partition = id.1.to_string();
                        lag_series.forget(&shared.sources, |l| l.topic == id.0 && l.partition == partition);
                    }
                }
                GroupEvent::Assigned(assigned) => {
                    let mut failed = None;
                    for (id, queue) in assigned {
                        let queue = match partitions.remove(&id) {
                            None => queue,
                            Some(old) => {
                                // Not seen with eager rebalancing, which revokes every partition
                                // first. Dropping the old task's handle switched off the new
                                // one's wake-ups: split again once the old one is gone.
                                old.stop().await;
                                drop(queue);
                                shared.consumer.split_partition_queue(&id.0, id.1)
                            }
                        };
                        let Some(queue) = queue else {
                            failed = Some(id);
                            break;
                        };
                        let task = start_partition(shared, id.clone(), queue, &mut tasks, cancel);
                        partitions.insert(id, task);
                    }
                    if let Some((topic, partition)) = failed {
                        tracing::error!(%namespace, %name, %topic, partition, "A partition's queue could not be split off.");
                        break Err(KafkaSourceError::PartitionStopped { topic, partition });
                    }
                    mark_healthy(shared);
                }
                GroupEvent::Down => shared.healthy.store(false, Ordering::Relaxed),
            },
            Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                // A task ends on its own only when one of its deliveries panicked.
                let task = match ended {
                    Ok((task, _)) => task,
                    Err(error) => {
                        tracing::error!(%namespace, %name, %error, "A KafkaSource's partition task failed.");
                        error.id()
                    }
                };
                let stopped = partitions
                    .iter()
                    .find(|(_, t)| t.task == task && !t.cancel.is_cancelled())
                    .map(|(id, _)| id.clone());
                if let Some((topic, partition)) = stopped {
                    break Err(KafkaSourceError::PartitionStopped { topic, partition });
                }
            }
            // Serves the callbacks; records arrive on the partitions' own queues.
            received = shared.consumer.recv() => match received {
                Ok(message) => {
                    // Its partition was not split off (see `pre_rebalance`); delivering it here
                    // could pass records of its queue, so the consumer starts again from the
                    // committed offsets.
                    let (topic, partition) = (message.topic().to_owned(), message.partition());
                    tracing::error!(%namespace, %name, %topic, partition, offset = message.offset(), "A record arrived outside its partition's queue.");
                    break Err(KafkaSourceError::PartitionStopped { topic, partition });
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
    (topic, partition): (String, i32),
    queue: PartitionQueue,
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> PartitionTask {
    let cancel = cancel.child_token();
    let (stopped_tx, stopped) = oneshot::channel();
    let run = partition::run(shared.clone(), topic, partition, queue, cancel.clone());
    let task = tasks.spawn(async move {
        run.await;
        drop(stopped_tx);
    });
    PartitionTask {
        task: task.id(),
        cancel,
        stopped,
    }
}

/// The source reads again: ready, and a connection error in its status is over.
pub(super) fn mark_healthy(shared: &Shared) {
    shared.healthy.store(true, Ordering::Relaxed);
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
