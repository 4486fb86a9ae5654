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

use crate::log::{Log, LogError};
use crate::metrics::Metrics;

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
        let events: Vec<NewEvent> = pending
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.events))
            .collect();
        let parsed: Vec<Event> = pending
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.parsed))
            .collect();
        let now = chrono::Utc::now().timestamp_millis();
        metrics.batch_size.observe(events.len() as f64);
        let started = std::time::Instant::now();
        let appended = log.append(&events, now, now.saturating_sub(window)).await;
        metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        match appended {
            Ok(outcomes) => {
                if let Some(feed) = feed.get() {
                    feed.stored(stored(events, parsed, &outcomes, now));
                }
                committed.send_modify(|count| *count = count.wrapping_add(1));
                let mut outcomes = outcomes.into_iter();
                for (request, size) in pending.drain(..).zip(sizes) {
                    let mine: Vec<Appended> = outcomes.by_ref().take(size).collect();
                    let _ = request.reply.send(Ok(mine));
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, events = events.len(), "Commit to the broker's log failed.");
                let error = Arc::new(error);
                for request in pending.drain(..) {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
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
    events
        .into_iter()
        .zip(parsed)
        .zip(outcomes)
        .filter_map(|((record, event), outcome)| match outcome {
            Appended::Accepted(seq) => Some(Stored {
                broker: record.broker,
                stored: StoredEvent {
                    seq: *seq,
                    payload: record.payload,
                    accepted_at: now,
                },
                event,
            }),
            Appended::Duplicate => None,
        })
        .collect()
}
