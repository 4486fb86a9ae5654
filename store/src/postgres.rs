//! The PostgreSQL store: scale-out, many processes share one database.
//!
//! What keeps several processes apart:
//! - `append` stamps its dedupe keys (an uncommitted stamp of the same key makes it wait, then see
//!   the key as a duplicate) and takes positions from a per-broker counter row updated in the same
//!   transaction. Appends to one broker therefore commit in position order, and the row's lock is
//!   released only after the commit is visible: a reader that saw position N never later sees a
//!   position below N appear. Keys are taken sorted and before any counter row, so two appends
//!   cannot deadlock (see `postgres/events.rs`).
//! - `lease_deliveries` picks rows with `FOR UPDATE SKIP LOCKED`; `claim_cursors`, `advance_cursor`
//!   and `update_delivery` are conditional on the owner (and lease expiry) in the same statement or
//!   under a row lock, so two processes never hold the same cursor or row.
//!
//! Batches travel as arrays (`unnest`), so a batch costs a fixed number of round trips.
//!
//! Lane order (see [`crate::Deliveries::lease_deliveries`]) is the order of the `deliveries.id`
//! identity column: the order rows were inserted in.
//!
//! Cancellation: every method is one transaction, so a dropped future writes all or nothing, except
//! `claim_cursors` and `prune`, whose statements are each complete and idempotent on their own.

use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::{Result, Store};

mod checkpoints;
mod dead_letters;
mod deliveries;
mod events;
mod resources;

/// Connections per process.
const MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a free connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL implementation of [`Store`]. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the migrations. Several
    /// processes may open the same database at once: sqlx serializes migrations on an advisory lock.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            // A ping before every use would add a round trip to each statement; a broken
            // connection fails its statement instead and is replaced.
            .test_before_acquire(false)
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        migrator().run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }
}

/// The migrations of `migrations/postgres`, compiled into the binary so it runs from any directory.
pub(crate) fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "initial".into(),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0001_initial.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "dispatchers".into(),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0002_dispatchers.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "checkpoints".into(),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0003_checkpoints.sql").into_sql_str(),
            false,
        ),
    ])
}
