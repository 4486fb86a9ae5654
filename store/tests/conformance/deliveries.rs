//! Cursors and delivery rows: claims, advances, leases, lanes and the outcomes of attempts.

use std::collections::HashSet;
use std::sync::Arc;

use kinetic_store::{
    Backlog, DeadLetterFilter, Delivery, DeliveryUpdate, NewDelivery, Phase, SinkState, Store,
};

use crate::fixtures::{LONG_AGO, T0, claim, dead, events, record, retry, seqs, trigger};

fn retry_at(next_attempt_at: i64) -> DeliveryUpdate {
    DeliveryUpdate::Retry {
        attempts: 2,
        next_attempt_at,
        last_status: Some(502),
        last_error: Some("bad gateway".to_owned()),
    }
}

fn give_up(trigger: &kinetic_store::TriggerRef, seq: i64, send_to_sink: bool) -> DeliveryUpdate {
    DeliveryUpdate::GiveUp {
        dead: dead(trigger, seq, None),
        send_to_sink,
    }
}

fn find(rows: &[Delivery], event_seq: i64) -> &Delivery {
    rows.iter()
        .find(|row| row.event_seq == event_seq)
        .unwrap_or_else(|| panic!("no leased row for event {event_seq} in {rows:?}"))
}

async fn all_dead_letters(
    store: &Arc<dyn Store>,
) -> anyhow::Result<Vec<kinetic_store::DeadLetter>> {
    Ok(store
        .list_dead_letters(&DeadLetterFilter::default())
        .await?)
}

// ---------------------------------------------------------------- cursors

pub async fn claim_creates_cursors_at_the_head(store: Arc<dyn Store>) -> anyhow::Result<()> {
    store
        .append(&events("default/b", "early", 3), T0, LONG_AGO)
        .await?;
    let head = store.head("default/b").await?;
    let first = trigger("default/b", "first");
    assert_eq!(
        claim(&store, "a", &first, T0).await?,
        head,
        "a new cursor starts at the head"
    );

    store
        .append(&events("default/b", "later", 2), T0, LONG_AGO)
        .await?;
    assert_eq!(
        claim(&store, "a", &first, T0 + 1).await?,
        head,
        "renewing does not move the cursor"
    );
    let second = trigger("default/b", "second");
    assert_eq!(
        claim(&store, "a", &second, T0 + 1).await?,
        store.head("default/b").await?
    );
    assert_eq!(
        claim(&store, "a", &trigger("default/empty", "third"), T0).await?,
        0
    );

    // Only the triggers asked for are touched and returned.
    let other = trigger("default/b", "other");
    let cursors = store
        .claim_cursors("a", std::slice::from_ref(&other), T0 + 2, 1_000)
        .await?;
    assert_eq!(
        cursors
            .iter()
            .map(|cursor| cursor.trigger_uid.as_str())
            .collect::<Vec<_>>(),
        [other.uid.as_str()]
    );
    assert!(
        store
            .claim_cursors("b", std::slice::from_ref(&first), T0 + 2, 1_000)
            .await?
            .is_empty(),
        "still a's"
    );

    // Asking twice for the same trigger returns its cursor once.
    let twice = store
        .claim_cursors("a", &[first.clone(), first.clone()], T0 + 3, 1_000)
        .await?;
    assert_eq!(twice.len(), 1);
    Ok(())
}

