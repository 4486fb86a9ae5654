//! Outcomes of attempts (retry, done, give up, the dead-letter sink), lost leases and housekeeping.

use std::sync::Arc;

use kinetic_store::{Backlog, DeliveryUpdate, NewDelivery, Phase, SinkState, Store};

use crate::fixtures::{
    LONG_AGO, T0, all_dead_letters, claim, dead, events, find, give_up, record, retry, retry_at,
    seqs, trigger,
};

pub async fn retry_reschedules_and_releases(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    let never_tried = NewDelivery {
        attempts: 0,
        first_attempt_at: None,
        last_status: None,
        last_error: None,
        ..retry(&t, 2, Some("k"), T0)
    };
    record(&store, &t, &[retry(&t, 1, None, T0), never_tried]).await?;
    let leased = store.lease_deliveries("a", T0, 60_000, 10).await?;
    assert_eq!(seqs(&leased), [1, 2]);
    assert!(
        store
            .update_delivery("a", find(&leased, 1).id, retry_at(T0 + 5_000), T0)
            .await?
    );
    let timeout = DeliveryUpdate::Retry {
        attempts: 1,
        next_attempt_at: T0 + 5_000,
        last_status: None,
        last_error: Some("timeout".to_owned()),
    };
    assert!(
        store
            .update_delivery("a", find(&leased, 2).id, timeout, T0)
            .await?
    );

    assert!(
        store
            .lease_deliveries("b", T0 + 4_999, 60_000, 10)
            .await?
            .is_empty()
    );
    // Released: b gets them long before a's lease would have expired.
    let again = store.lease_deliveries("b", T0 + 5_000, 60_000, 10).await?;
    let (one, two) = (find(&again, 1), find(&again, 2));
    assert_eq!(
        (one.attempts, one.last_status, one.last_error.as_deref()),
        (2, Some(502), Some("bad gateway"))
    );
    assert_eq!(
        one.first_attempt_at,
        Some(T0 - 100),
        "the first attempt's time is kept"
    );
    assert_eq!(
        (two.attempts, two.last_status, two.last_error.as_deref()),
        (1, None, Some("timeout"))
    );
    assert_eq!(
        two.first_attempt_at,
        Some(T0),
        "the first attempt happened now"
    );
    assert_eq!(two.lane.as_deref(), Some("k"));
    Ok(())
}

pub async fn done_removes_the_row(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(&store, &t, &[retry(&t, 1, Some("k"), T0)]).await?;
    let leased = store.lease_deliveries("a", T0, 60_000, 10).await?;
    assert!(
        store
            .update_delivery("a", leased[0].id, DeliveryUpdate::Done, T0)
            .await?
    );
    assert!(
        store
            .lease_deliveries("b", i64::MAX / 2, 60_000, 10)
            .await?
            .is_empty()
    );
    assert_eq!(store.next_due().await?, None);
    assert!(store.blocked_lanes(&t.uid).await?.is_empty());
    assert!(all_dead_letters(&store).await?.is_empty());
    assert!(
        !store
            .update_delivery("a", leased[0].id, DeliveryUpdate::Done, T0)
            .await?,
        "gone"
    );
    Ok(())
}

pub async fn give_up_without_sink_records_a_dead_letter(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(&store, &t, &[retry(&t, 7, Some("k"), T0)]).await?;
    let leased = store.lease_deliveries("a", T0, 60_000, 10).await?;
    assert!(
        store
            .update_delivery("a", leased[0].id, give_up(&t, 7, false), T0 + 50)
            .await?
    );

    let letters = all_dead_letters(&store).await?;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(uuid::Uuid::parse_str(&letter.id)?.get_version_num(), 7);
    assert_eq!((&letter.trigger, letter.event_seq), (&t, 7));
    assert_eq!(letter.payload, b"event 7");
    assert_eq!(
        letter.lane.as_deref(),
        Some("k"),
        "the lane of the row that gave up"
    );
    assert_eq!(
        (
            letter.attempts,
            letter.last_status,
            letter.last_error.as_deref()
        ),
        (3, Some(500), Some("boom"))
    );
    assert_eq!(
        letter.last_response.as_deref(),
        Some(&b"{\"error\":\"boom\"}"[..])
    );
    assert_eq!(
        (letter.first_attempt_at, letter.dead_at),
        (Some(T0 - 1_000), T0 + 50)
    );
    assert_eq!(
        (letter.sink_state, letter.sink_error.as_deref()),
        (SinkState::None, None)
    );
    assert_eq!((letter.replayed_at, letter.replay_count), (None, 0));

    assert!(
        store
            .lease_deliveries("b", T0 + 60_000, 60_000, 10)
            .await?
            .is_empty(),
        "the row is gone"
    );
    assert!(store.blocked_lanes(&t.uid).await?.is_empty());
    Ok(())
}

