//! The Kubernetes runtime: each revision is a Deployment of pods (the user's container as written,
//! with a `kinetic queue-proxy` sidecar in front of it) and a Service selecting them, as Knative
//! runs a revision.
//!
//! - The Deployment and the Service are server-side applied (field manager
//!   [`FIELD_MANAGER`]) the first time the revision is scaled, owned by the Revision, so deleting
//!   it removes them. The Deployment's `replicas` is not part of what is applied: the autoscaler
//!   sets it through the `scale` subresource, only when its decision changes.
//! - Ready instances come from the Service's EndpointSlices (watched): every endpoint Kubernetes
//!   calls ready, at its queue-proxy's port, with the queue-proxy's admin port for `/stats`.
//! - [`Runtime::release`] (the revision is no longer routed) deletes both objects; their pods
//!   get SIGTERM, their queue-proxies drain.
//! - The Revision's status says what Knative's says ([`revision_status`]): `Ready` once it has
//!   served (or needs no instance to start, at initial scale 0), `False` with the reason when its
//!   objects are refused, `Active` whether it has instances; patched only when that changes.
//!
//! The objects are plain functions of the revision ([`deployment`], [`service`]), tested apart.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Error, Instance, InstanceSpec, LogLine, RevisionStatus, Runtime};

/// The field manager of everything this runtime applies.
pub const FIELD_MANAGER: &str = "kinetic-autoscaler";

/// Where the queue-proxy takes requests in every pod.
pub const QUEUE_PROXY_PORT: u16 = 8012;
/// Where the queue-proxy answers `/ready` and `/stats`.
pub const QUEUE_ADMIN_PORT: u16 = 8022;
/// The user's container port when the revision names none (Knative's).
pub const DEFAULT_USER_PORT: u16 = 8080;

/// How long to wait before applying a revision's objects again after the API refused them.
const APPLY_RETRY: Duration = Duration::from_secs(5);

/// Settings of the Kubernetes runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// kinetic's own image: the queue-proxy sidecar runs it.
    pub queue_proxy_image: String,
    /// The pods' `terminationGracePeriodSeconds` beyond the revision's timeout: how long a pod may
    /// finish its requests once told to stop.
    pub termination_grace: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            queue_proxy_image: "ghcr.io/kinetic/kinetic:latest".to_owned(),
            termination_grace: Duration::from_secs(30),
        }
    }
}

/// The name of a revision's Deployment (Knative's).
pub fn deployment_name(revision: &str) -> String {
    format!("{revision}-deployment")
}

/// The labels of a revision's pods; the selector uses the revision's uid alone.
fn pod_labels(spec: &InstanceSpec) -> Value {
    json!({
        "app": spec.revision,
        "serving.knative.dev/service": spec.service,
        "serving.knative.dev/configuration": spec.configuration,
        "serving.knative.dev/revision": spec.revision,
        "serving.knative.dev/revisionUID": spec.revision_uid,
        "app.kubernetes.io/managed-by": "kinetic",
    })
}

