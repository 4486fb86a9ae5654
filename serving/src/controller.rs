//! The serving controller: turns stored Services and Revisions into routes and running revisions,
//! each with its data path ([`DataPath`]) and an autoscaler loop that feeds the KPA per-second stats
//! and asks the runtime for the instances it decides on.
//!
//! The data path is in this process ([`Serving::new`], `kinetic up`: the gateway's table and a
//! [`RevisionProxy`] per revision), or in gateways and activators elsewhere that follow what a
//! [`Hub`] publishes ([`Serving::remote`], `kinetic autoscaler`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kinetic_api::reconcile::{Changes, plan};
use kinetic_api::{Revision, Service};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activator::{RevisionProxy, RevisionSettings};
use crate::autoscaler::{self, Defaults, Observation};
use crate::datapath::DataPath;
use crate::gateway::{Gateway, RouteTable};
use crate::metrics::Metrics;
use crate::queue_proxy::Forward;
use crate::revision;
use crate::route::Route;
use crate::runtime::{EnvValue, InstanceSpec, Runtime};
use crate::split::Hub;

/// How often stored resources are read again.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the data path's stats are sampled into the autoscaler's window.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of serving in one process.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// Services are at `{service}.{namespace}.{domain}`.
    pub domain: String,
    /// The gateway's port, for the URLs shown to users.
    pub gateway_port: u16,
    /// How long a request waits for an instance before it is refused.
    pub activation_timeout: Duration,
    /// Requests one revision may hold while it has no capacity.
    pub activator_capacity: usize,
    /// `config-autoscaler` defaults.
    pub autoscaler: Defaults,
    /// Programs Services may run (`--exec-allow`), checked when a Service is applied.
    pub exec_allow: crate::runtime::ExecAllow,
    /// Whether a container engine runs Services that name only an `image`.
    pub containers: bool,
}

/// What users see of a revision.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub namespace: String,
    pub name: String,
    pub service: String,
    /// Where its instances run: `process` or `container`.
    pub runtime: &'static str,
    pub desired: u32,
    pub ready: u32,
    pub panic: bool,
    pub waiting: usize,
    pub crashes: u64,
    pub cold_starts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_startup_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Why the last instance that ended unasked ended, as Kubernetes' `lastState.terminated`:
    /// `OOMKilled`, `Error`, or why it could not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_termination_reason: Option<&'static str>,
    /// Conditions that are not as asked (all "False"): limits or security settings this machine
    /// does not enforce, instances held back by the process-wide cap.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::runtime::Condition>,
}

/// What users see of a service.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub url: String,
    /// The revision `latestRevision: true` sends traffic to: the newest one that became ready.
    pub latest_revision: Option<String>,
    /// The newest revision, ready or not.
    pub latest_created_revision: Option<String>,
    /// `revision=percent` (and `@tag`) entries.
    pub traffic: Vec<String>,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A revision being served: its data path and the task that scales it.
struct Running {
    /// The revision's uid: a revision created again under its name is started anew.
    uid: String,
    path: Arc<dyn DataPath>,
    /// The same data path when it is in this process, for the gateway's table.
    proxy: Option<Arc<RevisionProxy>>,
    spec: Arc<InstanceSpec>,
    service: String,
    cancel: CancellationToken,
    decided: Arc<Mutex<Decided>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Decided {
    desired: u32,
    panic: bool,
}

/// Where the data path of served revisions runs.
enum Plane {
    /// In this process: the gateway's table, and a [`RevisionProxy`] per revision.
    Local {
        gateway: Arc<Gateway>,
        forward: Box<Forward>,
    },
    /// In gateways and activators elsewhere, which follow what the hub publishes.
    Remote(Arc<Hub>),
}

/// Serving's control side (routes, revisions, scaling), with its data path in this process or
/// elsewhere.
pub struct Serving {
    /// Services and Revisions, as every component of this process reads them.
    resources: kinetic_resources::Watch,
    runtime: Arc<dyn Runtime>,
    plane: Plane,
    config: ServingConfig,
    running: Mutex<HashMap<(String, String), Running>>,
    services: RwLock<Vec<ServiceView>>,
    /// Revisions that have had a ready instance (or need none to start): `latestRevision` may
    /// route to them.
    ever_ready: Arc<Mutex<HashSet<(String, String)>>>,
    problems: RwLock<HashMap<(String, String), String>>,
    metrics: Metrics,
    tracker: TaskTracker,
}

impl Serving {
    pub fn new(
        resources: kinetic_resources::Watch,
        runtime: Arc<dyn Runtime>,
        gateway: Arc<Gateway>,
        config: ServingConfig,
        metrics: Metrics,
    ) -> Arc<Serving> {
        Self::with_plane(
            resources,
            runtime,
            Plane::Local {
                gateway,
                forward: Box::new(Forward::new()),
            },
            config,
            metrics,
        )
    }