pub async fn give_up_with_sink_then_sink_done(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(&store, &t, &[retry(&t, 7, Some("k"), T0)]).await?;
    let leased = store.lease_deliveries("a", T0, 60_000, 10).await?;
    assert!(
        store
            .update_delivery("a", leased[0].id, give_up(&t, 7, true), T0 + 50)
            .await?
    );

    let letter = all_dead_letters(&store).await?.remove(0);
    assert_eq!(letter.sink_state, SinkState::Pending);
    assert!(
        store.blocked_lanes(&t.uid).await?.is_empty(),
        "the lane moves on"
    );

    // Released and due now, attempts counted afresh in the new phase.
    let sink = store.lease_deliveries("b", T0 + 50, 60_000, 10).await?;
    assert_eq!(sink.len(), 1);
    let row = &sink[0];
    assert_eq!(
        (row.id, row.phase, row.attempts),
        (leased[0].id, Phase::DeadLetterSink, 0)
    );
    assert_eq!(row.dead_letter_id.as_deref(), Some(letter.id.as_str()));
    assert_eq!(
        (row.event_seq, row.payload.as_slice()),
        (7, &b"event 7"[..])
    );

    // A failed attempt at the sink is retried like any other.
    assert!(
        store
            .update_delivery("b", row.id, retry_at(T0 + 100), T0 + 60)
            .await?
    );
    let sink = store.lease_deliveries("b", T0 + 100, 60_000, 10).await?;
    assert_eq!(
        (sink[0].phase, sink[0].attempts),
        (Phase::DeadLetterSink, 2)
    );
    assert!(
        store
            .update_delivery("b", sink[0].id, DeliveryUpdate::Done, T0 + 110)
            .await?
    );

    let letter = store.get_dead_letter(&letter.id).await?.expect("kept");
    assert_eq!(
        (letter.sink_state, letter.sink_error),
        (SinkState::Delivered, None)
    );
    assert!(
        store
            .lease_deliveries("b", T0 + 60_000, 60_000, 10)
            .await?
            .is_empty(),
        "the row is gone"
    );
    Ok(())
}

pub async fn sink_give_up_marks_the_dead_letter_failed(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(&store, &t, &[retry(&t, 7, None, T0)]).await?;
    let leased = store.lease_deliveries("a", T0, 60_000, 10).await?;
    assert!(
        store
            .update_delivery("a", leased[0].id, give_up(&t, 7, true), T0)
            .await?
    );
    let sink = store.lease_deliveries("a", T0, 60_000, 10).await?;
    let sink_failure = DeliveryUpdate::GiveUp {
        dead: kinetic_store::NewDeadLetter {
            last_error: Some("sink said no".to_owned()),
            ..dead(&t, 7, None)
        },
        send_to_sink: true,
    };
    assert!(
        store
            .update_delivery("a", sink[0].id, sink_failure, T0 + 10)
            .await?
    );

    let letters = all_dead_letters(&store).await?;
    assert_eq!(letters.len(), 1, "no second dead letter");
    let letter = &letters[0];
    assert_eq!(
        (letter.sink_state, letter.sink_error.as_deref()),
        (SinkState::Failed, Some("sink said no"))
    );
    assert_eq!(
        letter.last_error.as_deref(),
        Some("boom"),
        "the subscriber's failure is kept"
    );
    assert!(
        store
            .lease_deliveries("a", T0 + 60_000, 60_000, 10)
            .await?
            .is_empty(),
        "the row is gone"
    );
    Ok(())
}

pub async fn update_after_losing_the_lease_writes_nothing(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(&store, &t, &[retry(&t, 1, None, T0)]).await?;
    let id = store.lease_deliveries("a", T0, 1_000, 10).await?[0].id;
    assert!(
        !store
            .update_delivery("b", id, DeliveryUpdate::Done, T0)
            .await?,
        "b never leased it"
    );
    assert!(
        !store
            .update_delivery("a", id + 1_000, DeliveryUpdate::Done, T0)
            .await?,
        "no such row"
    );
    assert!(
        store
            .lease_deliveries("b", T0 + 10, 1_000, 10)
            .await?
            .is_empty(),
        "still a's"
    );

    assert_eq!(
        store
            .lease_deliveries("b", T0 + 1_000, 1_000, 10)
            .await?
            .len(),
        1
    );
    assert!(
        !store
            .update_delivery("a", id, retry_at(T0 + 9_000), T0 + 1_001)
            .await?
    );
    assert!(
        !store
            .update_delivery("a", id, give_up(&t, 1, true), T0 + 1_001)
            .await?
    );
    assert!(
        all_dead_letters(&store).await?.is_empty(),
        "a's give-up wrote nothing"
    );
    assert!(
        store
            .lease_deliveries("c", T0 + 1_500, 1_000, 10)
            .await?
            .is_empty(),
        "a's retry did not release b's lease"
    );
    assert!(
        store
            .update_delivery("b", id, DeliveryUpdate::Done, T0 + 1_002)
            .await?
    );
    Ok(())
}

