//! The broker ingress as a client meets it: a table of malformed and edge requests to
//! `POST /{namespace}/{broker}` on `kinetic up`, each with the status, the JSON `attribute` and a part
//! of the `error` it must get; what is refused is never delivered, what is accepted is delivered once.
//! Then the store going away under a running kinetic: 503 with nothing half-written, and recovery.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Engine, Kinetic, Receiver, TestStore, broker_yaml, documents, metric_sum,
    postgres_admin_execute, scrape, send_event, trigger_yaml, write_yaml,
};

/// The body limit kinetic runs with in the table test.
const LIMIT: usize = 1024;

/// How a row's body is sent.
enum Body {
    /// With a Content-Length.
    Sized(Vec<u8>),
    /// Chunked, without a Content-Length.
    Chunked(Vec<u8>),
}

/// One request and what it must get.
struct Row {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    /// The JSON `attribute` of a refusal (`None`: the key is absent).
    attribute: Option<&'static str>,
    /// A part of the JSON `error` of a refusal.
    error: &'static str,
    /// Response headers that must be present with these values.
    answer_headers: Vec<(&'static str, &'static str)>,
    /// Event ids this row must deliver (accepted rows only).
    delivers: Vec<&'static str>,
}

fn row(what: &'static str) -> Row {
    Row {
        what,
        method: "POST",
        path: "/default/default",
        headers: Vec::new(),
        body: Body::Sized(Vec::new()),
        status: 202,
        attribute: None,
        error: "",
        answer_headers: Vec::new(),
        delivers: Vec::new(),
    }
}

impl Row {
    /// A complete binary-mode event with id `id` and JSON data.
    fn binary(mut self, id: &'static str) -> Self {
        self.headers = vec![
            ("ce-specversion", "1.0".into()),
            ("ce-id", id.into()),
            ("ce-source", "/e2e/ingress".into()),
            ("ce-type", "com.example.ingress".into()),
            ("content-type", "application/json".into()),
        ];
        self.body = Body::Sized(br#"{"n":1}"#.to_vec());
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Adds a header even when one of that name is there already.
    fn repeat_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    fn structured(self, body: Value) -> Self {
        self.header("content-type", "application/cloudevents+json")
            .body(serde_json::to_vec(&body).unwrap())
    }

    fn batch(self, body: Value) -> Self {
        self.header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(&body).unwrap())
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Sized(body.into());
        self
    }

    fn chunked(mut self) -> Self {
        if let Body::Sized(bytes) = self.body {
            self.body = Body::Chunked(bytes);
        }
        self
    }

    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }

    fn path(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }

    fn refused(
        mut self,
        status: u16,
        attribute: Option<&'static str>,
        error: &'static str,
    ) -> Self {
        self.status = status;
        self.attribute = attribute;
        self.error = error;
        self
    }

    fn answer_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.answer_headers.push((name, value));
        self
    }

    fn delivers(mut self, ids: &[&'static str]) -> Self {
        self.delivers = ids.to_vec();
        self
    }
}

/// A structured-mode event with id `id`, extended by `extra`'s fields.
fn event(id: &str, extra: Value) -> Value {
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": "/e2e/ingress",
        "type": "com.example.ingress",
        "data": {"n": 1},
    });
    if let (Some(event), Value::Object(extra)) = (event.as_object_mut(), extra) {
        for (key, value) in extra {
            if value.is_null() {
                event.remove(&key);
            } else {
                event.insert(key, value);
            }
        }
    }
    event
}

/// An id of exactly the longest length accepted.
fn long_id() -> &'static str {
    static ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| "L".repeat(1024));
    &ID
}

