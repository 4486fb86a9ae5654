//! One attempt of one event for one trigger, shared by first attempts ([`crate::cursor`]) and
//! retries ([`crate::retry`]): send, then publish a reply to the trigger's broker before the attempt
//! counts as delivered. An answer of `410 Gone` disables the trigger ([`crate::disable`]).

use std::time::{Duration, Instant};

use tracing::Instrument as _;

use cloudevents::Event;
use kinetic_api::event::{self as rules, BROKER_TTL};
use kinetic_api::eventing::BrokerClass;
use kinetic_log::CommitError;
use kinetic_log::LogError;
use kinetic_store::NewEvent;

use crate::disable::{self, Disabled};
use crate::dispatcher::Context;
use crate::plan::Plan;
use kinetic_outbound::retry::Verdict;
use kinetic_outbound::sender::{Attempt, Busy};

/// Delivers `event` to the plan's subscriber. A reply is appended to the broker's log (with the
/// original's TTL, decremented) before this returns `Delivered`; if storing it fails the attempt is
/// retryable, so a reply is never lost.
pub async fn deliver(context: &Context, plan: &Plan, event: &Event) -> Attempt {
    deliver_within(context, plan, event, None)
        .await
        .unwrap_or_else(|Busy| Attempt {
            verdict: Verdict::Retryable,
            status: None,
            error: Some("the subscriber had no room".into()),
            body: Vec::new(),
            retry_after: None,
            reply: None,
        })
}

