//! The sources controller's reconcile decisions, in process: stored sources (in an in-memory
//! SQLite store) and what `kinetic get sources` shows of them after a pass. Sinks are resolved by
//! a closure that knows one broker: nothing is sent, or, for a world with a receiver, the broker is
//! that receiver. Schedules run on a clock the test sets.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use kinetic_sources::{Clock, SourceStatus, Sources};
use kinetic_store::Store;
use kinetic_testkit::receiver::Receiver;

struct World {
    store: Arc<dyn Store>,
    sources: Arc<Sources>,
    clock: Clock,
}

impl World {
    /// Sinks resolve but refuse every send; the system clock.
    async fn new() -> World {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        World::on(store, None, Clock::system())
    }

    /// A controller of `store` (another process, when the store is shared) whose broker
    /// `default/default` is `receiver` (else it refuses every send), on `clock`.
    fn on(store: Arc<dyn Store>, receiver: Option<&Receiver>, clock: Clock) -> World {
        let broker = receiver.map_or("http://127.0.0.1:9".to_owned(), |r| r.url(""));
        // Only the broker `default/default` resolves; everything else is refused with a reason.
        let resolve: kinetic_sources::Resolve =
            Arc::new(
                move |destination, namespace| match destination.reference.as_ref() {
                    Some(r) if r.kind == "Broker" && r.name == "default" => Ok((
                        format!("{broker}/{namespace}/default"),
                        Some(format!("eventing.knative.dev/broker/{namespace}/default")),
                    )),
                    _ => Err("no such destination in this test".to_owned()),
                },
            );
        let sends = receiver.is_some();
        let sink = kinetic_sources::Sink::new(Arc::new(move |_: &reqwest::Url| {
            if sends {
                Ok(reqwest::Client::new())
            } else {
                Err("nothing is sent in these tests".to_owned())
            }
        }));
        // Driven pass by pass here ([`World::reconcile`]); its own watch is never read.
        let sources = Sources::new(
            store.clone(),
            kinetic_resources::Watch::fixed(kinetic_resources::Snapshot::default()),
            sink,
            resolve,
            kinetic_sources::metrics::Metrics::new(&mut Default::default()),
            clock.clone(),
        )
        .unwrap();
        World {
            store,
            sources,
            clock,
        }
    }

    /// Applies resources as the control plane does, at the world's clock's time.
    async fn apply(&self, yaml: &str) {
        let now = self.clock.now().timestamp_millis();
        for resource in kinetic_api::parse_documents("sources.yaml", yaml).unwrap() {
            let key = resource.key();
            self.store
                .apply_resource(
                    key.kind.as_str(),
                    &key.namespace,
                    &key.name,
                    &resource.to_json(),
                    now,
                )
                .await
                .unwrap();
        }
    }

    /// One controller pass over what the store holds now.
    async fn reconcile(&self) {
        let resources = kinetic_resources::Snapshot::new(self.store.all_resources().await.unwrap());
        self.sources.reconcile(&resources);
    }

    fn status(&self, name: &str) -> Option<SourceStatus> {
        self.sources.status().into_iter().find(|s| s.name == name)
    }

    /// Lets the sources' tasks (on this test's single thread) run.
    async fn settle(&self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WEBHOOK: &str = "apiVersion: sources.kinetic.dev/v1alpha1
kind: WebhookSource
metadata: {name: hook}
spec:
  insecure: true
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
";

fn ping(name: &str, schedule: &str, sink: &str) -> String {
    format!(
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: {name}}}\nspec:\n  schedule: '{schedule}'\n  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: {sink}, name: default}}}}\n"
    )
}

#[tokio::test]
async fn a_webhook_source_is_ready_with_its_resolved_sink() {
    let world = World::new().await;
    world.apply(WEBHOOK).await;
    world.reconcile().await;
    let status = world.status("hook").expect("listed");
    assert_eq!(status.kind, "WebhookSource");
    assert!(status.ready, "{status:?}");
    assert_eq!(
        status.sink.as_deref(),
        Some("http://127.0.0.1:9/default/default")
    );
    assert_eq!(status.last_error, None);
}

