//! Attacks on a running `kinetic up` as an outsider or a user would send them, each with the exact
//! answer expected: poison events among valid senders (on SQLite and PostgreSQL), oversized
//! batches, subscribers' replies (opt-out and size cap), clients that hold connections open (slow
//! headers, slow bodies, more connections than allowed, a half-sent request at shutdown), secrets
//! outside what the process allows, sources' endpoints refused by the egress guard, capability URLs
//! in status and logs.
//!
//! The other attacks have their case beside the feature they test:
//! - the admin API's tokens, roles, Host/Origin checks and content types: `tests/admin.rs`;
//! - malformed events, control characters, lengths and `knativebrokerttl` extremes, one row each:
//!   `tests/ingress.rs` (`bad_input_table`);
//! - unverified push sources and forged SNS confirmations: `tests/sources.rs` and the
//!   `kinetic_api::sources` unit tests; stale SNS messages: `sources::s3::sns_signature` tests;
//! - dead-letter retention, deletion and paging on both engines: `tests/delivery/retention.rs`;
//! - TLS and EventPolicy: `tests/tls.rs`, `tests/event_policy.rs`;
//! - bounded memory (log window, in-flight bytes, store reads, dedupe index, unknown brokers), the
//!   egress routes of outbound clients, CESQL length and URL masking: the owning crates' unit
//!   tests and the store conformance suite.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Answer, Engine, Kinetic, Receiver, TestStore, broker_yaml, documents, send_event, trigger_yaml,
    write_yaml,
};

const WAIT: Duration = Duration::from_secs(20);

/// A request of the poison sender: what it is, and how it is sent.
fn poison(n: usize) -> (&'static str, reqwest::header::HeaderMap, Vec<u8>) {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        headers.insert(name, value.parse().unwrap());
    };
    set("ce-specversion", "1.0");
    set("ce-source", "/poison");
    set("ce-type", "com.example.poison");
    set("content-type", "application/json");
    let what = match n % 4 {
        0 => {
            set("ce-id", &format!("p{n}%00"));
            "id"
        }
        1 => {
            set("ce-id", &"x".repeat(3840));
            "id"
        }
        2 => {
            set("ce-id", &format!("p{n}"));
            set("ce-partitionkey", &"k".repeat(4000));
            "partitionkey"
        }
        _ => {
            set("ce-id", &format!("p{n}"));
            set("ce-note", "a%00b");
            "note"
        }
    };
    (what, headers, b"{}".to_vec())
}