fn owner(spec: &InstanceSpec) -> Value {
    json!([{
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "name": spec.revision,
        "uid": spec.revision_uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// The user's container port: the first declared, else 8080.
fn user_port(spec: &InstanceSpec) -> u16 {
    spec.container_port.unwrap_or(DEFAULT_USER_PORT)
}

/// The revision's Deployment, as applied: the user's container as the template writes it (its
/// `image`, `command`, `args`, `env` with `valueFrom`, `resources`, `securityContext` and probes),
/// with Knative's `PORT`, `K_SERVICE`, `K_CONFIGURATION` and `K_REVISION`, and the queue-proxy
/// sidecar in front of it.
pub fn deployment(spec: &InstanceSpec, config: &KubernetesConfig) -> Result<Value, Error> {
    let mut user = spec.container.clone().unwrap_or_else(|| json!({}));
    if user.get("image").and_then(Value::as_str).is_none() {
        return Err(Error::NoImage);
    }
    let port = user_port(spec);
    let object = user.as_object_mut().ok_or(Error::NoImage)?;
    object
        .entry("name")
        .or_insert_with(|| json!("user-container"));
    let env = object.entry("env").or_insert_with(|| json!([]));
    if let Some(env) = env.as_array_mut() {
        for (name, value) in [
            ("PORT", port.to_string()),
            ("K_SERVICE", spec.service.clone()),
            ("K_CONFIGURATION", spec.configuration.clone()),
            ("K_REVISION", spec.revision.clone()),
        ] {
            if !env.iter().any(|v| v["name"] == name) {
                env.push(json!({"name": name, "value": value}));
            }
        }
    }
    object.insert(
        "ports".into(),
        json!([{"name": "user-port", "containerPort": port, "protocol": "TCP"}]),
    );
    let mut args = vec![
        "queue-proxy".to_owned(),
        "--listen".into(),
        format!("0.0.0.0:{QUEUE_PROXY_PORT}"),
        "--admin-listen".into(),
        format!("0.0.0.0:{QUEUE_ADMIN_PORT}"),
        "--upstream".into(),
        format!("127.0.0.1:{port}"),
        "--container-concurrency".into(),
        spec.container_concurrency.to_string(),
        "--timeout-seconds".into(),
        spec.timeout.as_secs().clamp(1, 3600).to_string(),
    ];
    if let Some(path) = &spec.readiness_path {
        args.extend(["--readiness-path".into(), path.clone()]);
    }
    let queue_proxy = json!({
        "name": "queue-proxy",
        "image": config.queue_proxy_image,
        "args": args,
        "ports": [
            {"name": "http", "containerPort": QUEUE_PROXY_PORT, "protocol": "TCP"},
            {"name": "queue-admin", "containerPort": QUEUE_ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": QUEUE_ADMIN_PORT},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 1,
        },
        "resources": {"requests": {"cpu": "25m", "memory": "32Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    let grace = spec.timeout + config.termination_grace;
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(&spec.revision),
            "namespace": spec.namespace,
            "labels": pod_labels(spec),
            "ownerReferences": owner(spec),
        },
        "spec": {
            "selector": {"matchLabels": {"serving.knative.dev/revisionUID": spec.revision_uid}},
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": pod_labels(spec)},
                "spec": {
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": grace.as_secs(),
                    "containers": [user, queue_proxy],
                },
            },
        },
    }))
}

/// The revision's Service: its pods' queue-proxies, whose EndpointSlices say which are ready.
pub fn service(spec: &InstanceSpec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": spec.revision,
            "namespace": spec.namespace,
            "labels": pod_labels(spec),
            "ownerReferences": owner(spec),
        },
        "spec": {
            "selector": {"serving.knative.dev/revisionUID": spec.revision_uid},
            "ports": [
                {"name": "http", "port": 80, "targetPort": QUEUE_PROXY_PORT, "protocol": "TCP"},
                {"name": "queue-admin", "port": QUEUE_ADMIN_PORT, "targetPort": QUEUE_ADMIN_PORT, "protocol": "TCP"},
            ],
        },
    })
}

/// What the Revision's status says, as Knative's Revision reconciler says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// It has had a ready instance, or was asked for none at first (initial scale 0).
    pub ready: bool,
    /// Why its objects could not be applied, if they could not.
    pub failed: Option<(String, String)>,
    pub desired: u32,
    pub actual: u32,
}

/// The Revision's `status` as a merge patch: conditions `Ready`, `ContainerHealthy`,
/// `ResourcesAvailable` and `Active`, and the replica counts.
pub fn revision_status(readiness: &Readiness) -> Value {
    let condition = |kind: &str, status: &str, reason: Option<&str>, message: Option<&str>| {
        let mut condition = json!({"type": kind, "status": status});
        if let Some(reason) = reason {
            condition["reason"] = json!(reason);
        }
        if let Some(message) = message {
            condition["message"] = json!(message);
        }
        condition
    };
    let mut conditions = Vec::new();
    match (&readiness.failed, readiness.ready) {
        (Some((reason, message)), _) => {
            conditions.push(condition("Ready", "False", Some(reason), Some(message)));
            conditions.push(condition(
                "ResourcesAvailable",
                "False",
                Some(reason),
                Some(message),
            ));
        }
        (None, true) => {
            conditions.push(condition("Ready", "True", None, None));
            conditions.push(condition("ResourcesAvailable", "True", None, None));
            conditions.push(condition("ContainerHealthy", "True", None, None));
        }
        (None, false) => {
            let waiting = Some("Waiting for the revision's first instance to be ready");
            conditions.push(condition("Ready", "Unknown", Some("Deploying"), waiting));
            conditions.push(condition(
                "ResourcesAvailable",
                "Unknown",
                Some("Deploying"),
                waiting,
            ));
        }
    }
    // Active while the autoscaler wants instances; scaled to zero it takes no traffic directly.
    conditions.push(if readiness.desired > 0 {
        condition("Active", "True", None, None)
    } else {
        condition(
            "Active",
            "False",
            Some("NoTraffic"),
            Some("The target is not receiving traffic."),
        )
    });
    json!({"status": {
        "conditions": conditions,
        "actualReplicas": readiness.actual,
        "desiredReplicas": readiness.desired,
    }})
}