fn table() -> Vec<Row> {
    let exactly_at_limit = {
        // Binary mode: the body alone is what is limited.
        vec![b'x'; LIMIT]
    };
    vec![
        // ----- binary mode: required attributes
        row("binary without ce-specversion")
            .binary("r-no-specversion")
            .without("ce-specversion")
            .refused(400, Some("specversion"), "ce-specversion"),
        row("binary without ce-id")
            .binary("r-no-id")
            .without("ce-id")
            .refused(400, Some("id"), "`id` is required"),
        row("binary without ce-source")
            .binary("r-no-source")
            .without("ce-source")
            .refused(400, Some("source"), "`source` is required"),
        row("binary without ce-type")
            .binary("r-no-type")
            .without("ce-type")
            .refused(400, Some("type"), "`type` is required"),
        row("binary with an empty ce-id")
            .binary("r-empty-id")
            .header("ce-id", "")
            .refused(400, Some("id"), "must not be empty"),
        row("binary with ce-id twice")
            .binary("r-twice")
            .repeat_header("ce-id", "r-twice-2")
            .refused(400, Some("id"), "repeated"),
        row("binary with specversion 2.0")
            .binary("r-v2")
            .header("ce-specversion", "2.0")
            .refused(400, Some("specversion"), "not supported"),
        row("binary with a source containing white space")
            .binary("r-space-source")
            .header("ce-source", "/a b")
            .refused(400, Some("source"), "white space"),
        row("binary with a bad ce-time")
            .binary("r-bad-time")
            .header("ce-time", "yesterday at noon")
            .refused(400, Some("time"), "RFC 3339"),
        row("binary with a bad ce-dataschema")
            .binary("r-bad-schema")
            .header("ce-dataschema", "not a uri")
            .refused(400, Some("dataschema"), "absolute URI"),
        row("binary extension header with a dash")
            .binary("r-dash-header")
            .header("ce-my-ext", "x")
            .refused(400, Some("my-ext"), "not a valid attribute name"),
        row("binary header with a bad percent-encoding")
            .binary("r-bad-percent")
            .header("ce-subject", "caf%ZZ")
            .refused(400, Some("subject"), "percent-encoding"),
        // ----- structured mode
        row("structured with specversion 2.0")
            .structured(event("r-s-v2", json!({"specversion": "2.0"})))
            .refused(400, Some("specversion"), "not supported"),
        row("structured without id")
            .structured(event("r-s-no-id", json!({"id": null})))
            .refused(400, Some("id"), "`id` is required"),
        row("structured extension name in upper case")
            .structured(event("r-upper", json!({"Color": "red"})))
            .refused(400, Some("Color"), "not a valid attribute name"),
        row("structured extension name with a dash")
            .structured(event("r-dash", json!({"my-ext": "x"})))
            .refused(400, Some("my-ext"), "lower-case letters a-z and digits"),
        row("structured extension of object type")
            .structured(event("r-object", json!({"ext": {"a": 1}})))
            .refused(400, Some("ext"), "string, boolean or integer"),
        row("structured extension of float type")
            .structured(event("r-float", json!({"ratio": 0.5})))
            .refused(400, Some("ratio"), "string, boolean or integer"),
        row("structured body that is not JSON")
            .header("content-type", "application/cloudevents+json")
            .body("{\"specversion\": \"1.0\",")
            .refused(400, None, "not valid JSON"),
        row("structured body that is a JSON array")
            .structured(json!([event("r-array", json!({}))]))
            .refused(400, None, "must be a JSON object"),
        row("structured with data and data_base64")
            .structured(event("r-both", json!({"data_base64": "AAE="})))
            .refused(400, Some("data"), "not both"),
        row("structured with bad base64")
            .structured(event(
                "r-base64",
                json!({"data": null, "data_base64": "not base64!"}),
            ))
            .refused(400, Some("data_base64"), "not valid base64"),
        row("structured with a bad dataschema")
            .structured(event("r-s-schema", json!({"dataschema": "::nope"})))
            .refused(400, Some("dataschema"), "absolute URI"),
        row("structured with a datacontenttype that is no media type")
            .structured(event("r-s-ct", json!({"datacontenttype": "json"})))
            .refused(400, Some("datacontenttype"), "not a media type"),
        // ----- content types
        row("event format application/cloudevents+xml")
            .header("content-type", "application/cloudevents+xml")
            .body("<event/>")
            .refused(415, None, "not supported"),
        row("text/plain without ce- headers")
            .header("content-type", "text/plain")
            .body("hello")
            .refused(400, Some("specversion"), "not a CloudEvent"),
        // ----- size limit
        row("body one byte over the limit, with Content-Length")
            .binary("r-large")
            .header("content-type", "application/octet-stream")
            .body(vec![b'x'; LIMIT + 1])
            .refused(413, None, "limit of 1024 bytes")
            .answer_header("connection", "close"),
        row("body over the limit, chunked without Content-Length")
            .binary("r-large-chunked")
            .header("content-type", "application/octet-stream")
            .body(vec![b'x'; 4 * LIMIT])
            .chunked()
            .refused(413, None, "limit of 1024 bytes")
            .answer_header("connection", "close"),
        row("body exactly at the limit")
            .binary("ok-at-limit")
            .header("content-type", "application/octet-stream")
            .body(exactly_at_limit)
            .delivers(&["ok-at-limit"]),
        // ----- where and how
        row("unknown broker")
            .binary("r-unknown-broker")
            .path("/default/nope")
            .refused(404, None, "`default/nope` does not exist"),
        row("unknown namespace")
            .binary("r-unknown-namespace")
            .path("/elsewhere/default")
            .refused(404, None, "`elsewhere/default` does not exist"),
        row("GET")
            .method("GET")
            .refused(405, None, "GET is not allowed")
            .answer_header("allow", "POST, OPTIONS"),
        row("PUT")
            .binary("r-put")
            .method("PUT")
            .refused(405, None, "PUT is not allowed")
            .answer_header("allow", "POST, OPTIONS"),
        row("DELETE")
            .method("DELETE")
            .refused(405, None, "DELETE is not allowed")
            .answer_header("allow", "POST, OPTIONS"),
        Row {
            status: 200,
            ..row("OPTIONS webhook validation handshake")
                .method("OPTIONS")
                .header("webhook-request-origin", "eventemitter.example.com")
                .answer_header("webhook-allowed-origin", "eventemitter.example.com")
                .answer_header("webhook-allowed-rate", "*")
                .answer_header("allow", "POST, OPTIONS")
        },
        // ----- what a string attribute may hold (one bad event must not reach the store)
        row("binary ce-id with a percent-encoded NUL")
            .binary("r-nul")
            .header("ce-id", "a%00b")
            .refused(400, Some("id"), "U+0000"),
        row("structured id with a NUL")
            .structured(event("r-nul-structured\u{0}", json!({})))
            .refused(400, Some("id"), "U+0000"),
        row("binary ce-type with a line feed")
            .binary("r-lf")
            .header("ce-type", "com.example%0Aevil")
            .refused(400, Some("type"), "U+000A"),
        row("structured extension with a C1 control character")
            .structured(event("r-c1", json!({"note": "a\u{85}b"})))
            .refused(400, Some("note"), "U+0085"),
        row("ce-id one byte over 1024")
            .binary("r-long-id")
            .header("ce-id", &"i".repeat(1025))
            .refused(400, Some("id"), "at most 1024"),
        row("ce-id of exactly 1024 bytes")
            .binary(long_id())
            .delivers(&[long_id()]),
        row("partitionkey over 1024 bytes")
            .binary("r-long-lane")
            .header("ce-partitionkey", &"k".repeat(1025))
            .refused(400, Some("partitionkey"), "at most 1024"),
        row("ce-subject over 4096 bytes")
            .binary("r-long-subject")
            .header("ce-subject", &"s".repeat(4097))
            .refused(400, Some("subject"), "at most 4096"),
        row("knativebrokerttl at the smallest integer")
            .binary("r-ttl-min")
            .header("ce-knativebrokerttl", &i64::MIN.to_string())
            .refused(400, Some("knativebrokerttl"), "too many brokers"),
        row("knativebrokerttl at the largest integer is clamped")
            .binary("ok-ttl-max")
            .header("ce-knativebrokerttl", &i64::MAX.to_string())
            .delivers(&["ok-ttl-max"]),
        // ----- batch mode
        row("batch that is an empty array")
            .batch(json!([]))
            .refused(400, None, "empty"),
        row("batch that is not an array")
            .batch(event("r-batch-object", json!({})))
            .refused(400, None, "JSON array"),
        row("batch with one bad event")
            .batch(json!([
                event("r-batch-good-0", json!({})),
                event("r-batch-bad-1", json!({"type": null})),
                event("r-batch-good-2", json!({})),
            ]))
            .refused(400, Some("type"), "event 1 of the batch"),
        row("batch whose event 1 has a spent knativebrokerttl")
            .batch(json!([
                event("r-batch-ttl-0", json!({})),
                event("r-batch-ttl-1", json!({"knativebrokerttl": 1})),
            ]))
            .refused(400, Some("knativebrokerttl"), "event 1 of the batch"),
        row("batch whose event 0 has a spent knativebrokerttl")
            .batch(json!([
                event("r-batch-ttl0-0", json!({"knativebrokerttl": 0})),
                event("r-batch-ttl0-1", json!({})),
            ]))
            .refused(400, Some("knativebrokerttl"), "event 0 of the batch"),
        row("batch of valid events")
            .batch(json!([
                event("ok-batch-0", json!({})),
                event("ok-batch-1", json!({"data": null})),
                event("ok-batch-2", json!({"specversion": "0.3"})),
            ]))
            .delivers(&["ok-batch-0", "ok-batch-1", "ok-batch-2"]),
        // ----- the reply-loop guard
        row("knativebrokerttl 1")
            .binary("r-ttl-1")
            .header("ce-knativebrokerttl", "1")
            .refused(400, Some("knativebrokerttl"), "too many brokers"),
        row("knativebrokerttl 0")
            .binary("r-ttl-0")
            .header("ce-knativebrokerttl", "0")
            .refused(400, Some("knativebrokerttl"), "too many brokers"),
        row("knativebrokerttl not a number")
            .binary("r-ttl-x")
            .header("ce-knativebrokerttl", "many")
            .refused(400, Some("knativebrokerttl"), "must be an integer"),
        row("knativebrokerttl 2 is accepted")
            .binary("ok-ttl-2")
            .header("ce-knativebrokerttl", "2")
            .delivers(&["ok-ttl-2"]),
        // ----- accepted edges
        row("percent-encoded header value")
            .binary("ok-cafe")
            .header("ce-type", "com.example.cafe")
            .header("ce-subject", "caf%C3%A9")
            .delivers(&["ok-cafe"]),
        row("spec version 0.3")
            .binary("ok-v03")
            .header("ce-specversion", "0.3")
            .delivers(&["ok-v03"]),
        row("structured with a charset parameter")
            .structured(event("ok-structured", json!({"flag": true, "count": 3})))
            .header(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )
            .delivers(&["ok-structured"]),
        row("binary without a body or content type")
            .binary("ok-empty")
            .without("content-type")
            .body(Vec::new())
            .delivers(&["ok-empty"]),
        row("the same source and id again (dedupe window)")
            .binary("ok-v03")
            .delivers(&[]),
    ]
}