/// Four senders of valid events and one of poison ones at the same time: every valid event is
/// accepted (202) and delivered once, every poison one is refused (400, naming the attribute).
async fn poison_among_valid_senders(engine: Engine) {
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            store.broker_yaml("default"),
            trigger_yaml("all", "default", &receiver.url("/all"), ""),
        ]),
    );
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let url = kinetic.url("/default/default");
    let client = reqwest::Client::new();
    const SENDERS: usize = 4;
    const EACH: usize = 25;
    let valid = (0..SENDERS).map(|sender| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..EACH {
                let id = format!("v{sender}-{n}");
                statuses.push(send_event(&client, &url, &id, "com.example.ok", &[], "{}").await);
            }
            statuses
        })
    });
    let valid: Vec<_> = valid.collect();
    let poisoner = {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..EACH * 2 {
                let (what, headers, body) = poison(n);
                let response = client
                    .post(&url)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or_default();
                answers.push((what, status, answer));
            }
            answers
        })
    };
    for sender in valid {
        let statuses = sender.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 202),
            "a valid sender got {statuses:?}; log:\n{}",
            kinetic.log()
        );
    }
    for (what, status, answer) in poisoner.await.unwrap() {
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["attribute"], what, "{answer}");
    }
    let got = receiver.wait_for("/all", SENDERS * EACH, WAIT).await;
    assert_eq!(got.len(), SENDERS * EACH);
    assert!(
        got.iter()
            .all(|r| r.header("ce-type") == Some("com.example.ok"))
    );

    // A batch holds at most 1,000 events.
    let batch = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|n| json!({"specversion": "1.0", "id": format!("b{count}-{n}"), "source": "/b", "type": "com.example.batch"}))
            .collect()
    };
    let refused = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .json(&batch(1001))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let answer: Value = refused.json().await.unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("holds 1001 events; kinetic accepts at most 1000"),
        "{answer}"
    );
    let accepted = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .json(&batch(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_among_valid_senders_sqlite() {
    poison_among_valid_senders(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_among_valid_senders_postgres() {
    poison_among_valid_senders(Engine::Postgres).await;
}

/// A reply in binary mode: a CloudEvent `id` of type `com.example.reply`, with `data`.
fn reply(id: &str, data: Vec<u8>) -> Answer {
    Answer::status(200)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/subscriber")
        .header("ce-type", "com.example.reply")
        .header("content-type", "application/octet-stream")
        .body(data)
}

/// Replies are published unless the trigger says `kinetic.dev/replies: "false"`, and only up to
/// `--max-body-bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_can_be_refused_and_are_capped() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let typed = |name: &str, ty: &str, annotations: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: {name}\n{annotations}spec:\n  broker: default\n  filter: {{attributes: {{type: {ty}}}}}\n  subscriber:\n    uri: '{}'\n",
            receiver.url(&format!("/{name}"))
        )
    };
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            broker_yaml("default"),
            typed("echo", "com.example.echo", ""),
            typed(
                "quiet",
                "com.example.quiet",
                "  annotations: {kinetic.dev/replies: \"false\"}\n",
            ),
            typed("big", "com.example.big", ""),
            typed("replies", "com.example.reply", ""),
        ]),
    );
    receiver.default_answer("/echo", reply("from-echo", b"small".to_vec()));
    receiver.default_answer("/quiet", reply("from-quiet", b"small".to_vec()));
    receiver.default_answer("/big", reply("from-big", vec![b'x'; 64 * 1024 + 1]));
    let kinetic = tokio::task::block_in_place(|| {
        Kinetic::up_with(&store, &[&file], &["--max-body-bytes", "65536"])
    });
    let client = reqwest::Client::new();
    let url = kinetic.url("/default/default");
    for (id, ty) in [
        ("e1", "com.example.quiet"),
        ("e2", "com.example.big"),
        ("e3", "com.example.echo"),
    ] {
        assert_eq!(send_event(&client, &url, id, ty, &[], "{}").await, 202);
    }
    let got = receiver.wait_for("/replies", 1, WAIT).await;
    assert_eq!(got[0].header("ce-id"), Some("from-echo"));
    for path in ["/quiet", "/big"] {
        assert_eq!(receiver.wait_for(path, 1, WAIT).await.len(), 1, "{path}");
    }
    // The echo's reply was delivered after the other two were answered: theirs would be there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<_> = receiver
        .received("/replies")
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect();
    assert_eq!(ids, ["from-echo"], "log:\n{}", kinetic.log());
    assert_eq!(
        receiver.received("/echo")[0].header("prefer"),
        Some("reply")
    );
    assert_eq!(receiver.received("/quiet")[0].header("prefer"), None);
    assert!(
        kinetic
            .log()
            .contains("longer than the largest reply kinetic reads"),
        "{}",
        kinetic.log()
    );

    // A wrong value is refused at apply, naming the annotation.
    let bad = write_yaml(
        store.dir(),
        "bad.yaml",
        &typed(
            "odd",
            "com.example.odd",
            "  annotations: {kinetic.dev/replies: \"maybe\"}\n",
        ),
    );
    let output = kinetic.cli(&["apply", "-f", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("metadata.annotations[kinetic.dev/replies]")
            && stderr.contains("`maybe` is not a boolean"),
        "{stderr}"
    );
}

