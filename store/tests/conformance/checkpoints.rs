//! Checkpoints: create only when absent, compare-and-set, one winner per version across processes,
//! delete by path prefix.

use std::sync::Arc;

use kinetic_store::Store;
use serde_json::json;

use crate::fixtures::T0;

pub async fn create_only_when_absent(store: Arc<dyn Store>) -> anyhow::Result<()> {
    assert_eq!(store.get_checkpoint("ping/default/p").await?, None);

    let first = json!({"lastTick": "2024-01-01T00:00:00Z"});
    assert_eq!(
        store
            .put_checkpoint("ping/default/p", &first, None, T0)
            .await?,
        Some(1)
    );
    let stored = store
        .get_checkpoint("ping/default/p")
        .await?
        .expect("created");
    assert_eq!(
        (
            stored.key.as_str(),
            &stored.value,
            stored.version,
            stored.updated_at
        ),
        ("ping/default/p", &first, 1, T0)
    );

    let other = json!({"lastTick": "2024-01-01T00:01:00Z"});
    assert_eq!(
        store
            .put_checkpoint("ping/default/p", &other, None, T0 + 1)
            .await?,
        None,
        "creating an existing checkpoint loses"
    );
    assert_eq!(
        store.get_checkpoint("ping/default/p").await?,
        Some(stored),
        "a lost create writes nothing"
    );
    Ok(())
}

pub async fn compare_and_set_wins_once_per_version(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let key = "s3/default/bucket/listing";
    assert_eq!(
        store.put_checkpoint(key, &json!(1), Some(1), T0).await?,
        None,
        "updating a missing checkpoint loses"
    );
    assert_eq!(store.get_checkpoint(key).await?, None);

    assert_eq!(
        store.put_checkpoint(key, &json!(1), None, T0).await?,
        Some(1)
    );
    assert_eq!(
        store
            .put_checkpoint(key, &json!(2), Some(1), T0 + 10)
            .await?,
        Some(2)
    );
    assert_eq!(
        store
            .put_checkpoint(key, &json!(3), Some(1), T0 + 20)
            .await?,
        None,
        "version 1 was already moved past"
    );
    assert_eq!(
        store
            .put_checkpoint(key, &json!(3), Some(5), T0 + 20)
            .await?,
        None,
        "a version from the future loses too"
    );
    let stored = store.get_checkpoint(key).await?.expect("stored");
    assert_eq!(
        (stored.value, stored.version, stored.updated_at),
        (json!(2), 2, T0 + 10)
    );

    // Values of any JSON shape round-trip.
    let offsets = json!({"partitions": {"0": 17, "1": 4}, "topic": "orders", "note": null});
    assert_eq!(
        store
            .put_checkpoint(key, &offsets, Some(2), T0 + 30)
            .await?,
        Some(3)
    );
    assert_eq!(
        store.get_checkpoint(key).await?.expect("stored").value,
        offsets
    );
    Ok(())
}

/// Tasks on two handles (two processes) race to move one checkpoint from each version to the next:
/// every round has exactly one winner, and the value is the winner's.
pub async fn concurrent_compare_and_set_has_one_winner_per_version(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
) -> anyhow::Result<()> {
    const TASKS: usize = 8;
    const ROUNDS: i64 = 10;
    let key = "ping/default/raced";

    for round in 0..ROUNDS {
        let expected = (round > 0).then_some(round);
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let store = if task % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.spawn(async move {
                let value = json!({"round": round, "task": task});
                let won = store
                    .put_checkpoint(key, &value, expected, T0 + round)
                    .await?;
                anyhow::Ok((task, won))
            });
        }
        let mut winners = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (task, won) = joined??;
            if let Some(version) = won {
                assert_eq!(version, round + 1);
                winners.push(task);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = second.get_checkpoint(key).await?.expect("stored");
        assert_eq!(stored.version, round + 1);
        assert_eq!(stored.value, json!({"round": round, "task": winners[0]}));
    }
    Ok(())
}

pub async fn delete_removes_a_key_and_what_is_under_it(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    for key in [
        "ping/default/a",
        "ping/default/a/extra",
        "ping/default/a/extra/deeper",
        "ping/default/ab",
        "ping/other/a",
        "kafka/default/a/0",
    ] {
        assert_eq!(
            store.put_checkpoint(key, &json!(key), None, T0).await?,
            Some(1)
        );
    }
    assert_eq!(store.delete_checkpoints("ping/default/a").await?, 3);
    for gone in [
        "ping/default/a",
        "ping/default/a/extra",
        "ping/default/a/extra/deeper",
    ] {
        assert_eq!(store.get_checkpoint(gone).await?, None, "{gone}");
    }
    for kept in ["ping/default/ab", "ping/other/a", "kafka/default/a/0"] {
        assert!(store.get_checkpoint(kept).await?.is_some(), "{kept}");
    }

    assert_eq!(
        store.delete_checkpoints("kafka/default/a/").await?,
        1,
        "a trailing slash deletes what is under the prefix"
    );
    assert_eq!(store.delete_checkpoints("ping/default/a").await?, 0);
    assert_eq!(
        store.delete_checkpoints("").await?,
        0,
        "an empty prefix is not everything"
    );
    assert_eq!(store.delete_checkpoints("ping/%").await?, 0, "no wildcards");

    // A deleted checkpoint can be created again, from version 1.
    assert_eq!(
        store
            .put_checkpoint("ping/default/a", &json!("again"), None, T0 + 1)
            .await?,
        Some(1)
    );
    Ok(())
}
