//! The cursor worker of one trigger: reads the broker's log after the cursor, delivers the events the
//! filter selects (first attempts), and moves the cursor in the same transaction that records every
//! event not delivered at once (a retry row or a dead letter). A crash before that commit means the
//! batch is read again: at-least-once.
//!
//! Reading, delivering and committing overlap. Up to [`BATCHES_IN_DELIVERY`] batches are delivered
//! at once (at most `concurrency` events of them in flight), so the next batch does not wait for
//! the slowest event of the one before; their outcomes are collected in log order. In an ordered
//! trigger a lane's events of the next batch follow the same lane's events of the batch before
//! (see [`Pipeline`]). A companion task commits collected batches in order, folding whatever has
//! queued into one transaction. At most [`UNCOMMITTED_BATCHES`] batches wait for their commit; the
//! worker stops when the commit task finds the lease lost, and finishes only once everything
//! delivered is committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cloudevents::{AttributesReader as _, Event};
use futures::StreamExt as _;
use futures::future::{BoxFuture, FutureExt as _};
use futures::stream::FuturesOrdered;
use kinetic_api::eventing::DeliveryOrder;
use kinetic_store::{Millis, NewDeadLetter, NewDelivery};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::attempt::{deliver, kept_body};
use crate::dispatcher::Context;
use crate::log_cache::Logged;
use crate::plan::Plan;
use kinetic_outbound::retry::Verdict;

/// Batches delivered but not yet committed, at most.
const UNCOMMITTED_BATCHES: usize = 4;
/// Batches being delivered at once, at most.
const BATCHES_IN_DELIVERY: usize = 4;

/// What became of an event's first attempt.
pub(crate) enum First {
    Delivered,
    NotMatched,
    Row(NewDelivery),
    Dead(NewDeadLetter, bool),
}

impl First {
    /// What of a batch's first attempts the store records: the rows of attempts to retry, and
    /// the dead letters (with whether each goes to the dead-letter sink).
    pub(crate) fn to_record(
        outcomes: Vec<First>,
    ) -> (Vec<NewDelivery>, Vec<(NewDeadLetter, bool)>) {
        let mut rows = Vec::new();
        let mut dead = Vec::new();
        for outcome in outcomes {
            match outcome {
                First::Delivered | First::NotMatched => {}
                First::Row(row) => rows.push(row),
                First::Dead(letter, to_sink) => dead.push((letter, to_sink)),
            }
        }
        (rows, dead)
    }
}

/// A delivered batch, to commit: the cursor moves to `to`.
struct Progress {
    to: i64,
    rows: Vec<NewDelivery>,
    dead: Vec<(NewDeadLetter, bool)>,
}

pub async fn run(context: Arc<Context>, uid: String, position: i64, cancel: CancellationToken) {
    let (progress, queue) = mpsc::channel::<Progress>(UNCOMMITTED_BATCHES);
    let committed = Arc::new(AtomicI64::new(position));
    let lost = CancellationToken::new();
    let committer = tokio::spawn(commit_in_order(
        context.clone(),
        uid.clone(),
        position,
        queue,
        committed.clone(),
        lost.clone(),
        cancel.clone(),
    ));
    read_and_deliver(
        &context, &uid, position, &progress, &committed, &lost, &cancel,
    )
    .await;
    drop(progress);
    let _ = committer.await;
}