    /// Serving whose data path runs in other processes: gateways and activators follow the table
    /// `hub` publishes and report their requests to it.
    pub fn remote(
        resources: kinetic_resources::Watch,
        runtime: Arc<dyn Runtime>,
        hub: Arc<Hub>,
        config: ServingConfig,
        metrics: Metrics,
    ) -> Arc<Serving> {
        Self::with_plane(resources, runtime, Plane::Remote(hub), config, metrics)
    }

    fn with_plane(
        resources: kinetic_resources::Watch,
        runtime: Arc<dyn Runtime>,
        plane: Plane,
        config: ServingConfig,
        metrics: Metrics,
    ) -> Arc<Serving> {
        Arc::new(Serving {
            resources,
            runtime,
            plane,
            config,
            running: Mutex::new(HashMap::new()),
            services: RwLock::new(Vec::new()),
            ever_ready: Arc::new(Mutex::new(HashSet::new())),
            problems: RwLock::new(HashMap::new()),
            metrics,
            tracker: TaskTracker::new(),
        })
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn config(&self) -> &ServingConfig {
        &self.config
    }

    /// The gateway, when the data path runs in this process.
    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        match &self.plane {
            Plane::Local { gateway, .. } => Some(gateway),
            Plane::Remote(_) => None,
        }
    }