pub async fn claim_leases_are_exclusive_renewed_and_taken_over(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    let free = trigger("default/b", "free");
    let just = |trigger: &kinetic_store::TriggerRef| vec![trigger.clone()];
    assert_eq!(
        store.claim_cursors("a", &just(&t), T0, 1_000).await?.len(),
        1
    );
    assert!(
        store
            .claim_cursors("b", &just(&t), T0 + 500, 1_000)
            .await?
            .is_empty(),
        "held by a"
    );

    // Renewal at T0 + 800 extends a's lease to T0 + 1800.
    assert_eq!(
        store
            .claim_cursors("a", &just(&t), T0 + 800, 1_000)
            .await?
            .len(),
        1
    );
    let both = [t.clone(), free.clone()];
    let got = store.claim_cursors("b", &both, T0 + 1_500, 1_000).await?;
    assert_eq!(
        got.iter()
            .map(|cursor| cursor.trigger_uid.as_str())
            .collect::<Vec<_>>(),
        [free.uid.as_str()]
    );

    // Expired: b takes it over, and a no longer has it.
    let got = store
        .claim_cursors("b", &just(&t), T0 + 1_800, 1_000)
        .await?;
    assert_eq!(got.len(), 1);
    assert!(
        store
            .claim_cursors("a", &just(&t), T0 + 1_900, 1_000)
            .await?
            .is_empty()
    );
    Ok(())
}

pub async fn cursor_claims_are_exclusive_across_processes(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
) -> anyhow::Result<()> {
    for round in 0..10 {
        let triggers: Vec<_> = (0..20)
            .map(|n| trigger("default/b", &format!("r{round}-t{n}")))
            .collect();
        let (a, b) = tokio::join!(
            first.claim_cursors("a", &triggers, T0, 30_000),
            second.claim_cursors("b", &triggers, T0, 30_000),
        );
        let a: HashSet<String> = a?.into_iter().map(|cursor| cursor.trigger_uid).collect();
        let b: HashSet<String> = b?.into_iter().map(|cursor| cursor.trigger_uid).collect();
        assert!(
            a.is_disjoint(&b),
            "round {round}: both own {:?}",
            a.intersection(&b).collect::<Vec<_>>()
        );
        assert_eq!(
            a.len() + b.len(),
            triggers.len(),
            "round {round}: every cursor has one owner"
        );
    }
    Ok(())
}

pub async fn advance_is_compare_and_set(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    assert_eq!(claim(&store, "a", &t, T0).await?, 0);
    store
        .append(&events("default/b", "e", 3), T0, LONG_AGO)
        .await?;
    let head = store.head("default/b").await?;
    let rows = [retry(&t, head, Some("k"), T0 + 1_000)];
    let dead_letters = [(dead(&t, head - 1, None), true)];

    let nothing_written = |store: Arc<dyn Store>| async move {
        assert!(store.blocked_lanes("uid-t").await?.is_empty());
        assert!(all_dead_letters(&store).await?.is_empty());
        assert!(
            store
                .lease_deliveries("probe", T0 + 1_000, 1_000, 10)
                .await?
                .is_empty()
        );
        anyhow::Ok(())
    };
    assert!(
        !store
            .advance_cursor("a", &t.uid, 7, head, &rows, &dead_letters, T0)
            .await?,
        "wrong from"
    );
    assert!(
        !store
            .advance_cursor("b", &t.uid, 0, head, &rows, &dead_letters, T0)
            .await?,
        "not the owner"
    );
    assert!(
        !store
            .advance_cursor("a", "uid-unknown", 0, head, &rows, &dead_letters, T0)
            .await?
    );
    nothing_written(store.clone()).await?;

    assert!(
        store
            .advance_cursor("a", &t.uid, 0, head, &rows, &[], T0)
            .await?
    );
    assert!(
        !store
            .advance_cursor("a", &t.uid, 0, head, &rows, &[], T0)
            .await?,
        "no longer at 0"
    );
    assert_eq!(
        store.blocked_lanes(&t.uid).await?,
        ["k"],
        "the rows were written once"
    );
    assert_eq!(
        claim(&store, "a", &t, T0 + 1).await?,
        head,
        "the cursor moved"
    );

    // The lease expires (claimed at T0 + 1 for 30 s) and b takes the cursor: a's advance fails.
    assert_eq!(claim(&store, "b", &t, T0 + 30_001).await?, head);
    store
        .append(&events("default/b", "f", 2), T0, LONG_AGO)
        .await?;
    let new_head = store.head("default/b").await?;
    assert!(
        !store
            .advance_cursor("a", &t.uid, head, new_head, &[], &[], T0 + 30_002)
            .await?,
        "lease lost"
    );
    assert!(
        store
            .advance_cursor("b", &t.uid, head, new_head, &[], &[], T0 + 30_002)
            .await?
    );
    Ok(())
}

