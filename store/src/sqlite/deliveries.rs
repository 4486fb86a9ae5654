//! Cursors and delivery rows on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{SqliteStore, dead_letters};
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

fn decode(row: &SqliteRow) -> Result<Delivery> {
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
        dead_letter_id: row.try_get("dead_letter_id")?,
    })
}

/// Inserts a row in phase subscriber; its `id` puts it at the end of its lane.
pub(super) async fn insert_subscriber_row(
    conn: &mut SqliteConnection,
    row: &NewDelivery,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO deliveries (trigger_uid, trigger_namespace, trigger_name, broker, event_seq, payload, lane, \
         phase, attempts, next_attempt_at, first_attempt_at, last_status, last_error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'subscriber', ?8, ?9, ?10, ?11, ?12)",
    )
    .bind(&row.trigger.uid)
    .bind(&row.trigger.namespace)
    .bind(&row.trigger.name)
    .bind(&row.trigger.broker)
    .bind(row.event_seq)
    .bind(&row.payload)
    .bind(&row.lane)
    .bind(row.attempts)
    .bind(row.next_attempt_at)
    .bind(row.first_attempt_at)
    .bind(row.last_status)
    .bind(&row.last_error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a row that sends dead letter `dead_letter_id` to the sink, due now.
/// The rows and dead letters of events not delivered at their first attempt.
async fn insert_outcomes(
    tx: &mut SqliteConnection,
    deliveries: &[NewDelivery],
    dead_letters: &[(NewDeadLetter, bool)],
    now: Millis,
) -> Result<()> {
    for row in codec::in_event_order(deliveries) {
        insert_subscriber_row(tx, row).await?;
    }
    for (dead, send_to_sink) in dead_letters {
        let state = codec::initial_sink_state(*send_to_sink);
        let id = dead_letters::insert(tx, dead, dead.lane.as_deref(), state, now).await?;
        if *send_to_sink {
            insert_sink_row(tx, dead, &id, now).await?;
        }
    }
    Ok(())
}

async fn insert_sink_row(
    conn: &mut SqliteConnection,
    dead: &NewDeadLetter,
    dead_letter_id: &str,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO deliveries (trigger_uid, trigger_namespace, trigger_name, broker, event_seq, payload, lane, \
         phase, attempts, next_attempt_at, dead_letter_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, 'dead_letter_sink', 0, ?7, ?8)",
    )
    .bind(&dead.trigger.uid)
    .bind(&dead.trigger.namespace)
    .bind(&dead.trigger.name)
    .bind(&dead.trigger.broker)
    .bind(dead.event_seq)
    .bind(&dead.payload)
    .bind(now)
    .bind(dead_letter_id)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Deliveries for SqliteStore {
    async fn claim_cursors(
        &self,
        owner: &str,
        triggers: &[TriggerRef],
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<Cursor>> {
        let until = codec::lease_until(now, lease_ms);
        let mut tx = self.write().await?;
        let mut held = Vec::with_capacity(triggers.len());
        for trigger in triggers {
            if held
                .iter()
                .any(|cursor: &Cursor| cursor.trigger_uid == trigger.uid)
            {
                continue;
            }
            sqlx::query(
                "INSERT INTO cursors (trigger_uid, trigger_namespace, trigger_name, broker, position) \
                 VALUES (?1, ?2, ?3, ?4, COALESCE((SELECT head FROM log_heads WHERE broker = ?4), 0)) \
                 ON CONFLICT (trigger_uid) DO NOTHING",
            )
            .bind(&trigger.uid)
            .bind(&trigger.namespace)
            .bind(&trigger.name)
            .bind(&trigger.broker)
            .execute(&mut *tx)
            .await?;
            let position: Option<i64> = sqlx::query_scalar(
                "UPDATE cursors SET owner = ?2, lease_until = ?3 \
                 WHERE trigger_uid = ?1 AND (owner IS NULL OR owner = ?2 OR lease_until IS NULL OR lease_until <= ?4) \
                 RETURNING position",
            )
            .bind(&trigger.uid)
            .bind(owner)
            .bind(until)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(position) = position {
                held.push(Cursor {
                    trigger_uid: trigger.uid.clone(),
                    position,
                });
            }
        }
        tx.commit().await?;
        Ok(held)
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
        let moving = sqlx::query(
            "UPDATE cursors SET position = ?4 WHERE trigger_uid = ?1 AND owner = ?2 AND position = ?3",
        )
        .bind(trigger_uid)
        .bind(owner)
        .bind(from)
        .bind(to);
        if deliveries.is_empty() && dead_letters.is_empty() {
            // The common case, every event delivered: one statement is its own transaction, so the
            // cursor moves without BEGIN and COMMIT round trips to the writer (and, like
            // `write_lazily`, without waiting for the disk).
            return Ok(moving.execute(&self.writer).await?.rows_affected() > 0);
        }
        let mut tx = self.write_lazily().await?;
        let moved = moving.execute(&mut *tx).await?.rows_affected();
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
        let mut tx = self.write().await?;
        insert_outcomes(&mut tx, deliveries, dead_letters, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blocked_lanes(&self, trigger_uid: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT lane FROM deliveries \
             WHERE trigger_uid = ?1 AND lane IS NOT NULL AND phase = 'subscriber' ORDER BY lane",
        )
        .bind(trigger_uid)
        .fetch_all(&self.reader)
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
        let mut tx = self.write().await?;
        let rows = sqlx::query(concat!(
            "UPDATE deliveries SET owner = ?1, lease_until = ?2 WHERE id IN ( \
                SELECT d.id FROM deliveries d \
                WHERE d.next_attempt_at <= ?3 AND (d.lease_until IS NULL OR d.lease_until <= ?3) AND ",
            lane_allows!(),
            " ORDER BY d.next_attempt_at, d.id LIMIT CAST(?4 AS INTEGER)) \
             RETURNING ",
            columns!()
        ))
        .bind(owner)
        .bind(codec::lease_until(now, lease_ms))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
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
        let mut tx = self.write().await?;
        let Some(row) = sqlx::query(
            "SELECT phase, lane, dead_letter_id FROM deliveries WHERE id = ?1 AND owner = ?2",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        let phase = codec::phase(row.try_get("phase")?)?;
        let lane: Option<String> = row.try_get("lane")?;
        let dead_letter_id: Option<String> = row.try_get("dead_letter_id")?;

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
                    "UPDATE deliveries SET attempts = ?2, next_attempt_at = ?3, last_status = ?4, last_error = ?5, \
                     first_attempt_at = COALESCE(first_attempt_at, ?6), owner = NULL, lease_until = NULL \
                     WHERE id = ?1",
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
                let dead_id =
                    dead_letters::insert(&mut tx, &dead, lane.as_deref(), state, now).await?;
                if send_to_sink {
                    sqlx::query(
                        "UPDATE deliveries SET phase = 'dead_letter_sink', dead_letter_id = ?2, attempts = 0, \
                         next_attempt_at = ?3, first_attempt_at = NULL, last_status = NULL, last_error = NULL, \
                         owner = NULL, lease_until = NULL WHERE id = ?1",
                    )
                    .bind(id)
                    .bind(&dead_id)
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
                    dead_letters::set_sink_state(&mut tx, &dead_id, SinkState::Delivered, None)
                        .await?;
                }
            }
            (Phase::DeadLetterSink, DeliveryUpdate::GiveUp { dead, .. }) => {
                delete_row(&mut tx, id).await?;
                if let Some(dead_id) = dead_letter_id {
                    dead_letters::set_sink_state(
                        &mut tx,
                        &dead_id,
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
        let mut tx = self.write().await?;
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
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO dispatchers (owner, alive_until) VALUES (?1, ?2) \
             ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until",
        )
        .bind(owner)
        .bind(now.saturating_add(ttl_ms))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dispatchers WHERE alive_until < ?1")
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
        let mut tx = self.write().await?;
        for uid in trigger_uids {
            sqlx::query(
                "UPDATE cursors SET owner = NULL, lease_until = NULL \
                 WHERE trigger_uid = ?1 AND owner = ?2",
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
        let mut tx = self.write().await?;
        let found: Option<(i64, i64)> = sqlx::query_as(
            "SELECT c.position, COALESCE(h.head, c.position) FROM cursors c \
             LEFT JOIN log_heads h ON h.broker = c.broker \
             WHERE c.trigger_uid = ?1 AND (c.owner IS NULL OR c.lease_until IS NULL OR c.lease_until <= ?2)",
        )
        .bind(trigger_uid)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((from, head)) = found.filter(|(from, head)| head > from) else {
            return Ok(None);
        };
        sqlx::query("UPDATE cursors SET position = ?2 WHERE trigger_uid = ?1")
            .bind(trigger_uid)
            .bind(head)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(from))
    }

    async fn drop_trigger(&self, trigger_uid: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM deliveries WHERE trigger_uid = ?1")
            .bind(trigger_uid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cursors WHERE trigger_uid = ?1")
            .bind(trigger_uid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Vec<Backlog>> {
        type Row = (String, i64, i64, Option<i64>, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT c.trigger_uid, MAX(COALESCE(h.head, 0) - c.position, 0), \
                    (SELECT COUNT(*) FROM deliveries d WHERE d.trigger_uid = c.trigger_uid), \
                    (SELECT e.accepted_at FROM events e WHERE e.broker = c.broker AND e.seq = c.position + 1), \
                    (SELECT MIN(COALESCE(d.first_attempt_at, d.next_attempt_at)) FROM deliveries d WHERE d.trigger_uid = c.trigger_uid) \
             FROM cursors c LEFT JOIN log_heads h ON h.broker = c.broker \
             UNION ALL \
             SELECT d.trigger_uid, 0, COUNT(*), NULL, MIN(COALESCE(d.first_attempt_at, d.next_attempt_at)) FROM deliveries d \
             WHERE NOT EXISTS (SELECT 1 FROM cursors c WHERE c.trigger_uid = d.trigger_uid) \
             GROUP BY d.trigger_uid \
             ORDER BY 1",
        )
        .fetch_all(&self.reader)
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
        .fetch_one(&self.reader)
        .await?)
    }
}

async fn delete_row(conn: &mut SqliteConnection, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM deliveries WHERE id = ?1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
