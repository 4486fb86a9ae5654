//! Dead letters: listing, lookup and replay.

use std::sync::Arc;

use kinetic_store::{
    DeadLetter, DeadLetterFilter, DeadLetterSelection, DeliveryUpdate, Phase, Store, TriggerRef,
};

use crate::fixtures::{T0, claim, dead, record, retry, seqs, trigger};

/// Records a dead letter through `trigger`'s cursor at `now` and returns it.
async fn kill(
    store: &Arc<dyn Store>,
    trigger: &TriggerRef,
    seq: i64,
    lane: Option<&str>,
    now: i64,
) -> anyhow::Result<DeadLetter> {
    let owner = format!("recorder-{}", trigger.name);
    let position = claim(store, &owner, trigger, now).await?;
    let dead_letters = [(dead(trigger, seq, lane), false)];
    assert!(
        store
            .advance_cursor(
                &owner,
                &trigger.uid,
                position,
                position,
                &[],
                &dead_letters,
                now
            )
            .await?
    );
    let all = store
        .list_dead_letters(&DeadLetterFilter::default())
        .await?;
    Ok(all
        .into_iter()
        .find(|letter| letter.trigger.uid == trigger.uid && letter.event_seq == seq)
        .expect("recorded"))
}

fn filter(
    trigger: Option<(&str, &str)>,
    unreplayed_only: bool,
    limit: Option<usize>,
) -> DeadLetterFilter {
    DeadLetterFilter {
        trigger: trigger.map(|(namespace, name)| (namespace.to_owned(), name.to_owned())),
        unreplayed_only,
        limit,
        after: None,
    }
}

async fn listed(store: &Arc<dyn Store>, filter: DeadLetterFilter) -> anyhow::Result<Vec<i64>> {
    Ok(store
        .list_dead_letters(&filter)
        .await?
        .iter()
        .map(|letter| letter.event_seq)
        .collect())
}

pub async fn list_filters_and_orders(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let (t1, t2) = (trigger("default/b", "t1"), trigger("default/b", "t2"));
    let elsewhere = TriggerRef {
        uid: "uid-elsewhere".to_owned(),
        namespace: "other".to_owned(),
        ..trigger("other/b", "t1")
    };
    kill(&store, &t1, 1, None, T0 + 30).await?;
    kill(&store, &t2, 2, None, T0 + 10).await?;
    let third = kill(&store, &t1, 3, None, T0 + 20).await?;
    kill(&store, &elsewhere, 4, None, T0 + 40).await?;

    assert_eq!(
        listed(&store, filter(None, false, None)).await?,
        [2, 3, 1, 4],
        "oldest first"
    );
    assert_eq!(
        listed(&store, filter(Some(("default", "t1")), false, None)).await?,
        [3, 1]
    );
    assert_eq!(
        listed(&store, filter(Some(("other", "t1")), false, None)).await?,
        [4]
    );
    assert!(
        listed(&store, filter(Some(("default", "nobody")), false, None))
            .await?
            .is_empty()
    );
    assert_eq!(listed(&store, filter(None, false, Some(1))).await?, [2]);
    assert_eq!(
        listed(&store, filter(Some(("default", "t1")), false, Some(1))).await?,
        [3]
    );

    let replayed = store
        .replay_dead_letters(
            std::slice::from_ref(&third.id),
            std::slice::from_ref(&t1),
            T0 + 50,
        )
        .await?;
    assert_eq!(replayed, [third.id]);
    assert_eq!(listed(&store, filter(None, true, None)).await?, [2, 1, 4]);
    assert_eq!(
        listed(&store, filter(Some(("default", "t1")), true, None)).await?,
        [1]
    );
    Ok(())
}

