//! The shortest path a user takes: a broker, a trigger, one event, on both engines.

mod support;

use std::time::Duration;

use support::{Engine, Kinetic, Receiver, TestStore, broker_yaml, send_event, write_yaml};

async fn one_event_flows(engine: Engine) {
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: all}}\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n",
        broker_yaml("default"),
        receiver.url("/all")
    );
    let file = write_yaml(store.dir(), "resources.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    let client = reqwest::Client::new();
    let status = send_event(
        &client,
        &kinetic.url("/default/default"),
        "e1",
        "com.example.smoke",
        &[],
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for("/all", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "kinetic log:\n{}", kinetic.log());
    assert_eq!(got[0].header("ce-id"), Some("e1"));
    assert_eq!(got[0].header("ce-type"), Some("com.example.smoke"));
    assert!(got[0].header("ce-knativearrivaltime").is_some());
    assert_eq!(got[0].body.as_ref(), br#"{"n":1}"#);
}

#[tokio::test]
async fn sqlite_one_event_flows() {
    one_event_flows(Engine::Sqlite).await;
}

#[tokio::test]
async fn postgres_one_event_flows() {
    one_event_flows(Engine::Postgres).await;
}
