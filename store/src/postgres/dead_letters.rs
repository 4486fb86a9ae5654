//! Dead letters on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{PostgresStore, deliveries};
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

fn decode(row: &PgRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.try_get::<Uuid, _>("id")?.to_string(),
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

/// Records dead letters (each with the lane of its event and its initial sink state) in one
/// statement; returns their ids in the same order.
pub(super) async fn insert<'a>(
    conn: &mut PgConnection,
    letters: impl Iterator<Item = (&'a NewDeadLetter, Option<&'a str>, SinkState)>,
    now: Millis,
) -> Result<Vec<Uuid>> {
    let letters: Vec<_> = letters.collect();
    let ids: Vec<Uuid> = letters.iter().map(|_| codec::dead_letter_id()).collect();
    let column = |f: fn(&NewDeadLetter) -> &str| {
        letters
            .iter()
            .map(|(dead, _, _)| f(dead))
            .collect::<Vec<&str>>()
    };
    sqlx::query(
        "INSERT INTO dead_letters (id, trigger_uid, trigger_namespace, trigger_name, broker, event_seq, lane, payload, \
         attempts, last_status, last_error, last_response, first_attempt_at, dead_at, sink_state) \
         SELECT id, uid, namespace, name, broker, seq, lane, payload, attempts, status, error, response, first_at, \
                $14, sink_state \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], \
                     $8::bytea[], $9::int4[], $10::int4[], $11::text[], $12::bytea[], $13::int8[], $15::text[]) \
              AS r(id, uid, namespace, name, broker, seq, lane, payload, attempts, status, error, response, first_at, \
                   sink_state)",
    )
    .bind(&ids)
    .bind(column(|dead| &dead.trigger.uid))
    .bind(column(|dead| &dead.trigger.namespace))
    .bind(column(|dead| &dead.trigger.name))
    .bind(column(|dead| &dead.trigger.broker))
    .bind(letters.iter().map(|(dead, _, _)| dead.event_seq).collect::<Vec<_>>())
    .bind(letters.iter().map(|(_, lane, _)| *lane).collect::<Vec<_>>())
    .bind(letters.iter().map(|(dead, _, _)| dead.payload.as_slice()).collect::<Vec<_>>())
    .bind(letters.iter().map(|(dead, _, _)| dead.attempts).collect::<Vec<_>>())
    .bind(letters.iter().map(|(dead, _, _)| dead.last_status).collect::<Vec<_>>())
    .bind(letters.iter().map(|(dead, _, _)| dead.last_error.as_deref()).collect::<Vec<_>>())
    .bind(letters.iter().map(|(dead, _, _)| dead.last_response.as_deref()).collect::<Vec<_>>())
    .bind(letters.iter().map(|(dead, _, _)| dead.first_attempt_at).collect::<Vec<_>>())
    .bind(now)
    .bind(letters.iter().map(|(_, _, state)| state.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(ids)
}

pub(super) async fn set_sink_state(
    conn: &mut PgConnection,
    id: Uuid,
    state: SinkState,
    sink_error: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE dead_letters SET sink_state = $2, sink_error = $3 WHERE id = $1")
        .bind(id)
        .bind(state.as_str())
        .bind(sink_error)
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl DeadLetters for PostgresStore {
    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE TRUE"
        ));
        if let Some((namespace, name)) = &filter.trigger {
            query.push(" AND trigger_namespace = ").push_bind(namespace);
            query.push(" AND trigger_name = ").push_bind(name);
        }
        if filter.unreplayed_only {
            query.push(" AND replay_count = 0");
        }
        if let Some((dead_at, id)) = &filter.after {
            // Not a UUID: nothing comes after it.
            let Ok(id) = Uuid::parse_str(id) else {
                return Ok(Vec::new());
            };
            query
                .push(" AND (dead_at, id) > (")
                .push_bind(*dead_at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        query.push(" ORDER BY dead_at, id");
        if let Some(limit) = filter.limit {
            query
                .push(" LIMIT ")
                .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        query
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        // Not a UUID: no dead letter has that id.
        let Ok(id) = Uuid::parse_str(id) else {
            return Ok(None);
        };
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
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
        let wanted: Vec<Uuid> = codec::distinct(ids)
            .into_iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE id = ANY($1) FOR NO KEY UPDATE"
        ))
        .bind(&wanted)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(decode)
        .collect::<Result<Vec<_>>>()?;

        // In the order asked for, so that replays into one lane queue in that order.
        let mut replayed = Vec::new();
        let mut rows = Vec::new();
        for id in &wanted {
            let Some(dead) = found.iter().find(|dead| dead.id == id.to_string()) else {
                continue;
            };
            let Some(trigger) = triggers
                .iter()
                .find(|trigger| trigger.uid == dead.trigger.uid)
            else {
                continue;
            };
            replayed.push(*id);
            rows.push(NewDelivery {
                trigger: trigger.clone(),
                event_seq: dead.event_seq,
                payload: dead.payload.clone(),
                lane: dead.lane.clone(),
                attempts: 0,
                next_attempt_at: now,
                first_attempt_at: None,
                last_status: None,
                last_error: None,
            });
        }
        deliveries::insert_subscriber_rows(&mut tx, &rows.iter().collect::<Vec<_>>()).await?;
        sqlx::query("UPDATE dead_letters SET replayed_at = $2, replay_count = replay_count + 1 WHERE id = ANY($1)")
            .bind(&replayed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(replayed.iter().map(Uuid::to_string).collect())
    }

    async fn delete_dead_letters(&self, which: &DeadLetterSelection) -> Result<u64> {
        let result =
            match which {
                DeadLetterSelection::Ids(ids) => {
                    let ids: Vec<Uuid> = codec::distinct(ids)
                        .into_iter()
                        .filter_map(|id| Uuid::parse_str(id).ok())
                        .collect();
                    sqlx::query("DELETE FROM dead_letters WHERE id = ANY($1)")
                        .bind(&ids)
                        .execute(&self.pool)
                        .await?
                }
                DeadLetterSelection::Trigger(namespace, name) => sqlx::query(
                    "DELETE FROM dead_letters WHERE trigger_namespace = $1 AND trigger_name = $2",
                )
                .bind(namespace)
                .bind(name)
                .execute(&self.pool)
                .await?,
                DeadLetterSelection::All => {
                    sqlx::query("DELETE FROM dead_letters")
                        .execute(&self.pool)
                        .await?
                }
            };
        Ok(result.rows_affected())
    }

    async fn prune_dead_letters(&self, dead_before: Millis, keep_per_trigger: u64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let old =
            sqlx::query("DELETE FROM dead_letters WHERE dead_at < $1 AND sink_state <> 'pending'")
                .bind(dead_before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let beyond = sqlx::query(
            "DELETE FROM dead_letters WHERE id IN (\
               SELECT id FROM (SELECT id, sink_state, ROW_NUMBER() OVER \
                 (PARTITION BY trigger_uid ORDER BY dead_at DESC, id DESC) AS newest \
               FROM dead_letters) AS ranked WHERE newest > $1 AND sink_state <> 'pending')",
        )
        .bind(i64::try_from(keep_per_trigger).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(old + beyond)
    }
}