async fn read_and_deliver(
    context: &Arc<Context>,
    uid: &str,
    mut position: i64,
    progress: &mpsc::Sender<Progress>,
    committed: &AtomicI64,
    lost: &CancellationToken,
    cancel: &CancellationToken,
) {
    let mut commits = context.committed.subscribe();
    let mut pipeline = Pipeline::new(context.clone());
    // Batches being delivered, by the position their last event is at, collected in log order.
    let mut delivering: FuturesOrdered<BoxFuture<'static, (i64, Vec<First>)>> =
        FuturesOrdered::new();
    // Ordered lanes this worker queued rows in, by the batch end that carries them: until that batch
    // is committed the store cannot know the lane is blocked.
    let mut uncommitted_lanes: Vec<(i64, HashSet<String>)> = Vec::new();
    let mut started_on: Option<String> = None;
    // Woken by the poll (or starting): the read goes to the store, not only to what was signalled.
    let mut polled = true;
    loop {
        if cancel.is_cancelled() || lost.is_cancelled() {
            break;
        }
        // Collect what has finished; wait for the oldest batch when the pipeline is full.
        while let Some(Some((last, outcomes))) = if delivering.len() >= BATCHES_IN_DELIVERY {
            Some(delivering.next().await)
        } else {
            delivering.next().now_or_never()
        } {
            if !collect(progress, &mut uncommitted_lanes, last, outcomes).await {
                return;
            }
        }
        let Some(plan) = context.plans.get(uid) else {
            break;
        };
        // The cursor's position counts in one broker's log; a trigger moved to another broker gets a
        // new cursor (and a new worker).
        let broker = started_on.get_or_insert_with(|| plan.trigger.broker.clone());
        if *broker != plan.trigger.broker {
            break;
        }
        // Disabled: the cursor stays here, and the events after it wait in the log.
        if context.is_disabled(&plan) {
            break;
        }
        // Marked seen before reading: a commit from now on wakes the wait below.
        let seen = *commits.borrow_and_update();
        let events = match context
            .log
            .read(
                &plan.trigger.broker,
                position,
                context.config.batch_size,
                (!polled).then_some(seen),
            )
            .await
        {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(trigger = %plan.label, %error, "Reading the event log failed.");
                pause(cancel, Duration::from_secs(1)).await;
                continue;
            }
        };
        polled = false;
        let Some(last) = events.last().map(|e| e.stored.seq) else {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = lost.cancelled() => break,
                _ = commits.changed() => {}
                () = tokio::time::sleep(context.config.poll_interval) => polled = true,
                Some((last, outcomes)) = delivering.next(), if !delivering.is_empty() => {
                    if !collect(progress, &mut uncommitted_lanes, last, outcomes).await {
                        return;
                    }
                }
            }
            continue;
        };
        let done = committed.load(Ordering::Acquire);
        uncommitted_lanes.retain(|(to, _)| *to > done);
        pipeline.forget_settled(done);
        let pending: HashSet<String> = uncommitted_lanes
            .iter()
            .flat_map(|(_, lanes)| lanes.iter().cloned())
            .collect();
        let batch = pipeline.start(plan, events, last, &pending).await;
        delivering.push_back(batch.map(move |outcomes| (last, outcomes)).boxed());
        position = last;
    }
    // Stopping: what is being delivered finishes and is committed, unless the lease is gone.
    while !lost.is_cancelled()
        && let Some((last, outcomes)) = delivering.next().await
    {
        if !collect(progress, &mut uncommitted_lanes, last, outcomes).await {
            return;
        }
    }
}

/// Hands a delivered batch to the commit task; false once that task has stopped.
async fn collect(
    progress: &mpsc::Sender<Progress>,
    uncommitted_lanes: &mut Vec<(i64, HashSet<String>)>,
    last: i64,
    outcomes: Vec<First>,
) -> bool {
    let (rows, dead) = First::to_record(outcomes);
    let lanes: HashSet<String> = rows.iter().filter_map(|row| row.lane.clone()).collect();
    if !lanes.is_empty() {
        uncommitted_lanes.push((last, lanes));
    }
    progress
        .send(Progress {
            to: last,
            rows,
            dead,
        })
        .await
        .is_ok()
}

/// Delivers batches of one trigger, several at once: at most `concurrency` first attempts in
/// flight across them. In an ordered trigger each lane of a batch is a task that starts on the
/// lane's events once the same lane's events of the earlier batches are done, and learns from them
/// whether the lane is blocked (an event of it became a row); lanes free of earlier work start at
/// once. Tasks are aborted when the pipeline's batches are dropped (a lost lease).
struct Pipeline {
    context: Arc<Context>,
    permits: Arc<Semaphore>,
    /// The last task of each lane with work in flight or not yet known to be committed: the end of
    /// its batch, and whether it left the lane blocked (once done).
    tails: HashMap<String, (i64, LaneEnd)>,
}

impl Pipeline {
    fn new(context: Arc<Context>) -> Pipeline {
        let permits = Arc::new(Semaphore::new(context.config.concurrency.max(1)));
        Pipeline {
            context,
            permits,
            tails: HashMap::new(),
        }
    }

    /// Forgets lanes whose last task is done and left them free, or left them blocked in a batch
    /// committed up to `committed` (the store's blocked lanes say so from now on).
    fn forget_settled(&mut self, committed: i64) {
        self.tails
            .retain(|_, (end, lane_end)| match lane_end.peek() {
                None => true,
                Some(false) => false,
                Some(true) => *end > committed,
            });
    }