pub async fn get_returns_what_was_recorded(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    let letter = kill(&store, &t, 9, Some("k"), T0).await?;
    assert_eq!(
        store.get_dead_letter(&letter.id).await?,
        Some(letter.clone())
    );
    assert_eq!(letter.lane.as_deref(), Some("k"));
    assert_eq!(letter.dead_at, T0);
    assert_eq!(
        store
            .get_dead_letter(&uuid::Uuid::now_v7().to_string())
            .await?,
        None
    );
    assert_eq!(store.get_dead_letter("not-a-uuid").await?, None);
    Ok(())
}

pub async fn replay_queues_found_letters_of_live_triggers(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let (live, gone) = (trigger("default/b", "live"), trigger("default/b", "gone"));
    let kept = kill(&store, &live, 1, None, T0).await?;
    let orphan = kill(&store, &gone, 2, None, T0).await?;
    let unknown = uuid::Uuid::now_v7().to_string();

    let ids = [
        kept.id.clone(),
        unknown,
        orphan.id.clone(),
        "garbage".to_owned(),
        kept.id.clone(),
    ];
    let replayed = store
        .replay_dead_letters(&ids, std::slice::from_ref(&live), T0 + 100)
        .await?;
    assert_eq!(
        replayed,
        std::slice::from_ref(&kept.id),
        "found, and its trigger still exists; once"
    );

    let kept_now = store.get_dead_letter(&kept.id).await?.expect("kept");
    assert_eq!(
        (kept_now.replayed_at, kept_now.replay_count),
        (Some(T0 + 100), 1)
    );
    let orphan_now = store.get_dead_letter(&orphan.id).await?.expect("kept");
    assert_eq!(
        (orphan_now.replayed_at, orphan_now.replay_count),
        (None, 0),
        "not replayed"
    );

    assert!(
        store
            .lease_deliveries("a", T0 + 99, 60_000, 10)
            .await?
            .is_empty(),
        "due at the replay"
    );
    let rows = store.lease_deliveries("a", T0 + 100, 60_000, 10).await?;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (&row.trigger, row.event_seq, row.payload.as_slice()),
        (&live, 1, &b"event 1"[..])
    );
    assert_eq!(
        (row.phase, row.attempts, row.first_attempt_at),
        (Phase::Subscriber, 0, None)
    );
    assert_eq!(
        (
            row.last_status,
            row.last_error.as_deref(),
            row.dead_letter_id.as_deref()
        ),
        (None, None, None)
    );

    // Replaying again queues it again.
    store
        .replay_dead_letters(
            std::slice::from_ref(&kept.id),
            std::slice::from_ref(&live),
            T0 + 200,
        )
        .await?;
    let kept_now = store.get_dead_letter(&kept.id).await?.expect("kept");
    assert_eq!(
        (kept_now.replayed_at, kept_now.replay_count),
        (Some(T0 + 200), 2)
    );
    assert_eq!(
        store
            .lease_deliveries("a", T0 + 200, 60_000, 10)
            .await?
            .len(),
        1
    );
    assert!(
        store
            .replay_dead_letters(&[], std::slice::from_ref(&live), T0)
            .await?
            .is_empty()
    );
    Ok(())
}

pub async fn replay_goes_to_the_end_of_its_lane(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    // One dead letter recorded by a cursor, one by a row that gave up in lane k.
    let from_cursor = kill(&store, &t, 1, Some("k"), T0).await?;
    record(&store, &t, &[retry(&t, 2, Some("k"), T0)]).await?;
    let leased = store.lease_deliveries("a", T0, 60_000, 10).await?;
    let give_up = DeliveryUpdate::GiveUp {
        dead: dead(&t, 2, None),
        send_to_sink: false,
    };
    assert!(
        store
            .update_delivery("a", leased[0].id, give_up, T0)
            .await?
    );
    let from_row = store
        .list_dead_letters(&DeadLetterFilter::default())
        .await?
        .into_iter()
        .find(|letter| letter.event_seq == 2)
        .expect("recorded");
    assert_eq!(from_row.lane.as_deref(), Some("k"));

    // Another event waits in lane k; the replays queue behind it, in the order asked.
    record(&store, &t, &[retry(&t, 3, Some("k"), T0)]).await?;
    let ids = [from_row.id.clone(), from_cursor.id.clone()];
    assert_eq!(
        store
            .replay_dead_letters(&ids, std::slice::from_ref(&t), T0)
            .await?
            .len(),
        2
    );
    assert_eq!(store.blocked_lanes(&t.uid).await?, ["k"]);

    for expected in [3, 2, 1] {
        let head = store.lease_deliveries("a", T0 + 1, 60_000, 10).await?;
        assert_eq!(seqs(&head), [expected], "lane k in order");
        assert!(
            store
                .update_delivery("a", head[0].id, DeliveryUpdate::Done, T0 + 1)
                .await?
        );
    }
    Ok(())
}

