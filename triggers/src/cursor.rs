//! The cursor worker of one trigger: reads the broker's log after the cursor, delivers the events the
//! filter selects (first attempts), and moves the cursor in the same transaction that records every
//! event not delivered at once (a retry row or a dead letter). A crash before that commit means the
//! batch is read again: at-least-once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cloudevents::Event;
use futures::StreamExt as _;
use kinetic_api::eventing::DeliveryOrder;
use kinetic_store::{Millis, NewDeadLetter, NewDelivery, StoredEvent};
use tokio_util::sync::CancellationToken;

use crate::attempt::{deliver, kept_body};
use crate::dispatcher::Context;
use crate::plan::Plan;
use crate::policy::Verdict;

/// What became of an event's first attempt.
enum First {
    Delivered,
    NotMatched,
    Row(NewDelivery),
    Dead(NewDeadLetter, bool),
}

pub async fn run(context: Arc<Context>, uid: String, mut position: i64, cancel: CancellationToken) {
    let mut commits = context.committed.subscribe();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let Some(plan) = context.plans.get(&uid) else {
            return;
        };
        let events = match context
            .store
            .read(&plan.trigger.broker, position, context.config.batch_size)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(trigger = %plan.label, %error, "Reading the event log failed.");
                pause(&cancel, Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(last) = events.last().map(|e| e.seq) else {
            commits.borrow_and_update();
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = commits.changed() => {}
                () = tokio::time::sleep(context.config.poll_interval) => {}
            }
            continue;
        };
        let outcomes = process(&context, &plan, events).await;
        let now = chrono::Utc::now().timestamp_millis();
        let mut rows = Vec::new();
        let mut dead = Vec::new();
        for outcome in outcomes {
            match outcome {
                First::Delivered | First::NotMatched => {}
                First::Row(row) => rows.push(row),
                First::Dead(letter, to_sink) => dead.push((letter, to_sink)),
            }
        }
        match context
            .store
            .advance_cursor(
                &context.config.owner,
                &uid,
                position,
                last,
                &rows,
                &dead,
                now,
            )
            .await
        {
            Ok(true) => {
                position = last;
                if !rows.is_empty() || dead.iter().any(|(_, to_sink)| *to_sink) {
                    context.rows_added.notify_one();
                }
            }
            Ok(false) => {
                tracing::info!(trigger = %plan.label, "Lost the cursor lease; another dispatcher took over.");
                return;
            }
            Err(error) => {
                // The batch will be read and delivered again: at-least-once.
                tracing::warn!(trigger = %plan.label, %error, "Moving the cursor failed; the batch will be delivered again.");
                pause(&cancel, Duration::from_secs(1)).await;
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

/// Parses, filters and delivers one batch. The result holds one entry per event, in log order.
async fn process(context: &Context, plan: &Plan, events: Vec<StoredEvent>) -> Vec<First> {
    let parsed: Vec<(StoredEvent, Option<Event>)> = events
        .into_iter()
        .map(|stored| {
            let event = kinetic_api::cloudevent::from_json(&stored.payload).ok();
            if event.is_none() {
                context.metrics.corrupt_events.inc();
                tracing::error!(seq = stored.seq, broker = %plan.trigger.broker, "A stored event cannot be read; skipping it.");
            }
            (stored, event)
        })
        .collect();
    match plan.order {
        DeliveryOrder::Unordered => {
            futures::stream::iter(parsed)
                .map(|(stored, event)| async move {
                    match event {
                        Some(event) if plan.filter.matches(&event) => {
                            first_attempt(context, plan, stored, &event, None).await
                        }
                        _ => First::NotMatched,
                    }
                })
                .buffered(context.config.concurrency)
                .collect()
                .await
        }
        DeliveryOrder::Ordered => ordered(context, plan, parsed).await,
    }
}

/// Ordered delivery: events of one lane (`partitionkey`) one at a time in log order, lanes in
/// parallel. A lane whose event needs a retry (now or from an earlier batch) queues the rest of its
/// events behind it as rows.
async fn ordered(
    context: &Context,
    plan: &Plan,
    parsed: Vec<(StoredEvent, Option<Event>)>,
) -> Vec<First> {
    let blocked: HashSet<String> = match context.store.blocked_lanes(&plan.trigger.uid).await {
        Ok(lanes) => lanes.into_iter().collect(),
        Err(error) => {
            // Without knowing the blocked lanes, queue everything as rows: order is kept either way.
            tracing::warn!(trigger = %plan.label, %error, "Reading blocked lanes failed; queueing the batch.");
            let now = chrono::Utc::now().timestamp_millis();
            return parsed
                .into_iter()
                .map(|(stored, event)| match event {
                    Some(event) if plan.filter.matches(&event) => {
                        First::Row(waiting(plan, stored, lane_of(&event), now))
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
    for (index, (stored, event)) in parsed.into_iter().enumerate() {
        let Some(event) = event.filter(|e| plan.filter.matches(e)) else {
            results[index] = Some(First::NotMatched);
            continue;
        };
        let lane = lane_of(&event);
        match lanes.iter_mut().find(|(name, _)| *name == lane) {
            Some((_, list)) => list.push(Queued {
                index,
                stored,
                event,
            }),
            None => lanes.push((
                lane,
                vec![Queued {
                    index,
                    stored,
                    event,
                }],
            )),
        }
    }
    let finished: Vec<Vec<(usize, First)>> = futures::stream::iter(lanes)
        .map(|(lane, list)| {
            let blocked = blocked.contains(&lane);
            async move {
                let mut out = Vec::with_capacity(list.len());
                let mut stuck = blocked;
                for Queued {
                    index,
                    stored,
                    event,
                } in list
                {
                    if stuck {
                        let now = chrono::Utc::now().timestamp_millis();
                        out.push((index, First::Row(waiting(plan, stored, lane.clone(), now))));
                        continue;
                    }
                    let outcome =
                        first_attempt(context, plan, stored, &event, Some(lane.clone())).await;
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

/// An event of an ordered lane, with its index in the batch.
struct Queued {
    index: usize,
    stored: StoredEvent,
    event: Event,
}

fn lane_of(event: &Event) -> String {
    kinetic_api::cloudevent::extension_text(event, kinetic_api::event::PARTITION_KEY)
        .unwrap_or_default()
}

fn waiting(plan: &Plan, stored: StoredEvent, lane: String, now: Millis) -> NewDelivery {
    NewDelivery {
        trigger: plan.trigger.clone(),
        event_seq: stored.seq,
        payload: stored.payload,
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
    stored: StoredEvent,
    event: &Event,
    lane: Option<String>,
) -> First {
    let started: Millis = chrono::Utc::now().timestamp_millis();
    let attempt = deliver(context, plan, event).await;
    let now = chrono::Utc::now().timestamp_millis();
    match attempt.verdict {
        Verdict::Delivered => {
            context.metrics.outcome(&plan.label, "delivered");
            First::Delivered
        }
        Verdict::Retryable if plan.policy.retry >= 1 => {
            let wait = plan.policy.wait_before_retry(1, attempt.retry_after);
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
                payload: stored.payload,
                lane,
                attempts: 1,
                next_attempt_at: now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4),
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
                    payload: stored.payload,
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