    /// Starts delivering `events` (ending at `end`); the future gives one outcome per event, in
    /// log order. `pending` are lanes blocked by rows not yet committed.
    async fn start(
        &mut self,
        plan: Arc<Plan>,
        events: Vec<Arc<Logged>>,
        end: i64,
        pending: &HashSet<String>,
    ) -> BoxFuture<'static, Vec<First>> {
        match plan.order {
            DeliveryOrder::Unordered => {
                let (context, permits) = (self.context.clone(), self.permits.clone());
                let concurrency = context.config.concurrency.max(1);
                let kept = events.clone();
                let task_plan = plan.clone();
                let task = AbortOnDropHandle::new(tokio::spawn(async move {
                    let plan = task_plan;
                    futures::stream::iter(events)
                        .map(|logged| {
                            let (context, plan, permits) = (&context, &plan, &permits);
                            async move {
                                match &logged.event {
                                    Some(event) if plan.filter.matches(event) => {
                                        let _permit = permits.acquire().await;
                                        first_attempt(context, plan, &logged, event, None).await
                                    }
                                    _ => First::NotMatched,
                                }
                            }
                        })
                        .buffered(concurrency)
                        .collect::<Vec<First>>()
                        .await
                }));
                async move {
                    match task.await {
                        Ok(outcomes) => outcomes,
                        // The task failed (it panicked): what it was delivering is retried.
                        Err(error) => {
                            tracing::error!(trigger = %plan.label, %error, "Delivering a batch failed; its events are retried.");
                            let now = chrono::Utc::now().timestamp_millis();
                            kept.iter()
                                .map(|logged| match &logged.event {
                                    Some(event) if plan.filter.matches(event) => First::Row(NewDelivery {
                                        lane: None,
                                        ..waiting(&plan, logged, String::new(), now)
                                    }),
                                    _ => First::NotMatched,
                                })
                                .collect()
                        }
                    }
                }
                .boxed()
            }
            DeliveryOrder::Ordered => self.start_ordered(plan, events, end, pending).await,
        }
    }

    async fn start_ordered(
        &mut self,
        plan: Arc<Plan>,
        events: Vec<Arc<Logged>>,
        end: i64,
        pending: &HashSet<String>,
    ) -> BoxFuture<'static, Vec<First>> {
        // Read after `pending` was taken: a row committed in between is then in one or the other.
        let blocked: Option<HashSet<String>> = match self
            .context
            .store
            .blocked_lanes(&plan.trigger.uid)
            .await
        {
            Ok(lanes) => Some(lanes.into_iter().chain(pending.iter().cloned()).collect()),
            Err(error) => {
                // Without knowing the blocked lanes, queue everything as rows: order is kept
                // either way.
                tracing::warn!(trigger = %plan.label, %error, "Reading blocked lanes failed; queueing the batch.");
                None
            }
        };
        let count = events.len();
        let mut results: Vec<Option<First>> = (0..count).map(|_| None).collect();
        // Lanes in order of first appearance, each with its events (and their index in the batch).
        let mut lanes: Vec<(String, Vec<Queued>)> = Vec::new();
        let mut lane_index: HashMap<String, usize> = HashMap::new();
        for (index, logged) in events.into_iter().enumerate() {
            let Some(lane) = logged
                .event
                .as_ref()
                .filter(|e| plan.filter.matches(e))
                .map(lane_of)
            else {
                results[index] = Some(First::NotMatched);
                continue;
            };
            match lane_index.get(&lane) {
                Some(&at) => lanes[at].1.push(Queued { index, logged }),
                None => {
                    lane_index.insert(lane.clone(), lanes.len());
                    lanes.push((lane, vec![Queued { index, logged }]));
                }
            }
        }
        let mut tasks = Vec::with_capacity(lanes.len());
        for (lane, list) in lanes {
            let blocked_now = blocked.as_ref().is_none_or(|b| b.contains(&lane));
            let before = self.tails.get(&lane).map(|(_, lane_end)| lane_end.clone());
            let (tell, told) = watch::channel(None);
            self.tails.insert(lane.clone(), (end, LaneEnd(told)));
            let (context, task_plan, permits) =
                (self.context.clone(), plan.clone(), self.permits.clone());
            let kept: Vec<(usize, Arc<Logged>)> = list
                .iter()
                .map(|queued| (queued.index, queued.logged.clone()))
                .collect();
            let task_lane = lane.clone();
            tasks.push((
                lane,
                kept,
                AbortOnDropHandle::new(tokio::spawn(async move {
                    let (plan, lane) = (task_plan, task_lane);
                    let mut stuck = blocked_now;
                    if let Some(before) = before {
                        stuck |= before.blocked().await;
                    }
                    let mut out = Vec::with_capacity(list.len());
                    for Queued { index, logged } in list {
                        let Some(event) = &logged.event else { continue };
                        if stuck {
                            let now = chrono::Utc::now().timestamp_millis();
                            out.push((
                                index,
                                First::Row(waiting(&plan, &logged, lane.clone(), now)),
                            ));
                            continue;
                        }
                        let outcome = {
                            let _permit = permits.acquire().await;
                            first_attempt(&context, &plan, &logged, event, Some(lane.clone())).await
                        };
                        stuck = matches!(outcome, First::Row(_));
                        out.push((index, outcome));
                    }
                    let _ = tell.send(Some(stuck));
                    out
                })),
            ));
        }
        async move {
            for (lane, kept, task) in tasks {
                match task.await {
                    Ok(finished) => {
                        for (index, outcome) in finished {
                            results[index] = Some(outcome);
                        }
                    }
                    // The lane's task failed (it panicked): its events queue in the lane as rows
                    // (the lane's later tasks learn it is blocked: the sender was dropped).
                    Err(error) => {
                        tracing::error!(trigger = %plan.label, %error, "Delivering a lane failed; its events are retried.");
                        let now = chrono::Utc::now().timestamp_millis();
                        for (index, logged) in kept {
                            results[index] =
                                Some(First::Row(waiting(&plan, &logged, lane.clone(), now)));
                        }
                    }
                }
            }
            results
                .into_iter()
                .map(|r| r.unwrap_or(First::NotMatched))
                .collect()
        }
        .boxed()
    }
}

