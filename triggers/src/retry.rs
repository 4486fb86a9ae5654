//! The retry worker: leases delivery rows that are due (retries, events waiting in an ordered lane,
//! dead letters going to their sink), makes one attempt each and records the outcome.

use cloudevents::AttributesReader as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kinetic_store::{Delivery, DeliveryUpdate, NewDeadLetter, Phase};
use tokio_util::sync::CancellationToken;

use crate::attempt::{deliver_within, kept_body};
use crate::dead_letter;
use crate::dispatcher::Context;
use crate::metrics::TriggerLabels;
use crate::plan::Plan;
use kinetic_outbound::retry::Verdict;

/// Rows leased per round.
const LEASE_BATCH: usize = 128;
/// Longest sleep between looks at the store (rows written by other processes).
const MAX_IDLE: Duration = Duration::from_millis(500);
/// How often rows are leased even when none look due, to take over expired leases.
const SWEEP: Duration = Duration::from_secs(5);
/// How long a row of a trigger that cannot deliver (not ready, or disabled) waits before it is
/// looked at again.
const DISABLED_RECHECK_MS: i64 = 5_000;
/// Longest wait for room under a subscriber's concurrency limit. Rows of one round are attempted
/// together, so a subscriber with a long queue must not hold the others' retries back: its rows
/// that found no room are put off by [`BUSY_RECHECK_MS`] (plus jitter), the attempt not counted.
const ROOM_WAIT: Duration = Duration::from_secs(2);
const BUSY_RECHECK_MS: i64 = 1_000;

pub async fn run(context: Arc<Context>, cancel: CancellationToken) {
    // Leasing is a write; when the (read-only) `next_due` says nothing is due, skip it, except every
    // `SWEEP` to pick up rows whose lease expired with a crashed dispatcher (`next_due` does not see
    // leased rows).
    let mut last_lease = tokio::time::Instant::now();
    let mut due_now = true;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if !due_now && last_lease.elapsed() < SWEEP {
            let wait = match context.store.next_due().await {
                Ok(Some(due)) => Duration::from_millis(
                    u64::try_from(due - chrono::Utc::now().timestamp_millis()).unwrap_or(0),
                ),
                Ok(None) => MAX_IDLE,
                Err(_) => Duration::from_secs(1),
            };
            if !wait.is_zero() {
                // Woken by new rows, or time passed: look again before leasing.
                idle(&context, &cancel, wait.min(MAX_IDLE)).await;
                continue;
            }
        }
        last_lease = tokio::time::Instant::now();
        let now = chrono::Utc::now().timestamp_millis();
        let rows = match context
            .store
            .lease_deliveries(&context.config.owner, now, lease_ms(&context), LEASE_BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "Leasing deliveries failed.");
                idle(&context, &cancel, Duration::from_secs(1)).await;
                continue;
            }
        };
        let full = rows.len() == LEASE_BATCH;
        futures::stream::iter(rows)
            .for_each_concurrent(LEASE_BATCH, |row| {
                let context = &context;
                async move { attempt_row(context, row).await }
            })
            .await;
        due_now = full;
    }
}

async fn idle(context: &Context, cancel: &CancellationToken, period: Duration) {
    if period.is_zero() {
        return;
    }
    tokio::select! {
        () = cancel.cancelled() => {}
        () = context.rows_added.notified() => {}
        () = tokio::time::sleep(period) => {}
    }
}

/// A row's lease must outlast its attempt: the longest timeout of any trigger, plus a margin.
fn lease_ms(context: &Context) -> i64 {
    let longest = context
        .plans
        .all()
        .iter()
        .map(|plan| plan.policy.timeout)
        .max()
        .unwrap_or(context.config.defaults.timeout);
    i64::try_from((longest + Duration::from_secs(10)).as_millis()).unwrap_or(60_000)
}