    /// Reconciles on every new resource snapshot and every [`RECONCILE_INTERVAL`] (a revision
    /// that became ready may take over its route) until `cancel`, then stops every instance.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut resources = self.resources.clone();
        let mut latest = resources.latest();
        loop {
            if let Some(snapshot) = &latest {
                self.reconcile(snapshot, &cancel);
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                next = resources.next_pass(RECONCILE_INTERVAL) => latest = next,
            }
        }
        let running: Vec<Running> = self.lock_running().drain().map(|(_, r)| r).collect();
        for revision in &running {
            revision.cancel.cancel();
            revision.path.close();
        }
        self.tracker.close();
        self.tracker.wait().await;
        self.runtime.shutdown().await;
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One pass over the Services and Revisions of `resources`: update routes, start and stop
    /// revisions. Idempotent.
    pub fn reconcile(
        self: &Arc<Self>,
        resources: &kinetic_resources::Snapshot,
        cancel: &CancellationToken,
    ) {
        let services: Vec<Service> = resources
            .typed::<Service>()
            .map(|(_, service)| service.clone())
            .collect();
        // A revision's spec never changes, but a Service deleted and created again has revisions
        // of the same names: its uid tells them apart.
        let uids: HashMap<(String, String), String> = resources
            .typed::<Revision>()
            .map(|(r, _)| ((r.namespace.clone(), r.name.clone()), r.uid.clone()))
            .collect();
        let revisions: Vec<Revision> = resources
            .typed::<Revision>()
            .map(|(_, revision)| revision.clone())
            .collect();
        let mut routes = HashMap::new();
        let mut views = Vec::new();
        let mut wanted: HashMap<(String, String), &Revision> = HashMap::new();
        for service in &services {
            let namespace = &service.metadata.namespace;
            let name = &service.metadata.name;
            let own: Vec<Revision> = revisions
                .iter()
                .filter(|r| &r.metadata.namespace == namespace && r.service() == name)
                .cloned()
                .collect();
            let created = revision::latest(name, &own).map(|r| r.metadata.name.clone());
            // `latestRevision: true` follows the newest revision that has become ready, as
            // Knative's route does: a new template that fails to start never takes traffic from
            // the revision that works. The newest one runs meanwhile, so that it can get ready.
            let latest = self
                .latest_ready(namespace, &own)
                .or_else(|| created.clone());
            if let Some(newest) = &created
                && latest.as_ref() != Some(newest)
                && let Some(found) = revisions
                    .iter()
                    .find(|r| &r.metadata.namespace == namespace && &r.metadata.name == newest)
            {
                wanted.insert((namespace.clone(), newest.clone()), found);
            }
            let mut view = ServiceView {
                namespace: namespace.clone(),
                name: name.clone(),
                url: kinetic_api::meta::service_url(
                    name,
                    namespace,
                    None,
                    &self.config.domain,
                    self.config.gateway_port,
                ),
                latest_revision: latest.clone(),
                latest_created_revision: created.clone(),
                ..ServiceView::default()
            };
            match Route::resolve(service, latest.as_deref(), |r| {
                own.iter().any(|o| o.metadata.name == r)
            }) {
                Ok(route) => {
                    for revision in route.revisions() {
                        if let Some(found) = revisions.iter().find(|r| {
                            &r.metadata.namespace == namespace && r.metadata.name == revision
                        }) {
                            wanted.insert((namespace.clone(), revision.to_owned()), found);
                        }
                    }
                    view.traffic = route
                        .split
                        .iter()
                        .map(|(r, p)| format!("{r}={p}%"))
                        .chain(route.tags.iter().map(|(t, r)| format!("{r}@{t}")))
                        .collect();
                    view.ready = true;
                    routes.insert((namespace.clone(), name.clone()), route);
                }
                Err(error) => view.problem = Some(error.to_string()),
            }
            views.push(view);
        }
        // Forget readiness of revisions that no longer exist (a service deleted and created again
        // starts over).
        self.ever_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(namespace, name)| {
                revisions
                    .iter()
                    .any(|r| &r.metadata.namespace == namespace && &r.metadata.name == name)
            });
        let mut problems = HashMap::new();
        let mut table = RouteTable {
            routes,
            revisions: HashMap::new(),
        };
        {
            let mut running = self.lock_running();
            let Changes { stop, start } = plan(
                &running
                    .iter()
                    .map(|(key, run)| (key.clone(), run.uid.as_str()))
                    .collect(),
                &wanted
                    .keys()
                    .map(|key| (key.clone(), uids.get(key).map_or("", String::as_str)))
                    .collect(),
            );
            for key in stop {
                if let Some(stopped) = running.remove(&key) {
                    tracing::info!(namespace = %key.0, revision = %key.1, "Revision no longer receives traffic, or was created again; stopping it.");
                    stopped.cancel.cancel();
                    stopped.path.close();
                    self.runtime.scale(stopped.spec.clone(), 0);
                    self.runtime
                        .release(&stopped.spec.namespace, &stopped.spec.revision);
                }
            }
            for key in start {
                let Some(revision) = wanted.get(&key) else {
                    continue;
                };
                let uid = uids.get(&key).cloned().unwrap_or_default();
                match self.start(revision, uid, cancel) {
                    Ok(started) => {
                        running.insert(key, started);
                    }
                    Err(problem) => {
                        problems.insert(key, problem);
                    }
                }
            }
            for key in wanted.keys() {
                if let Some(proxy) = running.get(key).and_then(|run| run.proxy.as_ref()) {
                    table.revisions.insert(key.clone(), proxy.clone());
                }
            }
        }
        for view in &mut views {
            if let Some(problem) = problems
                .iter()
                .find(|((ns, _), _)| *ns == view.namespace)
                .filter(|((_, rev), _)| view.traffic.iter().any(|t| t.starts_with(rev.as_str())))
                .map(|(_, p)| p.clone())
            {
                view.ready = false;
                view.problem = Some(problem);
            }
        }
        match &self.plane {
            Plane::Local { gateway, .. } => gateway.set_table(table),
            Plane::Remote(hub) => hub.set_routes(table.routes.into_values().collect()),
        }
        *self
            .services
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = views;
        *self
            .problems
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problems;
    }

