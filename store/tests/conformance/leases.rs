//! Leasing delivery rows: due rows, lease expiry, exclusivity, ordered lanes, and what is due next.

use std::collections::HashSet;
use std::sync::Arc;

use kinetic_store::{DeliveryUpdate, NewDelivery, Phase, Store};

use crate::fixtures::{T0, find, give_up, record, retry, retry_at, seqs, trigger};

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
