//! Storing checked resources, and what goes with a change: a Service's new Revision (and the
//! old ones it no longer keeps), a new or moved Trigger's cursor at its broker's head; on delete, a
//! Trigger's cursor and pending deliveries, a source's state, a Service's Revisions.

use std::sync::Arc;

use kinetic_api::{Kind, Resource, ResourceKey, Revision};
use kinetic_serving::revision::{self, Next};
use kinetic_store::{ApplyOutcome, Store, TriggerRef};
use serde::Serialize;

/// One applied resource, as reported to users.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Applied {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// created, updated or unchanged
    pub outcome: String,
}

/// Stores validated resources. A new trigger (or one moved to another broker) gets its cursor now,
/// at the broker's head, so it sees every event accepted from this moment.
pub async fn apply(
    store: &Arc<dyn Store>,
    resources: &[Resource],
) -> Result<Vec<Applied>, kinetic_store::Error> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut applied = Vec::with_capacity(resources.len());
    for resource in resources {
        let ResourceKey {
            kind,
            namespace,
            name,
        } = resource.key();
        let previous_broker = match resource {
            Resource::Trigger(_) => store
                .get_resource(kind.as_str(), &namespace, &name)
                .await?
                .and_then(|r| r.body.pointer("/spec/broker")?.as_str().map(str::to_owned)),
            _ => None,
        };
        let (outcome, stored) = store
            .apply_resource(kind.as_str(), &namespace, &name, &resource.to_json(), now)
            .await?;
        if let Resource::Service(service) = resource {
            let existing = stored_revisions(store, &namespace).await?;
            // A named revision whose template changed was refused by `check_references`.
            if let Ok(Next::Create(revision)) = revision::next(service, &existing) {
                let body = serde_json::to_value(&*revision).unwrap_or_default();
                store
                    .apply_resource(
                        Kind::Revision.as_str(),
                        &namespace,
                        &revision.metadata.name,
                        &body,
                        now,
                    )
                    .await?;
                applied.push(Applied {
                    kind: Kind::Revision.as_str().to_owned(),
                    namespace: namespace.clone(),
                    name: revision.metadata.name.clone(),
                    outcome: "created".to_owned(),
                });
                // As Knative: a Service keeps its newest unrouted revisions, not all of them.
                let mut all = existing;
                all.push(*revision);
                for gone in revision::collectable(service, &all, revision::KEPT_UNROUTED) {
                    if store.delete_resource("Revision", &namespace, &gone).await? {
                        applied.push(Applied {
                            kind: Kind::Revision.as_str().to_owned(),
                            namespace: namespace.clone(),
                            name: gone,
                            outcome: "deleted".to_owned(),
                        });
                    }
                }
            }
        }
        if let Resource::Trigger(trigger) = resource {
            let moved = previous_broker.is_some_and(|previous| previous != trigger.spec.broker);
            if moved || outcome == ApplyOutcome::Created {
                let reference = TriggerRef {
                    uid: stored.uid.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    broker: format!("{namespace}/{}", trigger.spec.broker),
                };
                kinetic_triggers::lifecycle::bound(&**store, &reference, moved, now).await?;
            }
        }
        applied.push(Applied {
            kind: kind.as_str().to_owned(),
            namespace,
            name,
            outcome: match outcome {
                ApplyOutcome::Created => "created",
                ApplyOutcome::Updated => "updated",
                ApplyOutcome::Unchanged => "unchanged",
            }
            .to_owned(),
        });
    }
    Ok(applied)
}

/// Deletes a resource; a trigger's cursor and pending deliveries go with it (its dead letters stay).
pub async fn delete(
    store: &Arc<dyn Store>,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<bool, kinetic_store::Error> {
    let existing = store.get_resource(kind.as_str(), namespace, name).await?;
    let deleted = store
        .delete_resource(kind.as_str(), namespace, name)
        .await?;
    if deleted
        && kind == Kind::Trigger
        && let Some(existing) = existing
    {
        kinetic_triggers::lifecycle::deleted(&**store, &existing.uid, namespace, name).await?;
    }
    if deleted && kind.is_source() {
        kinetic_sources::forget(&**store, kind.as_str(), namespace, name).await?;
    }
    if deleted && kind == Kind::Service {
        for revision in stored_revisions(store, namespace).await? {
            if revision.service() == name {
                store
                    .delete_resource("Revision", namespace, &revision.metadata.name)
                    .await?;
            }
        }
    }
    Ok(deleted)
}

/// The Revisions stored in `namespace` that this kinetic can read.
pub(crate) async fn stored_revisions(
    store: &Arc<dyn Store>,
    namespace: &str,
) -> Result<Vec<Revision>, kinetic_store::Error> {
    Ok(store
        .list_resources("Revision", Some(namespace))
        .await?
        .into_iter()
        .filter_map(|stored| serde_json::from_value(stored.body).ok())
        .collect())
}
