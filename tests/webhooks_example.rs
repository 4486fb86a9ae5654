//! The webhook-subscriptions job end to end, from the example's own YAML
//! (`examples/webhooks/webhooks.yaml`): a GitHub-style webhook comes in signed and verified, fans
//! out to two signed outbound subscriptions; one endpoint fails and recovers (retried), the other
//! refuses an event for good (dead-lettered), is fixed, and the dead letter is replayed. Every
//! delivery's Standard Webhooks signature is checked here with an implementation of the test's own.
//! On SQLite and on PostgreSQL.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use support::{Answer, Engine, Kinetic, Received, Receiver, TestStore, write_yaml};

const GITHUB_SECRET: &str = "it-is-a-secret";
const OUTBOUND_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(30);

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn github_signature(body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a delivery's Standard Webhooks headers against the outbound secret.
fn assert_signed(received: &Received) {
    let id = received.header("webhook-id").expect("webhook-id");
    let timestamp = received
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let signatures = received
        .header("webhook-signature")
        .expect("webhook-signature");
    let key = base64::engine::general_purpose::STANDARD
        .decode(OUTBOUND_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = HmacSha256::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "no valid signature in `{signatures}`"
    );
    assert_eq!(
        Some(id),
        received.header("ce-id"),
        "webhook-id is the event id"
    );
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "timestamp {age} s old");
}

async fn github(
    client: &reqwest::Client,
    kinetic: &Kinetic,
    event: &str,
    delivery: &str,
    signed: bool,
) -> u16 {
    let body = serde_json::json!({
        "repository": {"full_name": "acme/shop"},
        "ref": "refs/heads/main",
        "action": "opened",
    })
    .to_string();
    let signature = if signed {
        github_signature(body.as_bytes())
    } else {
        github_signature(b"something else")
    };
    client
        .post(kinetic.url("/webhooks/default/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn webhooks_in_and_out(engine: Engine) {
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    // billing: down for two attempts, then back.
    receiver.script("/billing", vec![Answer::status(503), Answer::status(503)]);
    receiver.default_answer("/billing", Answer::status(204));
    // audit: refuses issue events until it is fixed.
    let fixed = Arc::new(AtomicBool::new(false));
    let audit_fixed = fixed.clone();
    receiver.respond_with("/audit", move |request| {
        let issue = request.header("ce-type") == Some("com.github.issues");
        if issue && !audit_fixed.load(Ordering::SeqCst) {
            Answer::status(422).body(r#"{"error":"issues are not audited yet"}"#)
        } else {
            Answer::status(200)
        }
    });
    let example = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks/webhooks.yaml"),
    )
    .expect("the example's YAML");
    let yaml = example
        .replace("http://127.0.0.1:9091/billing", &receiver.url("/billing"))
        .replace("http://127.0.0.1:9093/audit", &receiver.url("/audit"));
    let file = write_yaml(store.dir(), "webhooks.yaml", &yaml);
    let kinetic = tokio::task::block_in_place(|| {
        Kinetic::up_with_env(
            &store,
            &[&file],
            &[],
            &[
                ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET),
                ("OUTBOUND_WEBHOOK_SECRET", OUTBOUND_SECRET),
                (
                    "KINETIC_SECRET_ENV",
                    "GITHUB_WEBHOOK_SECRET,OUTBOUND_WEBHOOK_SECRET",
                ),
            ],
        )
    });
    let client = reqwest::Client::new();
    // Sources start at the controller's first pass, a moment after kinetic listens.
    let deadline = Instant::now() + WAIT;
    loop {
        let sources: serde_json::Value = kinetic
            .api()
            .get(kinetic.admin("/api/v1/sources"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        let ready = sources["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "github" && s["ready"] == true);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the WebhookSource never became ready: {sources}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // In: a forged signature emits nothing; a push and an issue are accepted; the push's
    // redelivery (same X-GitHub-Delivery) is accepted and delivered once.
    assert_eq!(
        github(&client, &kinetic, "push", "d-forged", false).await,
        401
    );
    assert_eq!(github(&client, &kinetic, "push", "d-1", true).await, 202);
    assert_eq!(github(&client, &kinetic, "issues", "d-2", true).await, 202);
    assert_eq!(github(&client, &kinetic, "push", "d-1", true).await, 202);

    // Out: billing got the push on its third attempt, audit both events (the issue refused).
    let billing = receiver.wait_for("/billing", 3, WAIT).await;
    assert_eq!(billing.len(), 3, "{}", kinetic.log());
    for attempt in &billing {
        assert_eq!(attempt.header("ce-id"), Some("d-1"));
        assert_eq!(attempt.header("ce-type"), Some("com.github.push"));
        assert_eq!(
            attempt.header("ce-source"),
            Some("https://github.com/acme/shop")
        );
        assert_signed(attempt);
    }
    let audit = receiver.wait_for("/audit", 2, WAIT).await;
    for delivery in &audit {
        assert_signed(delivery);
    }
    let letters_url = kinetic.admin("/api/v1/deadletters?trigger=default/audit");
    let deadline = Instant::now() + WAIT;
    let letters = loop {
        let letters: serde_json::Value = kinetic
            .api()
            .get(&letters_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = letters["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() || Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["lastStatus"], 422);
    assert_eq!(letters[0]["attempts"], 1, "a refusal is not retried");
    // Nothing more than that: the forged webhook emitted nothing, the redelivery was deduped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received("/billing").len(), 3);
    assert_eq!(receiver.received("/audit").len(), 2);

    // The audit endpoint is fixed; the dead letter is replayed, signed like any delivery.
    fixed.store(true, Ordering::SeqCst);
    let replay = tokio::task::block_in_place(|| {
        kinetic.cli(&["dlq", "replay", "--trigger", "default/audit", "--all"])
    });
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let audit = receiver.wait_for("/audit", 3, WAIT).await;
    assert_eq!(audit.len(), 3, "{}", kinetic.log());
    let replayed = &audit[2];
    assert_eq!(replayed.header("ce-id"), Some("d-2"));
    assert_signed(replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    webhooks_in_and_out(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    webhooks_in_and_out(Engine::Postgres).await;
}