pub async fn advance_records_deliveries_and_dead_letters(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    claim(&store, "a", &t, T0).await?;
    store
        .append(&events("default/b", "e", 4), T0, LONG_AGO)
        .await?;
    let head = store.head("default/b").await?;
    let (s2, s3, s4) = (head - 2, head - 1, head);
    let rows = [retry(&t, s2, None, T0 + 1_000)];
    let dead_letters = [(dead(&t, s3, Some("k")), true), (dead(&t, s4, None), false)];
    assert!(
        store
            .advance_cursor("a", &t.uid, 0, head, &rows, &dead_letters, T0)
            .await?
    );

    let letters = all_dead_letters(&store).await?;
    assert_eq!(letters.len(), 2);
    let to_sink = letters
        .iter()
        .find(|letter| letter.event_seq == s3)
        .expect("dead letter of s3");
    let kept = letters
        .iter()
        .find(|letter| letter.event_seq == s4)
        .expect("dead letter of s4");
    assert_eq!(to_sink.sink_state, SinkState::Pending);
    assert_eq!(to_sink.lane.as_deref(), Some("k"));
    assert_eq!(kept.sink_state, SinkState::None);
    assert_eq!(kept.dead_at, T0);

    // The dead letter going to the sink has a row due now; the retry waits for its time.
    let leased = store.lease_deliveries("a", T0, 60_000, 10).await?;
    assert_eq!(seqs(&leased), [s3]);
    assert_eq!(leased[0].phase, Phase::DeadLetterSink);
    assert_eq!(
        leased[0].dead_letter_id.as_deref(),
        Some(to_sink.id.as_str())
    );
    assert_eq!(leased[0].attempts, 0);
    let later = store.lease_deliveries("a", T0 + 1_000, 1_000, 10).await?;
    assert_eq!(seqs(&later), [s2]);
    let row = &later[0];
    assert_eq!(
        (row.phase, row.attempts, row.last_status),
        (Phase::Subscriber, 1, Some(503))
    );
    assert_eq!(row.trigger, t);
    assert_eq!(row.payload, format!("event {s2}").into_bytes());
    Ok(())
}

// ---------------------------------------------------------------- leases

pub async fn lease_takes_due_rows_only(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(
        &store,
        &t,
        &[
            retry(&t, 1, None, T0 - 10),
            retry(&t, 2, None, T0),
            retry(&t, 3, None, T0 + 1_000),
        ],
    )
    .await?;
    let leased = store.lease_deliveries("a", T0, 5_000, 10).await?;
    assert_eq!(seqs(&leased), [1, 2]);
    let row = &leased[0];
    assert_eq!(row.trigger, t);
    assert_eq!(row.payload, b"event 1");
    assert_eq!(
        (row.lane.as_deref(), row.phase, row.attempts),
        (None, Phase::Subscriber, 1)
    );
    assert_eq!(
        (row.first_attempt_at, row.last_status),
        (Some(T0 - 110), Some(503))
    );
    assert_eq!(
        (row.last_error.as_deref(), row.dead_letter_id.as_deref()),
        (Some("unavailable"), None)
    );
    assert!(leased[0].id < leased[1].id);

    assert!(
        store.lease_deliveries("a", T0, 5_000, 10).await?.is_empty(),
        "already leased"
    );
    assert!(
        store
            .lease_deliveries("a", T0 + 999, 5_000, 10)
            .await?
            .is_empty(),
        "not due yet"
    );
    assert!(
        store
            .lease_deliveries("a", T0 + 1_000, 5_000, 0)
            .await?
            .is_empty(),
        "limit 0"
    );
    assert_eq!(
        seqs(&store.lease_deliveries("a", T0 + 1_000, 5_000, 1).await?),
        [3]
    );
    Ok(())
}

