//! The dedupe window on SQLite: an append-only table, and an index of it in memory.
//!
//! A table keyed by (broker, source, id) puts every new key on a random page of its B-tree, and
//! SQLite's WAL writes whole pages: each accepted event cost a page write of its own, several times
//! the bytes of the event (measured: about 60 MB/s of writes at 7,000 events/s, and two thirds of
//! the writer's time). Keys are instead appended to `dedupe_log` in the order they are stamped (a
//! commit touches the last page or two), and this process keeps, per key, a 64-bit hash → the row
//! that holds it. A hit is always confirmed against that row, so a hash collision can make a
//! duplicate look new (delivered twice, as at-least-once allows) but never a new event look like a
//! duplicate (lost).
//!
//! The index is built from the table when the store opens and changed with every write, before the
//! commit: a write that then fails leaves entries pointing at rows that do not exist (or that a later
//! write reuses for another key), which the confirmation reads as "not there". Memory: about 32
//! bytes per key within the window. One process owns a SQLite file; a second handle on the same
//! file does not see the first one's keys in memory.
//!
//! The index holds at most [`MAX_KEYS`] keys (about 320 MB). Past it, new keys are still written to
//! the table but not indexed, so a duplicate of one of them is accepted again (delivered twice, as
//! at-least-once allows) until pruning the window makes room; a warning says so.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use futures::TryStreamExt as _;
use sqlx::{AssertSqlSafe, SqliteConnection, SqlitePool};

use super::events::{CHUNK_SIZES, Statements, chunks, values};
use crate::{Millis, NewEvent, Result};

/// Appends keys, each row bound as (broker, source, id, accepted_at), in statements of
/// [`CHUNK_SIZES`] rows. The rows' positions are not returned (`RETURNING` makes SQLite collect
/// them in a temporary B-tree, opened and closed per statement): a statement's rows take the
/// positions after the table's largest, one by one, so they end at the last inserted rowid.
static INSERT_SQL: LazyLock<Statements> = LazyLock::new(|| {
    CHUNK_SIZES.map(|rows| {
        format!(
            "INSERT INTO dedupe_log (broker, source, id, accepted_at) VALUES {}",
            values(rows, 4)
        )
        .into()
    })
});

/// Rows removed per pruning transaction.
const PRUNE_CHUNK: i64 = 1000;

/// Most keys the index holds.
pub(super) const MAX_KEYS: usize = 10_000_000;

/// Hashes of the keys are already uniformly distributed: the map uses them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; this keeps any other input correct, if slower.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Each key's hash → the `dedupe_log` row that last stamped it.
pub(super) struct Index {
    /// Keyed per process, so nobody can choose ids that collide.
    hasher: RandomState,
    rows: HashMap<u64, i64, BuildHasherDefault<Prehashed>>,
    /// Most keys held (see [`MAX_KEYS`]).
    max_keys: usize,
    /// Whether keys were left out since the index was last under its bound (warned once).
    full: bool,
}

pub(super) type SharedIndex = Arc<Mutex<Index>>;

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("keys", &self.rows.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    fn hash(&self, broker: &str, source: &str, id: &str) -> u64 {
        self.hasher.hash_one((broker, source, id))
    }

    /// Points `hash` at `seq`, unless the index is full and `hash` is not in it already.
    fn insert(&mut self, hash: u64, seq: i64) {
        if self.rows.len() < self.max_keys || self.rows.contains_key(&hash) {
            self.rows.insert(hash, seq);
            self.full = false;
        } else if !self.full {
            self.full = true;
            tracing::warn!(
                keys = self.rows.len(),
                "The SQLite dedupe index is full; until the dedupe window prunes old keys, new ones are not remembered and their duplicates are delivered again. Shorten --dedupe-window or move to PostgreSQL."
            );
        }
    }

    /// Forgets `seq` under `hash` unless a later row took its place.
    fn remove(&mut self, hash: u64, seq: i64) {
        if self.rows.get(&hash) == Some(&seq) {
            self.rows.remove(&hash);
        }
    }
}

