//! The event log and the dedupe window on PostgreSQL.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::Row;

use super::PostgresStore;
use crate::{Appended, EventLog, Millis, NewEvent, Result, StoredEvent, codec};

/// Most parameter bytes per statement, see [`codec::size_bounded_ranges`].
const MESSAGE_LIMIT: usize = 12 * 1024;

/// LISTEN/NOTIFY channel of committed appends, see [`EventLog::watch_appends`].
const APPEND_CHANNEL: &str = "kinetic_appends";

/// First key of the advisory locks that serialize appends per broker (the second is the broker's
/// hash): "kn" in ASCII, to stay clear of other users of advisory locks in the same database.
const APPEND_LOCK_CLASS: i32 = 0x6b6e;

/// Each broker once (a batch usually holds one), keeping the lock statement's message small.
fn distinct_brokers<'a>(brokers: &[&'a str]) -> Vec<&'a str> {
    let mut distinct: Vec<&str> = brokers.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
}

/// Serializes appends per broker, then stamps the keys of `candidates` that are new (absent, or
/// accepted before `dedupe_since`) with `now`; returns those indexes, in order.
async fn stamp_new_keys(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    events: &[NewEvent],
    candidates: &[usize],
    now: Millis,
    dedupe_since: Millis,
) -> Result<Vec<usize>> {
    // Serialize appends per broker before reading the window or handing out positions, locks
    // taken in one global order so that batches spanning several brokers cannot deadlock.
    let brokers: Vec<&str> = candidates
        .iter()
        .map(|&index| events[index].broker.as_str())
        .collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, k) \
         FROM (SELECT DISTINCT hashtext(b) AS k FROM unnest($2::text[]) AS b ORDER BY k) AS keys",
    )
    .bind(APPEND_LOCK_CLASS)
    .bind(distinct_brokers(&brokers))
    .execute(&mut **tx)
    .await?;

    // A key is new when absent or older than the window; then it is (re)stamped with `now`.
    let sources: Vec<&str> = candidates
        .iter()
        .map(|&index| events[index].source.as_str())
        .collect();
    let ids: Vec<&str> = candidates
        .iter()
        .map(|&index| events[index].id.as_str())
        .collect();
    let key_sizes: Vec<usize> = (0..candidates.len())
        .map(|i| brokers[i].len() + sources[i].len() + ids[i].len() + 16)
        .collect();
    let mut stamped: Vec<(String, String, String)> = Vec::with_capacity(candidates.len());
    for range in codec::size_bounded_ranges(&key_sizes, MESSAGE_LIMIT) {
        stamped.extend(
            sqlx::query_as::<_, (String, String, String)>(
                "INSERT INTO dedupe (broker, source, id, accepted_at) \
                 SELECT broker, source, id, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(broker, source, id) \
                 ON CONFLICT (broker, source, id) DO UPDATE SET accepted_at = EXCLUDED.accepted_at \
                 WHERE dedupe.accepted_at < $5 \
                 RETURNING broker, source, id",
            )
            .bind(&brokers[range.clone()])
            .bind(&sources[range.clone()])
            .bind(&ids[range])
            .bind(now)
            .bind(dedupe_since)
            .fetch_all(&mut **tx)
            .await?,
        );
    }
    let stamped: HashSet<(&str, &str, &str)> = stamped
        .iter()
        .map(|(broker, source, id)| (broker.as_str(), source.as_str(), id.as_str()))
        .collect();
    Ok(candidates
        .iter()
        .copied()
        .filter(|&index| {
            let event = &events[index];
            stamped.contains(&(
                event.broker.as_str(),
                event.source.as_str(),
                event.id.as_str(),
            ))
        })
        .collect())
}

#[async_trait]
impl EventLog for PostgresStore {
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
        let mut tx = self.pool.begin().await?;
        let accepted = stamp_new_keys(&mut tx, events, &candidates, now, dedupe_since).await?;
        if accepted.is_empty() {
            tx.commit().await?;
            return Ok(vec![Appended::Duplicate; events.len()]);
        }

        let (head_brokers, counts): (Vec<&str>, Vec<i64>) =
            codec::counts_per_broker(events, &accepted)
                .into_iter()
                .unzip();
        let heads: HashMap<String, i64> = sqlx::query_as(
            "INSERT INTO log_heads (broker, head) SELECT * FROM unnest($1::text[], $2::int8[]) \
             ON CONFLICT (broker) DO UPDATE SET head = log_heads.head + EXCLUDED.head \
             RETURNING broker, head",
        )
        .bind(&head_brokers)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let results = codec::positions(events, &accepted, &heads)?;

