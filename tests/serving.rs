//! Serving end to end, in both shapes: `kinetic up` (everything in one process), and split
//! across processes (`kinetic broker` for the admin API, `kinetic autoscaler` running the functions
//! each behind a `kinetic queue-proxy`, `kinetic activator`s and `kinetic gateway`s). The real
//! example function (`examples/hello-fn`) runs as local processes; requests go through the gateway
//! over real HTTP.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Engine, Kinetic, TestStore, broker_yaml, send_event, write_yaml};

const DOMAIN: &str = "kinetic.localhost";

/// Where serving's components run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `kinetic up`.
    Up,
    /// `kinetic broker`, `kinetic autoscaler`, activators and gateways as separate processes.
    Split,
}

/// Runs each named test in both shapes: `up::NAME` and `split::NAME`.
macro_rules! shapes {
    ($($name:ident),* $(,)?) => {
        mod up {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::Shape::Up).await;
            })*
        }
        mod split {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::Shape::Split).await;
            })*
        }
    };
}

shapes!(
    scales_from_zero_on_the_first_request_and_back_to_zero,
    a_burst_at_zero_is_served_entirely_with_container_concurrency_one,
    min_scale_keeps_instances_and_a_killed_instance_is_replaced,
    traffic_splits_by_percent_and_tags_address_revisions,
    unknown_hosts_and_bad_traffic_are_explained,
    a_new_revision_that_cannot_start_never_takes_traffic,
    a_slow_function_gets_504_after_its_timeout,
    a_revision_no_longer_routed_finishes_its_requests_first,
    no_function_outlives_kinetic_stopping,
    no_function_outlives_kinetic_killed,
);

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
        support::function_binary().display()
    )
}

/// Short autoscaler windows so scale-to-zero happens within a test.
fn fast_autoscaler(dir: &Path) -> PathBuf {
    write_yaml(
        dir,
        "config.yaml",
        "autoscaler:\n  stable-window: 6s\n  scale-to-zero-grace-period: 2s\n  allow-zero-initial-scale: true\n",
    )
}

/// What a test needs beyond serving.
#[derive(Debug, Clone, Copy, Default)]
struct Extras {
    /// Activators (split shape); at least one.
    activators: usize,
    /// Gateways (split shape); at least one.
    gateways: usize,
    /// A dispatcher delivering to Services through the gateway (split shape; `up` has one).
    dispatcher: bool,
}

/// Serving in one of its shapes, with the resource files applied.
struct Stack {
    shape: Shape,
    /// `kinetic up`, or `kinetic broker` (admin API and ingress) in the split shape.
    main: Kinetic,
    autoscaler: Option<Kinetic>,
    activators: Vec<Kinetic>,
    gateways: Vec<Kinetic>,
    dispatcher: Option<Kinetic>,
}

impl Stack {
    /// The store for a test in `shape`: SQLite for `up`, PostgreSQL (shared by the processes)
    /// for the split shape.
    async fn store(shape: Shape) -> TestStore {
        match shape {
            Shape::Up => TestStore::new(Engine::Sqlite).await,
            Shape::Split => TestStore::new(Engine::Postgres).await,
        }
    }

    fn start(shape: Shape, store: &TestStore, files: &[&Path], config: Option<&Path>) -> Stack {
        Self::start_with(shape, store, files, config, Extras::default())
    }