    fn start(
        self: &Arc<Self>,
        revision: &Revision,
        uid: String,
        cancel: &CancellationToken,
    ) -> Result<Running, String> {
        let spec = &revision.spec;
        let scaling = autoscaler::revision_config(
            &self.config.autoscaler,
            revision.annotations(),
            spec.container_concurrency(),
        )
        .map_err(|error| error.to_string())?;
        let container = spec.container();
        let security = container.security_context.as_ref();
        let namespace = revision.metadata.namespace.clone();
        let instance_spec = Arc::new(InstanceSpec {
            namespace: namespace.clone(),
            service: revision.service().to_owned(),
            configuration: revision.service().to_owned(),
            revision: revision.metadata.name.clone(),
            command: container.argv(),
            image: container
                .container_image()
                .map(|image| crate::runtime::ContainerImage {
                    image: image.to_owned(),
                    args: container.args.clone(),
                    pull: match container.image_pull_policy.as_deref() {
                        Some("Always") => crate::runtime::ImagePull::Always,
                        Some("Never") => crate::runtime::ImagePull::Never,
                        _ => crate::runtime::ImagePull::IfNotPresent,
                    },
                }),
            env: container
                .env
                .iter()
                .map(|v| {
                    let value = match v.value_from.as_ref().and_then(|f| f.secret_key_ref.clone()) {
                        Some(selector) => EnvValue::Secret(selector),
                        None => EnvValue::Value(v.value.clone()),
                    };
                    (v.name.clone(), value)
                })
                .collect(),
            working_dir: container.working_dir.as_ref().map(Into::into),
            readiness_path: container.readiness_path().map(str::to_owned),
            container_port: container.ports.first().map(|p| p.container_port),
            limits: container.limits(),
            run_as_user: security
                .and_then(|s| s.run_as_user)
                .and_then(|id| u32::try_from(id).ok()),
            run_as_group: security
                .and_then(|s| s.run_as_group)
                .and_then(|id| u32::try_from(id).ok()),
            run_as_non_root: security.and_then(|s| s.run_as_non_root) == Some(true),
            read_only_root: security.and_then(|s| s.read_only_root_filesystem) == Some(true),
            no_new_privileges: security.and_then(|s| s.allow_privilege_escalation) == Some(false),
            capabilities_add: security.map(|s| s.capabilities().0).unwrap_or_default(),
            capabilities_drop: security.map(|s| s.capabilities().1).unwrap_or_default(),
            unenforced_security: security
                .map(|s| {
                    let fields = if container.container_image().is_some() {
                        s.unenforced_in_containers()
                    } else {
                        s.unenforced()
                    };
                    fields.into_iter().map(str::to_owned).collect()
                })
                .unwrap_or_default(),
            container_concurrency: spec.container_concurrency(),
            timeout: spec.timeout(),
            revision_uid: uid.clone(),
            container: serde_json::to_value(container).ok(),
        });
        let settings = RevisionSettings {
            namespace: namespace.clone(),
            revision: revision.metadata.name.clone(),
            service: revision.service().to_owned(),
            container_concurrency: spec.container_concurrency() as usize,
            timeout: spec.timeout(),
            activation_timeout: self.config.activation_timeout,
            capacity: self.config.activator_capacity,
            mark_proxied: false,
        };
        let (path, proxy): (Arc<dyn DataPath>, _) = match &self.plane {
            Plane::Local { forward, .. } => {
                let proxy = RevisionProxy::new(settings, (**forward).clone(), self.metrics.clone());
                (proxy.clone(), Some(proxy))
            }
            Plane::Remote(hub) => (hub.open(settings, &uid), None),
        };
        let token = cancel.child_token();
        let decided = Arc::new(Mutex::new(Decided::default()));
        tracing::info!(%namespace, revision = %revision.metadata.name, "Serving revision.");
        self.tracker.spawn(scale_loop(
            self.clone(),
            path.clone(),
            instance_spec.clone(),
            scaling,
            decided.clone(),
            token.clone(),
        ));
        Ok(Running {
            uid,
            path,
            proxy,
            spec: instance_spec,
            service: revision.service().to_owned(),
            cancel: token,
            decided,
        })
    }

    /// The newest of `own` (one service's revisions) that has been ready.
    fn latest_ready(&self, namespace: &str, own: &[Revision]) -> Option<String> {
        let ready = self
            .ever_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        own.iter()
            .filter(|r| ready.contains(&(namespace.to_owned(), r.metadata.name.clone())))
            .max_by_key(|r| revision::generation(r))
            .map(|r| r.metadata.name.clone())
    }