/// [`deliver`], waiting at most `wait` (when given) for room under the subscriber's concurrency
/// limit: past it nothing was sent ([`Busy`]) and the attempt does not count.
pub async fn deliver_within(
    context: &Context,
    plan: &Plan,
    event: &Event,
    wait: Option<Duration>,
) -> Result<Attempt, Busy> {
    // One span per attempt, in the trace the event brought (its distributed-tracing extension).
    let span = kinetic_telemetry::root_span!(
        kinetic_telemetry::Parent::Event(event),
        "deliver",
        otel.kind = "client",
        trigger = %plan.label,
        event.id = %cloudevents::AttributesReader::id(event),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let at = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let attempt = attempt(context, plan, event, wait)
        .instrument(span.clone())
        .await;
    if let Ok(attempt) = &attempt {
        use cloudevents::AttributesReader as _;
        kinetic_telemetry::journal::attempt(
            event.id(),
            event.source(),
            &plan.label,
            at,
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            attempt.status,
            match attempt.verdict {
                Verdict::Delivered => "delivered",
                Verdict::Retryable => "retryable",
                Verdict::Permanent => "permanent",
            },
            attempt.error.as_deref(),
            &attempt.body,
        );
    }
    if !span.is_none()
        && let Ok(attempt) = &attempt
    {
        if let Some(status) = attempt.status {
            span.record("http.response.status_code", i64::from(status));
        }
        if attempt.verdict != Verdict::Delivered {
            span.record("otel.status_code", "ERROR");
            if let Some(error) = &attempt.error {
                span.record("error", error.as_str());
            }
        }
    }
    attempt
}

async fn attempt(
    context: &Context,
    plan: &Plan,
    event: &Event,
    wait: Option<Duration>,
) -> Result<Attempt, Busy> {
    // As Knative: the subscriber does not see the broker's TTL (the sender leaves it out); a reply
    // inherits it.
    let ttl = kinetic_api::cloudevent::extension_i64(event, BROKER_TTL)
        .ok()
        .flatten();
    let started = Instant::now();
    let mut attempt = context
        .sender
        .send_within(
            &plan.subscriber,
            event,
            plan.policy.format,
            plan.policy.timeout,
            plan.signer.as_ref(),
            wait,
        )
        .await?;
    context
        .metrics
        .attempt_duration
        .observe(started.elapsed().as_secs_f64());
    if attempt.status == Some(disable::GONE) {
        disable(context, plan, event).await;
        attempt.error = Some(format!(
            "HTTP {} Gone: the subscriber ended the subscription; delivery to this trigger is disabled until it is applied again with a change",
            disable::GONE
        ));
    }
    if attempt.verdict == Verdict::Delivered {
        observe_latency(context, event);
        if let Some(reply) = attempt.reply.take()
            && let Err(error) = publish_reply(context, plan, reply, ttl).await
        {
            attempt.verdict = Verdict::Retryable;
            attempt.error = Some(format!("the reply could not be stored: {error}"));
        }
    }
    Ok(attempt)
}

/// Disables the plan's trigger: in this process at once (so no further event is sent), then in
/// the store, for every process and restarts.
async fn disable(context: &Context, plan: &Plan, event: &Event) {
    use cloudevents::AttributesReader as _;
    let now = chrono::Utc::now().timestamp_millis();
    let disabled = Disabled {
        uid: plan.trigger.uid.clone(),
        generation: plan.generation,
        status: disable::GONE,
        url: plan.subscriber.to_string(),
        at: now,
        event_id: event.id().to_owned(),
        released_at: None,
    };
    if context
        .disabled
        .is_disabled(&disabled.uid, disabled.generation)
    {
        // Another event of the batch got there first.
        return;
    }
    context.disabled.mark(disabled.clone());
    tracing::warn!(trigger = %plan.label, subscriber = %plan.subscriber, "The subscriber answered 410 Gone; the trigger's delivery is disabled until it is applied again with a change. Its events wait.");
    if let Err(error) = disable::store(
        &*context.store,
        &plan.trigger.namespace,
        &plan.trigger.name,
        &disabled,
        now,
    )
    .await
    {
        tracing::error!(trigger = %plan.label, %error, "Recording that the trigger is disabled failed; this process keeps it disabled, others and a restart will not know.");
    }
}

async fn publish_reply(
    context: &Context,
    plan: &Plan,
    mut reply: Event,
    ttl: Option<i64>,
) -> Result<(), LogError> {
    use cloudevents::AttributesReader as _;
    let ttl = ttl.unwrap_or(rules::DEFAULT_BROKER_TTL);
    reply.set_extension(BROKER_TTL, cloudevents::event::ExtensionValue::Integer(ttl));
    // The reply's delivery continues this attempt's trace.
    kinetic_telemetry::stamp(&mut reply);
    if let Err(error) = rules::admit(&mut reply, &rules::arrival_time(chrono::Utc::now())) {
        tracing::warn!(trigger = %plan.label, %error, "Dropping the subscriber's reply.");
        return Ok(());
    }
    let record = NewEvent {
        broker: plan.trigger.broker.clone(),
        source: reply.source().clone(),
        id: reply.id().to_owned(),
        payload: kinetic_api::cloudevent::encode_structured(&reply),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let since = now - context.config.dedupe_window_ms();
    match plan.class {
        BrokerClass::Store => match &context.replies {
            // The group commit signals the cursor workers itself.
            Some(committer) => {
                committer
                    .commit(vec![(record, reply)])
                    .await
                    .map_err(|error| match error {
                        CommitError::Log(error) => LogError::Commit(error.to_string()),
                        CommitError::Stopped => LogError::Commit("it has stopped".to_owned()),
                    })?;
            }
            None => {
                context.store.append(&[record], now, since).await?;
                context
                    .committed
                    .send_modify(|count| *count = count.wrapping_add(1));
            }
        },
        BrokerClass::Kafka => {
            use kinetic_log::Log as _;
            let log = context.kafka.as_ref().ok_or(LogError::KafkaNotConfigured)?;
            log.append(&[record], now, since).await?;
        }
    }
    Ok(())
}

fn observe_latency(context: &Context, event: &Event) {
    let Some(cloudevents::event::ExtensionValue::String(arrival)) =
        event.extension(rules::ARRIVAL_TIME)
    else {
        return;
    };
    if let Some(arrival) = rules::arrival_micros(arrival) {
        let elapsed = chrono::Utc::now().timestamp_micros() - arrival;
        if elapsed >= 0 {
            context
                .metrics
                .delivery_latency
                .observe(elapsed as f64 / 1e6);
        }
    }
}

/// The body kept with a dead letter.
pub fn kept_body(attempt: &Attempt) -> Option<Vec<u8>> {
    (!attempt.body.is_empty()).then(|| attempt.body.clone())
}
