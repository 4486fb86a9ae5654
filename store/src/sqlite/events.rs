//! The event log and the dedupe window on SQLite.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Row;

use super::SqliteStore;
use crate::{Appended, EventLog, Millis, NewEvent, Result, StoredEvent, codec};

#[async_trait]
impl EventLog for SqliteStore {
    async fn append(
        &self,
        events: &[NewEvent],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<Appended>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;

        // A key is new when absent or older than the window; then it is (re)stamped with `now`.
        let mut accepted = Vec::with_capacity(events.len());
        for index in codec::first_occurrences(events) {
            let event = &events[index];
            let stamped = sqlx::query(
                "INSERT INTO dedupe (broker, source, id, accepted_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (broker, source, id) DO UPDATE SET accepted_at = excluded.accepted_at \
                 WHERE dedupe.accepted_at < ?5 \
                 RETURNING 1",
            )
            .bind(&event.broker)
            .bind(&event.source)
            .bind(&event.id)
            .bind(now)
            .bind(dedupe_since)
            .fetch_optional(&mut *tx)
            .await?;
            if stamped.is_some() {
                accepted.push(index);
            }
        }

        let mut heads = HashMap::new();
        for (broker, count) in codec::counts_per_broker(events, &accepted) {
            let head: i64 = sqlx::query_scalar(
                "INSERT INTO log_heads (broker, head) VALUES (?1, ?2) \
                 ON CONFLICT (broker) DO UPDATE SET head = head + excluded.head \
                 RETURNING head",
            )
            .bind(broker)
            .bind(count)
            .fetch_one(&mut *tx)
            .await?;
            heads.insert(broker.to_owned(), head);
        }
        let results = codec::positions(events, &accepted, &heads)?;

        for (event, result) in events.iter().zip(&results) {
            if let Appended::Accepted(seq) = result {
                sqlx::query("INSERT INTO events (broker, seq, payload, accepted_at) VALUES (?1, ?2, ?3, ?4)")
                    .bind(&event.broker)
                    .bind(seq)
                    .bind(&event.payload)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn read(&self, broker: &str, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, payload, accepted_at FROM events WHERE broker = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(broker)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    seq: row.try_get(0)?,
                    payload: row.try_get(1)?,
                    accepted_at: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn head(&self, broker: &str) -> Result<i64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT head FROM log_heads WHERE broker = ?1")
            .bind(broker)
            .fetch_optional(&self.reader)
            .await?;
        Ok(head.unwrap_or(0))
    }

    async fn prune(&self, dedupe_since: Millis) -> Result<u64> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM dedupe WHERE accepted_at < ?1")
            .bind(dedupe_since)
            .execute(&mut *tx)
            .await?;
        // Per broker, everything up to the slowest cursor; a broker without cursors loses it all.
        let bounds: Vec<(String, i64)> = sqlx::query_as(
            "SELECT h.broker, COALESCE((SELECT MIN(c.position) FROM cursors c WHERE c.broker = h.broker), h.head) \
             FROM log_heads h",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut deleted = 0;
        for (broker, bound) in bounds {
            deleted += sqlx::query("DELETE FROM events WHERE broker = ?1 AND seq <= ?2")
                .bind(&broker)
                .bind(bound)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
