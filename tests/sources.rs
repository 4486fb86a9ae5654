//! Sources end to end: signed webhooks and schedules become CloudEvents that reach a trigger's
//! subscriber through the broker, with the real `kinetic` binary over real HTTP.

mod support;

use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use support::{
    Engine, Kinetic, Receiver, TO_DEFAULT_BROKER, TestStore, broker_with_trigger, broker_yaml,
    write_yaml,
};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
/// A Standard Webhooks secret: `whsec_` + base64 of the key bytes.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn github_signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), body))
    )
}

fn standard_signature(id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = base64::prelude::BASE64_STANDARD
        .decode(STANDARD_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "v1,{}",
        base64::prelude::BASE64_STANDARD.encode(hmac_sha256(&key, &signed))
    )
}

fn resources(receiver: &Receiver) -> String {
    format!(
        "{broker}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: '{uri}'}}
---
apiVersion: sources.kinetic.dev/v1alpha1
kind: WebhookSource
metadata: {{name: github}}
spec:
  verify:
    github: {{secret: {{env: GITHUB_WEBHOOK_SECRET}}}}
  type: \"com.github.{{header:X-GitHub-Event}}\"
{TO_DEFAULT_BROKER}---
apiVersion: sources.kinetic.dev/v1alpha1
kind: WebhookSource
metadata: {{name: standard}}
spec:
  verify:
    standardWebhooks: {{secrets: [{{env: STANDARD_WEBHOOK_SECRET}}]}}
  type: \"com.example.{{json:/kind}}\"
  ceOverrides: {{extensions: {{team: payments}}}}
{TO_DEFAULT_BROKER}",
        broker = broker_yaml("default"),
        uri = receiver.url("/all"),
    )
}

/// kinetic as a test runs it: `kinetic up`, or (on [`Engine::Split`]) `kinetic broker` with
/// the resources applied through its admin API, `kinetic dispatcher` and `kinetic sources`, as
/// separate processes on PostgreSQL sharing a state directory.
struct Running {
    /// `kinetic up`, or the broker: admin API, CLI.
    kinetic: Kinetic,
    /// The sources process of the split shape: webhooks arrive there.
    sources: Option<Kinetic>,
    _dispatcher: Option<Kinetic>,
}

impl Running {
    fn start(store: &TestStore, file: &std::path::Path, env: &[(&str, &str)]) -> Running {
        if store.engine != Engine::Split {
            return Running {
                kinetic: Kinetic::up_with_env(store, &[file], &[], env),
                sources: None,
                _dispatcher: None,
            };
        }
        let state = store.dir().display().to_string();
        let shared = ["--state-dir", state.as_str()];
        let broker = Kinetic::broker(store, &shared, env);
        let applied = broker.cli(&["apply", "-f", &file.display().to_string()]);
        assert!(applied.status.success(), "kinetic apply: {applied:?}");
        Running {
            _dispatcher: Some(Kinetic::dispatcher(store, &broker, &shared, env)),
            sources: Some(Kinetic::sources(store, &broker, &shared, env)),
            kinetic: broker,
        }
    }

    /// Where webhooks are posted.
    fn url(&self, path: &str) -> String {
        self.sources.as_ref().unwrap_or(&self.kinetic).url(path)
    }

    fn log(&self) -> String {
        match &self.sources {
            Some(sources) => format!(
                "broker:\n{}\nsources:\n{}",
                self.kinetic.log(),
                sources.log()
            ),
            None => self.kinetic.log(),
        }
    }