/// A TCP connection to `kinetic`'s public listener.
fn connect(kinetic: &Kinetic) -> TcpStream {
    let address = kinetic.base_url.trim_start_matches("http://");
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection (or the read timeout); returns what it said and
/// how long that took.
fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn up_bare(store: &TestStore, extra: &[&str]) -> Kinetic {
    let file = write_yaml(store.dir(), "broker.yaml", &broker_yaml("default"));
    Kinetic::up_with(store, &[&file], extra)
}

/// Slowloris: a client that never finishes its headers is cut off by the header timeout, and one
/// that never finishes its body by the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let store = TestStore::new(Engine::Sqlite).await;
    let kinetic = tokio::task::block_in_place(|| {
        up_bare(
            &store,
            &[
                "--header-read-timeout",
                "PT1S",
                "--body-read-timeout",
                "PT2S",
            ],
        )
    });
    tokio::task::block_in_place(|| {
        let mut headers = connect(&kinetic);
        headers
            .write_all(b"POST /default/default HTTP/1.1\r\nHost: 127.0.0.1\r\nce-id: 1\r\n")
            .unwrap();
        let (_, took) = read_to_close(&mut headers);
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(6),
            "headers: closed after {took:?}"
        );

        let mut body = connect(&kinetic);
        body.write_all(
            b"POST /default/default HTTP/1.1\r\nHost: 127.0.0.1\r\nce-specversion: 1.0\r\nce-id: slow\r\nce-source: /s\r\nce-type: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"n\":",
        )
        .unwrap();
        let (answer, took) = read_to_close(&mut body);
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "body: closed after {took:?}: {answer}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );

        // An idle keep-alive connection is closed after the same time as headers.
        let mut idle = connect(&kinetic);
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let (answer, took) = read_to_close(&mut idle);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(took < Duration::from_secs(6), "idle: closed after {took:?}");
    });
    // The server is still there for everyone else.
    let health = reqwest::get(kinetic.url("/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// Past `--max-connections`, a new connection waits until one of the others goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped() {
    let store = TestStore::new(Engine::Sqlite).await;
    let kinetic = tokio::task::block_in_place(|| {
        up_bare(
            &store,
            &["--max-connections", "2", "--header-read-timeout", "PT30S"],
        )
    });
    let first = connect(&kinetic);
    let second = connect(&kinetic);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let held = client.get(kinetic.url("/healthz")).send().await;
    assert!(held.is_err(), "a third connection was served: {held:?}");
    drop(first);
    let served = reqwest::Client::new()
        .get(kinetic.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    drop(second);
}

/// SIGTERM ends kinetic within the grace period even while a client holds a half-sent request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_by_a_half_sent_request() {
    let store = TestStore::new(Engine::Sqlite).await;
    tokio::task::block_in_place(|| {
        let mut kinetic = up_bare(
            &store,
            &["--shutdown-grace", "PT1S", "--header-read-timeout", "PT60S"],
        );
        let mut half = connect(&kinetic);
        half.write_all(b"POST /default/default HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let status = kinetic.terminate();
        let took = started.elapsed();
        assert!(status.is_some(), "kinetic did not stop: {}", kinetic.log());
        assert!(took < Duration::from_secs(10), "stopping took {took:?}");
        assert!(
            kinetic.log().contains("closing their connections"),
            "{}",
            kinetic.log()
        );
    });
}

/// Resources name only the secrets kinetic was told they may read, and never see their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_confined() {
    let store = TestStore::new(Engine::Sqlite).await;
    let secrets = store.dir().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("sasl-type"), "super-secret-value\n").unwrap();
    let kinetic = tokio::task::block_in_place(|| {
        Kinetic::up_with_env(
            &store,
            &[],
            &[],
            &[
                ("KINETIC_SECRET_ENV", "HOOK_*"),
                ("HOOK_TOKEN", "t0ken"),
                ("KINETIC_STORE_PASSWORD_FOR_TEST", "not-for-resources"),
            ],
        )
    });
    let hook = |secret: &str| {
        format!(
            "apiVersion: sources.kinetic.dev/v1alpha1\nkind: WebhookSource\nmetadata: {{name: hook}}\nspec:\n  verify: {{bearer: {{token: {secret}}}}}\n  sink: {{uri: 'http://127.0.0.1:1/'}}\n"
        )
    };
    let cases = [
        (
            hook("{file: /etc/passwd}"),
            "spec.verify.bearer.token.file: `/etc/passwd` is outside the secrets directory",
        ),
        (
            hook("{file: ../state.db}"),
            "spec.verify.bearer.token.file: `../state.db` is outside the secrets directory",
        ),
        (
            hook("{env: KINETIC_STORE_PASSWORD_FOR_TEST}"),
            "start kinetic with `--secret-env KINETIC_STORE_PASSWORD_FOR_TEST`",
        ),
    ];
    for (yaml, message) in cases {
        let file = write_yaml(store.dir(), "secret.yaml", &yaml);
        let output = kinetic.cli(&["apply", "-f", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{yaml} was applied");
        assert!(stderr.contains(message), "{stderr}");
    }
    // What kinetic keeps on disk is its user's alone.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.dir().join("state.db")), 0o600);
        let made = store.dir().join("made-by-kinetic");
        let other = tokio::task::block_in_place(|| {
            Kinetic::spawn(
                &[
                    "up".into(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--gateway-listen".into(),
                    "127.0.0.1:0".into(),
                    "--state-dir".into(),
                    made.display().to_string(),
                ],
                &[],
            )
        });
        assert_eq!(mode(&made), 0o700);
        assert_eq!(mode(&made.join("secrets")), 0o700);
        assert_eq!(mode(&made.join("state.db")), 0o600);
        drop(other);
    }
    // Allowed: a variable the flag names, a file in the secrets directory.
    for yaml in [hook("{env: HOOK_TOKEN}"), hook("{file: sasl-type}")] {
        let file = write_yaml(store.dir(), "secret.yaml", &yaml);
        let output = kinetic.cli(&["apply", "-f", file.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // A secret that does not parse is not echoed back: not by the API, not in the log.
    let kafka = write_yaml(
        store.dir(),
        "kafka.yaml",
        "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {name: orders}\nspec:\n  bootstrapServers: ['127.0.0.1:1']\n  topics: [orders]\n  net: {sasl: {enable: true, type: {file: sasl-type}, user: {file: sasl-type}, password: {file: sasl-type}}}\n  sink: {uri: 'http://127.0.0.1:1/'}\n",
    );
    let output = kinetic.cli(&["apply", "-f", kafka.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + WAIT;
    let sources = loop {
        let sources = kinetic
            .api()
            .get(kinetic.admin("/api/v1/sources"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if sources.contains("sasl.type") || Instant::now() > deadline {
            break sources;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        sources.contains("is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
        "{sources}"
    );
    assert!(!sources.contains("super-secret-value"), "{sources}");
    assert!(!kinetic.log().contains("super-secret-value"));
}

/// Hosts a resource makes kinetic connect to by itself (an S3 endpoint, an SQS queue, Kafka
/// brokers of a source or of a Broker's ConfigMap) are held to the egress rules: loopback is
/// refused unless allowed, and the answer or the source's status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_endpoints_pass_the_egress_guard() {
    let store = TestStore::new(Engine::Sqlite).await;
    let secrets = store.dir().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("key"), "test").unwrap();
    let file = write_yaml(
        store.dir(),
        "sources.yaml",
        "apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {name: photos}
spec:
  bucket: photos
  endpoint: http://127.0.0.1:9
  region: us-east-1
  forcePathStyle: true
  credentials: {accessKeyId: {file: key}, secretAccessKey: {file: key}}
  notifications: {sqs: {queueUrl: 'http://127.0.0.1:9/123456789012/photos-events'}}
  sink: {uri: 'https://example.com/'}
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: orders}
spec:
  bootstrapServers: ['localhost:9']
  topics: [orders]
  sink: {uri: 'https://example.com/'}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kafka-broker-config}
data: {bootstrap.servers: '127.0.0.1:9'}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: kafka
  annotations: {eventing.knative.dev/broker.class: Kafka}
spec:
  config: {apiVersion: v1, kind: ConfigMap, name: kafka-broker-config}
",
    );
    let kinetic = tokio::task::block_in_place(|| {
        Kinetic::up_with_env(&store, &[&file], &[], &[("KINETIC_EGRESS_ALLOW", "none")])
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let sources: Value = kinetic
            .api()
            .get(kinetic.admin("/api/v1/sources"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let errors: Vec<String> = sources["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["lastError"].as_str().unwrap_or("").to_owned())
            .collect();
        let refused = |endpoint: &str| {
            errors.iter().any(|e| {
                e.contains(&format!("`{endpoint}` may not be reached"))
                    && e.contains("--egress-allow loopback")
            })
        };
        if refused("http://127.0.0.1:9") && refused("localhost:9") {
            break;
        }
        assert!(Instant::now() < deadline, "{errors:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A Kafka-class broker's ConfigMap may not point kinetic's Kafka clients where the rules
    // refuse: the ingress answers 503, naming the server and the flag, before any connection.
    let response = reqwest::Client::new()
        .post(kinetic.url("/default/kafka"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-source", "/s")
        .header("ce-type", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message
            .contains("`bootstrap.servers` names `127.0.0.1:9`, which kinetic may not connect to")
            && message.contains("--egress-allow loopback"),
        "{message}"
    );
}

/// Capability URLs (a token in the path or the query) are masked wherever kinetic shows a URL: in
/// a trigger's status and in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_urls_are_masked_in_status_and_logs() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let path = "/services/T0/B0/abcdefghij1234567890XYZ";
    receiver.default_answer(path, Answer::status(410));
    let subscriber = format!("{}?token=s3cr3t-value", receiver.url(path));
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            broker_yaml("default"),
            trigger_yaml("hook", "default", &subscriber, ""),
        ]),
    );
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let client = reqwest::Client::new();
    let sent = send_event(
        &client,
        &kinetic.url("/default/default"),
        "c1",
        "t",
        &[],
        "{}",
    )
    .await;
    assert_eq!(sent, 202);
    let deadline = Instant::now() + WAIT;
    let disabled = loop {
        let triggers: Value = kinetic
            .api()
            .get(kinetic.admin("/api/v1/triggers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let disabled = triggers["items"][0]["status"]["disabled"].clone();
        if !disabled.is_null() {
            break disabled;
        }
        assert!(Instant::now() < deadline, "{triggers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shown = disabled.to_string();
    assert!(shown.contains("/services/T0/B0/***"), "{shown}");
    for secret in ["s3cr3t-value", "abcdefghij1234567890XYZ"] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!kinetic.log().contains(secret), "{}", kinetic.log());
    }
}
