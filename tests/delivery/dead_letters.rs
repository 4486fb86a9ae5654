//! Dead letters: what the dead-letter sink receives after the retries are spent, what the API and
//! `kinetic dlq list` show, a failing sink, and broker-level delivery defaults.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::Value;

use crate::support::{Answer, Engine, Receiver, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World};

engines!(
    sink_gets_the_event_with_error_extensions,
    failing_sink_is_retried_then_marked_failed,
    broker_delivery_applies_unless_the_trigger_overrides,
);

/// 5000 bytes that differ along the way ("0000,0001,…"), so a cut at the wrong place shows.
fn long_body() -> Vec<u8> {
    (0..1000)
        .flat_map(|i| format!("{i:04},").into_bytes())
        .collect()
}

async fn sink_gets_the_event_with_error_extensions(engine: Engine) {
    let receiver = Receiver::start().await;
    let body = long_body();
    assert_eq!(body.len(), 5000);
    receiver.default_answer("/failing", Answer::status(503).body(body.clone()));
    let subscriber = receiver.url("/failing");
    let world = World::start(
        engine,
        &[trigger_yaml(
            "failing",
            "default",
            &subscriber,
            &format!(
                "  delivery: {{retry: 2, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}\n",
                receiver.url("/dls")
            ),
        )],
    )
    .await;
    world
        .send(
            "default",
            &[Ce::new("doomed-1", "com.example.doomed")
                .attr("region", "eu")
                .data("application/json", r#"{"n":1}"#)],
        )
        .await;
    let sunk = receiver.wait_for("/dls", 1, WAIT).await;
    assert_eq!(sunk.len(), 1, "log:\n{}", world.log());
    let letter = &sunk[0];
    assert_eq!(
        receiver.received("/failing").len(),
        3,
        "1 attempt + 2 retries"
    );
    assert_eq!(letter.header("ce-id"), Some("doomed-1"));
    assert_eq!(letter.header("ce-type"), Some("com.example.doomed"));
    assert_eq!(letter.header("ce-region"), Some("eu"));
    assert_eq!(letter.body.as_ref(), br#"{"n":1}"#);
    assert_eq!(
        letter.header("ce-knativeerrordest"),
        Some(subscriber.as_str())
    );
    assert_eq!(letter.header("ce-knativeerrorcode"), Some("503"));
    let data = letter
        .header("ce-knativeerrordata")
        .expect("knativeerrordata");
    assert_eq!(data.len(), 1024);
    let decoded = BASE64_STANDARD.decode(data).expect("base64");
    assert_eq!(decoded, body[..768]);
    assert!(letter.header("ce-knativearrivaltime").is_some());

    let letters = world
        .wait_dead_letters("failing", 1, |l| l["deadLetterSink"] == "delivered")
        .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let listed = &letters[0];
    assert_eq!(listed["trigger"], "default/failing");
    assert_eq!(listed["attempts"], 3);
    assert_eq!(listed["lastStatus"], 503);
    assert_eq!(listed["lastError"], "HTTP 503");
    assert_eq!(listed["deadLetterSink"], "delivered");
    assert_eq!(listed["event"]["id"], "doomed-1");
    assert_eq!(
        listed["event"]["data"],
        serde_json::json!({"n": 1}),
        "{listed}"
    );
    assert_eq!(listed["replayCount"], 0);

    let output = world.kinetic.cli_in_place(&["dlq", "list", "-o", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let items: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON list");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], listed["id"]);
    assert_eq!(items[0]["attempts"], 3);
    assert_eq!(items[0]["lastStatus"], 503);
    assert_eq!(items[0]["lastError"], "HTTP 503");

    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.received("/failing").len(), 3);
    assert_eq!(receiver.received("/dls").len(), 1);
}

async fn failing_sink_is_retried_then_marked_failed(engine: Engine) {
    let receiver = Receiver::start().await;
    receiver.default_answer("/failing", Answer::status(503));
    receiver.default_answer("/dls", Answer::status(500).body("sink down"));
    let world = World::start(
        engine,
        &[trigger_yaml(
            "failing",
            "default",
            &receiver.url("/failing"),
            &format!(
                "  delivery: {{retry: 2, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}\n",
                receiver.url("/dls")
            ),
        )],
    )
    .await;
    world
        .send("default", &[Ce::new("doomed-2", "com.example.doomed")])
        .await;
    let sink_attempts = receiver.wait_for("/dls", 3, WAIT).await;
    assert_eq!(sink_attempts.len(), 3, "log:\n{}", world.log());
    let letters = world
        .wait_dead_letters("failing", 1, |l| l["deadLetterSink"] == "failed")
        .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["deadLetterSink"], "failed", "{letter}");
    assert_eq!(letter["event"]["id"], "doomed-2");
    // The subscriber's outcome stays; the sink's failure is told apart.
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert_eq!(letter["lastStatus"], 503, "{letter}");
    let sink_error = letter["deadLetterSinkError"].as_str().unwrap_or_default();
    assert!(sink_error.contains("500"), "deadLetterSinkError: {letter}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.received("/dls").len(), 3, "the sink gives up");
    assert_eq!(receiver.received("/failing").len(), 3);
    assert_eq!(world.dead_letters("failing").await.len(), 1);
}

async fn broker_delivery_applies_unless_the_trigger_overrides(engine: Engine) {
    let receiver = Receiver::start().await;
    receiver.default_answer("/inherits", Answer::status(500));
    receiver.default_answer("/overrides", Answer::status(500));
    let broker = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: defaults\nspec:\n  delivery:\n    retry: 1\n    backoffPolicy: linear\n    backoffDelay: PT0.1S\n    deadLetterSink: {{uri: '{}'}}\n",
        receiver.url("/broker-dls")
    );
    let world = World::start(
        engine,
        &[
            broker,
            trigger_yaml("inherits", "defaults", &receiver.url("/inherits"), ""),
            trigger_yaml(
                "overrides",
                "defaults",
                &receiver.url("/overrides"),
                &format!(
                    "  delivery: {{retry: 3, deadLetterSink: {{uri: '{}'}}}}\n",
                    receiver.url("/trigger-dls")
                ),
            ),
        ],
    )
    .await;
    world
        .send("defaults", &[Ce::new("b-1", "com.example.defaults")])
        .await;
    let broker_sink = receiver.wait_for("/broker-dls", 1, WAIT).await;
    let trigger_sink = receiver.wait_for("/trigger-dls", 1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(broker_sink.len(), 1, "log:\n{}", world.log());
    assert_eq!(trigger_sink.len(), 1, "log:\n{}", world.log());
    assert_eq!(receiver.received("/broker-dls").len(), 1);
    assert_eq!(receiver.received("/trigger-dls").len(), 1);
    // The broker's retry count, and the trigger's own (with the broker's backoff, field by field).
    assert_eq!(receiver.received("/inherits").len(), 2);
    assert_eq!(receiver.received("/overrides").len(), 4);
    assert_eq!(
        broker_sink[0].header("ce-knativeerrordest"),
        Some(receiver.url("/inherits").as_str())
    );
    assert_eq!(
        trigger_sink[0].header("ce-knativeerrordest"),
        Some(receiver.url("/overrides").as_str())
    );
}