    /// The metrics of the process that runs the sources.
    async fn sources_metrics(&self) -> String {
        let Some(sources) = &self.sources else {
            return support::scrape(&self.kinetic).await;
        };
        let response = reqwest::Client::new()
            .get(sources.url("/metrics"))
            .bearer_auth(&self.kinetic.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }
}

async fn webhooks_become_events(engine: Engine) {
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let file = write_yaml(store.dir(), "hooks.yaml", &resources(&receiver));
    let kinetic = tokio::task::block_in_place(|| {
        Running::start(
            &store,
            &file,
            &[
                ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET),
                ("STANDARD_WEBHOOK_SECRET", STANDARD_SECRET),
                (
                    "KINETIC_SECRET_ENV",
                    "GITHUB_WEBHOOK_SECRET,STANDARD_WEBHOOK_SECRET",
                ),
            ],
        )
    });
    let client = reqwest::Client::new();
    let github = kinetic.url("/webhooks/default/github");
    let body = br#"{"ref":"refs/heads/main","commits":[]}"#;
    let post = |url: &str, body: &'static [u8], headers: Vec<(&'static str, String)>| {
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    // Sources start within a second of kinetic.
    let mut status = 0;
    for _ in 0..50 {
        let signed = vec![
            ("x-github-event", "push".to_owned()),
            ("x-github-delivery", "delivery-1".to_owned()),
            ("x-hub-signature-256", github_signature(body)),
        ];
        (status, _) = post(&github, body, signed).await;
        if status != 404 && status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 202, "kinetic log:\n{}", kinetic.log());
    // A tampered body, a missing signature and a wrong secret: 401, nothing emitted.
    let tampered: &[u8] = br#"{"ref":"refs/heads/evil","commits":[]}"#;
    let cases = vec![
        (
            tampered,
            vec![
                ("x-github-event", "push".to_owned()),
                ("x-github-delivery", "delivery-2".to_owned()),
                ("x-hub-signature-256", github_signature(body)),
            ],
        ),
        (
            body,
            vec![
                ("x-github-event", "push".to_owned()),
                ("x-github-delivery", "delivery-3".to_owned()),
            ],
        ),
        (
            body,
            vec![
                ("x-github-event", "push".to_owned()),
                ("x-github-delivery", "delivery-4".to_owned()),
                (
                    "x-hub-signature-256",
                    format!("sha256={}", hex::encode(hmac_sha256(b"wrong", body))),
                ),
            ],
        ),
    ];
    for (payload, headers) in cases {
        let (status, answer) = post(&github, payload, headers).await;
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("unauthorized"), "{answer}");
    }
    // The same delivery again (GitHub's redelivery): accepted, delivered once.
    let again = vec![
        ("x-github-event", "push".to_owned()),
        ("x-github-delivery", "delivery-1".to_owned()),
        ("x-hub-signature-256", github_signature(body)),
    ];
    assert_eq!(post(&github, body, again).await.0, 202);
    // Standard Webhooks: a stale timestamp is refused, a fresh one accepted.
    let standard = kinetic.url("/webhooks/default/standard");
    let payment: &[u8] = br#"{"kind":"payment.succeeded","amount":250}"#;
    let now = chrono::Utc::now().timestamp();
    let stale = now - 3600;
    let (status, answer) = post(
        &standard,
        payment,
        vec![
            ("webhook-id", "msg_stale".to_owned()),
            ("webhook-timestamp", stale.to_string()),
            (
                "webhook-signature",
                standard_signature("msg_stale", stale, payment),
            ),
        ],
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post(
        &standard,
        payment,
        vec![
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", now.to_string()),
            (
                "webhook-signature",
                format!("v1,bm90IGl0 {}", standard_signature("msg_1", now, payment)),
            ),
        ],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    // An unknown source is a 404 that says where sources live.
    let (status, answer) = post(&kinetic.url("/webhooks/default/nope"), body, vec![]).await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("/webhooks/NAMESPACE/NAME"), "{answer}");

    let got = receiver.wait_for("/all", 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = receiver.received("/all");
    assert_eq!(
        got_all.len(),
        2,
        "exactly the two accepted deliveries: {got:?}"
    );
    let push = got_all
        .iter()
        .find(|r| r.header("ce-type") == Some("com.github.push"))
        .expect("the GitHub push");
    assert_eq!(push.header("ce-id"), Some("delivery-1"));
    assert_eq!(
        push.header("ce-source"),
        Some("/apis/v1/namespaces/default/webhooksources/github")
    );
    assert_eq!(push.body.as_ref(), body);
    let paid = got_all
        .iter()
        .find(|r| r.header("ce-type") == Some("com.example.payment.succeeded"))
        .expect("the payment");
    assert_eq!(paid.header("ce-id"), Some("msg_1"));
    assert_eq!(paid.header("ce-team"), Some("payments"));
    assert_eq!(paid.body.as_ref(), payment);
    // Status shows what each source did, where the sources run in the process serving the API
    // (in the split shape their live state is in the sources process's metrics, below).
    if kinetic.sources.is_none() {
        let sources = kinetic.kinetic.cli(&["get", "sources", "-o", "json"]);
        let sources: serde_json::Value = serde_json::from_slice(&sources.stdout).unwrap();
        let github_status = sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "github")
            .unwrap();
        assert_eq!(github_status["events"], 2, "{sources}");
        assert_eq!(github_status["ready"], true, "{sources}");
    }
    let metrics = kinetic.sources_metrics().await;
    assert_eq!(
        support::metric_sum(
            &metrics,
            "kinetic_source_events_total",
            &[("name", "github")]
        ),
        2.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_webhooks_become_events() {
    webhooks_become_events(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_webhooks_become_events() {
    webhooks_become_events(Engine::Postgres).await;
}

/// The same with the sources, the ingress and delivery in processes of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_webhooks_become_events() {
    webhooks_become_events(Engine::Split).await;
}

#[tokio::test]
async fn a_webhook_source_without_its_secret_is_not_ready_and_says_why() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let file = write_yaml(store.dir(), "hooks.yaml", &resources(&receiver));
    // The secrets may be read, but are not in the environment.
    let kinetic = Kinetic::up_with_env(
        &store,
        &[&file],
        &[],
        &[("KINETIC_SECRET_ENV", "GITHUB_*,STANDARD_*")],
    );
    let mut answer = (0, String::new());
    for _ in 0..50 {
        let response = reqwest::Client::new()
            .post(kinetic.url("/webhooks/default/github"))
            .body("{}")
            .send()
            .await
            .unwrap();
        answer = (response.status().as_u16(), response.text().await.unwrap());
        if answer.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, 503, "{}", answer.1);
    let sources = kinetic.cli(&["get", "sources"]);
    let table = String::from_utf8_lossy(&sources.stdout);
    assert!(table.contains("GITHUB_WEBHOOK_SECRET"), "{table}");
}

#[tokio::test]
async fn a_ping_source_fires_a_missed_tick_once_across_a_restart() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: every-minute}}
spec:
  schedule: '* * * * *'
  contentType: application/json
  data: '{{\"message\": \"hello\"}}'
{TO_DEFAULT_BROKER}",
        broker_with_trigger("ticks", &receiver.url("/ticks"))
    );
    let file = write_yaml(store.dir(), "ping.yaml", &yaml);
    // The restart below must land in the minute of the first tick: start early in a minute.
    for _ in 0..16 {
        if chrono::Utc::now().timestamp() % 60 < 45 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The source was applied two minutes ago (the same resource `kinetic up` applies, so that
    // stays unchanged) and kinetic was down since: the tick of this minute was missed, and fires
    // at start, once, without waiting for the next minute.
    let now = chrono::Utc::now();
    let applied = now - chrono::Duration::seconds(now.timestamp() % 60 + 120);
    let before = kinetic_store::open(&store.url).await.unwrap();
    for resource in kinetic_api::parse_documents("ping.yaml", &yaml).unwrap() {
        let key = resource.key();
        if key.kind == kinetic_api::Kind::PingSource {
            before
                .apply_resource(
                    key.kind.as_str(),
                    &key.namespace,
                    &key.name,
                    &resource.to_json(),
                    applied.timestamp_millis(),
                )
                .await
                .unwrap();
        }
    }
    drop(before);
    let mut kinetic = Kinetic::up(&store, &[&file]);
    let got = receiver
        .wait_for("/ticks", 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        got.len(),
        1,
        "the missed tick did not fire; log:\n{}",
        kinetic.log()
    );
    let tick = &got[0];
    assert_eq!(tick.header("ce-type"), Some("dev.knative.sources.ping"));
    assert_eq!(
        tick.header("ce-source"),
        Some("/apis/v1/namespaces/default/pingsources/every-minute")
    );
    assert_eq!(tick.body.as_ref(), br#"{"message": "hello"}"#);
    let time = chrono::DateTime::parse_from_rfc3339(tick.header("ce-time").unwrap()).unwrap();
    assert_eq!(
        time.timestamp() % 60,
        0,
        "the tick's time is the minute: {time}"
    );
    let first_id = tick.header("ce-id").unwrap().to_owned();
    // Killed and started again within the same minute: that tick is not fired again. (The
    // subscriber may see the event twice: delivery is at-least-once and the kill can land before
    // the dispatcher recorded it. Firing is judged at the broker: a second firing of the tick
    // would be accepted or dropped as a duplicate there.)
    kinetic.kill9();
    let kinetic = Kinetic::up(&store, &[&file]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = support::scrape(&kinetic).await;
    let accepted = support::metric_sum(&metrics, "kinetic_broker_events_accepted_total", &[]);
    let duplicates = support::metric_sum(&metrics, "kinetic_broker_events_duplicate_total", &[]);
    assert_eq!(
        (accepted, duplicates),
        (0.0, 0.0),
        "the tick fired again after a restart; log:\n{}",
        kinetic.log()
    );
    let all = receiver.received("/ticks");
    assert!(
        all.iter()
            .all(|r| r.header("ce-id") == Some(first_id.as_str())),
        "only the first tick so far: {all:?}"
    );
    let sources = kinetic.cli(&["get", "sources", "-o", "json"]);
    let sources: serde_json::Value = serde_json::from_slice(&sources.stdout).unwrap();
    let next = sources[0]["nextAt"]
        .as_str()
        .expect("the next tick is shown");
    let next = chrono::DateTime::parse_from_rfc3339(next).unwrap();
    assert_eq!(next - time, chrono::Duration::minutes(1), "{sources}");
}

/// An S3 notification as AWS sends it (one record per object), for `keys`.
fn s3_notification(keys: &[&str]) -> String {
    let records: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            serde_json::json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-27T10:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": format!("REQ{index}"),
                    "x-amz-id-2": format!("HOST{index}")
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "uploads",
                    "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
                    "object": {"key": key, "size": 1024, "eTag": format!("etag{index}"), "sequencer": format!("00{index}")}
                }
            })
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}

