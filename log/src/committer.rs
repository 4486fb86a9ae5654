//! Group commit: concurrent requests queue their events; one task commits whatever has queued in a
//! single transaction and answers each request. While one transaction runs, the next batch forms, so
//! the number of transactions per second stays bounded by the store, not by the request rate.
//!
//! A [`Feed`] (the in-process dispatcher's window over the log) gets what each commit stored, with
//! the events as the ingress parsed them, before the commit is signalled: the dispatcher then need
//! not read back and parse what was just written.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloudevents::Event;
use kinetic_store::{Appended, NewEvent, StoredEvent};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::CommitMetrics as Metrics;
use crate::{Log, LogError};

/// Most events in one transaction.
const MAX_BATCH: usize = 1000;

type Reply = oneshot::Sender<Result<Vec<Appended>, Arc<LogError>>>;

struct Request {
    events: Vec<NewEvent>,
    /// Each event as parsed, for the feed.
    parsed: Vec<Event>,
    reply: Reply,
}

/// An event a commit stored, handed to a [`Feed`].
#[derive(Debug)]
pub struct Stored {
    /// `namespace/name` of the broker.
    pub broker: String,
    pub stored: StoredEvent,
    /// The event itself: what reading `stored.payload` back gives.
    pub event: Event,
}

/// Receives what each commit stored, in commit order, before the commit is signalled. Called on
/// the commit task: it must not block.
pub trait Feed: Send + Sync {
    fn stored(&self, events: Vec<Stored>);
}

/// Handle to the group-commit task. Cloning is cheap; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Request>,
    feed: Arc<OnceLock<Arc<dyn Feed>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the log refused the write")]
    Log(#[source] Arc<LogError>),
    #[error("the committer has stopped")]
    Stopped,
}

impl Committer {
    /// Starts the commit task, appending to `log`. `committed` counts successful commits (the in-process dispatcher
    /// watches it to read new events at once). `dedupe_window` is how long a (source, id) is
    /// remembered.
    pub fn start(
        log: Arc<dyn Log>,
        dedupe_window: Duration,
        committed: watch::Sender<u64>,
        metrics: Metrics,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(4096);
        let feed = Arc::new(OnceLock::new());
        let task = tokio::spawn(run(
            log,
            receiver,
            dedupe_window,
            committed,
            metrics,
            feed.clone(),
        ));
        (Self { queue, feed }, task)
    }

    /// Hands what every later commit stores to `feed` (once; a second feed is ignored).
    pub fn feed(&self, feed: Arc<dyn Feed>) {
        let _ = self.feed.set(feed);
    }

    /// Commits `events` (all or nothing), each record with the event it encodes, and returns one
    /// outcome per event.
    ///
    /// Cancel safety: if the caller is dropped after the request was queued, the events may still be
    /// committed (the client then sees no answer and will retry; the dedupe window absorbs it).
    pub async fn commit(
        &self,
        events: Vec<(NewEvent, Event)>,
    ) -> Result<Vec<Appended>, CommitError> {
        let (events, parsed) = events.into_iter().unzip();
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request {
                events,
                parsed,
                reply,
            })
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer
            .await
            .map_err(|_| CommitError::Stopped)?
            .map_err(CommitError::Log)
    }
}