fn lock(index: &SharedIndex) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds the index from the table.
pub(super) async fn load(pool: &SqlitePool) -> Result<SharedIndex> {
    let mut index = Index {
        hasher: RandomState::new(),
        rows: HashMap::default(),
        max_keys: MAX_KEYS,
        full: false,
    };
    let mut rows = sqlx::query_as::<_, (i64, String, String, String)>(
        "SELECT seq, broker, source, id FROM dedupe_log ORDER BY seq",
    )
    .fetch(pool);
    while let Some((seq, broker, source, id)) = rows.try_next().await? {
        let hash = index.hash(&broker, &source, &id);
        index.insert(hash, seq);
    }
    Ok(Arc::new(Mutex::new(index)))
}

/// The row stamped for `event`'s key, if the index points at one that holds that very key.
async fn confirmed(
    tx: &mut SqliteConnection,
    seq: i64,
    event: &NewEvent,
) -> Result<Option<Millis>> {
    let row: Option<(String, String, String, i64)> =
        sqlx::query_as("SELECT broker, source, id, accepted_at FROM dedupe_log WHERE seq = ?1")
            .bind(seq)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.and_then(|(broker, source, id, accepted_at)| {
        (broker == event.broker && source == event.source && id == event.id).then_some(accepted_at)
    }))
}

/// Stamps the keys of `candidates` that are new (never stamped, or last stamped before
/// `dedupe_since`) with `now`; returns those indexes, in order.
pub(super) async fn stamp_new_keys(
    tx: &mut SqliteConnection,
    index: &SharedIndex,
    events: &[NewEvent],
    candidates: &[usize],
    now: Millis,
    dedupe_since: Millis,
) -> Result<Vec<usize>> {
    let looked_up: Vec<(usize, u64, Option<i64>)> = {
        let index = lock(index);
        candidates
            .iter()
            .map(|&i| {
                let event = &events[i];
                let hash = index.hash(&event.broker, &event.source, &event.id);
                (i, hash, index.rows.get(&hash).copied())
            })
            .collect()
    };
    let mut fresh: Vec<(usize, u64)> = Vec::with_capacity(looked_up.len());
    for (i, hash, seq) in looked_up {
        let Some(seq) = seq else {
            fresh.push((i, hash));
            continue;
        };
        match confirmed(tx, seq, &events[i]).await? {
            Some(accepted_at) if accepted_at >= dedupe_since => {}
            Some(_) => fresh.push((i, hash)),
            None => {
                // A row of a write that failed, or another key's hash: nothing was stamped for this key.
                lock(index).remove(hash, seq);
                fresh.push((i, hash));
            }
        }
    }

    let mut seqs: Vec<i64> = Vec::with_capacity(fresh.len());
    let mut rest = fresh.as_slice();
    for (size, sql) in chunks(fresh.len(), &INSERT_SQL) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for &(i, _) in chunk {
            let event = &events[i];
            query = query
                .bind(&event.broker)
                .bind(&event.source)
                .bind(&event.id)
                .bind(now);
        }
        let done = query.execute(&mut *tx).await?;
        // SQLite gives each new row the position after the largest in the table, in the order of
        // VALUES, under the write lock this transaction holds. (Only a table whose largest position
        // is i64::MAX makes it pick at random; the index would then point at other rows, which
        // the confirmation reads as "not there": a duplicate accepted again, never an event lost.)
        let last = done.last_insert_rowid();
        let count = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        seqs.extend((0..count).map(|k| last - count + 1 + k));
    }
    if seqs.len() != fresh.len() {
        return Err(crate::Error::Corrupt(format!(
            "stamping {} dedupe keys inserted {} rows",
            fresh.len(),
            seqs.len()
        )));
    }
    let mut index = lock(index);
    for (&(_, hash), seq) in fresh.iter().zip(seqs) {
        index.insert(hash, seq);
    }
    Ok(fresh.into_iter().map(|(i, _)| i).collect())
}

