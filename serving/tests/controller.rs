//! The serving controller's reconcile decisions, in process: stored Services and Revisions (in an
//! in-memory SQLite store) against a runtime that only records what it is asked and reports the
//! instances a test makes ready. No process is started and no port is opened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kinetic_api::Resource;
use kinetic_serving::controller::ServiceView;
use kinetic_serving::revision::{self, Next};
use kinetic_serving::runtime::{
    ExecAllow, Instance, InstanceSpec, LogLine, RevisionStatus, Runtime,
};
use kinetic_serving::{Gateway, Serving, ServingConfig};
use kinetic_store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A runtime that runs nothing: it records every `scale` and publishes the ready instances a test
/// sets with [`FakeRuntime::ready`].
#[derive(Default)]
struct FakeRuntime {
    scaled: Mutex<Vec<(Arc<InstanceSpec>, u32)>>,
    instances: Mutex<HashMap<String, watch::Sender<Vec<Arc<Instance>>>>>,
}

impl FakeRuntime {
    fn channel(&self, revision: &str) -> watch::Sender<Vec<Arc<Instance>>> {
        self.instances
            .lock()
            .unwrap()
            .entry(revision.to_owned())
            .or_insert_with(|| watch::channel(Vec::new()).0)
            .clone()
    }

    /// `revision` has one ready instance.
    fn ready(&self, revision: &str) {
        let instance = Arc::new(Instance::new(1, "127.0.0.1:9".parse().unwrap()));
        self.channel(revision).send_replace(vec![instance]);
    }

    /// The last `desired` asked for `revision`, if any.
    fn last_scale(&self, revision: &str) -> Option<u32> {
        self.scaled
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(spec, _)| spec.revision == revision)
            .map(|(_, desired)| *desired)
    }

    /// Every `scale` of `revision`, in order: the `GREETING` its spec sets, and `desired`.
    fn scales(&self, revision: &str) -> Vec<(String, u32)> {
        self.scaled
            .lock()
            .unwrap()
            .iter()
            .filter(|(spec, _)| spec.revision == revision)
            .map(|(spec, desired)| {
                let greeting = spec
                    .env
                    .iter()
                    .find(|(name, _)| name == "GREETING")
                    .map(|(_, value)| format!("{value:?}"))
                    .unwrap_or_default();
                (greeting, *desired)
            })
            .collect()
    }
}

impl Runtime for FakeRuntime {
    fn scale(&self, spec: Arc<InstanceSpec>, desired: u32) {
        self.scaled.lock().unwrap().push((spec, desired));
    }

    fn instances(&self, _namespace: &str, revision: &str) -> watch::Receiver<Vec<Arc<Instance>>> {
        self.channel(revision).subscribe()
    }

    fn status(&self, _namespace: &str, _revision: &str) -> RevisionStatus {
        RevisionStatus::default()
    }

