//! A scratch PostgreSQL database per test: created on the server `KINETIC_TEST_POSTGRES_URL`
//! names (default: the local server, user `postgres`), dropped (`WITH (FORCE)`, so open
//! connections do not keep it) when the test is done.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The server tests use when `KINETIC_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of a database on the test server that may create and drop databases.
pub fn admin_url() -> String {
    std::env::var("KINETIC_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database made for one test.
#[derive(Debug, Clone)]
pub struct ScratchDatabase {
    admin_url: String,
    /// Its name: `{prefix}_{random}`.
    pub name: String,
    /// Its URL, for `kinetic_store::open` or `--store`.
    pub url: String,
}

impl ScratchDatabase {
    /// Creates `{prefix}_{random}` on the test server ([`admin_url`]). Panics, saying how to get
    /// a server, when there is none.
    pub async fn create(prefix: &str) -> ScratchDatabase {
        let admin_url = admin_url();
        Self::create_on(&admin_url, prefix).await.unwrap_or_else(|error| {
            panic!("PostgreSQL at {admin_url} is needed by this test (run scripts/ensure-postgres.sh, or set KINETIC_TEST_POSTGRES_URL): {error}")
        })
    }

    /// Creates `{prefix}_{random}` on the server of `admin_url`.
    pub async fn create_on(admin_url: &str, prefix: &str) -> Result<ScratchDatabase, sqlx::Error> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await?;
        admin.close().await.ok();
        Ok(ScratchDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        })
    }

    /// Drops the database, connections to it included.
    pub async fn drop_database(&self) -> Result<(), sqlx::Error> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await.ok();
        Ok(())
    }

    /// [`Self::drop_database`] from anywhere, a `Drop` impl included: on a thread of its own with
    /// a small runtime, so it works inside and outside a test's runtime. Errors are ignored (the
    /// database is a scratch one).
    pub fn drop_blocking(&self) {
        let database = self.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(database.drop_database()).ok()
        })
        .join();
    }
}

/// `url` with its database name replaced (or added), its query kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |index| index + 3);
    let base = match base[authority..].find('/') {
        Some(index) => &base[..authority + index],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t"),
            "postgres://u@h:5432/t"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "t"),
            "postgres://u@h:5432/t"
        );
        assert_eq!(
            with_database("postgres://u@h/p?sslmode=disable", "t"),
            "postgres://u@h/t?sslmode=disable"
        );
    }
}
