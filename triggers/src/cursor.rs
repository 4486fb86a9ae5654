//! The cursor worker of one trigger: reads the broker's log after the cursor, delivers the events the
//! filter selects (first attempts), and moves the cursor in the same transaction that records every
//! event not delivered at once (a retry row or a dead letter). A crash before that commit means the
//! batch is read again: at-least-once.
//!
//! Reading and delivering do not wait for the commit: a companion task commits batches in order,
//! folding whatever has queued into one transaction, while the next batch is already being
//! delivered. At most [`UNCOMMITTED_BATCHES`] batches wait for their commit; the worker stops when
//! the commit task finds the lease lost, and finishes only once everything delivered is committed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cloudevents::Event;
use futures::StreamExt as _;
use kinetic_api::eventing::DeliveryOrder;
use kinetic_store::{Millis, NewDeadLetter, NewDelivery};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::attempt::{deliver, kept_body};
use crate::dispatcher::Context;
use crate::log_cache::Logged;
use crate::plan::Plan;
use kinetic_outbound::retry::Verdict;

/// Batches delivered but not yet committed, at most.
const UNCOMMITTED_BATCHES: usize = 4;

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
    context: &Context,
    uid: &str,
    mut position: i64,
    progress: &mpsc::Sender<Progress>,
    committed: &AtomicI64,
    lost: &CancellationToken,
    cancel: &CancellationToken,
) {
    let mut commits = context.committed.subscribe();
    // Ordered lanes this worker queued rows in, by the batch end that carries them: until that batch
    // is committed the store cannot know the lane is blocked.
    let mut uncommitted_lanes: Vec<(i64, HashSet<String>)> = Vec::new();
    let mut started_on: Option<String> = None;
    loop {
        if cancel.is_cancelled() || lost.is_cancelled() {
            return;
        }
        let Some(plan) = context.plans.get(uid) else {
            return;
        };
        // The cursor's position counts in one broker's log; a trigger moved to another broker gets a
        // new cursor (and a new worker).
        let broker = started_on.get_or_insert_with(|| plan.trigger.broker.clone());
        if *broker != plan.trigger.broker {
            return;
        }
        // Disabled: the cursor stays here, and the events after it wait in the log.
        if context.is_disabled(&plan) {
            return;
        }
        let events = match context
            .log
            .read(&plan.trigger.broker, position, context.config.batch_size)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(trigger = %plan.label, %error, "Reading the event log failed.");
                pause(cancel, Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(last) = events.last().map(|e| e.stored.seq) else {
            commits.borrow_and_update();
            tokio::select! {
                () = cancel.cancelled() => return,
                () = lost.cancelled() => return,
                _ = commits.changed() => {}
                () = tokio::time::sleep(context.config.poll_interval) => {}
            }
            continue;
        };
        let done = committed.load(Ordering::Acquire);
        uncommitted_lanes.retain(|(to, _)| *to > done);
        let pending: HashSet<String> = uncommitted_lanes
            .iter()
            .flat_map(|(_, lanes)| lanes.iter().cloned())
            .collect();
        let outcomes = process(context, &plan, events, &pending).await;
        let (rows, dead) = First::to_record(outcomes);
        let lanes: HashSet<String> = rows.iter().filter_map(|row| row.lane.clone()).collect();
        if !lanes.is_empty() {
            uncommitted_lanes.push((last, lanes));
        }
        if progress
            .send(Progress {
                to: last,
                rows,
                dead,
            })
            .await
            .is_err()
        {
            return;
        }
        position = last;
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

/// Filters and delivers one batch. The result holds one entry per event, in log order.
pub(crate) async fn process(
    context: &Context,
    plan: &Plan,
    events: Vec<Arc<Logged>>,
    pending_lanes: &HashSet<String>,
) -> Vec<First> {
    match plan.order {
        DeliveryOrder::Unordered => {
            futures::stream::iter(events)
                .map(|logged| async move {
                    match &logged.event {
                        Some(event) if plan.filter.matches(event) => {
                            first_attempt(context, plan, &logged, event, None).await
                        }
                        _ => First::NotMatched,
                    }
                })
                .buffered(context.config.concurrency)
                .collect()
                .await
        }
        DeliveryOrder::Ordered => ordered(context, plan, events, pending_lanes).await,
    }
}

/// Ordered delivery: events of one lane (`partitionkey`) one at a time in log order, lanes in
/// parallel. A lane whose event needs a retry (now or from an earlier batch) queues the rest of its
/// events behind it as rows.
async fn ordered(
    context: &Context,
    plan: &Plan,
    parsed: Vec<Arc<Logged>>,
    pending_lanes: &HashSet<String>,
) -> Vec<First> {
    let blocked: HashSet<String> = match context.store.blocked_lanes(&plan.trigger.uid).await {
        Ok(lanes) => lanes
            .into_iter()
            .chain(pending_lanes.iter().cloned())
            .collect(),
        Err(error) => {
            // Without knowing the blocked lanes, queue everything as rows: order is kept either way.
            tracing::warn!(trigger = %plan.label, %error, "Reading blocked lanes failed; queueing the batch.");
            let now = chrono::Utc::now().timestamp_millis();
            return parsed
                .iter()
                .map(|logged| match &logged.event {
                    Some(event) if plan.filter.matches(event) => {
                        First::Row(waiting(plan, logged, lane_of(event), now))
                    }
                    _ => First::NotMatched,
                })
                .collect();
        }
    };
    let count = parsed.len();
    // Lanes in order of first appearance, each with its events (and their index in the batch).
    let mut lanes: Vec<(String, Vec<Queued>)> = Vec::new();
    let mut results: Vec<Option<First>> = (0..count).map(|_| None).collect();
    for (index, logged) in parsed.into_iter().enumerate() {
        let Some(lane) = logged
            .event
            .as_ref()
            .filter(|e| plan.filter.matches(e))
            .map(lane_of)
        else {
            results[index] = Some(First::NotMatched);
            continue;
        };
        match lanes.iter_mut().find(|(name, _)| *name == lane) {
            Some((_, list)) => list.push(Queued { index, logged }),
            None => lanes.push((lane, vec![Queued { index, logged }])),
        }
    }
    let finished: Vec<Vec<(usize, First)>> = futures::stream::iter(lanes)
        .map(|(lane, list)| {
            let blocked = blocked.contains(&lane);
            async move {
                let mut out = Vec::with_capacity(list.len());
                let mut stuck = blocked;
                for Queued { index, logged } in list {
                    let Some(event) = &logged.event else { continue };
                    if stuck {
                        let now = chrono::Utc::now().timestamp_millis();
                        out.push((index, First::Row(waiting(plan, &logged, lane.clone(), now))));
                        continue;
                    }
                    let outcome =
                        first_attempt(context, plan, &logged, event, Some(lane.clone())).await;
                    stuck = matches!(outcome, First::Row(_));
                    out.push((index, outcome));
                }
                out
            }
        })
        .buffer_unordered(context.config.concurrency)
        .collect()
        .await;
    for (index, outcome) in finished.into_iter().flatten() {
        results[index] = Some(outcome);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(First::NotMatched))
        .collect()
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
        payload: logged.stored.payload.clone(),
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
            First::Row(NewDelivery {
                trigger: plan.trigger.clone(),
                event_seq: stored.seq,
                payload: stored.payload.clone(),
                lane,
                attempts: 1,
                next_attempt_at: plan
                    .policy
                    .retry_at(1, attempt.retry_after, now, rand::random()),
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
            First::Dead(
                NewDeadLetter {
                    trigger: plan.trigger.clone(),
                    event_seq: stored.seq,
                    payload: stored.payload.clone(),
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
