//! End-to-end delivery: the real `kinetic up` driven over HTTP, with real subscribers, on SQLite and
//! on PostgreSQL. Every body runs once per engine (see [`engines!`]).
//!
//! # Layout
//! - this file: the fixture ([`World`]: a store, a `kinetic up` on a resource file, an HTTP client)
//!   and [`Ce`], a binary-mode CloudEvent to post;
//! - `delivery/*.rs`: one file per behaviour a user relies on: filters, what a subscriber receives,
//!   retries, dead letters, replies, dedupe, ordered lanes, dead-letter replay, resource lifecycle,
//!   shutdown and restart, webhook subscriptions (signatures, the egress guard, 410 Gone).
//!
//! Waits are bounded ([`WAIT`]); "nothing more arrives" is checked over a [`QUIET`] window after the
//! expected deliveries arrived. Timing assertions allow 0.8× the expected gap below and 1.5 s above.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::{Engine, Kinetic, Received, TestStore, documents, write_yaml};

/// Generates `#[tokio::test]`s `NAME::sqlite`, `NAME::postgres` and `NAME::kafka` (SQLite state, a
/// Kafka-class broker) for each `async fn NAME(Engine)` of the module it is used in.
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
        }
    )+};
}

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

/// One test's kinetic: its store, the process (`kinetic up -f resources.yaml`) and a client.
pub struct World {
    // Declared before `store`: the process stops before its database is dropped.
    pub kinetic: Kinetic,
    pub store: TestStore,
    pub client: reqwest::Client,
    /// The resource file kinetic watches.
    pub file: PathBuf,
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
        let kinetic =
            tokio::task::block_in_place(|| Kinetic::up_with_env(&store, &[&file], &[], env));
        Self {
            kinetic,
            store,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            file,
        }
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
    /// and renamed, so kinetic never reads a half-written file.
    pub fn rewrite(&self, docs: &[String]) {
        let mut all = vec![self.store.broker_yaml("default")];
        all.extend(docs.iter().cloned());
        let next = self.file.with_extension("next");
        std::fs::write(&next, documents(&all)).expect("write the new resource file");
        std::fs::rename(&next, &self.file).expect("replace the resource file");
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

    /// The process's log so far, for assertion messages.
    pub fn log(&self) -> String {
        self.kinetic.log()
    }
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