/// The reason label a refusal must be counted under.
fn reason(row: &Row) -> Option<&'static str> {
    match (row.status, row.attribute) {
        (200..=299, _) => None,
        (404, _) => Some("unknown_broker"),
        (405, _) => Some("method"),
        (413, _) => Some("too_large"),
        (400, Some("knativebrokerttl")) => Some("ttl"),
        _ => Some("invalid"),
    }
}

async fn send(client: &reqwest::Client, kinetic: &Kinetic, row: &Row) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(row.method.as_bytes()).unwrap();
    let mut request = client.request(method, kinetic.url(row.path));
    for (name, value) in &row.headers {
        request = request.header(*name, value.as_str());
    }
    request = match &row.body {
        Body::Sized(bytes) if bytes.is_empty() => request,
        Body::Sized(bytes) => request.body(bytes.clone()),
        Body::Chunked(bytes) => {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(256).map(|c| Ok(c.to_vec())).collect();
            request.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        }
    };
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", row.what))
}

/// Decodes `%XX` in a delivered header value.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[index + 1..index + 3], 16).unwrap());
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn bad_input_table() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = documents(&[
        broker_yaml("default"),
        trigger_yaml("all", "default", &receiver.url("/all"), ""),
        trigger_yaml(
            "cafe",
            "default",
            &receiver.url("/cafe"),
            "  filter: {attributes: {type: com.example.cafe}}\n  delivery: {format: json}\n",
        ),
    ]);
    let file = write_yaml(store.dir(), "resources.yaml", &yaml);
    let limit = LIMIT.to_string();
    let kinetic = Kinetic::up_with(&store, &[&file], &["--max-body-bytes", &limit]);
    let client = reqwest::Client::new();

    let rows = table();
    assert!(rows.len() >= 25);
    let mut failures = Vec::new();
    for row in &rows {
        let response = send(&client, &kinetic, row).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        let mut problems = Vec::new();
        if status != row.status {
            problems.push(format!("status {status}, want {}", row.status));
        }
        for (name, value) in &row.answer_headers {
            let got = headers.get(*name).and_then(|v| v.to_str().ok());
            if got != Some(value) {
                problems.push(format!("header {name}: {got:?}, want {value:?}"));
            }
        }
        if row.status >= 400 {
            match serde_json::from_slice::<Value>(&body) {
                Ok(answer) => {
                    let error = answer["error"].as_str().unwrap_or_default();
                    if !error.contains(row.error) {
                        problems.push(format!("error {error:?} does not contain {:?}", row.error));
                    }
                    let attribute = answer.get("attribute").and_then(Value::as_str);
                    if attribute != row.attribute {
                        problems.push(format!("attribute {attribute:?}, want {:?}", row.attribute));
                    }
                }
                Err(_) => problems.push("the body is not JSON".to_owned()),
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} (body: {})",
                row.what,
                problems.join("; "),
                String::from_utf8_lossy(&body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    // What was accepted is delivered once; nothing refused is delivered, not even the good events of
    // a refused batch.
    let expected: BTreeSet<&str> = rows.iter().flat_map(|r| r.delivers.clone()).collect();
    let got = receiver
        .wait_for("/all", expected.len(), Duration::from_secs(15))
        .await;
    // Deliveries of one read batch run concurrently: give stragglers a moment to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received("/all").len().max(got.len());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for received in receiver.received("/all") {
        *counts
            .entry(received.header("ce-id").unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let wanted: BTreeMap<String, usize> = expected.iter().map(|id| (id.to_string(), 1)).collect();
    assert_eq!(
        counts,
        wanted,
        "each accepted event once, nothing else ({got} received); kinetic log:\n{}",
        kinetic.log()
    );

    // Header values travel percent-encoded and mean the same thing.
    let all = receiver.received("/all");
    let cafe = all
        .iter()
        .find(|r| r.header("ce-id") == Some("ok-cafe"))
        .unwrap();
    assert_eq!(percent_decoded(cafe.header("ce-subject").unwrap()), "café");
    let structured = receiver.wait_for("/cafe", 1, Duration::from_secs(10)).await;
    assert_eq!(structured.len(), 1);
    let as_json: Value = serde_json::from_slice(&structured[0].body).unwrap();
    assert_eq!(as_json["subject"], "café");
    let v03 = all
        .iter()
        .find(|r| r.header("ce-id") == Some("ok-v03"))
        .unwrap();
    assert_eq!(v03.header("ce-specversion"), Some("0.3"));
    let at_limit = all
        .iter()
        .find(|r| r.header("ce-id") == Some("ok-at-limit"))
        .unwrap();
    assert_eq!(at_limit.body.len(), LIMIT);

    // Health, readiness and the counters a user alerts on.
    for path in ["/healthz", "/readyz"] {
        let status = client.get(kinetic.url(path)).send().await.unwrap().status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    let metrics = scrape(&kinetic).await;
    let accepted_events = expected.len() as f64;
    assert_eq!(
        metric_sum(
            &metrics,
            "kinetic_broker_events_accepted_total",
            &[("broker", "default/default")]
        ),
        accepted_events,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "kinetic_broker_events_duplicate_total",
            &[("broker", "default/default")]
        ),
        1.0,
        "{metrics}"
    );
    let mut reasons: BTreeMap<&str, f64> = BTreeMap::new();
    for row in &rows {
        if let Some(reason) = reason(row) {
            *reasons.entry(reason).or_default() += 1.0;
        }
    }
    for (reason, count) in reasons {
        assert_eq!(
            metric_sum(
                &metrics,
                "kinetic_broker_events_rejected_total",
                &[("reason", reason)]
            ),
            count,
            "rejected, reason {reason}:\n{metrics}"
        );
    }
}

/// Posts one event; returns the status and the parsed JSON body (`Null` when it is not JSON).
async fn post(client: &reqwest::Client, url: &str, id: &str) -> (u16, Value, bool) {
    let response = client
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/e2e/outage")
        .header("ce-type", "com.example.outage")
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {id}: {e}"));
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body = response.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        retry_after,
    )
}

async fn status_of(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn postgres_store_unavailable_is_503_and_nothing_half_written() {
    let store = TestStore::new(Engine::Postgres).await;
    let database = store.database().unwrap().to_owned();
    let receiver = Receiver::start().await;
    let yaml = documents(&[
        broker_yaml("default"),
        trigger_yaml("all", "default", &receiver.url("/all"), ""),
    ]);
    let file = write_yaml(store.dir(), "resources.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = kinetic.url("/default/default");
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();

    assert_eq!(status_of(&client, &kinetic.url("/healthz")).await, 200);
    assert_eq!(status_of(&client, &kinetic.url("/readyz")).await, 200);
    for n in 0..5 {
        let id = format!("before-{n}");
        assert_eq!(send_event(&client, &url, &id, "t", &[], "{}").await, 202);
        acknowledged.insert(id);
    }

    // The database goes away: no new connections, and the open ones are cut.
    postgres_admin_execute(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ))
    .await;
    postgres_admin_execute(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    ))
    .await;
    let outage_started = std::time::Instant::now();
    for n in 0..10 {
        let id = format!("during-{n}");
        let (status, body, retry_after) = post(&client, &url, &id).await;
        assert_eq!(status, 503, "{id}: {body}; kinetic log:\n{}", kinetic.log());
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("unavailable"),
            "{id}: {body}"
        );
        assert!(retry_after, "{id}: a 503 carries Retry-After");
        refused.insert(id);
    }
    let batch = json!([
        event("during-batch-0", json!({})),
        event("during-batch-1", json!({})),
    ]);
    let response = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    refused.insert("during-batch-0".into());
    refused.insert("during-batch-1".into());
    assert_eq!(status_of(&client, &kinetic.url("/readyz")).await, 503);
    assert_eq!(status_of(&client, &kinetic.url("/healthz")).await, 200);
    println!(
        "12 refusals during the outage took {:?}",
        outage_started.elapsed()
    );

    // The database comes back: kinetic recovers without a restart.
    postgres_admin_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).await;
    let mut recovered = false;
    for n in 0..200 {
        let id = format!("after-{n}");
        let (status, body, _) = post(&client, &url, &id).await;
        match status {
            202 => {
                acknowledged.insert(id);
                recovered = true;
                break;
            }
            503 => {
                refused.insert(id);
            }
            other => panic!("{id}: {other} {body}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "POSTs never got 202 again");
    for n in 0..5 {
        let id = format!("later-{n}");
        assert_eq!(send_event(&client, &url, &id, "t", &[], "{}").await, 202);
        acknowledged.insert(id);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status_of(&client, &kinetic.url("/readyz")).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stays 503 after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let got = receiver
        .wait_for("/all", acknowledged.len(), Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered: BTreeSet<String> = receiver
        .received("/all")
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect();
    assert!(got.len() >= acknowledged.len());
    let missing: Vec<&String> = acknowledged.difference(&delivered).collect();
    let extra: Vec<&String> = delivered.difference(&acknowledged).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "acknowledged but not delivered: {missing:?}; delivered but refused: {extra:?}; kinetic log:\n{}",
        kinetic.log()
    );

    let metrics = scrape(&kinetic).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "kinetic_broker_events_rejected_total",
            &[("reason", "store_unavailable")]
        ),
        (refused.len() - 1) as f64, // the batch of two is one refused request
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "kinetic_broker_events_accepted_total", &[]),
        acknowledged.len() as f64,
        "{metrics}"
    );
}
