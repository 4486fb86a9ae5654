//! Applied resources on PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PostgresStore;
use crate::{ApplyOutcome, Millis, Resources, Result, StoredResource};

macro_rules! columns {
    () => {
        "kind, namespace, name, uid, generation, body, updated_at"
    };
}

fn decode(row: &PgRow) -> Result<StoredResource> {
    Ok(StoredResource {
        kind: row.try_get("kind")?,
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        uid: row.try_get("uid")?,
        generation: row.try_get("generation")?,
        body: row.try_get("body")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl Resources for PostgresStore {
    async fn apply_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        body: &serde_json::Value,
        now: Millis,
    ) -> Result<(ApplyOutcome, StoredResource)> {
        let mut tx = self.pool.begin().await?;
        // Two loops at most: when another process creates the resource between our look and our
        // insert, the second look finds (and locks) its row.
        loop {
            let existing = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3 FOR UPDATE"
            ))
            .bind(kind)
            .bind(namespace)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| decode(&row))
            .transpose()?;

            let (outcome, stored) = match existing {
                Some(stored) if stored.body == *body => {
                    return Ok((ApplyOutcome::Unchanged, stored));
                }
                Some(mut stored) => {
                    stored.generation += 1;
                    stored.body = body.clone();
                    stored.updated_at = now;
                    sqlx::query(
                        "UPDATE resources SET body = $4, generation = $5, updated_at = $6 \
                         WHERE kind = $1 AND namespace = $2 AND name = $3",
                    )
                    .bind(kind)
                    .bind(namespace)
                    .bind(name)
                    .bind(body)
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
                    let inserted = sqlx::query(
                        "INSERT INTO resources (kind, namespace, name, uid, generation, body, updated_at) \
                         VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT (kind, namespace, name) DO NOTHING",
                    )
                    .bind(kind)
                    .bind(namespace)
                    .bind(name)
                    .bind(&stored.uid)
                    .bind(body)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        continue;
                    }
                    (ApplyOutcome::Created, stored)
                }
            };
            tx.commit().await?;
            return Ok((outcome, stored));
        }
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
            " FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3"
        ))
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&self.pool)
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
            " FROM resources WHERE kind = $1 AND ($2::text IS NULL OR namespace = $2) ORDER BY namespace COLLATE \"C\", name COLLATE \"C\""
        ))
        .bind(kind)
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode)
        .collect()
    }

    async fn all_resources(&self) -> Result<Vec<StoredResource>> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM resources ORDER BY kind COLLATE \"C\", namespace COLLATE \"C\", name COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode)
        .collect()
    }

    async fn delete_resource(&self, kind: &str, namespace: &str, name: &str) -> Result<bool> {
        let deleted =
            sqlx::query("DELETE FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3")
                .bind(kind)
                .bind(namespace)
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(deleted > 0)
    }
}
