//! Cursors: claims (creation at the head, leases, takeover) and compare-and-set advances.

use std::collections::HashSet;
use std::sync::Arc;

use kinetic_store::{Phase, SinkState, Store};

use crate::fixtures::{LONG_AGO, T0, all_dead_letters, claim, dead, events, retry, seqs, trigger};

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

pub async fn heartbeat_lists_live_dispatchers(store: Arc<dyn Store>) -> anyhow::Result<()> {
    assert_eq!(store.heartbeat("b", T0, 1_000).await?, ["b"]);
    assert_eq!(
        store.heartbeat("a", T0 + 10, 1_000).await?,
        ["a", "b"],
        "sorted"
    );
    assert_eq!(
        store.heartbeat("b", T0 + 500, 1_000).await?,
        ["a", "b"],
        "renewed"
    );
    // a's time ran out at T0 + 1010.
    assert_eq!(store.heartbeat("c", T0 + 1_011, 1_000).await?, ["b", "c"]);
    // A negative ttl is how a dispatcher leaves.
    assert_eq!(store.heartbeat("b", T0 + 1_012, -1).await?, ["c"]);
    Ok(())
}

pub async fn release_cursors_frees_only_the_owners_leases(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let (t1, t2, t3) = (
        trigger("default/b", "t1"),
        trigger("default/b", "t2"),
        trigger("default/b", "t3"),
    );
    store
        .claim_cursors("a", &[t1.clone(), t2.clone()], T0, 60_000)
        .await?;
    claim(&store, "b", &t3, T0).await?;

    store
        .release_cursors("a", &[t1.uid.clone(), t3.uid.clone()])
        .await?;
    assert_eq!(
        claim(&store, "c", &t1, T0 + 1).await?,
        0,
        "released: taken at once"
    );
    let others = store
        .claim_cursors("c", &[t2.clone(), t3.clone()], T0 + 1, 60_000)
        .await?;
    assert!(others.is_empty(), "t2 is still a's, t3 is b's: {others:?}");
    store.release_cursors("a", &[]).await?;
    Ok(())
}

pub async fn record_outcomes_without_a_cursor(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let trigger = trigger("default/kafka", "t");
    let rows = vec![retry(&trigger, 7, None, T0), retry(&trigger, 9, None, T0)];
    let dead = vec![
        (dead(&trigger, 8, None), true),
        (dead(&trigger, 10, None), false),
    ];
    store.record_outcomes(&[], &[], T0).await?;
    store.record_outcomes(&rows, &dead, T0).await?;
    // No cursor was created or needed.
    assert!(store.backlog().await?.iter().all(|b| b.unread == 0));
    let leased = store.lease_deliveries("me", T0, 30_000, 10).await?;
    let mut seqs = seqs(&leased);
    seqs.sort_unstable();
    // The two retries and the dead letter on its way to the sink.
    assert_eq!(seqs, [7, 8, 9]);
    let letters = all_dead_letters(&store).await?;
    let mut dead_seqs: Vec<i64> = letters.iter().map(|l| l.event_seq).collect();
    dead_seqs.sort_unstable();
    assert_eq!(dead_seqs, [8, 10]);
    Ok(())
}

pub async fn skipping_to_the_head_releases_a_free_cursor(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let t = crate::fixtures::trigger("default/b", "idle");
    let start = crate::fixtures::claim(&store, "a", &t, T0).await?;
    let appended = store
        .append(&crate::fixtures::events("default/b", "e", 3), T0, 0)
        .await?;
    assert_eq!(appended.len(), 3);
    // Leased: it stays.
    assert_eq!(store.skip_to_head(&t.uid, T0 + 1).await?, None);
    store
        .release_cursors("a", std::slice::from_ref(&t.uid))
        .await?;
    assert_eq!(store.skip_to_head(&t.uid, T0 + 1).await?, Some(start));
    let head = store.head("default/b").await?;
    assert_eq!(crate::fixtures::claim(&store, "b", &t, T0 + 2).await?, head);
    // Nothing behind it is kept for it: pruning removes the events.
    store
        .release_cursors("b", std::slice::from_ref(&t.uid))
        .await?;
    assert_eq!(
        store.skip_to_head(&t.uid, T0 + 3).await?,
        None,
        "at the head"
    );
    store.prune(0).await?;
    assert!(store.read("default/b", 0, 10).await?.is_empty());
    assert_eq!(store.skip_to_head("uid-unknown", T0).await?, None);
    Ok(())
}