        let mut brokers = Vec::with_capacity(accepted.len());
        let mut seqs = Vec::with_capacity(accepted.len());
        let mut payloads = Vec::with_capacity(accepted.len());
        for (event, result) in events.iter().zip(&results) {
            if let Appended::Accepted(seq) = result {
                brokers.push(event.broker.as_str());
                seqs.push(*seq);
                payloads.push(event.payload.as_slice());
            }
        }
        let sizes: Vec<usize> = payloads
            .iter()
            .zip(&brokers)
            .map(|(p, b)| p.len() + b.len() + 16)
            .collect();
        for range in codec::size_bounded_ranges(&sizes, MESSAGE_LIMIT) {
            sqlx::query(
                "INSERT INTO events (broker, seq, payload, accepted_at) \
                 SELECT broker, seq, payload, $4 FROM unnest($1::text[], $2::int8[], $3::bytea[]) AS e(broker, seq, payload)",
            )
            .bind(&brokers[range.clone()])
            .bind(&seqs[range.clone()])
            .bind(&payloads[range])
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Delivered to listeners when (and only if) the transaction commits.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(APPEND_CHANNEL)
            .execute(&mut *tx)
            .await?;
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
        let mut tx = self.pool.begin().await?;
        let fresh = stamp_new_keys(&mut tx, keys, &candidates, now, dedupe_since).await?;
        tx.commit().await?;
        Ok(codec::flags(keys.len(), &fresh))
    }

    async fn forget(&self, keys: &[NewEvent], stamped_at: Millis) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let brokers: Vec<&str> = keys.iter().map(|k| k.broker.as_str()).collect();
        let sources: Vec<&str> = keys.iter().map(|k| k.source.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        sqlx::query(
            "DELETE FROM dedupe d USING unnest($1::text[], $2::text[], $3::text[]) AS k(broker, source, id) \
             WHERE d.broker = k.broker AND d.source = k.source AND d.id = k.id AND d.accepted_at = $4",
        )
        .bind(&brokers)
        .bind(&sources)
        .bind(&ids)
        .bind(stamped_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn read(&self, broker: &str, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        use futures::TryStreamExt as _;
        let mut rows = sqlx::query(
            "SELECT seq, payload, accepted_at FROM events WHERE broker = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(broker)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch(&self.pool);
        let mut events = Vec::new();
        let mut bytes = 0;
        // Rows are taken as they come, so the ones not kept are never held.
        while crate::read_has_room(bytes)
            && let Some(row) = rows.try_next().await?
        {
            let event = StoredEvent {
                seq: row.try_get(0)?,
                payload: row.try_get(1)?,
                accepted_at: row.try_get(2)?,
            };
            bytes += event.payload.len();
            events.push(event);
        }
        Ok(events)
    }

    async fn head(&self, broker: &str) -> Result<i64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT head FROM log_heads WHERE broker = $1")
            .bind(broker)
            .fetch_optional(&self.pool)
            .await?;
        Ok(head.unwrap_or(0))
    }

    async fn watch_appends(&self) -> Result<Option<crate::AppendSignals>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(APPEND_CHANNEL).await?;
        let signals = futures::stream::unfold(listener, |mut listener| async move {
            match listener.try_recv().await {
                // A notification, or a lost connection (being restored): either way, look again.
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "Listening for appends failed; retrying.");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            Some(((), listener))
        });
        Ok(Some(Box::pin(signals)))
    }

    async fn prune(&self, dedupe_since: Millis) -> Result<u64> {
        // Separate short statements rather than one long transaction: each delete is correct on its
        // own (cursors only move forward, and new cursors start at the head).
        sqlx::query("DELETE FROM dedupe WHERE accepted_at < $1")
            .bind(dedupe_since)
            .execute(&self.pool)
            .await?;
        // Per broker, everything up to the slowest cursor; a broker without cursors loses it all.
        let bounds: Vec<(String, i64)> = sqlx::query_as(
            "SELECT h.broker, COALESCE((SELECT MIN(c.position) FROM cursors c WHERE c.broker = h.broker), h.head) \
             FROM log_heads h",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut deleted = 0;
        for (broker, bound) in bounds {
            deleted += sqlx::query("DELETE FROM events WHERE broker = $1 AND seq <= $2")
                .bind(&broker)
                .bind(bound)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}