async fn attempt_row(context: &Context, row: Delivery) {
    let now = chrono::Utc::now().timestamp_millis();
    let Some(plan) = context.plans.get(&row.trigger.uid) else {
        // The trigger is not ready (or deleted; its rows go when its cursor is dropped). Look again later.
        let update = DeliveryUpdate::Retry {
            attempts: row.attempts,
            next_attempt_at: now + DISABLED_RECHECK_MS,
            last_status: row.last_status,
            last_error: row.last_error.clone(),
        };
        record(context, &row, update).await;
        return;
    };
    let Ok(event) = kinetic_api::cloudevent::from_json(&row.payload) else {
        context.metrics.corrupt_events.inc();
        tracing::error!(trigger = %plan.label, seq = row.event_seq, "A stored delivery cannot be read; dead-lettering it.");
        let update = give_up(
            &row,
            row.attempts,
            &plan,
            None,
            Some("the stored event is unreadable".into()),
            None,
            false,
        );
        record(context, &row, update).await;
        return;
    };
    let update = match row.phase {
        Phase::Subscriber => subscriber_attempt(context, &plan, &row, &event).await,
        Phase::DeadLetterSink => sink_attempt(context, &plan, &row, event).await,
    };
    record(context, &row, update).await;
}

async fn record(context: &Context, row: &Delivery, update: DeliveryUpdate) {
    let now = chrono::Utc::now().timestamp_millis();
    match context
        .store
        .update_delivery(&context.config.owner, row.id, update, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            row = row.id,
            "A delivery's lease was lost before its outcome was recorded."
        ),
        Err(error) => {
            tracing::warn!(row = row.id, %error, "Recording a delivery outcome failed; it will be attempted again.")
        }
    }
}

async fn subscriber_attempt(
    context: &Context,
    plan: &Plan,
    row: &Delivery,
    event: &cloudevents::Event,
) -> DeliveryUpdate {
    if context.is_disabled(plan) {
        // The subscriber ended the subscription: the row waits for the trigger to be enabled.
        return DeliveryUpdate::Retry {
            attempts: row.attempts,
            next_attempt_at: chrono::Utc::now().timestamp_millis() + DISABLED_RECHECK_MS,
            last_status: row.last_status,
            last_error: row.last_error.clone(),
        };
    }
    let Ok(attempt) = deliver_within(context, plan, event, Some(ROOM_WAIT)).await else {
        return busy(row);
    };
    let made = row.attempts + 1;
    let labels = TriggerLabels {
        trigger: plan.label.clone(),
    };
    match attempt.verdict {
        Verdict::Delivered => {
            context.metrics.outcome(&plan.label, "delivered");
            DeliveryUpdate::Done
        }
        Verdict::Retryable if plan.policy.allows_retry(made) => {
            context.metrics.outcome(&plan.label, "retry_scheduled");
            context.metrics.retries.get_or_create(&labels).inc();
            let now = chrono::Utc::now().timestamp_millis();
            let due = plan
                .policy
                .retry_at(made, attempt.retry_after, now, rand::random());
            kinetic_telemetry::journal::retry(
                event.id(),
                event.source(),
                &plan.label,
                now,
                u32::try_from(made).unwrap_or(u32::MAX),
                due,
            );
            DeliveryUpdate::Retry {
                attempts: made,
                next_attempt_at: due,
                last_status: attempt.status.map(i32::from),
                last_error: attempt.error.clone(),
            }
        }
        _ => {
            context.metrics.outcome(&plan.label, "dead_lettered");
            context.metrics.dead_letters.get_or_create(&labels).inc();
            tracing::info!(trigger = %plan.label, seq = row.event_seq, attempts = made, error = ?attempt.error, "Delivery gave up; the event is dead-lettered.");
            kinetic_telemetry::journal::dead_lettered(
                event.id(),
                event.source(),
                &plan.label,
                chrono::Utc::now().timestamp_millis(),
            );
            give_up(
                row,
                made,
                plan,
                attempt.status.map(i32::from),
                attempt.error.clone(),
                kept_body(&attempt),
                plan.dead_letter_sink.is_some(),
            )
        }
    }
}

