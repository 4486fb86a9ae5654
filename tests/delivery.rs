//! End-to-end delivery: the real kinetic driven over HTTP, with real subscribers: `kinetic up` on
//! SQLite, on PostgreSQL and with Kafka-class brokers, and `kinetic broker` + `kinetic dispatcher`
//! as separate processes on PostgreSQL, as kinetic scales out. Every body runs once per shape
//! (see [`engines!`]).
//!
//! # Layout
//! - this file: the fixture ([`World`]: a store, a `kinetic up` on a resource file, an HTTP client)
//!   and [`Ce`], a binary-mode CloudEvent to post;
//! - `delivery/*.rs`: one file per behaviour a user relies on: filters, what a subscriber receives,
//!   retries, dead letters, replies, dedupe, ordered lanes, dead-letter replay, resource lifecycle,
//!   shutdown and restart, webhook subscriptions (signatures, the egress guard, 410 Gone), and
//!   each subscriber's adaptive concurrency.
//!
//! Waits are bounded ([`WAIT`]); "nothing more arrives" is checked over a [`QUIET`] window after the
//! expected deliveries arrived. Timing assertions allow 0.8× the expected gap below and 1.5 s above.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Engine, Kinetic, Received, TestStore, documents, write_yaml};

/// Generates `#[tokio::test]`s `NAME::sqlite`, `NAME::postgres`, `NAME::kafka` (SQLite state, a
/// Kafka-class broker) and `NAME::split` (broker and dispatcher processes on PostgreSQL) for each
/// `async fn NAME(Engine)` of the module it is used in.
macro_rules! engines {
    ($($body:ident),+ $(,)?) => {$(
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(crate::support::Engine::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(crate::support::Engine::Postgres).await;
            }

            /// The same behaviour with the broker of the Kafka class.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kafka() {
                if crate::support::kafka_available() {
                    super::$body(crate::support::Engine::Kafka).await;
                }
            }

            /// The same behaviour with the ingress and delivery in processes of their own.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn split() {
                super::$body(crate::support::Engine::Split).await;
            }
        }
    )+};
}

#[path = "delivery/concurrency.rs"]
mod concurrency;
#[path = "delivery/contents.rs"]
mod contents;
#[path = "delivery/dead_letters.rs"]
mod dead_letters;
#[path = "delivery/dedupe.rs"]
mod dedupe;
#[path = "delivery/filters.rs"]
mod filters;
#[path = "delivery/lifecycle.rs"]
mod lifecycle;
#[path = "delivery/ordering.rs"]
mod ordering;
#[path = "delivery/pipelining.rs"]
mod pipelining;
#[path = "delivery/replay.rs"]
mod replay;
#[path = "delivery/replies.rs"]
mod replies;
#[path = "delivery/retention.rs"]
mod retention;
#[path = "delivery/retries.rs"]
mod retries;
#[path = "delivery/shutdown.rs"]
mod shutdown;
#[path = "delivery/webhooks.rs"]
mod webhooks;

/// Longest wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long to watch for deliveries that should not happen, after the expected ones arrived.
pub const QUIET: Duration = Duration::from_secs(1);

/// One test's kinetic: its store, the process (`kinetic up -f resources.yaml`; on
/// [`Engine::Split`], `kinetic broker` with the resources applied through its admin API, and a
/// `kinetic dispatcher` beside it) and a client.
pub struct World {
    // Declared before `store`: the processes stop before their database is dropped.
    /// `kinetic up`, or the broker of the split shape: ingress, admin API, CLI.
    pub kinetic: Kinetic,
    /// The dispatcher of the split shape.
    pub dispatcher: Option<Kinetic>,
    pub store: TestStore,
    pub client: reqwest::Client,
    /// The resource file kinetic watches (applied with `kinetic apply` in the split shape).
    pub file: PathBuf,
    /// The documents of the file.
    docs: Vec<String>,
    env: Vec<(String, String)>,
}

impl World {
    /// Starts kinetic on a fresh store of `engine` with the YAML documents `docs` (a broker named
    /// `default` is added).
    pub async fn start(engine: Engine, docs: &[String]) -> Self {
        Self::start_with_env(engine, docs, &[]).await
    }

