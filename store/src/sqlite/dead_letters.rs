//! Dead letters on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{SqliteStore, deliveries};
use crate::{
    DeadLetter, DeadLetterFilter, DeadLetterSelection, DeadLetters, Millis, NewDeadLetter,
    NewDelivery, Result, SinkState, TriggerRef, codec,
};

macro_rules! columns {
    () => {
        "id, trigger_uid, trigger_namespace, trigger_name, broker, event_seq, lane, payload, attempts, last_status, \
         last_error, last_response, first_attempt_at, dead_at, sink_state, sink_error, replayed_at, replay_count"
    };
}

fn decode(row: &SqliteRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.try_get("id")?,
        trigger: TriggerRef {
            uid: row.try_get("trigger_uid")?,
            namespace: row.try_get("trigger_namespace")?,
            name: row.try_get("trigger_name")?,
            broker: row.try_get("broker")?,
        },
        event_seq: row.try_get("event_seq")?,
        payload: row.try_get("payload")?,
        lane: row.try_get("lane")?,
        attempts: row.try_get("attempts")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        last_response: row.try_get("last_response")?,
        first_attempt_at: row.try_get("first_attempt_at")?,
        dead_at: row.try_get("dead_at")?,
        sink_state: codec::sink_state(row.try_get("sink_state")?)?,
        sink_error: row.try_get("sink_error")?,
        replayed_at: row.try_get("replayed_at")?,
        replay_count: row.try_get("replay_count")?,
    })
}

/// Records a dead letter of an event in `lane`; returns its id.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    dead: &NewDeadLetter,
    lane: Option<&str>,
    sink_state: SinkState,
    now: Millis,
) -> Result<String> {
    let id = codec::dead_letter_id().to_string();
    sqlx::query(
        "INSERT INTO dead_letters (id, trigger_uid, trigger_namespace, trigger_name, broker, event_seq, lane, payload, \
         attempts, last_status, last_error, last_response, first_attempt_at, dead_at, sink_state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .bind(&id)
    .bind(&dead.trigger.uid)
    .bind(&dead.trigger.namespace)
    .bind(&dead.trigger.name)
    .bind(&dead.trigger.broker)
    .bind(dead.event_seq)
    .bind(lane)
    .bind(&dead.payload)
    .bind(dead.attempts)
    .bind(dead.last_status)
    .bind(&dead.last_error)
    .bind(&dead.last_response)
    .bind(dead.first_attempt_at)
    .bind(now)
    .bind(sink_state.as_str())
    .execute(conn)
    .await?;
    Ok(id)
}

pub(super) async fn set_sink_state(
    conn: &mut SqliteConnection,
    id: &str,
    state: SinkState,
    sink_error: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE dead_letters SET sink_state = ?2, sink_error = ?3 WHERE id = ?1")
        .bind(id)
        .bind(state.as_str())
        .bind(sink_error)
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut query = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE 1 = 1"
        ));
        if let Some((namespace, name)) = &filter.trigger {
            query.push(" AND trigger_namespace = ").push_bind(namespace);
            query.push(" AND trigger_name = ").push_bind(name);
        }
        if filter.unreplayed_only {
            query.push(" AND replay_count = 0");
        }
        if let Some((dead_at, id)) = &filter.after {
            query
                .push(" AND (dead_at > ")
                .push_bind(*dead_at)
                .push(" OR (dead_at = ")
                .push_bind(*dead_at)
                .push(" AND id > ")
                .push_bind(id)
                .push("))");
        }
        query.push(" ORDER BY dead_at, id");
        if let Some(limit) = filter.limit {
            query
                .push(" LIMIT CAST(")
                .push_bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .push(" AS INTEGER)");
        }
        query
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .map(|row| decode(&row))
        .transpose()
    }

    async fn replay_dead_letters(
        &self,
        ids: &[String],
        triggers: &[TriggerRef],
        now: Millis,
    ) -> Result<Vec<String>> {
        let mut tx = self.write().await?;
        let mut replayed = Vec::new();
        for id in codec::distinct(ids) {
            let Some(row) = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM dead_letters WHERE id = ?1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            else {
                continue;
            };
            let dead = decode(&row)?;
            let Some(trigger) = triggers
                .iter()
                .find(|trigger| trigger.uid == dead.trigger.uid)
            else {
                continue;
            };
            let row = NewDelivery {
                trigger: trigger.clone(),
                event_seq: dead.event_seq,
                payload: dead.payload,
                lane: dead.lane,
                attempts: 0,
                next_attempt_at: now,
                first_attempt_at: None,
                last_status: None,
                last_error: None,
            };
            deliveries::insert_subscriber_row(&mut tx, &row).await?;
            sqlx::query("UPDATE dead_letters SET replayed_at = ?2, replay_count = replay_count + 1 WHERE id = ?1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            replayed.push(dead.id);
        }
        tx.commit().await?;
        Ok(replayed)
    }

    async fn delete_dead_letters(&self, which: &DeadLetterSelection) -> Result<u64> {
        let mut tx = self.write().await?;
        let deleted = match which {
            DeadLetterSelection::Ids(ids) => {
                let mut deleted = 0;
                for id in codec::distinct(ids) {
                    deleted += sqlx::query("DELETE FROM dead_letters WHERE id = ?1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                deleted
            }
            DeadLetterSelection::Trigger(namespace, name) => sqlx::query(
                "DELETE FROM dead_letters WHERE trigger_namespace = ?1 AND trigger_name = ?2",
            )
            .bind(namespace)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            DeadLetterSelection::All => sqlx::query("DELETE FROM dead_letters")
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        };
        tx.commit().await?;
        Ok(deleted)
    }

    async fn prune_dead_letters(&self, dead_before: Millis, keep_per_trigger: u64) -> Result<u64> {
        let mut tx = self.write().await?;
        let old =
            sqlx::query("DELETE FROM dead_letters WHERE dead_at < ?1 AND sink_state <> 'pending'")
                .bind(dead_before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let beyond = sqlx::query(
            "DELETE FROM dead_letters WHERE id IN (\
               SELECT id FROM (SELECT id, sink_state, ROW_NUMBER() OVER \
                 (PARTITION BY trigger_uid ORDER BY dead_at DESC, id DESC) AS newest \
               FROM dead_letters) WHERE newest > ?1 AND sink_state <> 'pending')",
        )
        .bind(i64::try_from(keep_per_trigger).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(old + beyond)
    }
}