/// Commits delivered batches in order, folding everything queued into one transaction. A failed
/// commit is tried again (the worker waits once [`UNCOMMITTED_BATCHES`] are queued); a lost lease
/// stops the worker. Ends when the worker is done and everything it sent is committed.
async fn commit_in_order(
    context: Arc<Context>,
    uid: String,
    mut position: i64,
    mut queue: mpsc::Receiver<Progress>,
    committed: Arc<AtomicI64>,
    lost: CancellationToken,
    cancel: CancellationToken,
) {
    while let Some(first) = queue.recv().await {
        let mut to = first.to;
        let mut rows = first.rows;
        let mut dead = first.dead;
        while let Ok(more) = queue.try_recv() {
            to = more.to;
            rows.extend(more.rows);
            dead.extend(more.dead);
        }
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            match context
                .store
                .advance_cursor(&context.config.owner, &uid, position, to, &rows, &dead, now)
                .await
            {
                Ok(true) => {
                    position = to;
                    committed.store(to, Ordering::Release);
                    if !rows.is_empty() || dead.iter().any(|(_, to_sink)| *to_sink) {
                        context.rows_added.notify_one();
                    }
                    break;
                }
                Ok(false) => {
                    tracing::info!(trigger = %uid, "Lost the cursor lease; another dispatcher took over.");
                    lost.cancel();
                    return;
                }
                Err(error) => {
                    tracing::warn!(trigger = %uid, %error, "Moving the cursor failed; trying again.");
                    // After a shutdown request, one more failure ends the worker: what was not
                    // committed is delivered again after restart (at-least-once).
                    if cancel.is_cancelled() {
                        lost.cancel();
                        return;
                    }
                    pause(&cancel, Duration::from_secs(1)).await;
                }
            }
        }
    }
}

async fn pause(cancel: &CancellationToken, period: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(period) => {}
    }
}

/// Filters and delivers one batch, on its own (no batch before it is in delivery). The result holds
/// one entry per event, in log order.
pub(crate) async fn process(
    context: &Arc<Context>,
    plan: Arc<Plan>,
    events: Vec<Arc<Logged>>,
) -> Vec<First> {
    let mut pipeline = Pipeline::new(context.clone());
    let batch = pipeline.start(plan, events, 0, &HashSet::new()).await;
    batch.await
}