#[tokio::test]
async fn bucket_notifications_pushed_to_an_s3_source_become_events() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {{name: photos}}
spec:
  bucket: photos
  region: us-east-1
  eventTypes: ['ObjectCreated:*']
  prefix: uploads/
  suffix: .jpg
  notifications:
    webhook:
      verify: {{bearer: {{token: {{env: BUCKET_TOKEN}}}}}}
{TO_DEFAULT_BROKER}",
        broker_with_trigger("uploads", &receiver.url("/uploads"))
    );
    let file = write_yaml(store.dir(), "s3.yaml", &yaml);
    let kinetic = Kinetic::up_with_env(
        &store,
        &[&file],
        &[],
        &[
            ("BUCKET_TOKEN", "t0ken"),
            ("KINETIC_SECRET_ENV", "BUCKET_TOKEN"),
        ],
    );
    let client = reqwest::Client::new();
    let url = kinetic.url("/sources/default/photos");
    // `a+b.jpg` is how S3 writes the key `a b.jpg`.
    let body = s3_notification(&["uploads/a+b.jpg", "uploads/b.png", "other/c.jpg"]);
    let push = |token: &'static str, body: String| {
        client
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mut answer = (0, String::new());
    for _ in 0..50 {
        let response = push("t0ken", body.clone()).await.unwrap();
        answer = (response.status().as_u16(), response.text().await.unwrap());
        if answer.0 != 404 && answer.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, 202, "{}\n{}", answer.1, kinetic.log());
    assert!(answer.1.contains("\"events\":1"), "{}", answer.1);
    // The same notification again (S3 delivers at least once) dedupes at the broker.
    assert_eq!(push("t0ken", body.clone()).await.unwrap().status(), 202);
    assert_eq!(push("wrong", body.clone()).await.unwrap().status(), 401);
    let bad = push("t0ken", "{\"Records\": [{}]}".into()).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("bucket"));
    let confirmation = serde_json::json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "m1",
        "Token": "tok",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:photos",
        "Message": "You have chosen to subscribe",
        "SubscribeURL": receiver.url("/confirm"),
        "Timestamp": chrono::Utc::now().to_rfc3339()
    });
    // An SNS subscription confirmation makes kinetic fetch its SubscribeURL: only a source that
    // checks SNS signatures (`sns.topicArns`) acts on one.
    let unconfirmed = push("t0ken", confirmation.to_string()).await.unwrap();
    assert_eq!(unconfirmed.status(), 400);
    assert!(
        unconfirmed
            .text()
            .await
            .unwrap()
            .contains("only acted on by an S3Source with `notifications.webhook.sns`")
    );
    assert!(receiver.received("/confirm").is_empty());

    let got = receiver
        .wait_for("/uploads", 1, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("/uploads").len(), 1, "{got:?}");
    let event = &got[0];
    assert_eq!(
        event.header("ce-type"),
        Some("com.amazonaws.s3.ObjectCreated:Put")
    );
    assert_eq!(event.header("ce-source"), Some("aws:s3.us-east-1.photos"));
    // The key `uploads/a b.jpg`; the HTTP binding percent-encodes a space in a header value.
    assert_eq!(event.header("ce-subject"), Some("uploads/a%20b.jpg"));
    assert_eq!(event.header("ce-id"), Some("REQ0.HOST0"));
    let record: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(record["s3"]["object"]["size"], 1024);
}