/// The ready endpoints of a revision's EndpointSlices: `(key, address, admin)` per pod, where
/// `key` names the pod for as long as it lives.
pub fn ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<(String, SocketAddr, SocketAddr)> {
    let mut ready = Vec::new();
    for slice in slices {
        let port = |name: &str, default: u16| {
            slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(default)
        };
        let (http, admin) = (
            port("http", QUEUE_PROXY_PORT),
            port("queue-admin", QUEUE_ADMIN_PORT),
        );
        for endpoint in &slice.endpoints {
            // No `ready` means ready (the API's own rule); terminating endpoints are not ready.
            let is_ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if !is_ready {
                continue;
            }
            let key = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.uid.clone().or_else(|| r.name.clone()))
                .unwrap_or_else(|| ip.to_string());
            ready.push((key, SocketAddr::new(ip, http), SocketAddr::new(ip, admin)));
        }
    }
    ready.sort_by(|a, b| a.0.cmp(&b.0));
    ready.dedup_by(|a, b| a.0 == b.0);
    ready
}

type Key = (String, String);

/// One revision as this runtime tracks it.
struct Revision {
    ready: watch::Sender<Vec<Arc<Instance>>>,
    status: watch::Sender<RevisionStatus>,
    desired: Option<watch::Sender<(Arc<InstanceSpec>, u32)>>,
    cancel: CancellationToken,
}