#[tokio::test]
async fn a_source_whose_sink_does_not_resolve_is_not_ready_and_says_why() {
    let world = World::new().await;
    world
        .apply(&WEBHOOK.replace("kind: Broker", "kind: Service"))
        .await;
    world.apply(&ping("tick", "* * * * *", "Service")).await;
    world.reconcile().await;
    for name in ["hook", "tick"] {
        let status = world.status(name).expect("listed");
        assert!(!status.ready, "{status:?}");
        let error = status.last_error.unwrap_or_default();
        assert!(
            error.starts_with("not ready:") && error.contains("no such destination"),
            "{name}: {error}"
        );
    }
    // Fixed: ready at the next pass.
    world.apply(WEBHOOK).await;
    world.reconcile().await;
    assert!(world.status("hook").unwrap().ready);
}

#[tokio::test]
async fn a_ping_source_runs_once_and_restarts_on_a_new_schedule() {
    let world = World::new().await;
    world.apply(&ping("tick", "0 0 1 1 *", "Broker")).await;
    world.reconcile().await;
    world.settle().await;
    let next = world.status("tick").unwrap().next_at.expect("next tick");
    assert_eq!((next.month(), next.day(), next.hour()), (1, 1, 0));
    // Another pass keeps the running task: the next tick is the same.
    world.reconcile().await;
    world.settle().await;
    assert_eq!(world.status("tick").unwrap().next_at, Some(next));

    // A new generation (another schedule) replaces the task.
    world.apply(&ping("tick", "0 12 1 7 *", "Broker")).await;
    world.reconcile().await;
    world.settle().await;
    let next = world.status("tick").unwrap().next_at.expect("next tick");
    assert_eq!((next.month(), next.day(), next.hour()), (7, 1, 12));
}

#[tokio::test]
async fn a_deleted_source_is_no_longer_listed() {
    let world = World::new().await;
    world.apply(WEBHOOK).await;
    world.apply(&ping("tick", "0 0 1 1 *", "Broker")).await;
    world.reconcile().await;
    assert!(world.status("hook").is_some() && world.status("tick").is_some());
    for (kind, name) in [("WebhookSource", "hook"), ("PingSource", "tick")] {
        world
            .store
            .delete_resource(kind, "default", name)
            .await
            .unwrap();
    }
    world.reconcile().await;
    assert!(
        world.sources.status().is_empty(),
        "{:?}",
        world.sources.status()
    );
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// The `ce-time` of every tick `receiver` got.
fn tick_times(receiver: &Receiver) -> Vec<String> {
    receiver
        .received("/default/default")
        .iter()
        .map(|r| r.header("ce-time").unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_ping_source_fires_each_tick_once_across_controllers_sharing_a_store() {
    let store = kinetic_store::open("sqlite::memory:").await.unwrap();
    let receiver = Receiver::start().await;
    let clock = Clock::manual(at("2026-03-01T10:00:30Z"));
    let first = World::on(store.clone(), Some(&receiver), clock.clone());
    first.apply(&ping("tick", "* * * * *", "Broker")).await;
    first.reconcile().await;
    first.settle().await;
    assert_eq!(
        first.status("tick").unwrap().next_at,
        Some(at("2026-03-01T10:01:00Z"))
    );
    assert!(tick_times(&receiver).is_empty(), "fired before its tick");

    // The minute comes: one tick, for that minute.
    clock.set(at("2026-03-01T10:01:00Z"));
    let got = receiver
        .wait_for("/default/default", 1, Duration::from_secs(10))
        .await;
    assert_eq!(tick_times(&receiver), ["2026-03-01T10:01:00Z"], "{got:?}");
    let tick = &got[0];
    assert_eq!(tick.header("ce-type"), Some("dev.knative.sources.ping"));
    assert_eq!(
        tick.header("ce-source"),
        Some("/apis/v1/namespaces/default/pingsources/tick")
    );

    // A second controller on the same store (another process, or this one restarted) does not
    // fire that minute again, and waits for the next.
    let second = World::on(store.clone(), Some(&receiver), clock.clone());
    second.reconcile().await;
    second.settle().await;
    assert_eq!(
        second.status("tick").unwrap().next_at,
        Some(at("2026-03-01T10:02:00Z"))
    );

    // Both were away for minutes: the latest missed tick fires, once, from one of them.
    clock.set(at("2026-03-01T10:05:30Z"));
    receiver
        .wait_for("/default/default", 2, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tick_times(&receiver),
        ["2026-03-01T10:01:00Z", "2026-03-01T10:05:00Z"]
    );
    let fired: u64 = [&first, &second]
        .iter()
        .map(|w| w.status("tick").unwrap().events)
        .sum();
    assert_eq!(fired, 2);
}