async fn run(
    log: Arc<dyn Log>,
    mut receiver: mpsc::Receiver<Request>,
    dedupe_window: Duration,
    committed: watch::Sender<u64>,
    metrics: Metrics,
    feed: Arc<OnceLock<Arc<dyn Feed>>>,
) {
    let window = i64::try_from(dedupe_window.as_millis()).unwrap_or(i64::MAX);
    let mut pending: Vec<Request> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut count = first.events.len();
        pending.push(first);
        while count < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => {
                    count += request.events.len();
                    pending.push(request);
                }
                Err(_) => break,
            }
        }
        // Moved out, not cloned: each request's count is kept to split the outcomes.
        let sizes: Vec<usize> = pending.iter().map(|r| r.events.len()).collect();
        let mut events: Vec<NewEvent> = Vec::with_capacity(count);
        let mut parsed: Vec<Event> = Vec::with_capacity(count);
        for request in &mut pending {
            events.append(&mut request.events);
            parsed.append(&mut request.parsed);
        }
        let replies: Vec<Reply> = pending.drain(..).map(|r| r.reply).collect();
        let group = Group {
            log: log.as_ref(),
            window,
            committed: &committed,
            metrics: &metrics,
            feed: feed.get(),
        };
        match group.append(events, parsed).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for (reply, size) in replies.into_iter().zip(sizes) {
                    let mine: Vec<Appended> = outcomes.by_ref().take(size).collect();
                    let _ = reply.send(Ok(mine));
                }
            }
            Err((error, _, _)) if replies.len() == 1 || error.is_outage() => {
                tracing::warn!(error = %error, requests = replies.len(), "Commit to the broker's log failed.");
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            // Perhaps one request's events made the store refuse the transaction: commit each
            // request alone, so only the one at fault fails.
            Err((error, events, parsed)) => {
                tracing::debug!(error = %error, requests = replies.len(), "A group commit failed; committing its requests one by one.");
                let mut events = events.into_iter();
                let mut parsed = parsed.into_iter();
                for (reply, size) in replies.into_iter().zip(sizes) {
                    let mine = events.by_ref().take(size).collect();
                    let mine_parsed = parsed.by_ref().take(size).collect();
                    let answer = group.append(mine, mine_parsed).await.map_err(|(error, _, _)| {
                        tracing::warn!(error = %error, events = size, "A request's events were refused by the broker's log.");
                        Arc::new(error)
                    });
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// One transaction's worth of work of the commit task.
struct Group<'a> {
    log: &'a dyn Log,
    window: i64,
    committed: &'a watch::Sender<u64>,
    metrics: &'a Metrics,
    feed: Option<&'a Arc<dyn Feed>>,
}

impl Group<'_> {
    /// Appends `events` in one transaction, hands what was stored to the feed and signals the
    /// commit. On failure the events come back, to be tried again in smaller groups.
    async fn append(
        &self,
        events: Vec<NewEvent>,
        parsed: Vec<Event>,
    ) -> Result<Vec<Appended>, (LogError, Vec<NewEvent>, Vec<Event>)> {
        let now = chrono::Utc::now().timestamp_millis();
        self.metrics.batch_size.observe(events.len() as f64);
        let started = std::time::Instant::now();
        let appended = self
            .log
            .append(&events, now, now.saturating_sub(self.window))
            .await;
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        match appended {
            Ok(outcomes) => {
                if let Some(feed) = self.feed {
                    feed.stored(stored(events, parsed, &outcomes, now));
                }
                self.committed
                    .send_modify(|count| *count = count.wrapping_add(1));
                Ok(outcomes)
            }
            Err(error) => Err((error, events, parsed)),
        }
    }
}

/// The accepted events of a commit, moved out of the batch.
fn stored(
    events: Vec<NewEvent>,
    parsed: Vec<Event>,
    outcomes: &[Appended],
    now: i64,
) -> Vec<Stored> {
    let mut stored = Vec::with_capacity(outcomes.len());
    for ((record, event), outcome) in events.into_iter().zip(parsed).zip(outcomes) {
        if let Appended::Accepted(seq) = outcome {
            stored.push(Stored {
                broker: record.broker,
                stored: StoredEvent {
                    seq: *seq,
                    payload: record.payload,
                    accepted_at: now,
                },
                event,
            });
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    /// A log that refuses any transaction holding an event with id `poison`, or every one while
    /// `down`, the way a database refuses a bad row or is out of reach.
    #[derive(Default)]
    struct Picky {
        next: AtomicI64,
        transactions: AtomicUsize,
        down: bool,
    }

    #[async_trait]
    impl Log for Picky {
        async fn append(
            &self,
            events: &[NewEvent],
            _now: i64,
            _since: i64,
        ) -> Result<Vec<Appended>, LogError> {
            self.transactions.fetch_add(1, Ordering::SeqCst);
            // Let the other requests queue behind this transaction.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.down {
                return Err(LogError::KafkaNotConfigured);
            }
            if events.iter().any(|e| e.id == "poison") {
                return Err(LogError::Store(kinetic_store::Error::Corrupt(
                    "invalid byte sequence for encoding \"UTF8\": 0x00".into(),
                )));
            }
            Ok(events
                .iter()
                .map(|_| Appended::Accepted(self.next.fetch_add(1, Ordering::SeqCst)))
                .collect())
        }
    }

    fn request(id: &str) -> Vec<(NewEvent, Event)> {
        let event = cloudevents::EventBuilderV10::new()
            .id(id)
            .source("/s")
            .ty("t")
            .build()
            .unwrap();
        let record = NewEvent {
            broker: "default/b".into(),
            source: "/s".into(),
            id: id.into(),
            payload: b"{}".to_vec().into(),
        };
        vec![(record, event)]
    }

    async fn commit_concurrently(log: Arc<Picky>, ids: &[&str]) -> Vec<bool> {
        let (committed, _) = watch::channel(0);
        let metrics = Metrics::new(&mut Default::default());
        let (committer, _task) = Committer::start(log, Duration::from_secs(60), committed, metrics);
        let answers = ids.iter().map(|id| {
            let committer = committer.clone();
            let events = request(id);
            async move { committer.commit(events).await.is_ok() }
        });
        futures::future::join_all(answers).await
    }

    use cloudevents::EventBuilder as _;

    #[tokio::test]
    async fn one_bad_request_fails_alone() {
        let log = Arc::new(Picky::default());
        let ids = ["a", "b", "poison", "c", "d"];
        let answers = commit_concurrently(log.clone(), &ids).await;
        assert_eq!(answers, [true, true, false, true, true]);
        // Grouped, failed, then one transaction per request of the failed group.
        assert!(log.transactions.load(Ordering::SeqCst) <= 1 + 1 + ids.len());
        assert_eq!(log.next.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_outage_fails_the_group_at_once() {
        let log = Arc::new(Picky {
            down: true,
            ..Picky::default()
        });
        let answers = commit_concurrently(log.clone(), &["a", "b", "c"]).await;
        assert_eq!(answers, [false, false, false]);
        // No request is retried alone against a store that is out of reach.
        assert!(log.transactions.load(Ordering::SeqCst) <= 2);
    }
}
