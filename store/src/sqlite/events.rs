//! The event log and the dedupe window on SQLite.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use super::{SqliteStore, dedupe};
use crate::{Appended, EventLog, Millis, NewEvent, Result, StoredEvent, codec};

/// A batch is written with multi-row statements of these sizes (largest first), so a batch of 500
/// costs 8 statements instead of 500, and each size's statement is prepared once per connection.
/// Powers of two: a group commit of 7 events is 3 statements (4 + 2 + 1), not 7 of one row.
pub(super) const CHUNK_SIZES: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// One statement per size of [`CHUNK_SIZES`].
pub(super) type Statements = [Arc<str>; CHUNK_SIZES.len()];

/// Stores events, each row bound as (broker, seq, payload, accepted_at).
static EVENTS_SQL: LazyLock<Statements> = LazyLock::new(|| {
    CHUNK_SIZES.map(|rows| {
        format!(
            "INSERT INTO events (broker, seq, payload, accepted_at) VALUES {}",
            values(rows, 4)
        )
        .into()
    })
});

/// `VALUES` rows of `columns` anonymous parameters each: `(?, ?), (?, ?)`. Anonymous, because
/// binding a numbered parameter (`?12`) makes the driver look its name up in a list as long as the
/// statement's parameters, which for a statement of 128 rows cost more than the row itself.
pub(super) fn values(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// Cuts `rows` into chunk sizes, largest first, each with its statement.
pub(super) fn chunks(mut rows: usize, statements: &Statements) -> Vec<(usize, Arc<str>)> {
    let mut chunks = Vec::new();
    for (size, sql) in CHUNK_SIZES.iter().zip(statements) {
        while rows >= *size {
            chunks.push((*size, sql.clone()));
            rows -= size;
        }
    }
    chunks
}

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
        let candidates = codec::first_occurrences(events);
        let mut tx = self.write().await?;
        let accepted = dedupe::stamp_new_keys(
            &mut tx,
            &self.dedupe,
            events,
            &candidates,
            now,
            dedupe_since,
        )
        .await?;

        let mut heads = HashMap::new();
        for (broker, count) in codec::counts_per_broker(events, &accepted) {
            // Two statements, one call: `RETURNING` would collect the head in a temporary B-tree.
            let head: i64 = sqlx::query_scalar(
                "INSERT INTO log_heads (broker, head) VALUES (?1, ?2) \
                 ON CONFLICT (broker) DO UPDATE SET head = head + excluded.head; \
                 SELECT head FROM log_heads WHERE broker = ?1",
            )
            .bind(broker)
            .bind(count)
            .fetch_one(&mut *tx)
            .await?;
            heads.insert(broker.to_owned(), head);
        }
        let results = codec::positions(events, &accepted, &heads)?;

        let stored: Vec<(&NewEvent, i64)> = events
            .iter()
            .zip(&results)
            .filter_map(|(event, result)| match result {
                Appended::Accepted(seq) => Some((event, *seq)),
                Appended::Duplicate => None,
            })
            .collect();
        let mut rest = stored.as_slice();
        for (size, sql) in chunks(stored.len(), &EVENTS_SQL) {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (event, seq) in chunk {
                query = query
                    .bind(&event.broker)
                    .bind(seq)
                    .bind(&event.payload[..])
                    .bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn remember(
        &self,
        keys: &[NewEvent],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let candidates = codec::first_occurrences(keys);
        let mut tx = self.write().await?;
        let fresh =
            dedupe::stamp_new_keys(&mut tx, &self.dedupe, keys, &candidates, now, dedupe_since)
                .await?;
        tx.commit().await?;
        Ok(codec::flags(keys.len(), &fresh))
    }

    async fn forget(&self, keys: &[NewEvent], stamped_at: Millis) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        dedupe::forget(&mut tx, &self.dedupe, keys, stamped_at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn read(&self, broker: &str, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        use futures::TryStreamExt as _;
        let mut rows = sqlx::query(
            "SELECT seq, payload, accepted_at FROM events WHERE broker = ?1 AND seq > ?2 ORDER BY seq LIMIT CAST(?3 AS INTEGER)",
        )
        .bind(broker)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch(&self.reader);
        let mut events = Vec::new();
        let mut bytes = 0;
        // Rows are taken as they come, so the ones not kept are never held.
        while crate::read_has_room(bytes)
            && let Some(row) = rows.try_next().await?
        {
            let event = StoredEvent {
                seq: row.try_get(0)?,
                payload: crate::Bytes::from(row.try_get::<Vec<u8>, _>(1)?),
                accepted_at: row.try_get(2)?,
            };
            bytes += event.payload.len();
            events.push(event);
        }
        Ok(events)
    }

    async fn head(&self, broker: &str) -> Result<i64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT head FROM log_heads WHERE broker = ?1")
            .bind(broker)
            .fetch_optional(&self.reader)
            .await?;
        Ok(head.unwrap_or(0))
    }

    async fn watch_appends(&self) -> Result<Option<crate::AppendSignals>> {
        // One process owns a SQLite file; it signals its own appends in memory.
        Ok(None)
    }

    async fn prune(&self, dedupe_since: Millis) -> Result<u64> {
        // Small transactions: SQLite has one writer, and a long delete would stall every commit
        // (and the broker's 202s) behind it.
        dedupe::prune(self, &self.dedupe, dedupe_since).await?;
        // Per broker, everything up to the slowest cursor; a broker without cursors loses it all.
        let bounds: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT h.broker, COALESCE((SELECT MIN(c.position) FROM cursors c WHERE c.broker = h.broker), h.head), \
             (SELECT MIN(e.seq) FROM events e WHERE e.broker = h.broker) \
             FROM log_heads h",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut deleted = 0;
        for (broker, bound, lowest) in bounds {
            let Some(mut lowest) = lowest else { continue };
            while lowest <= bound {
                let upto = bound.min(lowest.saturating_add(PRUNE_CHUNK - 1));
                // Not waiting for the disk: a delete a machine crash undoes is done again by the
                // next prune, and a commit queued behind this one waits the shorter.
                let mut tx = self.write_lazily().await?;
                deleted += sqlx::query("DELETE FROM events WHERE broker = ?1 AND seq <= ?2")
                    .bind(&broker)
                    .bind(upto)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                lowest = upto.saturating_add(1);
            }
        }
        Ok(deleted)
    }
}

/// Rows deleted per pruning transaction.
const PRUNE_CHUNK: i64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_few_statements_covering_every_row() {
        for rows in [0, 1, 7, 8, 100, 128, 500, 1000, 1001] {
            let sizes: Vec<usize> = chunks(rows, &EVENTS_SQL)
                .into_iter()
                .map(|(size, _)| size)
                .collect();
            assert_eq!(sizes.iter().sum::<usize>(), rows);
            assert!(
                sizes.windows(2).all(|pair| pair[0] >= pair[1]),
                "largest first: {sizes:?}"
            );
        }
        // 3 × 128 + 64 + 32 + 16 + 4
        assert_eq!(chunks(500, &EVENTS_SQL).len(), 7);
    }

    #[test]
    fn statements_have_a_row_of_parameters_per_event() {
        assert!(EVENTS_SQL[7].ends_with("VALUES (?, ?, ?, ?)"));
        assert_eq!(EVENTS_SQL[4].matches("(?, ?, ?, ?)").count(), 8);
        assert_eq!(EVENTS_SQL[0].matches('?').count(), 4 * 128);
    }
}