/// A source's sink `uri` is an outside address like a trigger's subscriber: without
/// `--egress-allow loopback`, kinetic does not post events to a loopback sink, and the sender hears
/// why at once. Allowing loopback, the same sink works. An SNS subscription confirmation is never
/// acted on by a source that does not check SNS signatures (a forged one must not make kinetic call
/// internal services), and its SubscribeURL must be SNS's own.
#[tokio::test]
async fn source_sinks_and_sns_confirmations_pass_the_egress_guard() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "apiVersion: sources.kinetic.dev/v1alpha1
kind: WebhookSource
metadata: {{name: hooks}}
spec:
  verify:
    bearer: {{token: {{env: HOOK_TOKEN}}}}
  sink: {{uri: '{sink}'}}
---
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {{name: photos}}
spec:
  bucket: photos
  region: us-east-1
  notifications:
    webhook:
      verify: {{bearer: {{token: {{env: HOOK_TOKEN}}}}}}
  sink: {{uri: '{sink}'}}
",
        sink = receiver.url("/sink")
    );
    let file = write_yaml(store.dir(), "guarded.yaml", &yaml);
    let client = reqwest::Client::new();
    let post = |url: String, body: String| {
        client
            .post(url)
            .bearer_auth("t0ken")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let confirmation = serde_json::json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "m1",
        "Token": "tok",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:photos",
        "Message": "You have chosen to subscribe",
        "SubscribeURL": receiver.url("/confirm"),
        "Timestamp": chrono::Utc::now().to_rfc3339()
    })
    .to_string();

    let kinetic = Kinetic::up_with_env(
        &store,
        &[&file],
        &[],
        &[
            ("HOOK_TOKEN", "t0ken"),
            ("KINETIC_SECRET_ENV", "HOOK_TOKEN"),
            ("KINETIC_EGRESS_ALLOW", "none"),
        ],
    );
    let mut answer = (0, String::new());
    for _ in 0..50 {
        let response = post(kinetic.url("/webhooks/default/hooks"), "{}".into())
            .await
            .unwrap();
        answer = (response.status().as_u16(), response.text().await.unwrap());
        if answer.1.contains("egress-allow") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, 503, "{}\n{}", answer.1, kinetic.log());
    assert!(
        answer.1.contains("may not be reached") && answer.1.contains("--egress-allow loopback"),
        "{}",
        answer.1
    );
    let confirmed = post(kinetic.url("/sources/default/photos"), confirmation.clone())
        .await
        .unwrap();
    let status = confirmed.status().as_u16();
    let text = confirmed.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("notifications.webhook.sns"), "{text}");
    let sources = kinetic.cli(&["get", "sources"]);
    let table = String::from_utf8_lossy(&sources.stdout);
    assert!(table.contains("egress-allow"), "{table}");
    assert!(receiver.received("/sink").is_empty());
    assert!(receiver.received("/confirm").is_empty());
    drop(kinetic);

    let kinetic = Kinetic::up_with_env(
        &store,
        &[&file],
        &[],
        &[
            ("HOOK_TOKEN", "t0ken"),
            ("KINETIC_SECRET_ENV", "HOOK_TOKEN"),
        ],
    );
    let mut status = 0;
    for _ in 0..50 {
        status = post(kinetic.url("/webhooks/default/hooks"), "{}".into())
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 202, "{}", kinetic.log());
    assert_eq!(receiver.received("/sink").len(), 1);
    // Even then, a confirmation whose signature nothing checks makes kinetic fetch nothing.
    let confirmed = post(kinetic.url("/sources/default/photos"), confirmation)
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 400);
    assert!(receiver.received("/confirm").is_empty());
}

