//! The event log and the dedupe window on PostgreSQL.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::Row;

use super::PostgresStore;
use crate::{Appended, EventLog, Millis, NewEvent, Result, StoredEvent, codec};

/// Most parameter bytes of one append statement. A batch within it (every batch the ingress's group
/// commit makes of events of ordinary size) is appended by one statement in its own implicit
/// transaction: one round trip. A bigger one is appended by several statements in one transaction.
const STATEMENT_BYTES: usize = 8 * 1024 * 1024;

/// LISTEN/NOTIFY channel of committed appends, see [`EventLog::watch_appends`].
const APPEND_CHANNEL: &str = "kinetic_appends";

/// The whole append as one statement: stamp the new dedupe keys, move each broker's head by the
/// number accepted, insert the accepted events at their positions (batch order per broker), and
/// notify listeners (delivered when, and only if, the statement's transaction commits).
///
/// No lock is taken beforehand. Concurrent appends serialize on the rows they share: a key being
/// stamped by an uncommitted append makes the next one wait for its commit (then the key is a
/// duplicate), and a broker's `log_heads` row is held from the head update to the commit, so
/// positions become visible in order. Keys arrive sorted, heads are updated in broker order, and
/// every key comes before any head (the heads need the stamped keys' count), so two appends always
/// take their row locks in the same order and cannot deadlock.
const APPEND: &str = "\
WITH input AS ( \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int4[]) \
        AS i(broker, source, id, payload, ord) \
), stamped AS ( \
    INSERT INTO dedupe (broker, source, id, accepted_at) \
    SELECT broker, source, id, $6 FROM input ORDER BY broker, source, id \
    ON CONFLICT (broker, source, id) DO UPDATE SET accepted_at = EXCLUDED.accepted_at \
    WHERE dedupe.accepted_at < $7 \
    RETURNING broker, source, id \
), accepted AS ( \
    SELECT i.broker, i.payload, i.ord, \
        row_number() OVER (PARTITION BY i.broker ORDER BY i.ord) AS n, \
        count(*) OVER (PARTITION BY i.broker) AS total \
    FROM input i JOIN stamped s ON s.broker = i.broker AND s.source = i.source AND s.id = i.id \
), heads AS ( \
    INSERT INTO log_heads (broker, head) \
    SELECT broker, count(*) FROM accepted GROUP BY broker ORDER BY broker \
    ON CONFLICT (broker) DO UPDATE SET head = log_heads.head + EXCLUDED.head \
    RETURNING broker, head \
), placed AS ( \
    SELECT a.ord, h.head - a.total + a.n AS seq, a.broker, a.payload \
    FROM accepted a JOIN heads h ON h.broker = a.broker \
), stored AS ( \
    INSERT INTO events (broker, seq, payload, accepted_at) \
    SELECT broker, seq, payload, $6 FROM placed \
) \
SELECT ord, seq, (SELECT pg_notify('kinetic_appends', '')) IS NULL FROM placed";

/// First-occurrence indexes of `events` ordered by key (broker, source, id): the order every
/// append and `remember` takes the dedupe rows' locks in.
fn in_key_order(events: &[NewEvent]) -> Vec<usize> {
    let mut order = codec::first_occurrences(events);
    order.sort_by(|&a, &b| {
        let (a, b) = (&events[a], &events[b]);
        (a.broker.as_str(), a.source.as_str(), a.id.as_str()).cmp(&(
            b.broker.as_str(),
            b.source.as_str(),
            b.id.as_str(),
        ))
    });
    order
}

/// Bytes an event's key and payload take as statement parameters (with some per-row overhead).
fn parameter_bytes(event: &NewEvent) -> usize {
    event.broker.len() + event.source.len() + event.id.len() + event.payload.len() + 32
}

