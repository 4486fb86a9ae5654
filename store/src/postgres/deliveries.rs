//! Cursors and delivery rows on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{PostgresStore, dead_letters};
use crate::{
    Backlog, Cursor, Deliveries, Delivery, DeliveryUpdate, Millis, NewDeadLetter, NewDelivery,
    Phase, Result, SinkState, TriggerRef, codec,
};

macro_rules! columns {
    () => {
        "id, trigger_uid, trigger_namespace, trigger_name, broker, event_seq, payload, lane, phase, attempts, \
         first_attempt_at, last_status, last_error, dead_letter_id"
    };
}

/// Row `d` may be leased as far as its lane goes: unordered, on its way to the dead-letter sink, or
/// the oldest row of its lane in phase subscriber (lane order = `id` order = insertion order).
macro_rules! lane_allows {
    () => {
        "(d.lane IS NULL OR d.phase <> 'subscriber' OR NOT EXISTS ( \
            SELECT 1 FROM deliveries o \
            WHERE o.trigger_uid = d.trigger_uid AND o.lane = d.lane AND o.phase = 'subscriber' AND o.id < d.id))"
    };
}

fn decode(row: &PgRow) -> Result<Delivery> {
    Ok(Delivery {
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
        phase: codec::phase(row.try_get("phase")?)?,
        attempts: row.try_get("attempts")?,
        first_attempt_at: row.try_get("first_attempt_at")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        dead_letter_id: row
            .try_get::<Option<Uuid>, _>("dead_letter_id")?
            .map(|id| id.to_string()),
    })
}

/// Inserts rows in phase subscriber in one statement, in the given order (their ids, and so their
/// lane order, follow it).
pub(super) async fn insert_subscriber_rows(
    conn: &mut PgConnection,
    rows: &[&NewDelivery],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&NewDelivery) -> &str| rows.iter().map(|row| f(row)).collect::<Vec<&str>>();
    sqlx::query(
        "INSERT INTO deliveries (trigger_uid, trigger_namespace, trigger_name, broker, event_seq, payload, lane, \
         phase, attempts, next_attempt_at, first_attempt_at, last_status, last_error) \
         SELECT uid, namespace, name, broker, seq, payload, lane, 'subscriber', attempts, next_at, first_at, status, error \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bytea[], $7::text[], \
                     $8::int4[], $9::int8[], $10::int8[], $11::int4[], $12::text[]) \
              WITH ORDINALITY AS r(uid, namespace, name, broker, seq, payload, lane, attempts, next_at, first_at, \
                                   status, error, n) \
         ORDER BY n",
    )
    .bind(column(|row| &row.trigger.uid))
    .bind(column(|row| &row.trigger.namespace))
    .bind(column(|row| &row.trigger.name))
    .bind(column(|row| &row.trigger.broker))
    .bind(rows.iter().map(|row| row.event_seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.payload.as_slice()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.lane.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.attempts).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.next_attempt_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.first_attempt_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.last_status).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.last_error.as_deref()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts rows that send the given dead letters to the sink, due now.
/// The rows and dead letters of events not delivered at their first attempt.
async fn insert_outcomes(
    tx: &mut PgConnection,
    deliveries: &[NewDelivery],
    dead_letters: &[(NewDeadLetter, bool)],
    now: Millis,
) -> Result<()> {
    insert_subscriber_rows(&mut *tx, &codec::in_event_order(deliveries)).await?;
    if !dead_letters.is_empty() {
        let ids = dead_letters::insert(
            &mut *tx,
            dead_letters.iter().map(|(dead, send_to_sink)| {
                (
                    dead,
                    dead.lane.as_deref(),
                    codec::initial_sink_state(*send_to_sink),
                )
            }),
            now,
        )
        .await?;
        let to_sink: Vec<(&NewDeadLetter, Uuid)> = dead_letters
            .iter()
            .zip(ids)
            .filter(|((_, send_to_sink), _)| *send_to_sink)
            .map(|((dead, _), id)| (dead, id))
            .collect();
        insert_sink_rows(&mut *tx, &to_sink, now).await?;
    }
    Ok(())
}