/// A webhook sent right after its source was applied (before the controller's next pass) is
/// accepted, not answered 404: the receiving process looks the source up in the store and starts
/// it at once.
#[tokio::test]
async fn a_webhook_right_after_its_source_is_applied_is_accepted() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let base = format!(
        "{}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: '{}'}}
",
        broker_yaml("default"),
        receiver.url("/all")
    );
    let file = write_yaml(store.dir(), "base.yaml", &base);
    let kinetic = Kinetic::up_with_env(
        &store,
        &[&file],
        &[],
        &[
            ("HOOK_TOKEN", "t0ken"),
            ("KINETIC_SECRET_ENV", "HOOK_TOKEN"),
        ],
    );
    let hooks = write_yaml(
        store.dir(),
        "later.yaml",
        "apiVersion: sources.kinetic.dev/v1alpha1
kind: WebhookSource
metadata: {name: late}
spec:
  verify:
    bearer: {token: {env: HOOK_TOKEN}}
  sink:
    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
",
    );
    let client = reqwest::Client::new();
    // Nothing by that name yet: 404.
    let unknown = client
        .post(kinetic.url("/webhooks/default/late"))
        .bearer_auth("t0ken")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let applied = kinetic.cli(&["apply", "-f", hooks.to_str().unwrap()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let response = client
        .post(kinetic.url("/webhooks/default/late"))
        .bearer_auth("t0ken")
        .header("x-request-id", "first")
        .body("{\"n\": 1}")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 202, "{}", response.text().await.unwrap());
    let got = receiver.wait_for("/all", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
}

/// A verification secret read from a file is read again while kinetic runs: replacing the file
/// (as Kubernetes does with a mounted secret) rotates it without applying the source again.
#[tokio::test]
async fn a_rotated_secret_file_takes_effect_without_applying_again() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    // In the secrets directory kinetic makes in its state directory.
    std::fs::create_dir_all(store.dir().join("secrets")).unwrap();
    let token = store.dir().join("secrets/token");
    std::fs::write(&token, "first-token\n").unwrap();
    let yaml = format!(
        "{}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: '{}'}}
---
apiVersion: sources.kinetic.dev/v1alpha1
kind: WebhookSource
metadata: {{name: rotated}}
spec:
  verify:
    bearer: {{token: {{file: '{}'}}}}
{TO_DEFAULT_BROKER}",
        broker_yaml("default"),
        receiver.url("/all"),
        token.display()
    );
    let file = write_yaml(store.dir(), "rotated.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    let client = reqwest::Client::new();
    let post = |bearer: &'static str| {
        client
            .post(kinetic.url("/webhooks/default/rotated"))
            .bearer_auth(bearer)
            .body("{}")
            .send()
    };
    let mut status = 0;
    for _ in 0..50 {
        status = post("first-token").await.unwrap().status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 202, "{}", kinetic.log());
    // Replaced the way a mounted secret is: a new file renamed over the old one.
    let next = store.dir().join("token.next");
    std::fs::write(&next, "second-token\n").unwrap();
    std::fs::rename(&next, &token).unwrap();
    let mut statuses = (0, 0);
    for _ in 0..50 {
        statuses = (
            post("second-token").await.unwrap().status().as_u16(),
            post("first-token").await.unwrap().status().as_u16(),
        );
        if statuses == (202, 401) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, (202, 401), "{}", kinetic.log());
}