    /// [`World::start`] with environment variables for kinetic (e.g. signing secrets, or
    /// `KINETIC_EGRESS_ALLOW`, which otherwise allows loopback).
    pub async fn start_with_env(engine: Engine, docs: &[String], env: &[(&str, &str)]) -> Self {
        let store = TestStore::new(engine).await;
        let mut all = vec![store.broker_yaml("default")];
        all.extend(docs.iter().cloned());
        let file = write_yaml(store.dir(), "resources.yaml", &documents(&all));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (kinetic, dispatcher) = tokio::task::block_in_place(|| start(&store, &file, &env));
        Self {
            kinetic,
            dispatcher,
            store,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            file,
            docs: all,
            env,
        }
    }

    /// Stops every process with SIGTERM; the exit statuses (`None`: still running after the
    /// grace).
    pub fn terminate(&mut self) -> Vec<Option<std::process::ExitStatus>> {
        let mut statuses = Vec::new();
        // The dispatcher first, as a rolling update would stop it: its in-flight deliveries
        // finish.
        if let Some(dispatcher) = &mut self.dispatcher {
            statuses.push(dispatcher.terminate());
        }
        statuses.push(self.kinetic.terminate());
        statuses
    }

    /// Starts the processes again on the same store, without resource files: what is applied
    /// is in the store.
    pub fn restart(&mut self) {
        let (kinetic, dispatcher) = if self.store.engine == Engine::Split {
            start_split(&self.store, None, &self.env)
        } else {
            (Kinetic::up(&self.store, &[]), None)
        };
        self.kinetic = kinetic;
        self.dispatcher = dispatcher;
    }

    /// The ingress URL of broker `default/NAME`.
    pub fn broker(&self, name: &str) -> String {
        self.kinetic.url(&format!("/default/{name}"))
    }

