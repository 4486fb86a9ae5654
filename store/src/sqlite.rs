//! The SQLite store: the embedded default, one process on one file.
//!
//! SQLite has one writer at a time, so every write goes through a pool of exactly one connection and
//! starts with `BEGIN IMMEDIATE` (it takes the write lock up front instead of failing to upgrade a
//! read lock; another process on the same file waits `busy_timeout`). Reads use their own pool and
//! see the last committed state (WAL). Positions are assigned by that single writer, so they are in
//! commit order. `synchronous=FULL`: a commit that returned survives a power loss, which is what a
//! broker's 202 promises.
//!
//! `sqlite::memory:` is a single connection shared by reads and writes (each connection would
//! otherwise see its own database, or lock tables against the others).
//!
//! Lane order (see [`crate::Deliveries::lease_deliveries`]) is the order of the `deliveries.id`
//! column, which only grows (`AUTOINCREMENT`): the order rows were inserted in.
//!
//! Cancellation: every method is one transaction, so a dropped future writes all or nothing.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{SqlSafeStr, Sqlite, Transaction};

use crate::{Result, Store};

mod checkpoints;
mod dead_letters;
mod dedupe;
mod deliveries;
mod events;
mod resources;

/// How long a statement waits for another process's write lock before failing as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections of a file store. Writes always use one.
const READERS: u32 = 4;

/// The SQLite implementation of [`Store`]. Cheap to clone (two pool handles and the dedupe index).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: SQLite has one writer.
    writer: SqlitePool,
    /// Connections for reads; the writer pool itself for `sqlite::memory:`.
    reader: SqlitePool,
    /// The dedupe window's keys in memory (see [`dedupe`]).
    dedupe: dedupe::SharedIndex,
    /// Whether the writer connection was last switched to `synchronous=NORMAL` (see
    /// [`SqliteStore::write_lazily`]). SQLite cannot switch inside a transaction, so the switch
    /// happens between them, on the one writer connection.
    lazy: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating the file and its directory when missing) and migrates the database at `url`:
    /// `sqlite:///path/to/state.db`, `sqlite://relative/state.db` or `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = is_in_memory(url);
        if !in_memory {
            create_parent_dir(options.get_filename()).await?;
        }

        // The writer never closes its connection: for `sqlite::memory:` that would drop the database.
        // Checkpoints are taken off the writer (see `checkpoint_in_background`), so a commit never
        // pays for copying the WAL into the database file.
        let writer_options = if in_memory {
            options.clone()
        } else {
            options.clone().pragma("wal_autocheckpoint", "0")
        };
        let writer = SqlitePoolOptions::new()
            // A ping before every use would add a round trip to each statement; a broken
            // connection fails its statement instead and is replaced.
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await?;
        migrator().run(&writer).await?;

        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                // A ping before every use would add a round trip to each statement; a broken
                // connection fails its statement instead and is replaced.
                .test_before_acquire(false)
                .max_connections(READERS)
                .connect_with(options)
                .await?
        };
        if !in_memory {
            checkpoint_in_background(&writer);
        }
        let dedupe = dedupe::load(&writer).await?;
        Ok(SqliteStore {
            writer,
            reader,
            dedupe,
            lazy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts a write transaction holding SQLite's write lock, whose commit waits for the disk.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        let mut connection = self.writer.acquire().await?;
        if self.lazy.load(Ordering::Acquire) {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *connection)
                .await?;
            // Only once it took effect: a failed or dropped switch is tried again next time.
            self.lazy.store(false, Ordering::Release);
        }
        begin_immediate(connection).await
    }

    /// Like [`SqliteStore::write`], but the commit does not wait for the disk (`synchronous=NORMAL`;
    /// in WAL mode still consistent, and made durable by the next `FULL` commit, which flushes the
    /// WAL up to itself). For writes a machine crash may undo without losing anything accepted.
    async fn write_lazily(&self) -> Result<Transaction<'static, Sqlite>> {
        let mut connection = self.writer.acquire().await?;
        if !self.lazy.load(Ordering::Acquire) {
            // Set first: if the switch fails half-way, the next durable write switches back anyway.
            self.lazy.store(true, Ordering::Release);
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *connection)
                .await?;
        }
        begin_immediate(connection).await
    }
}

impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }
}

/// `BEGIN IMMEDIATE` on a connection taken from the writer pool: the transaction takes SQLite's
/// write lock up front and returns the connection to the pool when it ends.
async fn begin_immediate(
    connection: sqlx::pool::PoolConnection<Sqlite>,
) -> Result<Transaction<'static, Sqlite>> {
    // What `Pool::begin_with` does, on a connection already taken (to switch `synchronous` first).
    Ok(Transaction::begin(connection, Some("BEGIN IMMEDIATE".into_sql_str())).await?)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// WAL size (pages) above which a checkpoint also waits for readers and truncates the WAL, so it
/// cannot grow without bound under constant load.
const WAL_TRUNCATE_PAGES: i64 = 16_384;

/// Copies the WAL into the database file twice a second, on the writer connection between write
/// transactions. Not inside a commit (SQLite's automatic checkpoint made some commits wait tens of
/// milliseconds), and not from another connection either: there it makes a concurrent
/// `BEGIN IMMEDIATE` hit SQLITE_BUSY, and SQLite's busy handler then sleeps in steps of up to 100 ms
/// (measured: p99 to the 202 of 30–50 ms with it, about 6 ms without). On the writer, a commit
/// waits for at most one short passive checkpoint.
fn checkpoint_in_background(writer: &SqlitePool) {
    let pool = writer.clone();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
            if pool.is_closed() {
                return;
            }
            let passive: std::result::Result<(i64, i64, i64), sqlx::Error> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await;
            match passive {
                Ok((_, wal_pages, _)) if wal_pages > WAL_TRUNCATE_PAGES => {
                    if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await {
                        tracing::debug!(%error, "Truncating the SQLite WAL failed; trying again later.");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "SQLite checkpoint failed; trying again later."),
            }
        }
    });
}

/// The migrations of `migrations/sqlite`, compiled into the binary so it runs from any directory.
pub(crate) fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "initial".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0001_initial.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "dispatchers".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0002_dispatchers.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "checkpoints".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0003_checkpoints.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "dedupe_log".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0004_dedupe_log.sql").into_sql_str(),
            false,
        ),
    ])
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

async fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(sqlx::Error::Io)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn synchronous(tx: &mut Transaction<'static, Sqlite>) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **tx)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn lazy_writes_never_leave_the_writer_lazy_for_durable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}/state.db", dir.path().display()))
            .await
            .unwrap();
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        let mut tx = store.write().await.unwrap();
        assert_eq!(synchronous(&mut tx).await, FULL);
        tx.commit().await.unwrap();
        for _ in 0..2 {
            let mut tx = store.write_lazily().await.unwrap();
            assert_eq!(synchronous(&mut tx).await, NORMAL);
            tx.commit().await.unwrap();
        }
        // A lazy transaction that was dropped (rolled back) still switches back.
        let tx = store.write_lazily().await.unwrap();
        drop(tx);
        for _ in 0..2 {
            let mut tx = store.write().await.unwrap();
            assert_eq!(synchronous(&mut tx).await, FULL);
            tx.rollback().await.unwrap();
        }
    }
}