/// Runs revisions as Deployments on Kubernetes. See the module documentation.
pub struct KubernetesRuntime {
    client: kube::Client,
    config: KubernetesConfig,
    revisions: Mutex<HashMap<Key, Revision>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    next_id: Arc<AtomicU64>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KubernetesRuntime {
    pub fn new(client: kube::Client, config: KubernetesConfig) -> Self {
        Self {
            client,
            config,
            revisions: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    fn with_revision<T>(
        &self,
        namespace: &str,
        revision: &str,
        f: impl FnOnce(&mut Revision) -> T,
    ) -> T {
        let mut revisions = lock(&self.revisions);
        let entry = revisions
            .entry((namespace.to_owned(), revision.to_owned()))
            .or_insert_with(|| Revision {
                ready: watch::Sender::new(Vec::new()),
                status: watch::Sender::new(RevisionStatus::default()),
                desired: None,
                cancel: self.cancel.child_token(),
            });
        f(entry)
    }
}

impl Runtime for KubernetesRuntime {
    fn scale(&self, spec: Arc<InstanceSpec>, desired: u32) {
        if self.cancel.is_cancelled() {
            return;
        }
        let (namespace, revision) = (spec.namespace.clone(), spec.revision.clone());
        self.with_revision(&namespace, &revision, |entry| {
            entry.status.send_modify(|s| s.desired = desired);
            match &entry.desired {
                Some(sender) => {
                    sender.send_replace((spec, desired));
                }
                None => {
                    let (sender, receiver) = watch::channel((spec, desired));
                    entry.desired = Some(sender);
                    let supervisor = Supervisor {
                        client: self.client.clone(),
                        config: self.config.clone(),
                        ready: entry.ready.clone(),
                        status: entry.status.clone(),
                        next_id: self.next_id.clone(),
                    };
                    self.tracker
                        .spawn(supervisor.run(receiver, entry.cancel.clone()));
                }
            }
        });
    }

    fn instances(&self, namespace: &str, revision: &str) -> watch::Receiver<Vec<Arc<Instance>>> {
        self.with_revision(namespace, revision, |entry| entry.ready.subscribe())
    }

    fn status(&self, namespace: &str, revision: &str) -> RevisionStatus {
        self.with_revision(namespace, revision, |entry| entry.status.borrow().clone())
    }

    fn logs(&self, _namespace: &str, _service: &str, _limit: usize) -> Vec<LogLine> {
        // Pods' output is Kubernetes' (`kubectl logs`), not kept here.
        Vec::new()
    }

    fn release(&self, namespace: &str, revision: &str) {
        let removed = lock(&self.revisions).remove(&(namespace.to_owned(), revision.to_owned()));
        let Some(removed) = removed else {
            return;
        };
        removed.cancel.cancel();
        removed.ready.send_replace(Vec::new());
        let client = self.client.clone();
        let (namespace, revision) = (namespace.to_owned(), revision.to_owned());
        self.tracker.spawn(async move {
            let background = DeleteParams::background();
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            let services: Api<Service> = Api::namespaced(client, &namespace);
            for (what, result) in [
                (
                    "Deployment",
                    deployments
                        .delete(&deployment_name(&revision), &background)
                        .await
                        .map(|_| ()),
                ),
                (
                    "Service",
                    services.delete(&revision, &background).await.map(|_| ()),
                ),
            ] {
                match result {
                    Ok(()) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => {
                        tracing::warn!(%namespace, %revision, %error, "Deleting the revision's {what} failed; its Revision's deletion removes it.");
                    }
                }
            }
            tracing::info!(%namespace, %revision, "Removed the Deployment and Service of a revision no longer routed.");
        });
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // The pods are Kubernetes': they keep serving while this process is replaced.
        self.cancel.cancel();
        self.tracker.close();
        Box::pin(async move { self.tracker.wait().await })
    }
}

/// Keeps one revision's objects applied, its scale as decided, and its ready set from its
/// EndpointSlices.
#[derive(Clone)]
struct Supervisor {
    client: kube::Client,
    config: KubernetesConfig,
    ready: watch::Sender<Vec<Arc<Instance>>>,
    status: watch::Sender<RevisionStatus>,
    next_id: Arc<AtomicU64>,
}

impl Supervisor {
    async fn run(
        self,
        mut desired: watch::Receiver<(Arc<InstanceSpec>, u32)>,
        cancel: CancellationToken,
    ) {
        let (spec, first) = {
            let first = desired.borrow_and_update();
            (first.0.clone(), first.1)
        };
        let namespace = spec.namespace.clone();
        // A revision asked for no instance at first (initial scale 0) is ready without one.
        let reporter = tokio::spawn(
            self.clone()
                .report(spec.clone(), first == 0, cancel.clone()),
        );
        // Applied until it holds: a refusal is the revision's problem, shown in its status.
        loop {
            match self.apply(&spec).await {
                Ok(()) => {
                    self.status.send_modify(|s| s.last_error = None);
                    break;
                }
                Err(error) => {
                    let permanent = error.is_permanent();
                    tracing::warn!(%namespace, revision = %spec.revision, %error, "Applying the revision's objects failed.");
                    self.status.send_modify(|s| {
                        s.crashes += 1;
                        s.last_error = Some(Arc::new(error));
                    });
                    if permanent {
                        // Nothing to retry until the revision changes (a new one is made then).
                        cancel.cancelled().await;
                        return;
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(APPLY_RETRY) => {}
                    }
                }
            }
        }
        let endpoints = tokio::spawn(self.clone().follow_endpoints(spec.clone(), cancel.clone()));
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
        let name = deployment_name(&spec.revision);
        let mut scaled: Option<u32> = None;
        loop {
            let replicas = desired.borrow_and_update().1;
            if scaled != Some(replicas) {
                let patch = json!({"spec": {"replicas": replicas}});
                match deployments
                    .patch_scale(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => scaled = Some(replicas),
                    Err(error) => {
                        tracing::warn!(%namespace, revision = %spec.revision, replicas, %error, "Scaling the revision's Deployment failed; trying again.");
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = desired.changed() => if changed.is_err() { break },
            }
        }
        endpoints.abort();
        reporter.abort();
    }

    /// Patches the Revision's status whenever what it says changes (see [`revision_status`]).
    async fn report(self, spec: Arc<InstanceSpec>, ready_at_zero: bool, cancel: CancellationToken) {
        let revisions: Api<kube::api::DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &spec.namespace,
            &kube::api::ApiResource {
                group: "serving.knative.dev".to_owned(),
                version: "v1".to_owned(),
                api_version: "serving.knative.dev/v1".to_owned(),
                kind: "Revision".to_owned(),
                plural: "revisions".to_owned(),
            },
        );
        let mut changes = self.status.subscribe();
        let mut reported: Option<Readiness> = None;
        loop {
            let readiness = {
                let status = changes.borrow_and_update();
                Readiness {
                    ready: status.startups > 0 || ready_at_zero,
                    failed: status
                        .last_error
                        .as_ref()
                        .map(|error| (error.reason().to_owned(), error.to_string())),
                    desired: status.desired,
                    actual: status.ready,
                }
            };
            if reported.as_ref() != Some(&readiness) {
                let patch = revision_status(&readiness);
                match revisions
                    .patch_status(
                        &spec.revision,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => reported = Some(readiness),
                    Err(error) => {
                        tracing::debug!(revision = %spec.revision, %error, "Writing the revision's status failed; trying again.");
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Server-side applies the Deployment and the Service.
    async fn apply(&self, spec: &InstanceSpec) -> Result<(), Error> {
        let deployment = deployment(spec, &self.config)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &spec.namespace);
        deployments
            .patch(
                &deployment_name(&spec.revision),
                &params,
                &Patch::Apply(&deployment),
            )
            .await
            .map_err(|error| Error::Kubernetes {
                object: "Deployment",
                message: error.to_string(),
            })?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), &spec.namespace);
        services
            .patch(&spec.revision, &params, &Patch::Apply(&service(spec)))
            .await
            .map_err(|error| Error::Kubernetes {
                object: "Service",
                message: error.to_string(),
            })?;
        Ok(())
    }

    /// Publishes the ready endpoints of the revision's Service as its instances, as its
    /// EndpointSlices change.
    async fn follow_endpoints(self, spec: Arc<InstanceSpec>, cancel: CancellationToken) {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &spec.namespace);
        let config = watcher::Config::default()
            .labels(&format!("kubernetes.io/service-name={}", spec.revision));
        let mut stream = std::pin::pin!(watcher(slices, config));
        let mut known: HashMap<String, EndpointSlice> = HashMap::new();
        let mut listing: Option<HashMap<String, EndpointSlice>> = None;
        let mut ids: HashMap<String, Arc<Instance>> = HashMap::new();
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = stream.next() => event,
            };
            let Some(event) = event else { return };
            let name = |slice: &EndpointSlice| slice.metadata.name.clone().unwrap_or_default();
            match event {
                Ok(watcher::Event::Apply(slice)) => {
                    known.insert(name(&slice), slice);
                }
                Ok(watcher::Event::Delete(slice)) => {
                    known.remove(&name(&slice));
                }
                Ok(watcher::Event::Init) => {
                    listing = Some(HashMap::new());
                    continue;
                }
                Ok(watcher::Event::InitApply(slice)) => {
                    if let Some(listing) = &mut listing {
                        listing.insert(name(&slice), slice);
                    }
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    known = listing.take().unwrap_or_default();
                }
                Err(error) => {
                    tracing::debug!(revision = %spec.revision, %error, "Watching the revision's EndpointSlices failed; the watch starts again.");
                    continue;
                }
            }
            let ready = ready_endpoints(known.values());
            // An instance keeps its id (and so its breaker in the data path) while its pod lives.
            ids.retain(|key, _| ready.iter().any(|(k, _, _)| k == key));
            let instances: Vec<Arc<Instance>> = ready
                .into_iter()
                .map(|(key, address, admin)| {
                    ids.entry(key)
                        .and_modify(|i| {
                            if i.address() != address {
                                *i = Arc::new(Instance::with_admin(
                                    self.next_id.fetch_add(1, Ordering::Relaxed),
                                    address,
                                    admin,
                                ));
                            }
                        })
                        .or_insert_with(|| {
                            Arc::new(Instance::with_admin(
                                self.next_id.fetch_add(1, Ordering::Relaxed),
                                address,
                                admin,
                            ))
                        })
                        .clone()
                })
                .collect();
            let mut sorted = instances;
            sorted.sort_by_key(|i| i.id);
            let count = u32::try_from(sorted.len()).unwrap_or(u32::MAX);
            self.status.send_modify(|s| {
                if count > s.ready {
                    s.startups += u64::from(count - s.ready);
                }
                s.ready = count;
                s.starting = s.desired.saturating_sub(count);
            });
            self.ready.send_if_modified(|current| {
                let same = current.len() == sorted.len()
                    && current.iter().zip(&sorted).all(|(a, b)| a.id == b.id);
                if !same {
                    *current = sorted;
                }
                !same
            });
        }
    }
}
