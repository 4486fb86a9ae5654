//! The web console end to end, in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/console/browser.cjs`) against the real `kinetic up`. Logging in, a broker's rate moving
//! after events are sent, an event found by id with its failed attempts and dead letter, replaying
//! it (and the subscriber then getting it), a function going 0 → 1 → 0 on the graph, a viewer
//! refused replay, the read-only pages without JavaScript, and an axe-core accessibility check of
//! every page. Screenshots of each page are kept in `target/console-screenshots/`.
//!
//! `scripts/ensure-browser.sh` installs Chromium, playwright-core and axe-core.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{Answer, Engine, Kinetic, Receiver, TestStore, broker_yaml, documents, trigger_yaml};

fn browser_modules() -> Option<PathBuf> {
    let dir = std::env::var_os("KINETIC_BROWSER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/kinetic-browser")
        })
        .join("node_modules");
    dir.join("playwright-core").exists().then_some(dir)
}

fn chromium() -> PathBuf {
    std::env::var_os("KINETIC_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_a_real_browser() {
    let Some(modules) = browser_modules().filter(|_| chromium().exists()) else {
        assert!(
            !kinetic_testkit::required(),
            "Chromium or playwright-core is missing: run scripts/ensure-browser.sh"
        );
        eprintln!(
            "skipped (KINETIC_TEST_SKIP_MISSING=1): Chromium or playwright-core is missing (run scripts/ensure-browser.sh)"
        );
        return;
    };
    let store = TestStore::new(Engine::Sqlite).await;
    let mut lines = Vec::new();
    let mut tokens = std::collections::HashMap::new();
    for role in ["viewer", "operator", "admin"] {
        let (token, line) = support::create_token(role);
        tokens.insert(role, token);
        lines.push(line);
    }
    let token_file = store.dir().join("tokens.txt");
    std::fs::write(&token_file, lines.join("\n") + "\n").unwrap();

    // Two failures, then the subscriber takes everything: with one retry the event is
    // dead-lettered, and its replay is delivered.
    let subscriber = Receiver::start().await;
    subscriber.script("/orders", vec![Answer::status(500), Answer::status(500)]);
    let service = support::service_at_zero("hello", &[]);
    let hello = support::trigger_to_service("hello", "com.example.hello", "hello");
    let failing = trigger_yaml(
        "failing",
        "default",
        &subscriber.url("/orders"),
        "  filter: {attributes: {type: com.example.order}}\n  delivery: {retry: 1, backoffDelay: PT0.1S}\n",
    );
    let file = support::write_yaml(
        store.dir(),
        "console.yaml",
        &documents(&[broker_yaml("default"), failing, hello, service]),
    );
    let config = support::write_yaml(
        store.dir(),
        "config.yaml",
        "autoscaler:\n  stable-window: 6s\n  scale-to-zero-grace-period: 2s\n  allow-zero-initial-scale: true\n",
    );
    let kinetic = Kinetic::up_with(
        &store,
        &[&file],
        &[
            "--admin-tokens",
            token_file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--termination-grace",
            "PT2S",
        ],
    );
    let ingress = kinetic.url("/default/default");

    // The event that ends as a dead letter.
    let client = reqwest::Client::new();
    let status = client
        .post(&ingress)
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","id":"order-77","source":"/shop","type":"com.example.order","data":{"total":3}}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed: serde_json::Value = client
            .get(kinetic.admin("/api/v1/deadletters"))
            .bearer_auth(&tokens["viewer"])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the event was never dead-lettered: {listed}\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let screenshots = target.join("console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.cjs");
    let mut browser = Command::new("node");
    browser
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env("CHROMIUM", chromium())
        .env("KINETIC_ADMIN", kinetic.admin(""))
        .env("KINETIC_INGRESS", &ingress)
        .env("TOKEN_VIEWER", &tokens["viewer"])
        .env("TOKEN_OPERATOR", &tokens["operator"])
        .env("TOKEN_ADMIN", &tokens["admin"])
        .env("EVENT_ID", "order-77")
        .env("SCREENSHOTS", &screenshots);
    let output = tokio::task::spawn_blocking(move || {
        support::output_within(&mut browser, Duration::from_secs(240))
    })
    .await
    .unwrap()
    .unwrap_or_else(|output| {
        panic!(
            "the browser test still ran after 240 s:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nkinetic's log:\n{}",
        kinetic.log()
    );
    eprintln!("{stdout}");
    assert!(stdout.contains("REPLAYED"), "{stdout}");
    // The replayed event reached the subscriber: two refusals, then the delivery.
    let got = subscriber
        .wait_for("/orders", 3, Duration::from_secs(20))
        .await;
    assert_eq!(got.len(), 3, "the replay was not delivered");
    assert!(got.iter().all(|r| r.header("ce-id") == Some("order-77")));

    // The function's requests and its cold start are in /metrics, under Knative's name too.
    let metrics = client
        .get(kinetic.admin("/metrics"))
        .bearer_auth(&tokens["viewer"])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let knative = [
        ("namespace_name", "default"),
        ("service_name", "hello"),
        ("configuration_name", "hello"),
        ("revision_name", "hello-00001"),
    ];
    assert!(
        support::metric_sum(&metrics, "revision_request_latencies_count", &knative) >= 1.0,
        "{metrics}"
    );
    let revision = [("namespace", "default"), ("revision", "hello-00001")];
    assert!(support::metric_sum(&metrics, "kinetic_serving_cold_starts_total", &revision) >= 1.0);
    assert!(
        support::metric_sum(
            &metrics,
            "kinetic_serving_request_duration_seconds_count",
            &revision
        ) >= 1.0
    );
}