pub async fn lease_expires_and_is_taken_again(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    record(&store, &t, &[retry(&t, 1, None, T0)]).await?;
    let leased = store.lease_deliveries("a", T0, 1_000, 10).await?;
    assert_eq!(leased.len(), 1);
    assert!(
        store
            .lease_deliveries("b", T0 + 999, 1_000, 10)
            .await?
            .is_empty()
    );
    let taken = store.lease_deliveries("b", T0 + 1_000, 1_000, 10).await?;
    assert_eq!(
        taken.iter().map(|row| row.id).collect::<Vec<_>>(),
        [leased[0].id]
    );
    assert!(
        !store
            .update_delivery("a", leased[0].id, DeliveryUpdate::Done, T0 + 1_001)
            .await?
    );
    assert!(
        store
            .update_delivery("b", leased[0].id, DeliveryUpdate::Done, T0 + 1_001)
            .await?
    );
    Ok(())
}

pub async fn row_leases_are_exclusive_across_processes(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    let rows: Vec<NewDelivery> = (1..=200).map(|seq| retry(&t, seq, None, T0)).collect();
    record(&first, &t, &rows).await?;

    let drain = |store: Arc<dyn Store>, owner: &'static str| async move {
        let mut ids = Vec::new();
        loop {
            let leased = store.lease_deliveries(owner, T0, 60_000, 7).await?;
            if leased.is_empty() {
                return anyhow::Ok(ids);
            }
            ids.extend(leased.iter().map(|row| row.id));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(drain(first, "a")),
        tokio::spawn(drain(second, "b"))
    );
    let (a, b) = (a??, b??);
    let a_set: HashSet<i64> = a.iter().copied().collect();
    let b_set: HashSet<i64> = b.iter().copied().collect();
    assert_eq!(a_set.len(), a.len());
    assert_eq!(b_set.len(), b.len());
    assert!(a_set.is_disjoint(&b_set), "rows leased by both owners");
    assert_eq!(a.len() + b.len(), 200);
    Ok(())
}

pub async fn ordered_lanes_lease_their_head_only(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    let u = trigger("default/b", "u");
    record(
        &store,
        &t,
        &[
            retry(&t, 1, Some("k1"), T0),
            retry(&t, 2, Some("k1"), T0),
            retry(&t, 3, Some("k1"), T0),
            retry(&t, 4, Some("k2"), T0),
            retry(&t, 5, None, T0),
            retry(&t, 6, None, T0),
        ],
    )
    .await?;
    record(&store, &u, &[retry(&u, 7, Some("k1"), T0)]).await?;

    let leased = store.lease_deliveries("a", T0, 60_000, 100).await?;
    assert_eq!(
        seqs(&leased),
        [1, 4, 5, 6, 7],
        "lane heads, unordered rows, and another trigger's lane"
    );
    assert!(
        store
            .lease_deliveries("a", T0, 60_000, 100)
            .await?
            .is_empty(),
        "2 and 3 wait behind 1"
    );

    assert!(
        store
            .update_delivery("a", find(&leased, 1).id, DeliveryUpdate::Done, T0)
            .await?
    );
    let second = store.lease_deliveries("a", T0, 60_000, 100).await?;
    assert_eq!(seqs(&second), [2]);

    // The head waits for a retry: the lane stays blocked until then.
    assert!(
        store
            .update_delivery("a", second[0].id, retry_at(T0 + 5_000), T0)
            .await?
    );
    assert!(
        store
            .lease_deliveries("a", T0 + 1, 60_000, 100)
            .await?
            .is_empty()
    );

    // A row on its way to the dead-letter sink does not hold its lane.
    assert!(
        store
            .update_delivery("a", find(&leased, 4).id, give_up(&t, 4, true), T0 + 1)
            .await?
    );
    let sink = store.lease_deliveries("a", T0 + 1, 60_000, 100).await?;
    assert_eq!(seqs(&sink), [4]);
    assert_eq!(sink[0].phase, Phase::DeadLetterSink);

    let head = store.lease_deliveries("a", T0 + 5_000, 60_000, 100).await?;
    assert_eq!(seqs(&head), [2]);
    assert!(
        store
            .update_delivery("a", head[0].id, give_up(&t, 2, true), T0 + 5_000)
            .await?
    );
    let next = store.lease_deliveries("a", T0 + 5_000, 60_000, 100).await?;
    assert_eq!(
        seqs(&next),
        [2, 3],
        "2 goes to the sink, 3 is now the head of k1"
    );
    assert_eq!(find(&next, 2).phase, Phase::DeadLetterSink);
    assert_eq!(find(&next, 3).phase, Phase::Subscriber);
    Ok(())
}