/// A pushed S3Source with `sns.topicArns` takes only SNS messages of those topics signed by AWS:
/// an unsigned S3 notification, a forged subscription confirmation (whose SubscribeURL is never
/// fetched) and a message from another topic are all refused with 401 saying why.
#[tokio::test]
async fn an_sns_verified_s3_source_refuses_what_aws_did_not_sign() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {{name: photos}}
spec:
  bucket: photos
  region: us-east-1
  notifications:
    webhook:
      sns: {{topicArns: ['arn:aws:sns:us-east-1:123456789012:photos']}}
{TO_DEFAULT_BROKER}",
        broker_with_trigger("uploads", &receiver.url("/uploads"))
    );
    let file = write_yaml(store.dir(), "sns.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    let client = reqwest::Client::new();
    let push = |body: String| {
        client
            .post(kinetic.url("/sources/default/photos"))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(body)
            .send()
    };
    let forged = serde_json::json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "m1",
        "Token": "tok",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:photos",
        "Message": "You have chosen to subscribe",
        "SubscribeURL": receiver.url("/confirm"),
        "Timestamp": chrono::Utc::now().to_rfc3339(),
        "SignatureVersion": "2",
        "Signature": "AAAA",
        "SigningCertURL": receiver.url("/cert.pem"),
    });
    let foreign = serde_json::json!({
        "Type": "Notification",
        "MessageId": "m2",
        "TopicArn": "arn:aws:sns:us-east-1:999999999999:theirs",
        "Message": s3_notification(&["uploads/a.jpg"]),
        "Timestamp": chrono::Utc::now().to_rfc3339(),
        "SignatureVersion": "1",
        "Signature": "AAAA",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    });
    let cases = [
        (s3_notification(&["uploads/a.jpg"]), "TopicArn"),
        (forged.to_string(), "SigningCertURL"),
        (foreign.to_string(), "999999999999:theirs"),
    ];
    for (body, why) in cases {
        let mut answer = (0, String::new());
        for _ in 0..50 {
            let response = push(body.clone()).await.unwrap();
            answer = (response.status().as_u16(), response.text().await.unwrap());
            if answer.0 != 404 && answer.0 != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(answer.0, 401, "{}\n{}", answer.1, kinetic.log());
        assert!(answer.1.contains(why), "{why}: {}", answer.1);
    }
    assert!(receiver.received("/confirm").is_empty());
    assert!(receiver.received("/cert.pem").is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.received("/uploads").is_empty());
}
