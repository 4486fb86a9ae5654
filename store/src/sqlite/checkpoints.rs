//! Sources' checkpoints on SQLite. The single writer serializes puts, so the version condition in
//! each statement is all compare-and-set needs.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::{Checkpoint, Checkpoints, Millis, Result, codec};

fn decode(row: &SqliteRow) -> Result<Checkpoint> {
    Ok(Checkpoint {
        key: row.try_get("key")?,
        value: codec::checkpoint_value(row.try_get("value")?)?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl Checkpoints for SqliteStore {
    async fn get_checkpoint(&self, key: &str) -> Result<Option<Checkpoint>> {
        sqlx::query("SELECT key, value, version, updated_at FROM checkpoints WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.reader)
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
        let mut tx = self.write().await?;
        let version: Option<i64> = match expected_version {
            None => sqlx::query_scalar(
                "INSERT INTO checkpoints (key, value, version, updated_at) VALUES (?1, ?2, 1, ?3) \
                 ON CONFLICT (key) DO NOTHING RETURNING version",
            )
            .bind(key)
            .bind(value.to_string())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?,
            Some(expected) => {
                sqlx::query_scalar(
                    "UPDATE checkpoints SET value = ?2, version = version + 1, updated_at = ?3 \
                 WHERE key = ?1 AND version = ?4 RETURNING version",
                )
                .bind(key)
                .bind(value.to_string())
                .bind(now)
                .bind(expected)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(version)
    }

    async fn delete_checkpoints(&self, prefix: &str) -> Result<u64> {
        let (key, under) = codec::checkpoint_scope(prefix);
        let mut tx = self.write().await?;
        let deleted = sqlx::query(
            "DELETE FROM checkpoints WHERE key = ?1 OR substr(key, 1, length(?2)) = ?2",
        )
        .bind(key)
        .bind(&under)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}
