//! The checkpoint of a PingSource and the claim that makes each tick fire once across processes.

use chrono::{DateTime, Utc};
use kinetic_store::{Checkpoint, Millis, Store};
use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// The checkpoint key of the PingSource `namespace/name`: `ping/{namespace}/{name}`. Deleting the
/// source deletes it with `delete_checkpoints(&tick_key(namespace, name))`.
pub fn tick_key(namespace: &str, name: &str) -> String {
    format!("ping/{namespace}/{name}")
}

/// The checkpoint's value: `{"lastTick": "2024-05-15T10:05:00Z"}`, the last tick claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TickCheckpoint {
    pub last_tick: DateTime<Utc>,
}

/// The last tick fired according to a checkpoint (`None`: no checkpoint yet), for [`super::due`].
pub fn last_fired(checkpoint: Option<&Checkpoint>) -> Result<Option<DateTime<Utc>>> {
    checkpoint
        .map(|checkpoint| {
            serde_json::from_value::<TickCheckpoint>(checkpoint.value.clone())
                .map(|value| value.last_tick)
                .map_err(|source| Error::CorruptCheckpoint {
                    key: checkpoint.key.clone(),
                    source,
                })
        })
        .transpose()
}

/// Claims `tick` for this process: records it as the last fired tick of the checkpoint `key`,
/// unless that already holds `tick` or a later one. `true` means this process, and no other, fires
/// the tick; `false` that it was fired already or another process claimed it first.
///
/// Claim before sending: a process that dies between claiming and sending loses that tick (as
/// Knative's PingSource would), while retries of the send by the claimer carry the same event id and
/// are deduplicated by the broker.
///
/// Idempotent per tick. Cancellation: the claim is one compare-and-set; if the future is dropped
/// after it was written, the tick counts as claimed and is not fired by anyone.
pub async fn claim_tick(
    store: &dyn Store,
    key: &str,
    tick: DateTime<Utc>,
    now: Millis,
) -> Result<bool> {
    let current = store.get_checkpoint(key).await?;
    if last_fired(current.as_ref())?.is_some_and(|fired| fired >= tick) {
        return Ok(false);
    }
    let value = serde_json::to_value(TickCheckpoint { last_tick: tick })
        .expect("a timestamp serializes to JSON");
    let won = store
        .put_checkpoint(
            key,
            &value,
            current.map(|checkpoint| checkpoint.version),
            now,
        )
        .await?;
    Ok(won.is_some())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ping::{Due, Schedule, due};

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339 in a test")
            .with_timezone(&Utc)
    }

    #[test]
    fn key_and_value_shape() {
        assert_eq!(tick_key("default", "heartbeat"), "ping/default/heartbeat");
        let value = serde_json::to_value(TickCheckpoint {
            last_tick: utc("2024-05-15T10:05:00Z"),
        })
        .expect("serializes");
        assert_eq!(
            value,
            serde_json::json!({"lastTick": "2024-05-15T10:05:00Z"})
        );
        let checkpoint = |value| Checkpoint {
            key: "ping/default/p".to_owned(),
            value,
            version: 1,
            updated_at: 0,
        };
        assert_eq!(
            last_fired(Some(&checkpoint(value))).expect("valid"),
            Some(utc("2024-05-15T10:05:00Z"))
        );
        assert_eq!(last_fired(None).expect("valid"), None);
        let error = last_fired(Some(&checkpoint(serde_json::json!({"offset": 3}))))
            .expect_err("not a tick");
        assert!(error.to_string().contains("checkpoint `ping/default/p`"));
    }

    /// Several processes (tasks, half of them on a second handle of the same database) each run the
    /// firing loop's step for the same ticks: every tick is claimed by exactly one of them, and a
    /// tick once claimed is never claimed again.
    async fn each_tick_fires_once(first: Arc<dyn Store>, second: Arc<dyn Store>) {
        const PROCESSES: usize = 6;
        let schedule = Schedule::parse("* * * * *", None).expect("valid");
        let created = utc("2024-05-15T10:00:30Z");
        let key = tick_key("default", "raced");
        for minute in 1..=5 {
            let now = created + chrono::Duration::seconds(60 * minute);
            let mut tasks = tokio::task::JoinSet::new();
            for process in 0..PROCESSES {
                let store = if process % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let (key, schedule) = (key.clone(), schedule.clone());
                tasks.spawn(async move {
                    let checkpoint = store.get_checkpoint(&key).await?;
                    let Due::Fire { tick, .. } =
                        due(&schedule, last_fired(checkpoint.as_ref())?, created, now)
                    else {
                        return Ok(None);
                    };
                    let claimed = claim_tick(&*store, &key, tick, now.timestamp_millis()).await?;
                    Ok::<_, Error>(claimed.then_some(tick))
                });
            }
            let mut fired = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                fired.extend(joined.expect("task ran").expect("store works"));
            }
            let expected = utc("2024-05-15T10:00:00Z") + chrono::Duration::seconds(60 * minute);
            assert_eq!(fired, [expected], "minute {minute}");
            // The same tick again, later in the same minute: nobody fires it.
            assert!(
                !claim_tick(&*first, &key, expected, now.timestamp_millis())
                    .await
                    .expect("store works")
            );
        }
        let stored = second
            .get_checkpoint(&key)
            .await
            .expect("store works")
            .expect("stored");
        assert_eq!(stored.version, 5, "one write per tick");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_tick_fires_once_on_sqlite() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/state.db", dir.path().display());
        let first = kinetic_store::open(&url).await.expect("open");
        let second = kinetic_store::open(&url).await.expect("open again");
        each_tick_fires_once(first, second).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_tick_fires_once_on_postgres() {
        let database = kinetic_testkit::postgres::ScratchDatabase::create("kinetic_test").await;
        let url = database.url.clone();
        let outcome = tokio::spawn(async move {
            let first = kinetic_store::open(&url).await.expect("open");
            let second = kinetic_store::open(&url).await.expect("open again");
            each_tick_fires_once(first, second).await;
        })
        .await;
        database
            .drop_database()
            .await
            .expect("drop the test database");
        if let Err(join_error) = outcome {
            std::panic::resume_unwind(join_error.into_panic());
        }
    }
}
