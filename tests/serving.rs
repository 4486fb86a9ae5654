//! Serving end to end: the real `kinetic up`, the real example function (`examples/hello-fn`) as
//! local processes, requests through the gateway over real HTTP.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Engine, Kinetic, TestStore, broker_yaml, send_event, write_yaml};

const DOMAIN: &str = "kinetic.localhost";

/// The example function, built beside the kinetic binary.
fn function_binary() -> PathBuf {
    let path = support::binary()
        .parent()
        .expect("target directory")
        .join("hello-fn");
    assert!(
        path.exists(),
        "{} is missing; build it with `cargo build -p hello-fn` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A Service running hello-fn with `annotations` on its template and `spec_extra` in its template spec.
fn service_yaml(name: &str, annotations: &[(&str, &str)], spec_extra: &str, env: &str) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("        autoscaling.knative.dev/{k}: \"{v}\"\n"))
        .collect();
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("    metadata:\n      annotations:\n{annotations}")
    };
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n{annotations}    spec:\n{spec_extra}      containers:\n        - command: [\"{}\"]\n          env: [{env}]\n          readinessProbe: {{httpGet: {{path: /}}}}\n",
        function_binary().display()
    )
}

/// Short autoscaler windows so scale-to-zero happens within a test.
fn fast_autoscaler(dir: &std::path::Path) -> PathBuf {
    write_yaml(
        dir,
        "config.yaml",
        "autoscaler:\n  stable-window: 6s\n  scale-to-zero-grace-period: 2s\n  allow-zero-initial-scale: true\n",
    )
}