/// Stamps the keys of `candidates` (in key order) that are new (absent, or accepted before
/// `dedupe_since`) with `now`; returns those indexes, in the order given.
async fn stamp_new_keys(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    events: &[NewEvent],
    candidates: &[usize],
    now: Millis,
    dedupe_since: Millis,
) -> Result<Vec<usize>> {
    let sizes: Vec<usize> = candidates
        .iter()
        .map(|&index| parameter_bytes(&events[index]))
        .collect();
    let mut stamped: Vec<(String, String, String)> = Vec::with_capacity(candidates.len());
    for range in codec::size_bounded_ranges(&sizes, STATEMENT_BYTES) {
        let chunk = &candidates[range];
        let brokers: Vec<&str> = chunk.iter().map(|&i| events[i].broker.as_str()).collect();
        let sources: Vec<&str> = chunk.iter().map(|&i| events[i].source.as_str()).collect();
        let ids: Vec<&str> = chunk.iter().map(|&i| events[i].id.as_str()).collect();
        stamped.extend(
            sqlx::query_as::<_, (String, String, String)>(
                "INSERT INTO dedupe (broker, source, id, accepted_at) \
                 SELECT broker, source, id, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(broker, source, id) \
                 ON CONFLICT (broker, source, id) DO UPDATE SET accepted_at = EXCLUDED.accepted_at \
                 WHERE dedupe.accepted_at < $5 \
                 RETURNING broker, source, id",
            )
            .bind(&brokers)
            .bind(&sources)
            .bind(&ids)
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

impl PostgresStore {
    /// An append of at most [`STATEMENT_BYTES`]: one statement, see [`APPEND`].
    async fn append_in_one_statement(
        &self,
        events: &[NewEvent],
        keyed: &[usize],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<Appended>> {
        let brokers: Vec<&str> = keyed.iter().map(|&i| events[i].broker.as_str()).collect();
        let sources: Vec<&str> = keyed.iter().map(|&i| events[i].source.as_str()).collect();
        let ids: Vec<&str> = keyed.iter().map(|&i| events[i].id.as_str()).collect();
        let payloads: Vec<&[u8]> = keyed.iter().map(|&i| events[i].payload.as_ref()).collect();
        let ords = keyed
            .iter()
            .map(|&i| i32::try_from(i))
            .collect::<std::result::Result<Vec<i32>, _>>()
            .map_err(|_| crate::Error::Corrupt("an append batch of over 2^31 events".into()))?;
        let placed: Vec<(i32, i64, bool)> = sqlx::query_as(APPEND)
            .bind(&brokers)
            .bind(&sources)
            .bind(&ids)
            .bind(&payloads)
            .bind(&ords)
            .bind(now)
            .bind(dedupe_since)
            .fetch_all(&self.pool)
            .await?;
        let mut results = vec![Appended::Duplicate; events.len()];
        for (ord, seq, _) in placed {
            let index = usize::try_from(ord)
                .ok()
                .filter(|&index| index < events.len())
                .ok_or_else(|| {
                    crate::Error::Corrupt(format!("the append returned position {ord}"))
                })?;
            results[index] = Appended::Accepted(seq);
        }
        Ok(results)
    }

    /// An append of more than [`STATEMENT_BYTES`]: in one transaction, every key first (in key
    /// order, as [`APPEND`] takes them), then the heads, then the events in several statements.
    async fn append_in_statements(
        &self,
        events: &[NewEvent],
        keyed: &[usize],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<Appended>> {
        let mut tx = self.pool.begin().await?;
        let mut accepted = stamp_new_keys(&mut tx, events, keyed, now, dedupe_since).await?;
        if accepted.is_empty() {
            tx.commit().await?;
            return Ok(vec![Appended::Duplicate; events.len()]);
        }
        // Positions follow the batch's order.
        accepted.sort_unstable();
        let mut counts = codec::counts_per_broker(events, &accepted);
        counts.sort_unstable();
        let (head_brokers, counts): (Vec<&str>, Vec<i64>) = counts.into_iter().unzip();
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

        let placed: Vec<(usize, i64)> = results
            .iter()
            .enumerate()
            .filter_map(|(index, result)| match result {
                Appended::Accepted(seq) => Some((index, *seq)),
                Appended::Duplicate => None,
            })
            .collect();
        let sizes: Vec<usize> = placed
            .iter()
            .map(|&(index, _)| parameter_bytes(&events[index]))
            .collect();
        for range in codec::size_bounded_ranges(&sizes, STATEMENT_BYTES) {
            let chunk = &placed[range];
            let brokers: Vec<&str> = chunk
                .iter()
                .map(|&(i, _)| events[i].broker.as_str())
                .collect();
            let seqs: Vec<i64> = chunk.iter().map(|&(_, seq)| seq).collect();
            let payloads: Vec<&[u8]> = chunk
                .iter()
                .map(|&(i, _)| events[i].payload.as_ref())
                .collect();
            sqlx::query(
                "INSERT INTO events (broker, seq, payload, accepted_at) \
                 SELECT broker, seq, payload, $4 FROM unnest($1::text[], $2::int8[], $3::bytea[]) AS e(broker, seq, payload)",
            )
            .bind(&brokers)
            .bind(&seqs)
            .bind(&payloads)
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
        let keyed = in_key_order(events);
        let bytes: usize = keyed.iter().map(|&i| parameter_bytes(&events[i])).sum();
        if bytes <= STATEMENT_BYTES {
            self.append_in_one_statement(events, &keyed, now, dedupe_since)
                .await
        } else {
            self.append_in_statements(events, &keyed, now, dedupe_since)
                .await
        }
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
        let keyed = in_key_order(keys);
        let mut tx = self.pool.begin().await?;
        let fresh = stamp_new_keys(&mut tx, keys, &keyed, now, dedupe_since).await?;
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
                payload: crate::Bytes::from(row.try_get::<Vec<u8>, _>(1)?),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_statement_append_notifies_the_channel_listeners_watch() {
        assert!(APPEND.contains(&format!("pg_notify('{APPEND_CHANNEL}', '')")));
    }

    #[test]
    fn keys_are_taken_in_one_order_whatever_the_batch_order() {
        let event = |broker: &str, id: &str| NewEvent {
            broker: broker.into(),
            source: "s".into(),
            id: id.into(),
            payload: crate::Bytes::new(),
        };
        let events = [
            event("b", "2"),
            event("a", "9"),
            event("b", "1"),
            event("a", "9"),
        ];
        // The repeat of (a, 9) is left out: the first occurrence stands for it.
        assert_eq!(in_key_order(&events), vec![1, 2, 0]);
    }
}