/// How a lane's task ended: whether it left the lane blocked. A task that ended without saying
/// (it failed) left it blocked.
#[derive(Clone)]
struct LaneEnd(watch::Receiver<Option<bool>>);

impl LaneEnd {
    /// Once the task has ended: whether the lane is blocked.
    fn peek(&self) -> Option<bool> {
        match *self.0.borrow() {
            Some(blocked) => Some(blocked),
            None if self.0.has_changed().is_err() => Some(true),
            None => None,
        }
    }

    /// Waits for the task to end; whether it left the lane blocked.
    async fn blocked(mut self) -> bool {
        match self.0.wait_for(Option::is_some).await {
            Ok(blocked) => blocked.unwrap_or(true),
            Err(_) => true,
        }
    }
}

/// An event of an ordered lane (it matched, so it parsed), with its index in the batch.
struct Queued {
    index: usize,
    logged: Arc<Logged>,
}

fn lane_of(event: &Event) -> String {
    kinetic_api::cloudevent::extension_text(event, kinetic_api::event::PARTITION_KEY)
        .unwrap_or_default()
}

fn waiting(plan: &Plan, logged: &Logged, lane: String, now: Millis) -> NewDelivery {
    NewDelivery {
        trigger: plan.trigger.clone(),
        event_seq: logged.stored.seq,
        payload: logged.stored.payload.to_vec(),
        lane: Some(lane),
        attempts: 0,
        next_attempt_at: now,
        first_attempt_at: None,
        last_status: None,
        last_error: None,
    }
}

async fn first_attempt(
    context: &Context,
    plan: &Plan,
    logged: &Logged,
    event: &Event,
    lane: Option<String>,
) -> First {
    let stored = &logged.stored;
    let started: Millis = chrono::Utc::now().timestamp_millis();
    if context.is_disabled(plan) {
        // Disabled while this batch was being delivered: the rest of it waits, as rows, for the
        // trigger to be enabled (the retry worker puts them off until then).
        return First::Row(NewDelivery {
            lane,
            attempts: 0,
            ..waiting(plan, logged, String::new(), started)
        });
    }
    let attempt = deliver(context, plan, event).await;
    let now = chrono::Utc::now().timestamp_millis();
    match attempt.verdict {
        Verdict::Delivered => {
            context.metrics.outcome(&plan.label, "delivered");
            First::Delivered
        }
        Verdict::Retryable if plan.policy.allows_retry(1) => {
            context.metrics.outcome(&plan.label, "retry_scheduled");
            context
                .metrics
                .retries
                .get_or_create(&crate::metrics::TriggerLabels {
                    trigger: plan.label.clone(),
                })
                .inc();
            tracing::debug!(trigger = %plan.label, seq = stored.seq, error = ?attempt.error, "Delivery failed; will retry.");
            let due = plan
                .policy
                .retry_at(1, attempt.retry_after, now, rand::random());
            kinetic_telemetry::journal::retry(event.id(), event.source(), &plan.label, now, 1, due);
            First::Row(NewDelivery {
                trigger: plan.trigger.clone(),
                event_seq: stored.seq,
                payload: stored.payload.to_vec(),
                lane,
                attempts: 1,
                next_attempt_at: due,
                first_attempt_at: Some(started),
                last_status: attempt.status.map(i32::from),
                last_error: attempt.error.clone(),
            })
        }
        _ => {
            context.metrics.outcome(&plan.label, "dead_lettered");
            context
                .metrics
                .dead_letters
                .get_or_create(&crate::metrics::TriggerLabels {
                    trigger: plan.label.clone(),
                })
                .inc();
            tracing::info!(trigger = %plan.label, seq = stored.seq, error = ?attempt.error, "Delivery gave up; the event is dead-lettered.");
            kinetic_telemetry::journal::dead_lettered(event.id(), event.source(), &plan.label, now);
            First::Dead(
                NewDeadLetter {
                    trigger: plan.trigger.clone(),
                    event_seq: stored.seq,
                    payload: stored.payload.to_vec(),
                    lane,
                    attempts: 1,
                    last_status: attempt.status.map(i32::from),
                    last_error: attempt.error.clone(),
                    last_response: kept_body(&attempt),
                    first_attempt_at: Some(started),
                },
                plan.dead_letter_sink.is_some(),
            )
        }
    }
}