fn up(store: &TestStore, files: &[&std::path::Path], config: Option<&std::path::Path>) -> Kinetic {
    let mut extra: Vec<String> = vec!["--termination-grace".into(), "PT2S".into()];
    if let Some(config) = config {
        extra.push("--config".into());
        extra.push(config.display().to_string());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Kinetic::up_with(store, files, &extra)
}

struct Gateway {
    client: reqwest::Client,
    base: String,
}

impl Gateway {
    fn of(kinetic: &Kinetic) -> Gateway {
        let address = kinetic
            .gateway
            .expect("kinetic up prints the gateway address");
        Gateway {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap(),
            base: format!("http://{address}"),
        }
    }

    async fn get(&self, host: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("host", host)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn host(service: &str) -> String {
    format!("{service}.default.{DOMAIN}")
}

async fn api_get(kinetic: &Kinetic, path: &str) -> Value {
    kinetic
        .api()
        .get(kinetic.admin(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for_service(
    kinetic: &Kinetic,
    service: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let status =
            api_get(kinetic, &format!("/api/v1/services/default/{service}")).await["status"]
                .clone();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "service {service} never reached the state; last status {status}\nkinetic log:\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn wait_gone(pids: &[u64], timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u64> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn scales_from_zero_on_the_first_request_and_back_to_zero() {
    let store = TestStore::new(Engine::Sqlite).await;
    let config = fast_autoscaler(store.dir());
    let file = write_yaml(
        store.dir(),
        "hello.yaml",
        &service_yaml("hello", &[("initial-scale", "0")], "", ""),
    );
    let kinetic = up(&store, &[&file], Some(&config));
    let gateway = Gateway::of(&kinetic);
    // Nothing runs before the first request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = kinetic.revision_status("hello-00001").await;
    assert_eq!(status["ready"], 0, "{status}");
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (code, body) = gateway.get(&host("hello"), "/").await;
    assert_eq!(code, 200, "{body}\n{}", kinetic.log());
    assert_eq!(body["revision"], "hello-00001");
    assert!(
        body["startedAtMs"].as_u64().unwrap() >= asked,
        "the instance was started by the request: {body}"
    );
    let pid = body["pid"].as_u64().unwrap();
    let status = kinetic.revision_status("hello-00001").await;
    assert_eq!(status["coldStarts"], 1, "{status}");
    // Idle for the stable window and the grace period: back to zero, the process gone.
    let status = kinetic
        .wait_for_revision("hello-00001", Duration::from_secs(30), |s| {
            s["ready"] == 0 && s["desired"] == 0
        })
        .await;
    assert_eq!(status["crashes"], 0, "{status}");
    assert!(wait_gone(&[pid], Duration::from_secs(10)).await.is_empty());
    // And from zero again.
    let (code, body) = gateway.get(&host("hello"), "/").await;
    assert_eq!(code, 200, "{body}");
    assert_ne!(body["pid"].as_u64().unwrap(), pid);
}

#[tokio::test]
async fn a_burst_at_zero_is_served_entirely_with_container_concurrency_one() {
    let store = TestStore::new(Engine::Sqlite).await;
    let config = fast_autoscaler(store.dir());
    let file = write_yaml(
        store.dir(),
        "cc1.yaml",
        &service_yaml(
            "cc1",
            &[("initial-scale", "0"), ("max-scale", "20")],
            "      containerConcurrency: 1\n",
            "{name: MAX_CONCURRENCY, value: \"1\"}",
        ),
    );
    let kinetic = up(&store, &[&file], Some(&config));
    let gateway = std::sync::Arc::new(Gateway::of(&kinetic));
    let started = Instant::now();
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move { gateway.get(&host("cc1"), "/?sleep_ms=20").await })
        })
        .collect();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut pids = std::collections::HashSet::new();
    for request in requests {
        let (code, body) = request.await.unwrap();
        *statuses.entry(code).or_default() += 1;
        if code == 200 {
            assert!(body["mostInFlight"].as_u64().unwrap() <= 1, "{body}");
            pids.insert(body["pid"].as_u64().unwrap());
        } else {
            panic!("request failed with {code}: {body}\n{}", kinetic.log());
        }
    }
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    assert!(
        pids.len() > 1,
        "a burst of 200 at CC=1 scales out (served by {pids:?} in {:?})",
        started.elapsed()
    );
    let logs = kinetic.cli(&["logs", "cc1", "--tail", "10000"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(!text.contains("concurrency exceeded"), "{text}");
}

#[tokio::test]
async fn min_scale_keeps_instances_and_a_killed_instance_is_replaced() {
    let store = TestStore::new(Engine::Sqlite).await;
    let config = fast_autoscaler(store.dir());
    let file = write_yaml(
        store.dir(),
        "warm.yaml",
        &service_yaml("warm", &[("min-scale", "1")], "", ""),
    );
    let kinetic = up(&store, &[&file], Some(&config));
    let gateway = Gateway::of(&kinetic);
    let (code, body) = gateway.get(&host("warm"), "/").await;
    assert_eq!(code, 200, "{body}");
    let pid = body["pid"].as_u64().unwrap();
    // Well past the stable window and the grace period: still one instance.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = kinetic.revision_status("warm-00001").await;
    assert_eq!(
        (status["ready"].clone(), status["desired"].clone()),
        (1.into(), 1.into()),
        "{status}"
    );
    // SIGKILL the function: it is replaced and counted.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = kinetic
        .wait_for_revision("warm-00001", Duration::from_secs(20), |s| {
            s["crashes"].as_u64() >= Some(1) && s["ready"] == 1
        })
        .await;
    assert!(status["problem"].as_str().is_some(), "{status}");
    let (code, body) = gateway.get(&host("warm"), "/").await;
    assert_eq!(code, 200, "{body}");
    assert_ne!(body["pid"].as_u64().unwrap(), pid);
}

#[tokio::test]
async fn traffic_splits_by_percent_and_tags_address_revisions() {
    let store = TestStore::new(Engine::Sqlite).await;
    let v1 = service_yaml(
        "split",
        &[("min-scale", "1")],
        "",
        "{name: VERSION, value: one}",
    );
    let file = write_yaml(store.dir(), "split.yaml", &v1);
    let kinetic = up(&store, &[&file], None);
    let gateway = Gateway::of(&kinetic);
    let (code, _) = gateway.get(&host("split"), "/").await;
    assert_eq!(code, 200);
    // A new template with an 80/20 split and a tag on the old revision.
    let v2 = service_yaml(
        "split",
        &[("min-scale", "1")],
        "",
        "{name: VERSION, value: two}",
    ) + "  traffic:\n    - latestRevision: true\n      percent: 80\n    - revisionName: split-00001\n      percent: 20\n      tag: old\n";
    let file2 = write_yaml(store.dir(), "split2.yaml", &v2);
    let applied = kinetic.cli(&["apply", "-f", file2.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    // Traffic follows the new revision once it is ready.
    wait_for_service(&kinetic, "split", Duration::from_secs(20), |s| {
        s["latestRevision"] == "split-00002"
    })
    .await;
    let n = 500;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let (code, body) = gateway.get(&host("split"), "/").await;
        assert_eq!(code, 200, "{body}");
        *counts
            .entry(body["revision"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Binomial(500, 0.8): standard deviation ~8.9; allow five of them.
    let latest = counts.get("split-00002").copied().unwrap_or(0);
    assert!((355..=445).contains(&latest), "{counts:?}");
    assert_eq!(latest + counts.get("split-00001").copied().unwrap_or(0), n);
    for _ in 0..20 {
        let (code, body) = gateway
            .get(&format!("old-split.default.{DOMAIN}"), "/")
            .await;
        assert_eq!(
            (code, body["revision"].as_str()),
            (200, Some("split-00001"))
        );
    }
    // Status shows the URL and the split.
    let services = kinetic.cli(&["get", "services"]);
    let table = String::from_utf8_lossy(&services.stdout);
    assert!(
        table.contains(&format!("http://split.default.{DOMAIN}:"))
            && table.contains("split-00002=80%")
            && table.contains("split-00001=20%"),
        "{table}"
    );
}

#[tokio::test]
async fn unknown_hosts_and_bad_traffic_are_explained() {
    let store = TestStore::new(Engine::Sqlite).await;
    let kinetic = up(&store, &[], None);
    let gateway = Gateway::of(&kinetic);
    let (code, body) = gateway.get("nope.default.kinetic.localhost", "/").await;
    assert_eq!(code, 404);
    // It says how to address a service, and names none: which services exist is the admin API's.
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("Host: SERVICE.NAMESPACE.kinetic.localhost")
            && error.contains("kinetic get services"),
        "{body}"
    );
    let bad = service_yaml("bad", &[], "", "")
        + "  traffic:\n    - revisionName: bad-00007\n      percent: 100\n";
    let file = write_yaml(store.dir(), "bad.yaml", &bad);
    let applied = kinetic.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!applied.status.success());
    let error = String::from_utf8_lossy(&applied.stderr);
    assert!(
        error.contains("spec.traffic[0].revisionName") && error.contains("bad-00007"),
        "{error}"
    );
}

async fn trigger_wakes_a_service_at_zero(engine: Engine) {
    let store = TestStore::new(engine).await;
    let config = fast_autoscaler(store.dir());
    let yaml = format!(
        "{}---\n{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: to-fn}}\nspec:\n  broker: default\n  subscriber:\n    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: eventfn}}\n",
        broker_yaml("default"),
        service_yaml("eventfn", &[("initial-scale", "0")], "", "")
    );
    let file = write_yaml(store.dir(), "events.yaml", &yaml);
    let kinetic = up(&store, &[&file], Some(&config));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kinetic.revision_status("eventfn-00001").await["ready"], 0);
    let client = reqwest::Client::new();
    let status = send_event(
        &client,
        &kinetic.url("/default/default"),
        "wake-1",
        "com.example.wake",
        &[],
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 202);
    kinetic
        .wait_for_logs(
            "eventfn",
            "event wake-1 of type com.example.wake",
            Duration::from_secs(30),
        )
        .await;
    let status = kinetic.revision_status("eventfn-00001").await;
    assert_eq!(status["coldStarts"], 1, "{status}");
}

#[tokio::test]
async fn sqlite_trigger_wakes_a_service_at_zero() {
    trigger_wakes_a_service_at_zero(Engine::Sqlite).await;
}

#[tokio::test]
async fn postgres_trigger_wakes_a_service_at_zero() {
    trigger_wakes_a_service_at_zero(Engine::Postgres).await;
}

/// Starts a service with two instances and returns kinetic and the instances' pids.
async fn running_instances(store: &TestStore) -> (Kinetic, Vec<u64>) {
    let file = write_yaml(
        store.dir(),
        "pair.yaml",
        &service_yaml("pair", &[("min-scale", "2")], "", ""),
    );
    let kinetic = up(store, &[&file], None);
    kinetic
        .wait_for_revision("pair-00001", Duration::from_secs(20), |s| s["ready"] == 2)
        .await;
    let gateway = Gateway::of(&kinetic);
    let mut pids = std::collections::HashSet::new();
    for _ in 0..50 {
        let (code, body) = gateway.get(&host("pair"), "/").await;
        assert_eq!(code, 200);
        pids.insert(body["pid"].as_u64().unwrap());
        if pids.len() == 2 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both instances answer");
    (kinetic, pids.into_iter().collect())
}

#[tokio::test]
async fn no_function_outlives_kinetic_stopping() {
    let store = TestStore::new(Engine::Sqlite).await;
    let (mut kinetic, pids) = running_instances(&store).await;
    let status = kinetic.terminate().expect("kinetic exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", kinetic.log());
    assert_eq!(
        wait_gone(&pids, Duration::from_secs(5)).await,
        Vec::<u64>::new()
    );
}

#[tokio::test]
async fn no_function_outlives_kinetic_killed() {
    let store = TestStore::new(Engine::Sqlite).await;
    let (mut kinetic, pids) = running_instances(&store).await;
    kinetic.kill9();
    assert_eq!(
        wait_gone(&pids, Duration::from_secs(5)).await,
        Vec::<u64>::new(),
        "instances left behind after SIGKILL"
    );
}

#[tokio::test]
async fn a_new_revision_that_cannot_start_never_takes_traffic() {
    let store = TestStore::new(Engine::Sqlite).await;
    let good = service_yaml("roll", &[("min-scale", "1")], "", "");
    let file = write_yaml(store.dir(), "roll.yaml", &good);
    let kinetic = up(&store, &[&file], None);
    let gateway = Gateway::of(&kinetic);
    let (code, body) = gateway.get(&host("roll"), "/").await;
    assert_eq!((code, body["revision"].as_str()), (200, Some("roll-00001")));
    // A template whose command fails at once: revision 2 is created, crashes, and is not routed.
    let broken = good.replace(
        &format!("[\"{}\"]", function_binary().display()),
        "[\"sh\", \"-c\", \"echo cannot start >&2; exit 1\"]",
    );
    let broken_file = write_yaml(store.dir(), "broken.yaml", &broken);
    let applied = kinetic.cli(&["apply", "-f", broken_file.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    kinetic
        .wait_for_revision("roll-00002", Duration::from_secs(20), |s| {
            s["crashes"].as_u64() >= Some(1)
        })
        .await;
    let status = wait_for_service(&kinetic, "roll", Duration::from_secs(5), |s| {
        s["latestCreatedRevision"] == "roll-00002"
    })
    .await;
    assert_eq!(status["latestRevision"], "roll-00001", "{status}");
    for _ in 0..20 {
        let (code, body) = gateway.get(&host("roll"), "/").await;
        assert_eq!(
            (code, body["revision"].as_str()),
            (200, Some("roll-00001")),
            "{body}"
        );
    }
    let revisions = kinetic.cli(&["get", "revisions"]);
    let table = String::from_utf8_lossy(&revisions.stdout);
    assert!(
        table.contains("cannot start"),
        "the failure is shown: {table}"
    );
}

#[tokio::test]
async fn a_slow_function_gets_504_after_its_timeout() {
    let store = TestStore::new(Engine::Sqlite).await;
    let file = write_yaml(
        store.dir(),
        "slow.yaml",
        &service_yaml("slow", &[], "      timeoutSeconds: 1\n", ""),
    );
    let kinetic = up(&store, &[&file], None);
    let gateway = Gateway::of(&kinetic);
    let started = Instant::now();
    let (code, body) = gateway.get(&host("slow"), "/?sleep_ms=5000").await;
    assert_eq!(code, 504, "{body}");
    assert_eq!(body["reason"], "timeout", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let (code, _) = gateway.get(&host("slow"), "/?sleep_ms=10").await;
    assert_eq!(code, 200);
    let metrics = support::scrape(&kinetic).await;
    assert!(
        support::metric_sum(
            &metrics,
            "kinetic_serving_request_duration_seconds_count",
            &[("revision", "slow-00001")]
        ) >= 1.0,
        "{metrics}"
    );
}

#[test]
fn autoscaler_settings_mistakes_stop_kinetic_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    for (text, expected) in [
        ("autoscaler:\n  stable-windw: 60s\n", "stable-windw"),
        ("autoscaler:\n  stable-window: 2s\n", "stable-window"),
        ("autoscalr: {}\n", "autoscalr"),
    ] {
        std::fs::write(&config, text).unwrap();
        let store = format!("sqlite://{}/state.db", dir.path().display());
        let output = support::cli_bounded(
            &[
                "up",
                "--listen",
                "127.0.0.1:0",
                "--gateway-listen",
                "127.0.0.1:0",
                "--store",
                &store,
                "--config",
                config.to_str().unwrap(),
            ],
            Duration::from_secs(20),
        );
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        assert!(
            error.contains(expected) && error.contains("config.yaml"),
            "{text}: {error}"
        );
        assert!(!error.contains("kinetic is up"), "{error}");
    }
}

#[tokio::test]
async fn queue_proxy_sidecar_limits_concurrency_and_reports_stats() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (function_port, proxy_port, admin_port) = (free(), free(), free());
    let mut function = std::process::Command::new(function_binary())
        .env("PORT", function_port.to_string())
        .env("MAX_CONCURRENCY", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut sidecar = std::process::Command::new(support::binary())
        .args([
            "queue-proxy",
            "--listen",
            &format!("127.0.0.1:{proxy_port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--upstream",
            &format!("127.0.0.1:{function_port}"),
            "--container-concurrency",
            "1",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("http://127.0.0.1:{proxy_port}/"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the sidecar and function never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One in the function, ten queued (10 × containerConcurrency), the rest refused at once.
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .get(format!("http://127.0.0.1:{proxy_port}/?sleep_ms=200"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut codes = Vec::new();
    for request in requests {
        codes.push(request.await.unwrap());
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    let refused = codes.iter().filter(|c| **c == 503).count();
    assert_eq!(ok + refused, 20, "{codes:?}");
    assert!((11..20).contains(&ok) && refused >= 1, "{codes:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stats: Value = client
        .get(format!("http://127.0.0.1:{admin_port}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats.get("averageConcurrency").is_some(), "{stats}");
    let ready = client
        .get(format!("http://127.0.0.1:{admin_port}/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &sidecar.id().to_string()])
        .status();
    let exited = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        matches!(sidecar.try_wait(), Ok(Some(_)))
    });
    let _ = sidecar.kill();
    let _ = sidecar.wait();
    let _ = function.kill();
    let _ = function.wait();
    assert!(exited, "the sidecar stops on SIGTERM");
}