pub async fn release_all_leases_frees_cursors_and_rows(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(
        &store,
        &t,
        &[retry(&t, 1, None, T0), retry(&t, 2, None, T0)],
    )
    .await?;
    assert_eq!(store.lease_deliveries("a", T0, 60_000, 10).await?.len(), 2);
    assert!(
        store
            .claim_cursors("b", std::slice::from_ref(&t), T0 + 1, 60_000)
            .await?
            .is_empty()
    );

    store.release_all_leases().await?;
    assert_eq!(
        store
            .claim_cursors("b", std::slice::from_ref(&t), T0 + 1, 60_000)
            .await?
            .len(),
        1
    );
    assert_eq!(
        seqs(&store.lease_deliveries("b", T0 + 1, 60_000, 10).await?),
        [1, 2]
    );
    Ok(())
}

pub async fn drop_trigger_removes_cursor_and_rows(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    let u = trigger("default/b", "u");
    record(
        &store,
        &t,
        &[retry(&t, 1, Some("k"), T0), retry(&t, 2, None, T0)],
    )
    .await?;
    record(&store, &u, &[retry(&u, 3, None, T0)]).await?;
    let position = claim(&store, "recorder-t", &t, T0).await?;
    let dead_letters = [(dead(&t, 4, None), false)];
    assert!(
        store
            .advance_cursor(
                "recorder-t",
                &t.uid,
                position,
                position,
                &[],
                &dead_letters,
                T0
            )
            .await?
    );

    store.drop_trigger(&t.uid).await?;
    let backlog = store.backlog().await?;
    assert!(
        backlog.iter().all(|entry| entry.trigger_uid != t.uid),
        "{backlog:?}"
    );
    assert!(store.blocked_lanes(&t.uid).await?.is_empty());
    assert_eq!(
        seqs(&store.lease_deliveries("a", T0, 60_000, 10).await?),
        [3],
        "u's row stays"
    );
    assert_eq!(
        all_dead_letters(&store).await?.len(),
        1,
        "dead letters stay"
    );

    // A cursor made again starts at the head, not where the dropped one was.
    store
        .append(&events("default/b", "e", 2), T0, LONG_AGO)
        .await?;
    assert_eq!(
        claim(&store, "other", &t, T0).await?,
        store.head("default/b").await?
    );
    Ok(())
}

pub async fn backlog_counts_unread_and_pending(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let (t, u, v) = (
        trigger("default/b", "t"),
        trigger("default/c", "u"),
        trigger("default/b", "v"),
    );
    claim(&store, "me", &t, T0).await?;
    claim(&store, "me", &u, T0).await?;
    claim(&store, "me", &v, T0).await?;
    store
        .append(&events("default/b", "e", 5), T0, LONG_AGO)
        .await?;
    let head = store.head("default/b").await?;
    assert!(
        store
            .advance_cursor(
                "me",
                &t.uid,
                0,
                head - 3,
                &[retry(&t, head - 3, None, T0)],
                &[],
                T0
            )
            .await?
    );

    // v's dead letter is replayed after v's cursor is gone: a row without a cursor.
    let dead_letters = [(dead(&v, 1, None), false)];
    assert!(
        store
            .advance_cursor("me", &v.uid, 0, head, &[], &dead_letters, T0)
            .await?
    );
    let letter = all_dead_letters(&store).await?.remove(0);
    store.drop_trigger(&v.uid).await?;
    store
        .replay_dead_letters(&[letter.id], std::slice::from_ref(&v), T0)
        .await?;

    let mut backlog = store.backlog().await?;
    backlog.sort_by(|a, b| a.trigger_uid.cmp(&b.trigger_uid));
    let entry = |trigger: &kinetic_store::TriggerRef, unread, pending, oldest| Backlog {
        trigger_uid: trigger.uid.clone(),
        unread,
        pending,
        oldest,
    };
    // t: its events were accepted at T0, its row's first attempt was at T0 - 100; u has nothing
    // waiting; v's replayed row waits since its replay (T0).
    assert_eq!(
        backlog,
        [
            entry(&t, 3, 1, Some(T0 - 100)),
            entry(&u, 0, 0, None),
            entry(&v, 0, 1, backlog[2].oldest.filter(|at| *at <= T0))
        ]
    );
    assert!(backlog[2].oldest.is_some(), "{backlog:?}");
    Ok(())
}