pub async fn pages_follow_each_other(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let t = trigger("default/b", "t");
    // Two at the same millisecond: the id orders them.
    for (seq, at) in [(1, T0), (2, T0 + 5), (3, T0 + 5), (4, T0 + 9), (5, T0 + 20)] {
        kill(&store, &t, seq, None, at).await?;
    }
    let mut pages = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store
            .list_dead_letters(&DeadLetterFilter {
                limit: Some(2),
                after: after.clone(),
                ..DeadLetterFilter::default()
            })
            .await?;
        if page.is_empty() {
            break;
        }
        after = page.last().map(|l| (l.dead_at, l.id.clone()));
        pages.push(page.iter().map(|l| l.event_seq).collect::<Vec<_>>());
    }
    assert_eq!(pages, [vec![1, 2], vec![3, 4], vec![5]]);
    // A token that names no dead letter still pages by its position.
    let tail = store
        .list_dead_letters(&DeadLetterFilter {
            after: Some((T0 + 9, "ffffffff-ffff-7fff-bfff-ffffffffffff".to_owned())),
            ..DeadLetterFilter::default()
        })
        .await?;
    assert_eq!(tail.iter().map(|l| l.event_seq).collect::<Vec<_>>(), [5]);
    Ok(())
}

pub async fn delete_by_id_trigger_and_all(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let (t1, t2) = (trigger("default/b", "t1"), trigger("default/b", "t2"));
    let first = kill(&store, &t1, 1, None, T0).await?;
    kill(&store, &t1, 2, None, T0 + 1).await?;
    kill(&store, &t2, 3, None, T0 + 2).await?;
    kill(&store, &t2, 4, None, T0 + 3).await?;
    let ids = [first.id.clone(), first.id.clone(), "garbage".to_owned()];
    assert_eq!(
        store
            .delete_dead_letters(&DeadLetterSelection::Ids(ids.to_vec()))
            .await?,
        1
    );
    assert_eq!(store.get_dead_letter(&first.id).await?, None);
    assert_eq!(
        store
            .delete_dead_letters(&DeadLetterSelection::Trigger("default".into(), "t2".into()))
            .await?,
        2
    );
    assert_eq!(listed(&store, filter(None, false, None)).await?, [2]);
    assert_eq!(
        store.delete_dead_letters(&DeadLetterSelection::All).await?,
        1
    );
    assert!(listed(&store, filter(None, false, None)).await?.is_empty());
    Ok(())
}

pub async fn retention_by_age_and_count(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let (busy, quiet) = (trigger("default/b", "busy"), trigger("default/b", "quiet"));
    for seq in 1..=5 {
        kill(&store, &busy, seq, None, T0 + seq * 10).await?;
    }
    kill(&store, &quiet, 6, None, T0 + 1).await?;
    kill(&store, &quiet, 7, None, T0 + 100).await?;
    // Older than T0 + 15 goes (busy 1, quiet 6); then each trigger keeps its newest 2.
    let pruned = store.prune_dead_letters(T0 + 15, 2).await?;
    assert_eq!(pruned, 4);
    assert_eq!(listed(&store, filter(None, false, None)).await?, [4, 5, 7]);
    assert_eq!(store.prune_dead_letters(T0 + 15, 2).await?, 0, "idempotent");
    Ok(())
}
