/// Errors of the store. [`Error::is_unavailable`] tells callers when to answer 503 and retry later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "store URL `{0}` is not supported: use sqlite:///path/state.db, sqlite::memory: or postgres://user@host:port/db"
    )]
    InvalidUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The database could not be reached or refused work for now (connection, pool, I/O, busy):
    /// retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(error) => matches!(
                error,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Database(_)
            ),
            _ => false,
        }
    }

    /// The database as a whole is out of reach (connection, pool, TLS), as opposed to refusing
    /// one statement: the same work sent again now would fail the same way.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            )
        )
    }
}
