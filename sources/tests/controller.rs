//! The sources controller's reconcile decisions, in process: stored sources (in an in-memory
//! SQLite store) and what `kinetic get sources` shows of them after a pass. Sinks are resolved by
//! a closure that knows one broker; nothing is sent.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, Timelike};
use kinetic_sources::{SourceStatus, Sources};
use kinetic_store::Store;

struct World {
    store: Arc<dyn Store>,
    sources: Arc<Sources>,
}

impl World {
    async fn new() -> World {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        // Only the broker `default/default` resolves; everything else is refused with a reason.
        let resolve: kinetic_sources::Resolve = Arc::new(
            |destination, namespace| match destination.reference.as_ref() {
                Some(r) if r.kind == "Broker" && r.name == "default" => Ok((
                    format!("http://127.0.0.1:9/{namespace}/default"),
                    Some(format!("eventing.knative.dev/broker/{namespace}/default")),
                )),
                _ => Err("no such destination in this test".to_owned()),
            },
        );
        let sink = kinetic_sources::Sink::new(Arc::new(|_: &reqwest::Url| {
            Err("nothing is sent in these tests".to_owned())
        }));
        let sources = Sources::new(
            store.clone(),
            sink,
            resolve,
            kinetic_sources::metrics::Metrics::new(&mut Default::default()),
        )
        .unwrap();
        World { store, sources }
    }

    async fn apply(&self, yaml: &str) {
        for resource in kinetic_api::parse_documents("sources.yaml", yaml).unwrap() {
            let key = resource.key();
            self.store
                .apply_resource(&key.kind, &key.namespace, &key.name, &resource.to_json(), 0)
                .await
                .unwrap();
        }
    }

    async fn reconcile(&self) {
        self.sources.reconcile().await.unwrap();
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
