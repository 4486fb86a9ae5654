//! Builders for the values the bodies pass around. Every name is unique per call site, and each
//! test has its own database, so tests run in parallel.

use std::sync::Arc;

use kinetic_store::{
    DeadLetter, DeadLetterFilter, Delivery, DeliveryUpdate, NewDeadLetter, NewDelivery, NewEvent,
    Store, TriggerRef,
};

/// A moment in the tests' clock (Unix millis). Tests pass time in; nothing sleeps.
pub const T0: i64 = 1_700_000_000_000;
/// A dedupe window start before every event of a test.
pub const LONG_AGO: i64 = 0;

pub fn event(broker: &str, source: &str, id: &str, payload: &[u8]) -> NewEvent {
    NewEvent {
        broker: broker.to_owned(),
        source: source.to_owned(),
        id: id.to_owned(),
        payload: payload.to_vec().into(),
    }
}

/// `count` distinct events of one broker, ids `{prefix}-{n}`.
pub fn events(broker: &str, prefix: &str, count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|n| {
            event(
                broker,
                "test/source",
                &format!("{prefix}-{n}"),
                format!("{prefix} {n}").as_bytes(),
            )
        })
        .collect()
}

pub fn trigger(broker: &str, name: &str) -> TriggerRef {
    TriggerRef {
        uid: format!("uid-{name}"),
        namespace: "default".to_owned(),
        name: name.to_owned(),
        broker: broker.to_owned(),
    }
}

/// A row waiting for its second attempt at `next_attempt_at`.
pub fn retry(
    trigger: &TriggerRef,
    event_seq: i64,
    lane: Option<&str>,
    next_attempt_at: i64,
) -> NewDelivery {
    NewDelivery {
        trigger: trigger.clone(),
        event_seq,
        payload: format!("event {event_seq}").into_bytes(),
        lane: lane.map(str::to_owned),
        attempts: 1,
        next_attempt_at,
        first_attempt_at: Some(next_attempt_at - 100),
        last_status: Some(503),
        last_error: Some("unavailable".to_owned()),
    }
}

pub fn dead(trigger: &TriggerRef, event_seq: i64, lane: Option<&str>) -> NewDeadLetter {
    NewDeadLetter {
        trigger: trigger.clone(),
        event_seq,
        payload: format!("event {event_seq}").into_bytes(),
        lane: lane.map(str::to_owned),
        attempts: 3,
        last_status: Some(500),
        last_error: Some("boom".to_owned()),
        last_response: Some(b"{\"error\":\"boom\"}".to_vec()),
        first_attempt_at: Some(T0 - 1_000),
    }
}

/// Claims `trigger`'s cursor for `owner`, expecting to get it.
pub async fn claim(
    store: &Arc<dyn Store>,
    owner: &str,
    trigger: &TriggerRef,
    now: i64,
) -> anyhow::Result<i64> {
    let cursors = store
        .claim_cursors(owner, std::slice::from_ref(trigger), now, 30_000)
        .await?;
    anyhow::ensure!(
        cursors.len() == 1,
        "{owner} did not get the cursor of {}",
        trigger.name
    );
    Ok(cursors[0].position)
}

/// Puts rows in the store through a cursor (the only way rows are created besides replay).
pub async fn record(
    store: &Arc<dyn Store>,
    trigger: &TriggerRef,
    rows: &[NewDelivery],
) -> anyhow::Result<()> {
    let owner = format!("recorder-{}", trigger.name);
    let position = claim(store, &owner, trigger, T0).await?;
    let moved = store
        .advance_cursor(&owner, &trigger.uid, position, position, rows, &[], T0)
        .await?;
    anyhow::ensure!(moved, "recording rows failed");
    Ok(())
}

/// The `event_seq`s of leased rows, in lease order.
pub fn seqs(rows: &[Delivery]) -> Vec<i64> {
    rows.iter().map(|row| row.event_seq).collect()
}

/// A failed attempt, to be tried again at `next_attempt_at`.
pub fn retry_at(next_attempt_at: i64) -> DeliveryUpdate {
    DeliveryUpdate::Retry {
        attempts: 2,
        next_attempt_at,
        last_status: Some(502),
        last_error: Some("bad gateway".to_owned()),
    }
}

/// Giving up on a row of `trigger`.
pub fn give_up(trigger: &TriggerRef, seq: i64, send_to_sink: bool) -> DeliveryUpdate {
    DeliveryUpdate::GiveUp {
        dead: dead(trigger, seq, None),
        send_to_sink,
    }
}

/// The leased row of `event_seq`.
pub fn find(rows: &[Delivery], event_seq: i64) -> &Delivery {
    rows.iter()
        .find(|row| row.event_seq == event_seq)
        .unwrap_or_else(|| panic!("no leased row for event {event_seq} in {rows:?}"))
}

/// Every dead letter, oldest first.
pub async fn all_dead_letters(store: &Arc<dyn Store>) -> anyhow::Result<Vec<DeadLetter>> {
    Ok(store
        .list_dead_letters(&DeadLetterFilter::default())
        .await?)
}
