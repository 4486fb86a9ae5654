//! What a subscriber receives: the event's attributes, extensions and data as sent, the broker's
//! `knativearrivaltime`, never its `knativebrokerttl`, in binary mode by default and in structured
//! mode with `delivery.format: json`.

use serde_json::Value;

use crate::support::{Engine, Received, Receiver, trigger_yaml};
use crate::{Ce, WAIT, World};

engines!(
    binary_mode_carries_the_event,
    json_format_is_structured_mode
);

/// JSON that a parse-and-print would change.
const LOOSE_JSON: &str = "{ \"b\": 1,\n  \"a\": 12345678901234567890123, \"c\": 1.10 }";

/// Bytes that are not UTF-8, to show binary data is not re-encoded.
const RAW: &[u8] = &[0, 1, 2, 0xfe, 0xff, b'\n', 0x80, b'x'];

fn by_id<'a>(got: &'a [Received], id: &str) -> &'a Received {
    got.iter()
        .find(|r| r.header("ce-id") == Some(id))
        .unwrap_or_else(|| panic!("no delivery of {id}"))
}

async fn binary_mode_carries_the_event(engine: Engine) {
    let receiver = Receiver::start().await;
    let world = World::start(
        engine,
        &[trigger_yaml(
            "binary",
            "default",
            &receiver.url("/binary"),
            "",
        )],
    )
    .await;
    world
        .send(
            "default",
            &[
                Ce::new("json-1", "com.example.contents")
                    .source("/shop/orders")
                    .attr("subject", "caf%C3%A9")
                    .attr("time", "2026-01-02T03:04:05Z")
                    .attr("dataschema", "https://example.com/schema.json")
                    .attr("region", "eu-west")
                    .attr("traceid", "abc123")
                    // A client's TTL is the broker's business: never forwarded to subscribers.
                    .attr("knativebrokerttl", "7")
                    .data("application/json", r#"{"n":1,"text":"h\u00e9llo"}"#),
                Ce::new("raw-1", "com.example.contents").data("application/octet-stream", RAW),
                Ce::new("text-1", "com.example.contents").data("text/plain", "plain text"),
                Ce::new("json-2", "com.example.contents").data("application/json", LOOSE_JSON),
                Ce::new("empty-1", "com.example.contents"),
            ],
        )
        .await;
    let got = receiver.wait_for("/binary", 5, WAIT).await;
    assert_eq!(got.len(), 5, "kinetic log:\n{}", world.log());

    let json = by_id(&got, "json-1");
    for (name, want) in [
        ("ce-specversion", "1.0"),
        ("ce-type", "com.example.contents"),
        ("ce-source", "/shop/orders"),
        ("ce-subject", "caf%C3%A9"),
        ("ce-time", "2026-01-02T03:04:05Z"),
        ("ce-dataschema", "https://example.com/schema.json"),
        ("ce-region", "eu-west"),
        ("ce-traceid", "abc123"),
        ("content-type", "application/json"),
        ("prefer", "reply"),
    ] {
        assert_eq!(json.header(name), Some(want), "header {name}");
    }
    assert_eq!(json.header("ce-knativebrokerttl"), None);
    let arrival = json
        .header("ce-knativearrivaltime")
        .expect("ce-knativearrivaltime");
    assert!(
        chrono::DateTime::parse_from_rfc3339(arrival).is_ok(),
        "knativearrivaltime {arrival} is RFC 3339"
    );
    assert_eq!(json.body.as_ref(), br#"{"n":1,"text":"h\u00e9llo"}"#);

    // JSON data arrives byte for byte: key order, white space and every digit.
    let loose = by_id(&got, "json-2");
    assert_eq!(loose.body.as_ref(), LOOSE_JSON.as_bytes());

    let raw = by_id(&got, "raw-1");
    assert_eq!(raw.header("content-type"), Some("application/octet-stream"));
    assert_eq!(raw.body.as_ref(), RAW);
    assert_eq!(raw.header("ce-source"), Some("/e2e"));
    assert_eq!(raw.header("ce-knativebrokerttl"), None);

    let text = by_id(&got, "text-1");
    assert_eq!(text.header("content-type"), Some("text/plain"));
    assert_eq!(text.body.as_ref(), b"plain text");

    let empty = by_id(&got, "empty-1");
    assert!(empty.body.is_empty());
    assert_eq!(empty.header("content-type"), None);
    assert!(empty.header("ce-knativearrivaltime").is_some());
}

async fn json_format_is_structured_mode(engine: Engine) {
    let receiver = Receiver::start().await;
    let world = World::start(
        engine,
        &[trigger_yaml(
            "structured",
            "default",
            &receiver.url("/structured"),
            "  delivery: {format: json}\n",
        )],
    )
    .await;
    world
        .send(
            "default",
            &[
                Ce::new("s-1", "com.example.structured")
                    .source("/shop")
                    .attr("subject", "order-7")
                    .attr("region", "eu")
                    .data("application/json", r#"{"total":42}"#),
                Ce::new("s-2", "com.example.structured").data("application/octet-stream", RAW),
                Ce::new("s-3", "com.example.structured").data("application/json", "[1, 2, 3]"),
            ],
        )
        .await;
    let got = receiver.wait_for("/structured", 3, WAIT).await;
    assert_eq!(got.len(), 3, "kinetic log:\n{}", world.log());
    for delivery in &got {
        let content_type = delivery.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/cloudevents+json"),
            "content-type {content_type}"
        );
        assert_eq!(
            delivery.header("ce-id"),
            None,
            "structured mode has no ce-* headers"
        );
        assert_eq!(delivery.header("prefer"), Some("reply"));
    }
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
        .collect();
    let first = bodies
        .iter()
        .find(|b| b["id"] == "s-1")
        .expect("s-1 delivered");
    assert_eq!(first["specversion"], "1.0");
    assert_eq!(first["type"], "com.example.structured");
    assert_eq!(first["source"], "/shop");
    assert_eq!(first["subject"], "order-7");
    assert_eq!(first["region"], "eu");
    assert_eq!(first["datacontenttype"], "application/json");
    assert_eq!(first["data"], serde_json::json!({"total": 42}));
    assert!(first["knativearrivaltime"].is_string(), "{first}");
    assert!(first.get("knativebrokerttl").is_none(), "{first}");
    let second = bodies
        .iter()
        .find(|b| b["id"] == "s-2")
        .expect("s-2 delivered");
    use base64::Engine as _;
    let decoded = base64::prelude::BASE64_STANDARD
        .decode(second["data_base64"].as_str().expect("data_base64"))
        .expect("base64");
    assert_eq!(decoded, RAW);
    let third = bodies
        .iter()
        .find(|b| b["id"] == "s-3")
        .expect("s-3 delivered");
    assert_eq!(third["data"], serde_json::json!([1, 2, 3]), "{third}");
}