async fn insert_sink_rows(
    conn: &mut PgConnection,
    rows: &[(&NewDeadLetter, Uuid)],
    now: Millis,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let column =
        |f: fn(&NewDeadLetter) -> &str| rows.iter().map(|(dead, _)| f(dead)).collect::<Vec<&str>>();
    sqlx::query(
        "INSERT INTO deliveries (trigger_uid, trigger_namespace, trigger_name, broker, event_seq, payload, \
         phase, attempts, next_attempt_at, dead_letter_id) \
         SELECT uid, namespace, name, broker, seq, payload, 'dead_letter_sink', 0, $7, dead_letter_id \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bytea[], $8::uuid[]) \
              WITH ORDINALITY AS r(uid, namespace, name, broker, seq, payload, dead_letter_id, n) \
         ORDER BY n",
    )
    .bind(column(|dead| &dead.trigger.uid))
    .bind(column(|dead| &dead.trigger.namespace))
    .bind(column(|dead| &dead.trigger.name))
    .bind(column(|dead| &dead.trigger.broker))
    .bind(rows.iter().map(|(dead, _)| dead.event_seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|(dead, _)| dead.payload.as_slice()).collect::<Vec<_>>())
    .bind(now)
    .bind(rows.iter().map(|(_, id)| *id).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Deliveries for PostgresStore {
    async fn claim_cursors(
        &self,
        owner: &str,
        triggers: &[TriggerRef],
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<Cursor>> {
        if triggers.is_empty() {
            return Ok(Vec::new());
        }
        let column = |f: fn(&TriggerRef) -> &str| triggers.iter().map(f).collect::<Vec<&str>>();
        let uids = column(|trigger| &trigger.uid);
        // Two statements, no transaction needed: creating a missing cursor is idempotent, and the
        // conditional update is atomic per row (a competing claim waits on the row lock, then sees
        // the new owner and skips it).
        sqlx::query(
            "INSERT INTO cursors (trigger_uid, trigger_namespace, trigger_name, broker, position) \
             SELECT t.uid, t.namespace, t.name, t.broker, COALESCE(h.head, 0) \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(uid, namespace, name, broker) \
             LEFT JOIN log_heads h ON h.broker = t.broker \
             ON CONFLICT (trigger_uid) DO NOTHING",
        )
        .bind(&uids)
        .bind(column(|trigger| &trigger.namespace))
        .bind(column(|trigger| &trigger.name))
        .bind(column(|trigger| &trigger.broker))
        .execute(&self.pool)
        .await?;
        let held: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE cursors SET owner = $2, lease_until = $3 \
             WHERE trigger_uid = ANY($1) AND (owner IS NULL OR owner = $2 OR lease_until IS NULL OR lease_until <= $4) \
             RETURNING trigger_uid, position",
        )
        .bind(&uids)
        .bind(owner)
        .bind(codec::lease_until(now, lease_ms))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        // In the order asked for, once per trigger.
        let mut held: std::collections::HashMap<String, i64> = held.into_iter().collect();
        Ok(triggers
            .iter()
            .filter_map(|trigger| {
                held.remove(&trigger.uid).map(|position| Cursor {
                    trigger_uid: trigger.uid.clone(),
                    position,
                })
            })
            .collect())
    }

    async fn advance_cursor(
        &self,
        owner: &str,
        trigger_uid: &str,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
        dead_letters: &[(NewDeadLetter, bool)],
        now: Millis,
    ) -> Result<bool> {
        if deliveries.is_empty() && dead_letters.is_empty() {
            // The common case, every event delivered: one statement in its own transaction, the
            // commit not waiting for the disk (`set_config(…, true)` lasts until that commit).
            let moved = sqlx::query(
                "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
                 UPDATE cursors SET position = $4 FROM relaxed \
                 WHERE trigger_uid = $1 AND owner = $2 AND position = $3",
            )
            .bind(trigger_uid)
            .bind(owner)
            .bind(from)
            .bind(to)
            .execute(&self.pool)
            .await?
            .rows_affected();
            return Ok(moved > 0);
        }
        let mut tx = self.pool.begin().await?;
        // See `Deliveries::advance_cursor`: a later durable commit flushes this one with it.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let moved = sqlx::query("UPDATE cursors SET position = $4 WHERE trigger_uid = $1 AND owner = $2 AND position = $3")
            .bind(trigger_uid)
            .bind(owner)
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        insert_outcomes(&mut tx, deliveries, dead_letters, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_outcomes(
        &self,
        deliveries: &[NewDelivery],
        dead_letters: &[(NewDeadLetter, bool)],
        now: Millis,
    ) -> Result<()> {
        if deliveries.is_empty() && dead_letters.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        insert_outcomes(&mut tx, deliveries, dead_letters, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blocked_lanes(&self, trigger_uid: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT lane FROM deliveries \
             WHERE trigger_uid = $1 AND lane IS NOT NULL AND phase = 'subscriber' ORDER BY lane",
        )
        .bind(trigger_uid)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn lease_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // SKIP LOCKED: rows another process is leasing right now are passed over, not waited for;
        // a row whose lease that process just committed fails the re-checked lease condition.
        let rows = sqlx::query(concat!(
            "WITH due AS ( \
                SELECT d.id FROM deliveries d \
                WHERE d.next_attempt_at <= $3 AND (d.lease_until IS NULL OR d.lease_until <= $3) AND ",
            lane_allows!(),
            " ORDER BY d.next_attempt_at, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED) \
             UPDATE deliveries SET owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM due) \
             RETURNING ",
            columns!()
        ))
        .bind(owner)
        .bind(codec::lease_until(now, lease_ms))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut leased = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        leased.sort_by_key(|delivery| delivery.id);
        Ok(leased)
    }

    async fn update_delivery(
        &self,
        owner: &str,
        id: i64,
        update: DeliveryUpdate,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The row lock keeps a process whose lease query runs now from taking the row meanwhile.
        let Some(row) =
            sqlx::query("SELECT phase, lane, dead_letter_id FROM deliveries WHERE id = $1 AND owner = $2 FOR UPDATE")
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let phase = codec::phase(row.try_get("phase")?)?;
        let lane: Option<String> = row.try_get("lane")?;
        let dead_letter_id: Option<Uuid> = row.try_get("dead_letter_id")?;

        match (phase, update) {
            (
                _,
                DeliveryUpdate::Retry {
                    attempts,
                    next_attempt_at,
                    last_status,
                    last_error,
                },
            ) => {
                sqlx::query(
                    "UPDATE deliveries SET attempts = $2, next_attempt_at = $3, last_status = $4, last_error = $5, \
                     first_attempt_at = COALESCE(first_attempt_at, $6), owner = NULL, lease_until = NULL \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(attempts)
                .bind(next_attempt_at)
                .bind(last_status)
                .bind(last_error)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            (Phase::Subscriber, DeliveryUpdate::Done) => delete_row(&mut tx, id).await?,
            (Phase::Subscriber, DeliveryUpdate::GiveUp { dead, send_to_sink }) => {
                let state = codec::initial_sink_state(send_to_sink);
                let ids = dead_letters::insert(
                    &mut tx,
                    [(&dead, lane.as_deref(), state)].into_iter(),
                    now,
                )
                .await?;
                if send_to_sink {
                    sqlx::query(
                        "UPDATE deliveries SET phase = 'dead_letter_sink', dead_letter_id = $2, attempts = 0, \
                         next_attempt_at = $3, first_attempt_at = NULL, last_status = NULL, last_error = NULL, \
                         owner = NULL, lease_until = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(ids[0])
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    delete_row(&mut tx, id).await?;
                }
            }
            (Phase::DeadLetterSink, DeliveryUpdate::Done) => {
                delete_row(&mut tx, id).await?;
                if let Some(dead_id) = dead_letter_id {
                    dead_letters::set_sink_state(&mut tx, dead_id, SinkState::Delivered, None)
                        .await?;
                }
            }
            (Phase::DeadLetterSink, DeliveryUpdate::GiveUp { dead, .. }) => {
                delete_row(&mut tx, id).await?;
                if let Some(dead_id) = dead_letter_id {
                    dead_letters::set_sink_state(
                        &mut tx,
                        dead_id,
                        SinkState::Failed,
                        dead.last_error.as_deref(),
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn release_all_leases(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE cursors SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn heartbeat(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dispatchers (owner, alive_until) VALUES ($1, $2) \
             ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until",
        )
        .bind(owner)
        .bind(now.saturating_add(ttl_ms))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dispatchers WHERE alive_until < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let owners: Vec<String> =
            sqlx::query_scalar("SELECT owner FROM dispatchers ORDER BY owner")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(owners)
    }

    async fn release_cursors(&self, owner: &str, trigger_uids: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for uid in trigger_uids {
            sqlx::query(
                "UPDATE cursors SET owner = NULL, lease_until = NULL \
                 WHERE trigger_uid = $1 AND owner = $2",
            )
            .bind(uid)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn skip_to_head(&self, trigger_uid: &str, now: Millis) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let found: Option<(i64, i64)> = sqlx::query_as(
            "SELECT c.position, COALESCE(h.head, c.position) FROM cursors c \
             LEFT JOIN log_heads h ON h.broker = c.broker \
             WHERE c.trigger_uid = $1 AND (c.owner IS NULL OR c.lease_until IS NULL OR c.lease_until <= $2) \
             FOR UPDATE OF c",
        )
        .bind(trigger_uid)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((from, head)) = found.filter(|(from, head)| head > from) else {
            return Ok(None);
        };
        sqlx::query("UPDATE cursors SET position = $2 WHERE trigger_uid = $1")
            .bind(trigger_uid)
            .bind(head)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(from))
    }

    async fn drop_trigger(&self, trigger_uid: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM deliveries WHERE trigger_uid = $1")
            .bind(trigger_uid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cursors WHERE trigger_uid = $1")
            .bind(trigger_uid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Vec<Backlog>> {
        type Row = (String, i64, i64, Option<i64>, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT c.trigger_uid, GREATEST(COALESCE(h.head, 0) - c.position, 0), \
                    (SELECT COUNT(*) FROM deliveries d WHERE d.trigger_uid = c.trigger_uid), \
                    (SELECT e.accepted_at FROM events e WHERE e.broker = c.broker AND e.seq = c.position + 1), \
                    (SELECT MIN(COALESCE(d.first_attempt_at, d.next_attempt_at)) FROM deliveries d WHERE d.trigger_uid = c.trigger_uid) \
             FROM cursors c LEFT JOIN log_heads h ON h.broker = c.broker \
             UNION ALL \
             SELECT d.trigger_uid, 0, COUNT(*), NULL::BIGINT, MIN(COALESCE(d.first_attempt_at, d.next_attempt_at)) FROM deliveries d \
             WHERE NOT EXISTS (SELECT 1 FROM cursors c WHERE c.trigger_uid = d.trigger_uid) \
             GROUP BY d.trigger_uid \
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(uid, unread, pending, unread_since, pending_since)| {
                Backlog::new(uid, unread, pending, unread_since, pending_since)
            })
            .collect())
    }

    async fn next_due(&self) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.owner IS NULL AND ",
            lane_allows!()
        ))
        .fetch_one(&self.pool)
        .await?)
    }
}

async fn delete_row(conn: &mut PgConnection, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM deliveries WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