// ---------------------------------------------------------------- outcomes

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

// ---------------------------------------------------------------- queries and housekeeping

pub async fn blocked_lanes_are_lanes_with_subscriber_rows(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    let u = trigger("default/b", "u");
    record(
        &store,
        &t,
        &[
            retry(&t, 1, Some("b"), T0),
            retry(&t, 2, Some("a"), T0),
            retry(&t, 3, Some("a"), T0),
            retry(&t, 4, None, T0),
            retry(&t, 5, Some(""), T0),
            retry(&t, 6, Some("c"), T0),
        ],
    )
    .await?;
    record(&store, &u, &[retry(&u, 7, Some("z"), T0)]).await?;
    assert_eq!(store.blocked_lanes(&t.uid).await?, ["", "a", "b", "c"]);

    let leased = store.lease_deliveries("a", T0, 60_000, 100).await?;
    assert!(
        store
            .update_delivery("a", find(&leased, 6).id, give_up(&t, 6, true), T0)
            .await?
    );
    assert_eq!(
        store.blocked_lanes(&t.uid).await?,
        ["", "a", "b"],
        "a row going to the sink does not block"
    );
    assert_eq!(store.blocked_lanes(&u.uid).await?, ["z"]);
    assert!(store.blocked_lanes("uid-nobody").await?.is_empty());
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
    let entry = |trigger: &kinetic_store::TriggerRef, unread, pending| Backlog {
        trigger_uid: trigger.uid.clone(),
        unread,
        pending,
    };
    assert_eq!(backlog, [entry(&t, 3, 1), entry(&u, 0, 0), entry(&v, 0, 1)]);
    Ok(())
}

pub async fn next_due_ignores_leased_and_blocked_rows(store: Arc<dyn Store>) -> anyhow::Result<()> {
    assert_eq!(store.next_due().await?, None);
    let t = trigger("default/b", "t");
    record(
        &store,
        &t,
        &[
            retry(&t, 1, None, T0 + 500),
            retry(&t, 2, Some("k"), T0 + 100),
            retry(&t, 3, Some("k"), T0 + 50),
        ],
    )
    .await?;
    assert_eq!(
        store.next_due().await?,
        Some(T0 + 100),
        "3 waits behind 2 whatever its own time"
    );

    let leased = store.lease_deliveries("a", T0 + 100, 60_000, 10).await?;
    assert_eq!(seqs(&leased), [2]);
    assert_eq!(
        store.next_due().await?,
        Some(T0 + 500),
        "2 is leased, 3 still waits"
    );

    assert!(
        store
            .update_delivery("a", leased[0].id, DeliveryUpdate::Done, T0 + 100)
            .await?
    );
    assert_eq!(
        store.next_due().await?,
        Some(T0 + 50),
        "3 heads its lane now"
    );
    Ok(())
}
