//! The SQLite store: the embedded default, one process on one file.
//!
//! SQLite has one writer at a time, so every write goes through a pool of exactly one connection and
//! starts with `BEGIN IMMEDIATE` (it takes the write lock up front instead of failing to upgrade a
//! read lock; another process on the same file waits `busy_timeout`). Reads use their own pool and
//! see the last committed state (WAL). Positions are assigned by that single writer, so they are in
//! commit order. A durable write returns only once its commit is on disk (see [`wal`]), which is
//! what a broker's 202 promises; a lazy one (cursor moves, pruning) does not wait for the disk.
//!
//! `sqlite::memory:` is a single connection shared by reads and writes (each connection would
//! otherwise see its own database, or lock tables against the others).
//!
//! Lane order (see [`crate::Deliveries::lease_deliveries`]) is the order of the `deliveries.id`
//! column, which only grows (`AUTOINCREMENT`): the order rows were inserted in.
//!
//! Cancellation: every method is one transaction, so a dropped future writes all or nothing.
//!
//! A bound `LIMIT` is written `LIMIT CAST(? AS INTEGER)`. SQLite plans `LIMIT ?` with the value
//! bound when the statement was prepared, and marks the statement to be prepared again whenever
//! that parameter is bound anew: a cached statement then costs a full parse and plan on every
//! execution (measured: about 57k instructions each time, 15k per event end to end).
//!
//! The group commit's statements do without `RETURNING`: SQLite collects returned rows in a
//! temporary B-tree that each execution opens, begins a transaction on and closes (measured: about
//! 6.5k instructions each, three per group commit). Positions come from the last inserted rowid,
//! the log's head from a second statement in the same call.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{SqlSafeStr, Sqlite, SqliteConnection, Transaction};

use crate::{Result, Store};

mod checkpoints;
mod dead_letters;
mod dedupe;
mod deliveries;
mod events;
mod resources;
mod wal;

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
    /// The write-ahead log a durable commit flushes; `None` for `sqlite::memory:`.
    wal: Option<Arc<wal::Wal>>,
}

impl SqliteStore {
    /// Opens (creating the file and its directory when missing) and migrates the database at `url`:
    /// `sqlite:///path/to/state.db`, `sqlite://relative/state.db` or `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Commits write the WAL without waiting for the disk; durable ones then flush it
            // themselves (see `wal`), off the one writer connection.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = is_in_memory(url);
        let wal = if in_memory {
            None
        } else {
            create_parent_dir(options.get_filename()).await?;
            Some(Arc::new(wal::Wal::new(&wal::path_of(
                options.get_filename(),
            ))))
        };

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
            wal,
        })
    }

    /// Starts a write transaction holding SQLite's write lock, whose commit returns once it is on
    /// disk.
    async fn write(&self) -> Result<Write> {
        let connection = self.writer.acquire().await?;
        Ok(Write {
            tx: begin_immediate(connection).await?,
            flush: self.wal.clone(),
        })
    }

    /// Like [`SqliteStore::write`], but the commit does not wait for the disk (still consistent:
    /// WAL mode; a machine crash may undo it, together with everything committed after it, and
    /// the next durable commit makes it durable too). For writes a machine crash may undo without
    /// losing anything accepted.
    async fn write_lazily(&self) -> Result<Write> {
        let connection = self.writer.acquire().await?;
        Ok(Write {
            tx: begin_immediate(connection).await?,
            flush: None,
        })
    }
}

/// A write transaction on the one writer connection (it derefs to the connection, so statements
/// run on `&mut *write`). Dropped without [`Write::commit`], it rolls back.
pub(crate) struct Write {
    tx: Transaction<'static, Sqlite>,
    /// The WAL to flush once committed; `None` for a lazy write or an in-memory database.
    flush: Option<Arc<wal::Wal>>,
}

impl Write {
    /// Commits; for a durable write, returns once the commit (and everything before it) is on
    /// disk. The writer connection is free again as soon as SQLite committed, so the next write
    /// does not wait for this one's flush.
    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        if let Some(wal) = self.flush {
            wal.flush_committed().await?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

impl Deref for Write {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for Write {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
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
    // What `Pool::begin_with` does, with SQLite's `BEGIN IMMEDIATE`.
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

    #[test]
    fn no_statement_binds_a_bare_limit() {
        let sources = [
            include_str!("sqlite/events.rs"),
            include_str!("sqlite/deliveries.rs"),
            include_str!("sqlite/dead_letters.rs"),
            include_str!("sqlite/dedupe.rs"),
            include_str!("sqlite/checkpoints.rs"),
            include_str!("sqlite/resources.rs"),
        ];
        for source in sources {
            for bare in ["LIMIT ?", "\" LIMIT \")", "OFFSET ?"] {
                assert!(
                    !source.contains(bare),
                    "a statement binds `{bare}`: write `LIMIT CAST(? AS INTEGER)` (see the module docs)"
                );
            }
        }
    }

    async fn synchronous(connection: &mut SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(connection)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn durable_commits_flush_the_wal_and_lazy_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}/state.db", dir.path().display()))
            .await
            .unwrap();
        let wal = store.wal.clone().unwrap();
        const NORMAL: i64 = 1;
        let write = async |durable: bool| {
            let mut tx = if durable {
                store.write().await.unwrap()
            } else {
                store.write_lazily().await.unwrap()
            };
            // Never switched: switching re-prepares statements and costs round trips per commit.
            assert_eq!(synchronous(&mut tx).await, NORMAL);
            sqlx::query("INSERT INTO log_heads (broker, head) VALUES ('b', 1) ON CONFLICT (broker) DO UPDATE SET head = head + 1")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        };
        let before = wal.flushes();
        write(false).await;
        write(false).await;
        assert_eq!(
            wal.flushes(),
            before,
            "a lazy commit does not wait for the disk"
        );
        write(true).await;
        assert_eq!(wal.flushes(), before + 1, "a durable commit does");
        // A rolled-back write flushes nothing.
        store.write().await.unwrap().rollback().await.unwrap();
        assert_eq!(wal.flushes(), before + 1);

        // Concurrent durable commits share flushes, and each returns only after one that
        // started after its own commit.
        let before = wal.flushes();
        let commits = (0..20).map(|_| write(true));
        futures::future::join_all(commits).await;
        let flushes = wal.flushes() - before;
        assert!((1..=20).contains(&flushes), "{flushes} flushes");
        let flushed = wal.lock();
        assert_eq!(
            flushed.upto,
            wal.committed.load(std::sync::atomic::Ordering::Acquire)
        );
    }

    #[tokio::test]
    async fn a_wal_created_anew_is_flushed_by_its_new_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db-wal");
        std::fs::write(&path, b"first").unwrap();
        let wal = Arc::new(wal::Wal::new(&path));
        wal.flush_committed().await.unwrap();
        let first = wal.open_inode();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"second").unwrap();
        wal.flush_committed().await.unwrap();
        assert_ne!(
            wal.open_inode(),
            first,
            "the handle follows the file at the path"
        );
        assert_eq!(wal.flushes(), 2);
        // A flush that fails poisons every later one.
        std::fs::remove_file(&path).unwrap();
        assert!(wal.flush_committed().await.unwrap_err().is_unavailable());
        std::fs::write(&path, b"third").unwrap();
        let error = wal.flush_committed().await.unwrap_err();
        assert!(error.to_string().contains("restart kinetic"), "{error}");
    }
}
