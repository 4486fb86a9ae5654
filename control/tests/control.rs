//! The control plane on an in-memory store, as the admin API and `kinetic up -f` drive it: what an
//! apply stores and refuses, what goes with a change, and how resources are shown.

use std::sync::Arc;

use kinetic_api::Kind;
use kinetic_control::{ApplyError, Control, DeleteError};
use kinetic_store::Store;

async fn control() -> (Control, Arc<dyn Store>) {
    let store = kinetic_store::open("sqlite::memory:").await.unwrap();
    let control = Control::new(
        store.clone(),
        kinetic_resources::Watch::fixed(kinetic_resources::Snapshot::default()),
    );
    (control, store)
}

fn service(greeting: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: hello}}\nspec:\n  template:\n    spec:\n      containers:\n        - command: [/bin/true]\n          env: [{{name: GREETING, value: {greeting}}}]\n"
    )
}

fn outcomes(applied: &[kinetic_control::Applied]) -> Vec<String> {
    applied
        .iter()
        .map(|a| format!("{} {}/{} {}", a.kind, a.namespace, a.name, a.outcome))
        .collect()
}

#[tokio::test]
async fn a_service_gets_a_revision_per_template_and_takes_them_when_deleted() {
    let (control, store) = control().await;
    let applied = control
        .apply_text("svc.yaml", &service("hi"))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&applied),
        [
            "Revision default/hello-00001 created",
            "Service default/hello created"
        ]
    );
    let again = control
        .apply_text("svc.yaml", &service("hi"))
        .await
        .unwrap();
    assert_eq!(outcomes(&again), ["Service default/hello unchanged"]);
    let changed = control
        .apply_text("svc.yaml", &service("hello"))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&changed),
        [
            "Revision default/hello-00002 created",
            "Service default/hello updated"
        ]
    );
    let shown = control
        .get(Kind::Revision, "default", "hello-00002")
        .await
        .unwrap()
        .expect("the new revision");
    assert_eq!(shown["metadata"]["generation"], 1);

    let refused = control
        .delete(Kind::Revision, "default", "hello-00001")
        .await
        .unwrap_err();
    assert!(matches!(refused, DeleteError::Revision), "{refused}");
    assert!(
        control
            .delete(Kind::Service, "default", "hello")
            .await
            .unwrap()
    );
    assert!(
        store
            .list_resources("Revision", None)
            .await
            .unwrap()
            .is_empty(),
        "the revisions went with their Service"
    );
    assert!(
        !control
            .delete(Kind::Service, "default", "hello")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_file_with_a_mistake_stores_nothing() {
    let (control, store) = control().await;
    let text = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: b}}\n---\n{}  traffic: [{{revisionName: hello-00009, percent: 100}}]\n",
        service("hi")
    );
    let error = control.apply_text("f.yaml", &text).await.unwrap_err();
    let ApplyError::Invalid(error) = error else {
        panic!("{error}")
    };
    assert_eq!(error.path, "spec.traffic[0].revisionName");
    assert_eq!(error.document, Some(2));
    assert!(
        error
            .to_string()
            .contains("revision `hello-00009` does not exist"),
        "{error}"
    );
    assert!(store.all_resources().await.unwrap().is_empty());

    let error = control
        .apply_text("f.yaml", "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: b\n  subscriber: {uri: 'http://127.0.0.1:1/'}\n  filters: [{cesql: \"type = = 'x'\"}]\n")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("is not valid CESQL"), "{error}");
}

#[tokio::test]
async fn a_trigger_shows_where_its_broker_is_and_a_broker_its_audience() {
    let (control, _) = control().await;
    control
        .apply_text(
            "t.yaml",
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: orders}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: orders\n  subscriber: {uri: 'http://127.0.0.1:1/'}\n",
        )
        .await
        .unwrap();
    let brokers = control.list(Kind::Broker, None).await.unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(
        brokers[0]["status"]["address"]["audience"],
        "eventing.knative.dev/broker/default/orders"
    );
    let trigger = control
        .get(Kind::Trigger, "default", "t")
        .await
        .unwrap()
        .unwrap();
    // This control plane runs no dispatcher: it does not say whether the trigger is ready.
    assert!(trigger["status"].get("ready").is_none(), "{trigger}");
    assert_eq!(trigger["metadata"]["generation"], 1);
}