    fn start_with(
        shape: Shape,
        store: &TestStore,
        files: &[&Path],
        config: Option<&Path>,
        extras: Extras,
    ) -> Stack {
        let mut serving: Vec<String> = vec!["--termination-grace".into(), "PT2S".into()];
        if let Some(config) = config {
            serving.extend(["--config".into(), config.display().to_string()]);
        }
        let serving: Vec<&str> = serving.iter().map(String::as_str).collect();
        match shape {
            Shape::Up => Stack {
                shape,
                main: Kinetic::up_with(store, files, &serving),
                autoscaler: None,
                activators: Vec::new(),
                gateways: Vec::new(),
                dispatcher: None,
            },
            Shape::Split => {
                let main = Kinetic::broker(store, &[], &[]);
                let mut args = Kinetic::scale_out_args("autoscaler", store, None, &serving);
                args.extend(["--gateway-port".into(), "0".into()]);
                let autoscaler = Kinetic::spawn(&args, &[]);
                let follower = |role: &str, extra: &[String]| {
                    let mut args: Vec<String> = [
                        role,
                        "--listen",
                        "127.0.0.1:0",
                        "--health-listen",
                        "127.0.0.1:0",
                        "--autoscaler-url",
                        &autoscaler.base_url,
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    args.extend_from_slice(extra);
                    Kinetic::spawn(&args, &[])
                };
                let activators: Vec<Kinetic> = (0..extras.activators.max(1))
                    .map(|_| follower("activator", &[]))
                    .collect();
                let via: Vec<String> = activators
                    .iter()
                    .flat_map(|a| ["--activator".to_owned(), a.address.to_string()])
                    .collect();
                let gateways: Vec<Kinetic> = (0..extras.gateways.max(1))
                    .map(|_| follower("gateway", &via))
                    .collect();
                let dispatcher = extras.dispatcher.then(|| {
                    Kinetic::dispatcher(
                        store,
                        &main,
                        &["--gateway", &gateways[0].address.to_string()],
                        &[],
                    )
                });
                let stack = Stack {
                    shape,
                    main,
                    autoscaler: Some(autoscaler),
                    activators,
                    gateways,
                    dispatcher,
                };
                for file in files {
                    let applied = stack.apply(file);
                    assert!(applied.status.success(), "{applied:?}");
                }
                stack
            }
        }
    }

    /// Split shape: waits until the autoscaler serves every stored Service and every gateway and
    /// activator routes by its table, as `kinetic up` does before it listens. A user waits the
    /// same way for a new Service to be ready.
    async fn routed(&self) {
        if self.shape == Shape::Up {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let stored: Value = api_get(&self.main, "/api/v1/services").await;
        let names: Vec<String> = stored["items"]
            .as_array()
            .or(stored.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        loop {
            let served = self.autoscaler_get("/v1/services").await;
            let table = self.autoscaler_get("/v1/table").await;
            let version = table["version"].as_u64().unwrap_or(0);
            let all_served = names.iter().all(|name| {
                served
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["name"] == name.as_str()))
            });
            let mut followed = true;
            for follower in self.activators.iter().chain(&self.gateways) {
                let health = follower.health.expect("followers log health=");
                let answer: Value = reqwest::get(format!("http://{health}/version"))
                    .await
                    .expect("the health listener answers")
                    .json()
                    .await
                    .expect("JSON");
                followed &= answer["tableVersion"].as_u64().unwrap_or(0) >= version;
            }
            if all_served && followed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Services {names:?} were never routed\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kinetic apply -f file` against the admin API.
    fn apply(&self, file: &Path) -> std::process::Output {
        self.main.cli(&["apply", "-f", file.to_str().unwrap()])
    }

    /// Where requests for Services go (the first gateway).
    fn gateway(&self) -> Gateway {
        let address = match self.shape {
            Shape::Up => self.main.gateway.expect("kinetic up prints the gateway"),
            Shape::Split => self.gateways[0].address,
        };
        Gateway::at(address)
    }

    /// Every process's log, for a failing test.
    fn log(&self) -> String {
        let mut text = format!("== main\n{}", self.main.log());
        for (name, process) in [
            ("autoscaler", &self.autoscaler),
            ("dispatcher", &self.dispatcher),
        ] {
            if let Some(process) = process {
                text += &format!("\n== {name}\n{}", process.log());
            }
        }
        for (i, process) in self.activators.iter().enumerate() {
            text += &format!("\n== activator {i}\n{}", process.log());
        }
        for (i, process) in self.gateways.iter().enumerate() {
            text += &format!("\n== gateway {i}\n{}", process.log());
        }
        text
    }

    /// A GET of the autoscaler's API (split shape).
    async fn autoscaler_get(&self, path: &str) -> Value {
        let autoscaler = self.autoscaler.as_ref().expect("the split shape");
        reqwest::Client::new()
            .get(autoscaler.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the autoscaler answers")
            .json()
            .await
            .expect("JSON")
    }

    /// The revision's status: ready, desired, coldStarts, crashes, problem.
    async fn revision_status(&self, revision: &str) -> Value {
        match self.shape {
            Shape::Up => self.main.revision_status(revision).await,
            Shape::Split => {
                let all = self.autoscaler_get("/v1/revisions").await;
                all.as_array()
                    .and_then(|all| all.iter().find(|r| r["name"] == revision))
                    .cloned()
                    .unwrap_or(Value::Null)
            }
        }
    }

    async fn wait_for_revision(
        &self,
        revision: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.revision_status(revision).await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "revision {revision} never reached the state; last status {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The service's status: latestRevision, latestCreatedRevision, traffic.
    async fn service_status(&self, service: &str) -> Value {
        match self.shape {
            Shape::Up => api_get(&self.main, &format!("/api/v1/services/default/{service}")).await
                ["status"]
                .clone(),
            Shape::Split => {
                let all = self.autoscaler_get("/v1/services").await;
                all.as_array()
                    .and_then(|all| all.iter().find(|s| s["name"] == service))
                    .cloned()
                    .unwrap_or(Value::Null)
            }
        }
    }

    async fn wait_for_service(
        &self,
        service: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.service_status(service).await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "service {service} never reached the state; last status {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The service's instances' output, one line of text each.
    async fn logs(&self, service: &str) -> String {
        match self.shape {
            Shape::Up => {
                let logs = self
                    .main
                    .cli_in_place(&["logs", service, "--tail", "10000"]);
                String::from_utf8_lossy(&logs.stdout).into_owned()
            }
            Shape::Split => {
                let answer = self
                    .autoscaler_get(&format!("/v1/logs/default/{service}?limit=10000"))
                    .await;
                answer["lines"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|line| format!("{}\n", line["text"].as_str().unwrap_or_default()))
                    .collect()
            }
        }
    }

    async fn wait_for_logs(&self, service: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.logs(service).await;
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` never appeared in {service}'s logs:\n{text}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process that runs the functions: `kinetic up`, or the autoscaler.
    fn functions(&mut self) -> &mut Kinetic {
        match self.shape {
            Shape::Up => &mut self.main,
            Shape::Split => self.autoscaler.as_mut().expect("the split shape"),
        }
    }
}

struct Gateway {
    client: reqwest::Client,
    base: String,
}

impl Gateway {
    fn at(address: std::net::SocketAddr) -> Gateway {
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

/// The processes whose parent is `parent`: the instances (and their queue-proxies) it started.
fn children(parent: u32) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

async fn scales_from_zero_on_the_first_request_and_back_to_zero(shape: Shape) {
    let store = Stack::store(shape).await;
    let config = fast_autoscaler(store.dir());
    let file = write_yaml(
        store.dir(),
        "hello.yaml",
        &service_yaml("hello", &[("initial-scale", "0")], "", ""),
    );
    let stack = Stack::start(shape, &store, &[&file], Some(&config));
    stack.routed().await;
    let gateway = stack.gateway();
    // Nothing runs before the first request.
    stack
        .wait_for_revision("hello-00001", Duration::from_secs(20), |s| s.is_object())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = stack.revision_status("hello-00001").await;
    assert_eq!(status["ready"], 0, "{status}");
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (code, body) = gateway.get(&host("hello"), "/").await;
    assert_eq!(code, 200, "{body}\n{}", stack.log());
    assert_eq!(body["revision"], "hello-00001");
    assert!(
        body["startedAtMs"].as_u64().unwrap() >= asked,
        "the instance was started by the request: {body}"
    );
    let pid = body["pid"].as_u64().unwrap();
    // The activator's count reaches the autoscaler with its next report.
    let status = stack
        .wait_for_revision("hello-00001", Duration::from_secs(5), |s| {
            s["coldStarts"] == 1
        })
        .await;
    assert_eq!(status["coldStarts"], 1, "{status}");
    // Idle for the stable window and the grace period: back to zero, the process gone.
    let status = stack
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

async fn a_burst_at_zero_is_served_entirely_with_container_concurrency_one(shape: Shape) {
    let store = Stack::store(shape).await;
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
    let stack = Stack::start(shape, &store, &[&file], Some(&config));
    stack.routed().await;
    stack
        .wait_for_revision("cc1-00001", Duration::from_secs(20), |s| s.is_object())
        .await;
    let gateway = std::sync::Arc::new(stack.gateway());
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
            panic!("request failed with {code}: {body}\n{}", stack.log());
        }
    }
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    assert!(
        pids.len() > 1,
        "a burst of 200 at CC=1 scales out (served by {pids:?} in {:?})",
        started.elapsed()
    );
    let text = stack.logs("cc1").await;
    assert!(!text.contains("concurrency exceeded"), "{text}");
}

async fn min_scale_keeps_instances_and_a_killed_instance_is_replaced(shape: Shape) {
    let store = Stack::store(shape).await;
    let config = fast_autoscaler(store.dir());
    let file = write_yaml(
        store.dir(),
        "warm.yaml",
        &service_yaml("warm", &[("min-scale", "1")], "", ""),
    );
    let stack = Stack::start(shape, &store, &[&file], Some(&config));
    stack.routed().await;
    let gateway = stack.gateway();
    let (code, body) = gateway.get(&host("warm"), "/").await;
    assert_eq!(code, 200, "{body}");
    let pid = body["pid"].as_u64().unwrap();
    // Well past the stable window and the grace period: still one instance.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = stack.revision_status("warm-00001").await;
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
    let status = stack
        .wait_for_revision("warm-00001", Duration::from_secs(20), |s| {
            s["crashes"].as_u64() >= Some(1) && s["ready"] == 1
        })
        .await;
    assert!(status["problem"].as_str().is_some(), "{status}");
    let (code, body) = gateway.get(&host("warm"), "/").await;
    assert_eq!(code, 200, "{body}");
    assert_ne!(body["pid"].as_u64().unwrap(), pid);
}

async fn traffic_splits_by_percent_and_tags_address_revisions(shape: Shape) {
    let store = Stack::store(shape).await;
    let v1 = service_yaml(
        "split",
        &[("min-scale", "1")],
        "",
        "{name: VERSION, value: one}",
    );
    let file = write_yaml(store.dir(), "split.yaml", &v1);
    let stack = Stack::start(shape, &store, &[&file], None);
    stack.routed().await;
    let gateway = stack.gateway();
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
    let applied = stack.apply(&file2);
    assert!(applied.status.success(), "{applied:?}");
    // Traffic follows the new revision once it is ready.
    stack
        .wait_for_service("split", Duration::from_secs(20), |s| {
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
    let status = stack.service_status("split").await;
    let shown = status.to_string();
    assert!(
        shown.contains(&format!("http://split.default.{DOMAIN}"))
            && shown.contains("split-00002=80%")
            && shown.contains("split-00001=20%"),
        "{shown}"
    );
    if shape == Shape::Up {
        let services = stack.main.cli_in_place(&["get", "services"]);
        let table = String::from_utf8_lossy(&services.stdout);
        assert!(table.contains("split-00002=80%"), "{table}");
    }
}

async fn unknown_hosts_and_bad_traffic_are_explained(shape: Shape) {
    let store = Stack::store(shape).await;
    let stack = Stack::start(shape, &store, &[], None);
    stack.routed().await;
    let gateway = stack.gateway();
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
    let applied = stack.apply(&file);
    assert!(!applied.status.success());
    let error = String::from_utf8_lossy(&applied.stderr);
    assert!(
        error.contains("spec.traffic[0].revisionName") && error.contains("bad-00007"),
        "{error}"
    );
}

async fn trigger_wakes_a_service_at_zero(shape: Shape, engine: Engine) {
    let store = TestStore::new(engine).await;
    let config = fast_autoscaler(store.dir());
    let yaml = format!(
        "{}---\n{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: to-fn}}\nspec:\n  broker: default\n  subscriber:\n    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: eventfn}}\n",
        broker_yaml("default"),
        service_yaml("eventfn", &[("initial-scale", "0")], "", "")
    );
    let file = write_yaml(store.dir(), "events.yaml", &yaml);
    let stack = Stack::start_with(
        shape,
        &store,
        &[&file],
        Some(&config),
        Extras {
            dispatcher: true,
            ..Extras::default()
        },
    );
    stack.routed().await;
    stack
        .wait_for_revision("eventfn-00001", Duration::from_secs(20), |s| s.is_object())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.revision_status("eventfn-00001").await["ready"], 0);
    let client = reqwest::Client::new();
    let status = send_event(
        &client,
        &stack.main.url("/default/default"),
        "wake-1",
        "com.example.wake",
        &[],
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 202);
    stack
        .wait_for_logs(
            "eventfn",
            "event wake-1 of type com.example.wake",
            Duration::from_secs(30),
        )
        .await;
    let status = stack
        .wait_for_revision("eventfn-00001", Duration::from_secs(5), |s| {
            s["coldStarts"] == 1
        })
        .await;
    assert_eq!(status["coldStarts"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_trigger_wakes_a_service_at_zero() {
    trigger_wakes_a_service_at_zero(Shape::Up, Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_trigger_wakes_a_service_at_zero() {
    trigger_wakes_a_service_at_zero(Shape::Up, Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn split_trigger_wakes_a_service_at_zero() {
    trigger_wakes_a_service_at_zero(Shape::Split, Engine::Postgres).await;
}

/// Starts a service with two instances; returns the stack and the pids of what runs the
/// instances (in the split shape, their queue-proxies too).
async fn running_instances(shape: Shape, store: &TestStore) -> (Stack, Vec<u64>) {
    let file = write_yaml(
        store.dir(),
        "pair.yaml",
        &service_yaml("pair", &[("min-scale", "2")], "", ""),
    );
    let mut stack = Stack::start(shape, store, &[&file], None);
    stack.routed().await;
    stack
        .wait_for_revision("pair-00001", Duration::from_secs(20), |s| s["ready"] == 2)
        .await;
    let gateway = stack.gateway();
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
    let parent = stack.functions().pid();
    let started = children(parent);
    for pid in &pids {
        assert!(started.contains(pid), "{pid} is not among {started:?}");
    }
    if shape == Shape::Split {
        assert!(
            started.len() >= 4,
            "two instances and their queue-proxies: {started:?}"
        );
    }
    (stack, started)
}

async fn no_function_outlives_kinetic_stopping(shape: Shape) {
    let store = Stack::store(shape).await;
    let (mut stack, pids) = running_instances(shape, &store).await;
    let status = stack
        .functions()
        .terminate()
        .expect("kinetic exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", stack.log());
    assert_eq!(
        wait_gone(&pids, Duration::from_secs(5)).await,
        Vec::<u64>::new()
    );
}

async fn no_function_outlives_kinetic_killed(shape: Shape) {
    let store = Stack::store(shape).await;
    let (mut stack, pids) = running_instances(shape, &store).await;
    stack.functions().kill9();
    assert_eq!(
        wait_gone(&pids, Duration::from_secs(5)).await,
        Vec::<u64>::new(),
        "instances left behind after SIGKILL"
    );
}

async fn a_new_revision_that_cannot_start_never_takes_traffic(shape: Shape) {
    let store = Stack::store(shape).await;
    let good = service_yaml("roll", &[("min-scale", "1")], "", "");
    let file = write_yaml(store.dir(), "roll.yaml", &good);
    let stack = Stack::start(shape, &store, &[&file], None);
    stack.routed().await;
    let gateway = stack.gateway();
    let (code, body) = gateway.get(&host("roll"), "/").await;
    assert_eq!((code, body["revision"].as_str()), (200, Some("roll-00001")));
    // A template whose command fails at once: revision 2 is created, crashes, and is not routed.
    let broken = good.replace(
        &format!("[\"{}\"]", support::function_binary().display()),
        "[\"sh\", \"-c\", \"echo cannot start >&2; exit 1\"]",
    );
    let broken_file = write_yaml(store.dir(), "broken.yaml", &broken);
    let applied = stack.apply(&broken_file);
    assert!(applied.status.success(), "{applied:?}");
    let failing = stack
        .wait_for_revision("roll-00002", Duration::from_secs(20), |s| {
            s["crashes"].as_u64() >= Some(1)
        })
        .await;
    assert!(
        failing["problem"]
            .as_str()
            .is_some_and(|p| p.contains("cannot start")),
        "the failure is shown: {failing}"
    );
    let status = stack
        .wait_for_service("roll", Duration::from_secs(5), |s| {
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
    if shape == Shape::Up {
        let revisions = stack.main.cli_in_place(&["get", "revisions"]);
        let table = String::from_utf8_lossy(&revisions.stdout);
        assert!(
            table.contains("cannot start"),
            "the failure is shown: {table}"
        );
    }
}

async fn a_slow_function_gets_504_after_its_timeout(shape: Shape) {
    let store = Stack::store(shape).await;
    let file = write_yaml(
        store.dir(),
        "slow.yaml",
        &service_yaml("slow", &[], "      timeoutSeconds: 1\n", ""),
    );
    let stack = Stack::start(shape, &store, &[&file], None);
    stack.routed().await;
    stack
        .wait_for_revision("slow-00001", Duration::from_secs(20), |s| s["ready"] == 1)
        .await;
    let gateway = stack.gateway();
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
    if shape == Shape::Up {
        let metrics = support::scrape(&stack.main).await;
        assert!(
            support::metric_sum(
                &metrics,
                "kinetic_serving_request_duration_seconds_count",
                &[("revision", "slow-00001")]
            ) >= 1.0,
            "{metrics}"
        );
    }
}

/// A revision that stops being routed is drained: a request in flight on it finishes with its
/// answer before its instance stops.
async fn a_revision_no_longer_routed_finishes_its_requests_first(shape: Shape) {
    let store = Stack::store(shape).await;
    let v1 = service_yaml("drain", &[], "", "{name: VERSION, value: one}");
    let file = write_yaml(store.dir(), "drain.yaml", &v1);
    let stack = Stack::start(shape, &store, &[&file], None);
    stack.routed().await;
    stack
        .wait_for_revision("drain-00001", Duration::from_secs(20), |s| s["ready"] == 1)
        .await;
    let gateway = std::sync::Arc::new(stack.gateway());
    let slow = {
        let gateway = gateway.clone();
        tokio::spawn(async move { gateway.get(&host("drain"), "/?sleep_ms=3000").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Revision 2 takes all the traffic: revision 1 is no longer routed and stops.
    let v2 = service_yaml("drain", &[], "", "{name: VERSION, value: two}");
    let file2 = write_yaml(store.dir(), "drain2.yaml", &v2);
    let applied = stack.apply(&file2);
    assert!(applied.status.success(), "{applied:?}");
    stack
        .wait_for_service("drain", Duration::from_secs(20), |s| {
            s["latestRevision"] == "drain-00002"
        })
        .await;
    let (code, body) = slow.await.unwrap();
    assert_eq!(
        (code, body["revision"].as_str()),
        (200, Some("drain-00001")),
        "{body}\n{}",
        stack.log()
    );
    let (code, body) = gateway.get(&host("drain"), "/").await;
    assert_eq!(
        (code, body["revision"].as_str()),
        (200, Some("drain-00002"))
    );
}

/// Split shape: an activator or a gateway replica killed mid-load loses no request that its
/// client retried (to the same gateway, or to the other one).
#[tokio::test(flavor = "multi_thread")]
async fn split_a_killed_activator_or_gateway_loses_no_retried_request() {
    let store = Stack::store(Shape::Split).await;
    let file = write_yaml(
        store.dir(),
        "steady.yaml",
        &service_yaml("steady", &[("min-scale", "1")], "", ""),
    );
    let mut stack = Stack::start_with(
        Shape::Split,
        &store,
        &[&file],
        None,
        Extras {
            activators: 2,
            gateways: 2,
            dispatcher: false,
        },
    );
    stack.routed().await;
    stack
        .wait_for_revision("steady-00001", Duration::from_secs(20), |s| s["ready"] == 1)
        .await;
    let gateways: Vec<String> = stack
        .gateways
        .iter()
        .map(|g| format!("http://{}", g.address))
        .collect();
    let client = reqwest::Client::new();
    let total = 200usize;
    let concurrency = 20usize;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, gateways) = (client.clone(), gateways.clone());
            let (next, answered, retried) = (next.clone(), answered.clone(), retried.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    // A client that retries: the next gateway after a failure.
                    let mut ok = false;
                    for attempt in 0..10 {
                        let base = &gateways[(worker + attempt) % gateways.len()];
                        let sent = client
                            .get(format!("{base}/?sleep_ms=30"))
                            .header("host", host("steady"))
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status() == 200 => {
                                ok = true;
                                break;
                            }
                            Ok(response) => failures.push(response.status().to_string()),
                            Err(error) => failures.push(error.to_string()),
                        }
                        retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    assert!(ok, "a request failed ten times: {failures:?}");
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Mid-load, one activator and then one gateway die.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(std::sync::atomic::Ordering::Relaxed) < total / 4 {
        assert!(Instant::now() < deadline, "no progress\n{}", stack.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.activators[0].kill9();
    while answered.load(std::sync::atomic::Ordering::Relaxed) < total / 2 {
        assert!(Instant::now() < deadline, "no progress\n{}", stack.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.gateways[0].kill9();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), total);
    eprintln!(
        "{total} answered, {} retries by the client",
        retried.load(std::sync::atomic::Ordering::Relaxed)
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
    let mut function = std::process::Command::new(support::function_binary())
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