    /// Services with their URL, traffic and readiness.
    pub fn services(&self) -> Vec<ServiceView> {
        self.services
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Revisions being served, with desired and ready instances.
    pub fn revisions(&self) -> Vec<RevisionView> {
        let running = self.lock_running();
        let mut views: Vec<RevisionView> = running
            .iter()
            .map(|((namespace, name), run)| {
                let status = self.runtime.status(namespace, name);
                let decided = *run
                    .decided
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                RevisionView {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    service: run.service.clone(),
                    runtime: if run.spec.image.is_some() {
                        "container"
                    } else {
                        "process"
                    },
                    desired: decided.desired,
                    ready: status.ready,
                    panic: decided.panic,
                    waiting: run.path.waiting(),
                    crashes: status.crashes,
                    cold_starts: run.path.cold_starts(),
                    last_startup_ms: status
                        .last_startup
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    last_termination_reason: status.last_error.as_ref().map(|e| e.reason()),
                    problem: status.last_error.map(|e| e.to_string()),
                    conditions: status.conditions,
                }
            })
            .collect();
        drop(running);
        let problems = self
            .problems
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((namespace, name), problem) in problems.iter() {
            views.push(RevisionView {
                namespace: namespace.clone(),
                name: name.clone(),
                problem: Some(problem.clone()),
                ..RevisionView::default()
            });
        }
        views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        views
    }

    /// Names of the revisions served now (for tests and status).
    pub fn served(&self) -> HashSet<(String, String)> {
        self.lock_running().keys().cloned().collect()
    }
}

/// Scales one revision: mirrors the runtime's ready instances into the data path, samples its stats
/// every second and decides every tick, or at once when a request finds no instance.
async fn scale_loop(
    serving: Arc<Serving>,
    proxy: Arc<dyn DataPath>,
    spec: Arc<InstanceSpec>,
    config: autoscaler::Config,
    decided: Arc<Mutex<Decided>>,
    cancel: CancellationToken,
) {
    let runtime = serving.runtime.clone();
    let labels = crate::metrics::RevisionLabels {
        namespace: spec.namespace.clone(),
        revision: spec.revision.clone(),
    };
    let mut instances = runtime.instances(&spec.namespace, &spec.revision);
    let key = (spec.namespace.clone(), spec.revision.clone());
    let mark_ready = || {
        serving
            .ever_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone());
    };
    let already = instances.borrow_and_update().clone();
    proxy.set_instances(&already);
    // A revision that starts at zero is ready without an instance, as in Knative; one whose
    // instances the runtime already has (served again after a pause) is ready now, not at their
    // next change.
    if config.initial_scale == 0 || !already.is_empty() {
        mark_ready();
    }
    let start = Instant::now();
    let mut window = autoscaler::MetricWindow::new(&config);
    let mut state = autoscaler::State::new(&config, start);
    let mut sample = tokio::time::interval(SAMPLE_INTERVAL);
    let mut tick = tokio::time::interval(autoscaler::TICK);
    let mut wake_at: Option<Instant> = None;
    loop {
        let mut decide_now = false;
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = instances.changed() => {
                if changed.is_err() {
                    return;
                }
                let ready = instances.borrow_and_update().clone();
                if !ready.is_empty() {
                    mark_ready();
                }
                proxy.set_instances(&ready);
                serving.metrics.ready(&labels, ready.len());
            }
            _ = sample.tick() => {
                let now = Instant::now();
                let numbers = proxy.sample(now);
                window.record(now, numbers.average_concurrency, numbers.requests as f64);
                serving.metrics.observe(&labels, &numbers, proxy.waiting());
            }
            _ = tick.tick() => decide_now = true,
            () = proxy.wake().notified() => {
                // A request found no instance. At (or headed to) zero, count the requests waiting
                // now and decide at once (Knative's activator "poke"), so scaling from zero does
                // not wait for a tick. Only then: every other wake-up would count the same
                // requests again in the same second of the window.
                let now = Instant::now();
                let waiting = proxy.in_flight() as f64;
                if state.wants_poke(waiting) {
                    window.record(now, waiting, waiting);
                    decide_now = true;
                }
            }
            () = sleep_until(wake_at) => decide_now = true,
        }
        // Requests waiting at zero learn at once when a start failed in a way that retrying
        // cannot mend.
        let status = runtime.status(&spec.namespace, &spec.revision);
        proxy.set_failures(
            status.crashes,
            status
                .last_error
                .as_ref()
                .filter(|error| error.is_permanent())
                .map(ToString::to_string),
        );
        if !decide_now {
            continue;
        }
        let now = Instant::now();
        let ready = u32::try_from(proxy.ready()).unwrap_or(u32::MAX);
        let observation = Observation::new(ready, window.stable_and_panic(now, &config));
        let decision = autoscaler::decide(&config, &mut state, &observation, now);
        wake_at = decision.wake_at;
        proxy.set_in_path(decision.activator_in_path);
        let previous = {
            let mut d = decided
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let previous = d.desired;
            *d = Decided {
                desired: decision.desired,
                panic: decision.panic,
            };
            previous
        };
        if previous != decision.desired {
            tracing::info!(namespace = %spec.namespace, revision = %spec.revision, from = previous, to = decision.desired, panic = decision.panic, "Scaling.");
        }
        serving
            .metrics
            .decided(&labels, decision.desired, decision.panic);
        runtime.scale(spec.clone(), decision.desired);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
