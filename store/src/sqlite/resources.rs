//! Applied resources on SQLite.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::{ApplyOutcome, Millis, Resources, Result, StoredResource, codec};

macro_rules! columns {
    () => {
        "kind, namespace, name, uid, generation, body, updated_at"
    };
}

fn decode(row: &SqliteRow) -> Result<StoredResource> {
    Ok(StoredResource {
        kind: row.try_get("kind")?,
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        uid: row.try_get("uid")?,
        generation: row.try_get("generation")?,
        body: codec::resource_body(row.try_get("body")?)?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl Resources for SqliteStore {
    async fn apply_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        body: &serde_json::Value,
        now: Millis,
    ) -> Result<(ApplyOutcome, StoredResource)> {
        let mut tx = self.write().await?;
        let existing = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3"
        ))
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| decode(&row))
        .transpose()?;

        let (outcome, stored) = match existing {
            Some(stored) if stored.body == *body => return Ok((ApplyOutcome::Unchanged, stored)),
            Some(mut stored) => {
                stored.generation += 1;
                stored.body = body.clone();
                stored.updated_at = now;
                sqlx::query(
                    "UPDATE resources SET body = ?4, generation = ?5, updated_at = ?6 \
                     WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                )
                .bind(kind)
                .bind(namespace)
                .bind(name)
                .bind(body.to_string())
                .bind(stored.generation)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (ApplyOutcome::Updated, stored)
            }
            None => {
                let stored = StoredResource {
                    kind: kind.to_owned(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid: uuid::Uuid::now_v7().to_string(),
                    generation: 1,
                    body: body.clone(),
                    updated_at: now,
                };
                sqlx::query(
                    "INSERT INTO resources (kind, namespace, name, uid, generation, body, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)",
                )
                .bind(kind)
                .bind(namespace)
                .bind(name)
                .bind(&stored.uid)
                .bind(body.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (ApplyOutcome::Created, stored)
            }
        };
        tx.commit().await?;
        Ok((outcome, stored))
    }

    async fn get_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredResource>> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3"
        ))
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .map(|row| decode(&row))
        .transpose()
    }

    async fn list_resources(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredResource>> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM resources WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY namespace, name"
        ))
        .bind(kind)
        .bind(namespace)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(decode)
        .collect()
    }

    async fn all_resources(&self) -> Result<Vec<StoredResource>> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM resources ORDER BY kind, namespace, name"
        ))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(decode)
        .collect()
    }

    async fn delete_resource(&self, kind: &str, namespace: &str, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let deleted =
            sqlx::query("DELETE FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3")
                .bind(kind)
                .bind(namespace)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }
}