    fn logs(&self, _namespace: &str, _service: &str, _limit: usize) -> Vec<LogLine> {
        Vec::new()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

struct World {
    store: Arc<dyn Store>,
    runtime: Arc<FakeRuntime>,
    serving: Arc<Serving>,
    cancel: CancellationToken,
}

impl World {
    async fn new() -> World {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        let runtime = Arc::new(FakeRuntime::default());
        // The controller is driven pass by pass here ([`World::reconcile`]); its own watch is never
        // read.
        let serving = Serving::new(
            kinetic_resources::Watch::fixed(kinetic_resources::Snapshot::default()),
            runtime.clone(),
            Gateway::new("example.test"),
            ServingConfig {
                domain: "example.test".into(),
                gateway_port: 8081,
                activation_timeout: Duration::from_secs(1),
                activator_capacity: 10,
                autoscaler: Default::default(),
                exec_allow: ExecAllow::new(&[]).unwrap(),
                containers: false,
            },
            kinetic_serving::metrics::Metrics::new(&mut Default::default()),
        );
        World {
            store,
            runtime,
            serving,
            cancel: CancellationToken::new(),
        }
    }

    /// Applies a Service as the control plane does: the Service, then its next revision.
    async fn apply(&self, yaml: &str) {
        let Resource::Service(service) = kinetic_api::parse_documents("svc.yaml", yaml)
            .unwrap()
            .remove(0)
        else {
            panic!("not a Service")
        };
        let existing: Vec<kinetic_api::Revision> = self
            .store
            .list_resources("Revision", None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| serde_json::from_value(r.body).unwrap())
            .collect();
        let body = serde_json::to_value(&service).unwrap();
        let (namespace, name) = (&service.metadata.namespace, &service.metadata.name);
        self.store
            .apply_resource("Service", namespace, name, &body, 0)
            .await
            .unwrap();
        if let Ok(Next::Create(revision)) = revision::next(&service, &existing) {
            let body = serde_json::to_value(&*revision).unwrap();
            self.store
                .apply_resource("Revision", namespace, &revision.metadata.name, &body, 0)
                .await
                .unwrap();
        }
    }

    /// One controller pass over what the store holds now.
    async fn reconcile(&self) {
        let resources = kinetic_resources::Snapshot::new(self.store.all_resources().await.unwrap());
        self.serving.reconcile(&resources, &self.cancel);
    }

    fn service(&self, name: &str) -> ServiceView {
        self.serving
            .services()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    fn served(&self) -> Vec<String> {
        let mut served: Vec<String> = self
            .serving
            .served()
            .into_iter()
            .map(|(_, revision)| revision)
            .collect();
        served.sort();
        served
    }

    /// Lets the revisions' scale loops (tasks on this test's single thread) take in what changed.
    async fn settle(&self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Waits (bounded) until `revision` is the one `latestRevision` routes to. Only meaningful
    /// once an older revision has been ready: before that, the newest one is routed to anyway.
    async fn until_latest(&self, revision: &str) {
        for _ in 0..200 {
            self.reconcile().await;
            if self.service_of(revision).latest_revision.as_deref() == Some(revision) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{revision} never became the latest ready revision");
    }

    fn service_of(&self, revision: &str) -> ServiceView {
        let service = revision.rsplit_once('-').unwrap().0;
        self.service(service)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn service(name: &str, greeting: &str, annotations: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  template:\n    metadata: {{annotations: {{{annotations}}}}}\n    spec:\n      containers: [{{command: [fn], env: [{{name: GREETING, value: {greeting}}}]}}]\n"
    )
}

#[tokio::test]
async fn a_service_routes_to_its_revision() {
    let world = World::new().await;
    world.apply(&service("hello", "hi", "")).await;
    world.reconcile().await;
    let view = world.service("hello");
    assert_eq!(view.url, "http://hello.default.example.test:8081");
    assert_eq!(view.latest_created_revision.as_deref(), Some("hello-00001"));
    assert_eq!(view.traffic, ["hello-00001=100%"]);
    assert!(view.ready, "{view:?}");
    assert_eq!(world.served(), ["hello-00001"]);
    // Reconciling again changes nothing and starts nothing twice.
    world.reconcile().await;
    assert_eq!(world.served(), ["hello-00001"]);
}

#[tokio::test]
async fn a_new_revision_takes_traffic_only_once_it_is_ready() {
    let world = World::new().await;
    world.apply(&service("hello", "hi", "")).await;
    world.reconcile().await;
    world.runtime.ready("hello-00001");
    world.settle().await;

    // A new template: its revision runs so that it can become ready, but the traffic stays with
    // the revision that works until then, as Knative's route does.
    world.apply(&service("hello", "hello", "")).await;
    world.reconcile().await;
    let view = world.service("hello");
    assert_eq!(view.latest_created_revision.as_deref(), Some("hello-00002"));
    assert_eq!(view.traffic, ["hello-00001=100%"]);
    assert_eq!(world.served(), ["hello-00001", "hello-00002"]);

    world.runtime.ready("hello-00002");
    world.until_latest("hello-00002").await;
    assert_eq!(world.service("hello").traffic, ["hello-00002=100%"]);
    // The old revision gets no traffic any more: it is stopped.
    assert_eq!(world.served(), ["hello-00002"]);
    assert_eq!(world.runtime.last_scale("hello-00001"), Some(0));
}

#[tokio::test]
async fn a_deleted_service_stops_its_revisions() {
    let world = World::new().await;
    world.apply(&service("hello", "hi", "")).await;
    world.apply(&service("other", "hi", "")).await;
    world.reconcile().await;
    assert_eq!(world.served(), ["hello-00001", "other-00001"]);
    world
        .store
        .delete_resource("Service", "default", "hello")
        .await
        .unwrap();
    world.reconcile().await;
    assert_eq!(world.served(), ["other-00001"]);
    assert_eq!(world.runtime.last_scale("hello-00001"), Some(0));
    assert!(world.serving.services().iter().all(|s| s.name != "hello"));
}

#[tokio::test]
async fn a_revision_that_cannot_start_says_why_and_its_service_is_not_ready() {
    let world = World::new().await;
    // Stored by an older kinetic that did not check annotations: this one refuses it at start.
    world
        .apply(&service(
            "broken",
            "hi",
            "autoscaling.knative.dev/target: 'many'",
        ))
        .await;
    world.reconcile().await;
    assert!(world.served().is_empty());
    let view = world.service("broken");
    assert!(!view.ready, "{view:?}");
    let revision = world
        .serving
        .revisions()
        .into_iter()
        .find(|r| r.name == "broken-00001")
        .expect("the revision is listed with its problem");
    let problem = revision.problem.unwrap_or_default();
    assert!(problem.contains("target"), "{problem}");
    assert!(world.runtime.last_scale("broken-00001").is_none());
}

#[tokio::test]
async fn a_service_created_again_under_its_name_runs_its_new_revision() {
    let world = World::new().await;
    world.apply(&service("hello", "hi", "")).await;
    world.reconcile().await;
    world.settle().await;
    assert_eq!(world.served(), ["hello-00001"]);
    // Deleted and created again with another template between two passes: its first revision
    // has the old one's name, and another uid.
    for (kind, name) in [("Service", "hello"), ("Revision", "hello-00001")] {
        world
            .store
            .delete_resource(kind, "default", name)
            .await
            .unwrap();
    }
    world.apply(&service("hello", "bye", "")).await;
    world.reconcile().await;
    world.settle().await;
    assert_eq!(world.served(), ["hello-00001"]);
    let scales = world.runtime.scales("hello-00001");
    let stopped = scales
        .iter()
        .position(|(greeting, desired)| greeting.contains("hi") && *desired == 0)
        .unwrap_or_else(|| panic!("the old revision was not stopped: {scales:?}"));
    assert!(
        scales[stopped..]
            .iter()
            .any(|(greeting, desired)| greeting.contains("bye") && *desired > 0),
        "the new revision did not start: {scales:?}"
    );
}
