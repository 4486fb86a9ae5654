//! Sources' checkpoints on PostgreSQL. Compare-and-set is one conditional statement: an `UPDATE …
//! WHERE version = $expected` that finds the row locked by a concurrent winner waits for it, then
//! re-reads the row, sees the new version and changes nothing; an `INSERT … ON CONFLICT DO NOTHING`
//! racing another insert of the same key likewise waits and then does nothing. So exactly one of the
//! processes putting from one version wins.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PostgresStore;
use crate::{Checkpoint, Checkpoints, Millis, Result, codec};

fn decode(row: &PgRow) -> Result<Checkpoint> {
    Ok(Checkpoint {
        key: row.try_get("key")?,
        value: row.try_get("value")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl Checkpoints for PostgresStore {
    async fn get_checkpoint(&self, key: &str) -> Result<Option<Checkpoint>> {
        sqlx::query("SELECT key, value, version, updated_at FROM checkpoints WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| decode(&row))
            .transpose()
    }

    async fn put_checkpoint(
        &self,
        key: &str,
        value: &serde_json::Value,
        expected_version: Option<i64>,
        now: Millis,
    ) -> Result<Option<i64>> {
        let version = match expected_version {
            None => sqlx::query_scalar(
                "INSERT INTO checkpoints (key, value, version, updated_at) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (key) DO NOTHING RETURNING version",
            )
            .bind(key)
            .bind(value)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?,
            Some(expected) => {
                sqlx::query_scalar(
                    "UPDATE checkpoints SET value = $2, version = version + 1, updated_at = $3 \
                 WHERE key = $1 AND version = $4 RETURNING version",
                )
                .bind(key)
                .bind(value)
                .bind(now)
                .bind(expected)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        Ok(version)
    }

    async fn delete_checkpoints(&self, prefix: &str) -> Result<u64> {
        let (key, under) = codec::checkpoint_scope(prefix);
        let deleted =
            sqlx::query("DELETE FROM checkpoints WHERE key = $1 OR left(key, length($2)) = $2")
                .bind(key)
                .bind(&under)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(deleted)
    }
}
