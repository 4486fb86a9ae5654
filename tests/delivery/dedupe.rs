//! Dedupe: an event's (source, id) is delivered once however often it is posted.

use serde_json::json;

use crate::support::{Engine, Receiver, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World};

engines!(same_source_and_id_is_delivered_once);

async fn same_source_and_id_is_delivered_once(engine: Engine) {
    let receiver = Receiver::start().await;
    let world = World::start(
        engine,
        &[trigger_yaml("all", "default", &receiver.url("/all"), "")],
    )
    .await;
    let first = Ce::new("dup-1", "com.example.dup")
        .source("/a")
        .data("application/json", r#"{"copy":1}"#);
    world.send("default", &[first.clone(), first]).await;
    // And again in a batch, twice in the same batch, next to a new event.
    let event = |source: &str, id: &str| json!({"specversion": "1.0", "id": id, "source": source, "type": "com.example.dup", "data": {"copy": 2}});
    let batch = json!([
        event("/a", "dup-1"),
        event("/a", "dup-2"),
        event("/a", "dup-2")
    ]);
    let status = world
        .client
        .post(world.broker("default"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .expect("post batch")
        .status()
        .as_u16();
    assert_eq!(status, 202);
    // Same id, other source: another event.
    world
        .send(
            "default",
            &[Ce::new("dup-1", "com.example.dup").source("/b")],
        )
        .await;
    receiver.wait_for("/all", 3, WAIT).await;
    tokio::time::sleep(QUIET).await;
    let mut got: Vec<(String, String)> = receiver
        .received("/all")
        .iter()
        .map(|r| {
            (
                r.header("ce-source").unwrap_or_default().to_owned(),
                r.header("ce-id").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    got.sort();
    let want = [("/a", "dup-1"), ("/a", "dup-2"), ("/b", "dup-1")]
        .map(|(s, i)| (s.to_owned(), i.to_owned()));
    assert_eq!(got, want, "log:\n{}", world.log());
    // The first copy won.
    let first = receiver
        .received("/all")
        .into_iter()
        .find(|r| r.header("ce-source") == Some("/a") && r.header("ce-id") == Some("dup-1"))
        .expect("dup-1 from /a");
    assert_eq!(first.body.as_ref(), br#"{"copy":1}"#);
}