async fn sink_attempt(
    context: &Context,
    plan: &Plan,
    row: &Delivery,
    event: cloudevents::Event,
) -> DeliveryUpdate {
    let Some(sink) = plan.dead_letter_sink.clone() else {
        // The sink was removed from the trigger since: nothing to send to.
        return give_up(
            row,
            row.attempts,
            plan,
            None,
            Some("the trigger no longer has a deadLetterSink".into()),
            None,
            false,
        );
    };
    let letter = match row.dead_letter_id.as_deref() {
        Some(id) => context.store.get_dead_letter(id).await.ok().flatten(),
        None => None,
    };
    let (status, body) = letter
        .map(|l| (l.last_status, l.last_response))
        .unwrap_or((row.last_status, None));
    // As for the subscriber, the sender leaves the broker's TTL out.
    let decorated = dead_letter::decorate(event, plan.subscriber.as_str(), status, body.as_deref());
    let Ok(attempt) = context
        .sender
        .send_within(
            &sink,
            &decorated,
            plan.policy.format,
            plan.policy.timeout,
            plan.signer.as_ref(),
            Some(ROOM_WAIT),
        )
        .await
    else {
        return busy(row);
    };
    let made = row.attempts + 1;
    match attempt.verdict {
        Verdict::Delivered => {
            context
                .metrics
                .outcome(&plan.label, "dead_letter_sink_delivered");
            DeliveryUpdate::Done
        }
        Verdict::Retryable if plan.policy.allows_retry(made) => DeliveryUpdate::Retry {
            attempts: made,
            next_attempt_at: plan.policy.retry_at(
                made,
                attempt.retry_after,
                chrono::Utc::now().timestamp_millis(),
                rand::random(),
            ),
            last_status: attempt.status.map(i32::from),
            last_error: attempt
                .error
                .map(|e| format!("dead-letter sink {sink}: {e}")),
        },
        _ => {
            context
                .metrics
                .outcome(&plan.label, "dead_letter_sink_failed");
            tracing::warn!(trigger = %plan.label, %sink, error = ?attempt.error, "Sending to the dead-letter sink gave up; the dead letter stays in the store.");
            give_up(
                row,
                made,
                plan,
                attempt.status.map(i32::from),
                attempt
                    .error
                    .map(|e| format!("dead-letter sink {sink}: {e}")),
                kept_body_of(&attempt.body),
                false,
            )
        }
    }
}

/// A row whose destination had no room: due again soon, its attempts as they were.
fn busy(row: &Delivery) -> DeliveryUpdate {
    let jitter = i64::from(rand::random::<u16>() % 500);
    DeliveryUpdate::Retry {
        attempts: row.attempts,
        next_attempt_at: chrono::Utc::now().timestamp_millis() + BUSY_RECHECK_MS + jitter,
        last_status: row.last_status,
        last_error: row.last_error.clone(),
    }
}

fn kept_body_of(body: &[u8]) -> Option<Vec<u8>> {
    (!body.is_empty()).then(|| body.to_vec())
}

/// The dead letter of a row after `attempts` attempts, with the last answer's details.
fn give_up(
    row: &Delivery,
    attempts: i32,
    plan: &Plan,
    status: Option<i32>,
    error: Option<String>,
    body: Option<Vec<u8>>,
    send_to_sink: bool,
) -> DeliveryUpdate {
    DeliveryUpdate::GiveUp {
        dead: NewDeadLetter {
            trigger: plan.trigger.clone(),
            event_seq: row.event_seq,
            payload: row.payload.clone(),
            lane: row.lane.clone(),
            attempts,
            last_status: status.or(row.last_status),
            last_error: error.or_else(|| row.last_error.clone()),
            last_response: body,
            first_attempt_at: row.first_attempt_at,
        },
        send_to_sink,
    }
}