/// Removes the stamps of `keys` made at `stamped_at`.
pub(super) async fn forget(
    tx: &mut SqliteConnection,
    index: &SharedIndex,
    keys: &[NewEvent],
    stamped_at: Millis,
) -> Result<()> {
    for key in keys {
        let (hash, seq) = {
            let index = lock(index);
            let hash = index.hash(&key.broker, &key.source, &key.id);
            (hash, index.rows.get(&hash).copied())
        };
        let Some(seq) = seq else { continue };
        if confirmed(tx, seq, key).await? == Some(stamped_at) {
            sqlx::query("DELETE FROM dedupe_log WHERE seq = ?1")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            lock(index).remove(hash, seq);
        }
    }
    Ok(())
}

/// Removes, oldest first, the stamps made before `dedupe_since`, in transactions of at most
/// [`PRUNE_CHUNK`] rows. Stops at the first stamp within the window (a clock set back can leave an
/// older one behind it until that one is reached; it counts as outside the window anyway).
pub(super) async fn prune(
    store: &super::SqliteStore,
    index: &SharedIndex,
    dedupe_since: Millis,
) -> Result<()> {
    loop {
        // Most rounds find nothing expired: ask the oldest key alone, without the writer.
        let oldest_at: Option<i64> =
            sqlx::query_scalar("SELECT accepted_at FROM dedupe_log ORDER BY seq LIMIT 1")
                .fetch_optional(&store.reader)
                .await?;
        if oldest_at.is_none_or(|at| at >= dedupe_since) {
            return Ok(());
        }
        let mut tx = store.write().await?;
        let oldest: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT seq, broker, source, id, accepted_at FROM dedupe_log ORDER BY seq LIMIT CAST(?1 AS INTEGER)",
        )
        .bind(PRUNE_CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        let expired: Vec<_> = oldest
            .iter()
            .take_while(|(_, _, _, _, accepted_at)| *accepted_at < dedupe_since)
            .collect();
        let Some(&&(last, ..)) = expired.last() else {
            return Ok(());
        };
        sqlx::query("DELETE FROM dedupe_log WHERE seq <= ?1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        {
            let mut index = lock(index);
            for (seq, broker, source, id, _) in &expired {
                let hash = index.hash(broker, source, id);
                index.remove(hash, *seq);
            }
        }
        if expired.len() < oldest.len() || oldest.len() < PRUNE_CHUNK as usize {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_have_a_row_of_parameters_per_key() {
        assert!(INSERT_SQL[7].ends_with("VALUES (?, ?, ?, ?)"));
        assert_eq!(INSERT_SQL[4].matches("(?, ?, ?, ?)").count(), 8);
        let sizes: Vec<usize> = chunks(170, &INSERT_SQL)
            .into_iter()
            .map(|(size, _)| size)
            .collect();
        assert_eq!(sizes, [128, 32, 8, 2]);
    }

    #[test]
    fn the_index_keeps_the_latest_row_per_key() {
        let mut index = Index {
            hasher: RandomState::new(),
            rows: HashMap::default(),
            max_keys: MAX_KEYS,
            full: false,
        };
        let hash = index.hash("ns/b", "/s", "1");
        assert_ne!(hash, index.hash("ns/b", "/s", "2"));
        assert_ne!(
            hash,
            index.hash("ns/b", "/s1", ""),
            "fields do not run together"
        );
        index.rows.insert(hash, 4);
        index.rows.insert(hash, 9);
        index.remove(hash, 4);
        assert_eq!(
            index.rows.get(&hash),
            Some(&9),
            "an older row does not remove a newer one"
        );
        index.remove(hash, 9);
        assert!(index.rows.is_empty());
    }

    #[test]
    fn a_full_index_keeps_what_it_has_and_leaves_new_keys_out() {
        let mut index = Index {
            hasher: RandomState::new(),
            rows: HashMap::default(),
            max_keys: 2,
            full: false,
        };
        let [a, b, c] = ["a", "b", "c"].map(|id| index.hash("ns/b", "/s", id));
        index.insert(a, 1);
        index.insert(b, 2);
        index.insert(c, 3);
        assert!(index.full && !index.rows.contains_key(&c), "left out");
        index.insert(a, 4);
        assert_eq!(index.rows.get(&a), Some(&4), "a known key still moves");
        index.remove(b, 2);
        index.insert(c, 5);
        assert_eq!(index.rows.get(&c), Some(&5), "room again");
        assert!(!index.full);
    }
}