    /// Posts every event to broker `default/broker`, in order, asserting each is accepted.
    pub async fn send(&self, broker: &str, events: &[Ce]) {
        for event in events {
            let status = event.send(&self.client, &self.broker(broker)).await;
            assert_eq!(status, 202, "posting event {}", event.id());
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .kinetic
            .api()
            .get(self.kinetic.admin(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .kinetic
            .api()
            .post(self.kinetic.admin(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.kinetic
            .api()
            .delete(self.kinetic.admin(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
            .status()
            .as_u16()
    }

    /// `GET /api/v1/deadletters?trigger=default/NAME`.
    pub async fn dead_letters(&self, trigger: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/v1/deadletters?trigger=default/{trigger}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until trigger `NAME` has `count` dead letters that all satisfy `done` (bounded by
    /// [`WAIT`]), and returns them.
    pub async fn wait_dead_letters(
        &self,
        trigger: &str,
        count: usize,
        done: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let letters = self.dead_letters(trigger).await;
            if (letters.len() >= count && letters.iter().all(&done))
                || std::time::Instant::now() >= deadline
            {
                return letters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `docs` (after the `default` broker) over the resource file kinetic watches, aside
    /// and renamed, so kinetic never reads a half-written file. In the split shape, as a user
    /// would: `kinetic apply -f` the file, then `kinetic delete` what it no longer holds.
    pub fn rewrite(&mut self, docs: &[String]) {
        let mut all = vec![self.store.broker_yaml("default")];
        all.extend(docs.iter().cloned());
        let next = self.file.with_extension("next");
        std::fs::write(&next, documents(&all)).expect("write the new resource file");
        std::fs::rename(&next, &self.file).expect("replace the resource file");
        if self.store.engine == Engine::Split {
            let file = self.file.display().to_string();
            let applied = self.kinetic.cli(&["apply", "-f", &file]);
            assert!(applied.status.success(), "kinetic apply: {applied:?}");
            let kept: Vec<(String, String)> = all.iter().map(|doc| key(doc)).collect();
            for (kind, name) in self.docs.iter().map(|doc| key(doc)) {
                if !kept.contains(&(kind.clone(), name.clone())) {
                    let deleted = self.kinetic.cli(&["delete", &kind.to_lowercase(), &name]);
                    assert!(deleted.status.success(), "kinetic delete: {deleted:?}");
                }
            }
        }
        self.docs = all;
    }

    /// Waits until `GET /api/v1/triggers/default/NAME` satisfies `done` (bounded by [`WAIT`]), and
    /// returns the trigger as last read.
    pub async fn wait_trigger(&self, name: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (status, trigger) = self.get(&format!("/api/v1/triggers/default/{name}")).await;
            if (status == 200 && done(&trigger)) || std::time::Instant::now() >= deadline {
                return trigger;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The processes' logs so far, for assertion messages.
    pub fn log(&self) -> String {
        match &self.dispatcher {
            Some(dispatcher) => format!(
                "broker:\n{}\ndispatcher:\n{}",
                self.kinetic.log(),
                dispatcher.log()
            ),
            None => self.kinetic.log(),
        }
    }

    /// The metrics of every process, one text after the other.
    pub async fn scrape(&self) -> String {
        let mut text = support::scrape(&self.kinetic).await;
        if let Some(dispatcher) = &self.dispatcher {
            let response = self
                .client
                .get(dispatcher.url("/metrics"))
                .bearer_auth(&self.kinetic.token)
                .send()
                .await
                .expect("GET the dispatcher's /metrics");
            assert_eq!(response.status().as_u16(), 200);
            text.push_str(&response.text().await.expect("metrics text"));
        }
        text
    }
}

/// `kinetic up -f file`, or the split shape with `file` applied.
fn start(store: &TestStore, file: &Path, env: &[(String, String)]) -> (Kinetic, Option<Kinetic>) {
    if store.engine == Engine::Split {
        return start_split(store, Some(file), env);
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (Kinetic::up_with_env(store, &[file], &[], &env), None)
}

/// `kinetic broker`, `file` applied through its admin API, then `kinetic dispatcher`. They share
/// the state directory, as pods share mounted Secrets: the admin token and kinetic's signing key.
fn start_split(
    store: &TestStore,
    file: Option<&Path>,
    env: &[(String, String)],
) -> (Kinetic, Option<Kinetic>) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let state = store.dir().display().to_string();
    let shared = ["--state-dir", state.as_str()];
    let broker = Kinetic::broker(store, &shared, &env);
    if let Some(file) = file {
        let applied = broker.cli(&["apply", "-f", &file.display().to_string()]);
        assert!(
            applied.status.success(),
            "kinetic apply: {applied:?}\n{}",
            broker.log()
        );
    }
    let issuer = broker.base_url.clone();
    let dispatcher = Kinetic::dispatcher(
        store,
        &broker,
        &[
            "--state-dir",
            state.as_str(),
            "--issuer-url",
            issuer.as_str(),
        ],
        &env,
    );
    (broker, Some(dispatcher))
}

/// A YAML document's kind and name.
fn key(doc: &str) -> (String, String) {
    let value: Value = serde_saphyr::from_str(doc).expect("a resource document");
    (
        value["kind"].as_str().unwrap_or_default().to_owned(),
        value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// A binary-mode CloudEvent to post (specversion 1.0, source `/e2e` unless set).
#[derive(Debug, Clone)]
pub struct Ce {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Ce {
    pub fn new(id: &str, ty: &str) -> Self {
        Self {
            headers: vec![
                ("ce-specversion".into(), "1.0".into()),
                ("ce-id".into(), id.into()),
                ("ce-source".into(), "/e2e".into()),
                ("ce-type".into(), ty.into()),
            ],
            body: Vec::new(),
        }
    }

    /// Sets attribute `name` (`ce-NAME`), replacing a value set before.
    pub fn attr(mut self, name: &str, value: &str) -> Self {
        let header = format!("ce-{name}");
        self.headers.retain(|(n, _)| *n != header);
        self.headers.push((header, value.to_owned()));
        self
    }

    pub fn source(self, source: &str) -> Self {
        self.attr("source", source)
    }

    pub fn data(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers.retain(|(n, _)| n != "content-type");
        self.headers
            .push(("content-type".into(), content_type.to_owned()));
        self.body = body.into();
        self
    }

    pub fn id(&self) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == "ce-id")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    /// Posts the event; returns the response (status and body).
    pub async fn post(&self, client: &reqwest::Client, url: &str) -> (u16, Value) {
        let mut request = client.post(url).body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, client: &reqwest::Client, url: &str) -> u16 {
        self.post(client, url).await.0
    }
}

/// The `ce-id`s of deliveries, in arrival order.
pub fn ids(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.header("ce-id").unwrap_or("<no ce-id>").to_owned())
        .collect()
}

/// The same ids, sorted (to compare sets while still seeing duplicates).
pub fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Time between consecutive deliveries.
pub fn gaps(got: &[Received]) -> Vec<Duration> {
    got.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// A measured gap is at least 0.8× the expected one and at most 1.5 s more.
pub fn assert_gap(gap: Duration, expected: Duration, what: &str) {
    let low = expected.mul_f64(0.8);
    let high = expected + Duration::from_millis(1500);
    assert!(
        gap >= low && gap <= high,
        "{what}: measured {gap:?}, expected {expected:?} (allowed {low:?}..={high:?})"
    );
}
