//! Resources: apply, get, list, delete.

use std::sync::Arc;

use kinetic_store::{ApplyOutcome, Store};
use serde_json::json;

use crate::fixtures::T0;

pub async fn apply_creates_updates_and_keeps_unchanged(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let body = json!({"spec": {"broker": "default", "filter": {"attributes": {"type": "a"}}}});
    let (outcome, created) = store
        .apply_resource("Trigger", "default", "t", &body, T0)
        .await?;
    assert_eq!(outcome, ApplyOutcome::Created);
    assert_eq!(created.generation, 1);
    assert_eq!(created.body, body);
    assert_eq!(created.updated_at, T0);
    assert!(!created.uid.is_empty());
    assert_eq!(
        (
            created.kind.as_str(),
            created.namespace.as_str(),
            created.name.as_str()
        ),
        ("Trigger", "default", "t")
    );

    let (outcome, same) = store
        .apply_resource("Trigger", "default", "t", &body, T0 + 10)
        .await?;
    assert_eq!(outcome, ApplyOutcome::Unchanged);
    assert_eq!(
        same, created,
        "an unchanged apply keeps generation, uid and updated_at"
    );

    let changed = json!({"spec": {"broker": "default", "filter": {"attributes": {"type": "b"}}}});
    let (outcome, updated) = store
        .apply_resource("Trigger", "default", "t", &changed, T0 + 20)
        .await?;
    assert_eq!(outcome, ApplyOutcome::Updated);
    assert_eq!(updated.generation, 2);
    assert_eq!(updated.uid, created.uid, "an update keeps the identity");
    assert_eq!(updated.body, changed);
    assert_eq!(updated.updated_at, T0 + 20);

    let stored = store
        .get_resource("Trigger", "default", "t")
        .await?
        .expect("stored");
    assert_eq!(stored, updated);

    // Key order does not make a body different.
    let reordered: serde_json::Value = serde_json::from_str(
        r#"{"spec": {"filter": {"attributes": {"type": "b"}}, "broker": "default"}}"#,
    )?;
    let (outcome, _) = store
        .apply_resource("Trigger", "default", "t", &reordered, T0 + 30)
        .await?;
    assert_eq!(outcome, ApplyOutcome::Unchanged);
    Ok(())
}

pub async fn list_get_and_delete(store: Arc<dyn Store>) -> anyhow::Result<()> {
    for (kind, namespace, name) in [
        ("Broker", "team-b", "default"),
        ("Broker", "team-a", "zeta"),
        ("Broker", "team-a", "alpha"),
        ("Trigger", "team-a", "alpha"),
    ] {
        store
            .apply_resource(kind, namespace, name, &json!({"name": name}), T0)
            .await?;
    }
    let names = |list: Vec<kinetic_store::StoredResource>| {
        list.into_iter()
            .map(|resource| format!("{}/{}", resource.namespace, resource.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_resources("Broker", None).await?),
        ["team-a/alpha", "team-a/zeta", "team-b/default"]
    );
    assert_eq!(
        names(store.list_resources("Broker", Some("team-a")).await?),
        ["team-a/alpha", "team-a/zeta"]
    );
    assert!(
        store
            .list_resources("Broker", Some("nobody"))
            .await?
            .is_empty()
    );
    assert!(store.list_resources("Service", None).await?.is_empty());
    let every: Vec<String> = store
        .all_resources()
        .await?
        .into_iter()
        .map(|r| format!("{} {}/{}", r.kind, r.namespace, r.name))
        .collect();
    assert_eq!(
        every,
        [
            "Broker team-a/alpha",
            "Broker team-a/zeta",
            "Broker team-b/default",
            "Trigger team-a/alpha"
        ]
    );

    let (_, before) = store
        .apply_resource("Broker", "team-a", "alpha", &json!({"name": "alpha"}), T0)
        .await?;
    assert!(store.delete_resource("Broker", "team-a", "alpha").await?);
    assert!(
        !store.delete_resource("Broker", "team-a", "alpha").await?,
        "already gone"
    );
    assert!(
        store
            .get_resource("Broker", "team-a", "alpha")
            .await?
            .is_none()
    );
    assert!(
        store
            .get_resource("Trigger", "team-a", "alpha")
            .await?
            .is_some(),
        "another kind with the same name stays"
    );

    let (outcome, again) = store
        .apply_resource("Broker", "team-a", "alpha", &json!({"name": "alpha"}), T0)
        .await?;
    assert_eq!(outcome, ApplyOutcome::Created);
    assert_eq!(again.generation, 1);
    assert_ne!(
        again.uid, before.uid,
        "a resource created again gets a new uid"
    );
    Ok(())
}
