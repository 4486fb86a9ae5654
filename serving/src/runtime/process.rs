//! The process runtime: each instance of a revision is a local process group listening on its own
//! loopback port, given in `PORT`.
//!
//! One supervisor task per revision owns that revision's instances: it compares what
//! [`Runtime::scale`] asked for with what runs, starts instances (after a backoff if they have been
//! crashing) and picks which to stop (see `plan.rs`). Each instance is its own task
//! (`lifecycle.rs`) that spawns, probes, serves and stops one process and reports back. The ready
//! set and the counts are published through `watch` channels, so readers never wait on a
//! supervisor.
//!
//! # No orphans
//! - Each instance is a process group; stopping SIGKILLs the whole group in the end, so whatever
//!   the function started goes too.
//! - [`Runtime::shutdown`] stops everything gracefully and waits. Dropping the [`ProcessRuntime`]
//!   SIGKILLs every group at once, and a torn-down instance task SIGKILLs its group.
//! - If kinetic itself is SIGKILLed nothing of the above runs. Then the shim does it: with
//!   [`ProcessConfig::shim`] set, instances start as `SHIM __exec [OPTIONS] -- PROGRAM ARGS...`
//!   and the shim ([`super::exec_shim`]) asks Linux for SIGKILL when its parent dies, then execs
//!   the program. Other systems have no such signal; there the shim only execs.
//! - Where a cgroup per instance is available (`cgroup.rs`), stopping also kills the cgroup, which
//!   reaches processes that left the group with `setsid()`. Without one such a process survives
//!   its instance (it still dies with kinetic only if it keeps the parent-death signal).
//!
//! # Bounds
//! - At most [`ProcessConfig::max_instances`] instances run at once across all revisions; a
//!   revision that wants more waits for others to stop and says so in its conditions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::allow::ExecAllow;
use super::cgroup::{Capabilities, Cgroups, InstanceCgroup};
use super::lifecycle::{self, Crash, Event, Launch};
use super::logs::{LogStore, Rotation};
use super::plan::{self, Backoff, BackoffConfig, Phase, SlotView};
use super::probe::ProbeConfig;
use super::{Condition, Error, Instance, InstanceSpec, LogLine, RevisionStatus, Runtime};

/// Instances that may run at once across all revisions, unless configured.
pub const DEFAULT_MAX_INSTANCES: u32 = 100;

/// `max-scale` of a revision that sets none, for local processes (Knative's default, 0, is
/// unbounded, which on one machine lets a burst of requests start processes without end).
pub const DEFAULT_MAX_SCALE: u32 = 10;

/// How often a revision held back by the instance cap looks again, besides being woken when an
/// instance ends.
const CAPPED_RETRY: Duration = Duration::from_millis(500);

/// Environment variable carrying kinetic's PID to the shim, which checks it is still its parent.
pub const PARENT_PID_ENV: &str = "KINETIC_PARENT_PID";

/// Settings of the process runtime. Defaults suit a laptop; tests shorten the periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// The kinetic binary (`std::env::current_exe()`), to start instances through its
    /// `__exec` subcommand so that they die with kinetic even when it is SIGKILLed. `None` starts
    /// the program directly.
    pub shim: Option<PathBuf>,
    /// How long a stopping instance may take to finish its requests, and then again how long it
    /// may take to exit after SIGTERM before it is SIGKILLed.
    pub grace_period: Duration,
    /// First pause between readiness probes; the pause grows with the time spent starting.
    pub probe_period: Duration,
    /// Longest pause between readiness probes.
    pub probe_period_max: Duration,
    /// How long one readiness probe may take.
    pub probe_timeout: Duration,
    /// How long a TCP readiness probe of a container waits for the engine's port proxy to close
    /// the connection (the function is not listening yet) before it counts the function as
    /// reached. Every container start without a readiness path takes this much longer.
    pub probe_hold: Duration,
    /// Output lines kept in memory per service.
    pub log_lines: usize,
    /// Longer output lines are cut to this many bytes.
    pub max_log_line_bytes: usize,
    /// Pause before restarting after a crash; doubles with each crash in a row.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// A crash of an instance that had been running this long starts the backoff over.
    pub restart_backoff_reset: Duration,
    /// If set, each instance's output is also appended to
    /// `<log_dir>/<namespace>/<service>/<revision>-<instance>.log`.
    pub log_dir: Option<PathBuf>,
    /// When a log file is rotated and how many old ones are kept.
    pub log_rotation: Rotation,
    /// Instances that may run at once across all revisions.
    pub max_instances: u32,
    /// Programs instances may run; checked again before every start.
    pub exec_allow: ExecAllow,
    /// Put each instance in cgroups for its limits and for a complete kill, where the machine
    /// allows it. Off, limits are not enforced (and revisions say so).
    pub cgroups: bool,
    /// The container engine that runs the instances of image-only revisions, and who owns the
    /// containers it starts.
    pub containers: Option<Containers>,
    /// The kinetic binary, to put a `kinetic queue-proxy` in front of every process instance (the
    /// split shape: requests reach the instance through it, it checks the instance's readiness
    /// and reports its stats at its own address, [`super::Instance::admin`]). `None`: requests
    /// reach the process directly (`kinetic up`).
    pub sidecar: Option<PathBuf>,
}

/// A container engine, the owner labels of the containers this runtime starts, and the reaper
/// that removes them should this process die unasked.
#[derive(Debug, Clone)]
pub struct Containers {
    pub engine: super::container::Engine,
    pub owner: super::container::Owner,
    reaper: Arc<Mutex<Reaping>>,
}

/// The same engine and owner; the reaper is how they are looked after, not what they are.
impl PartialEq for Containers {
    fn eq(&self, other: &Self) -> bool {
        self.engine == other.engine && self.owner == other.owner
    }
}

impl Eq for Containers {}

#[derive(Debug)]
enum Reaping {
    /// Started with the first container: `kinetic` (this binary) runs as the reaper.
    OnFirstContainer { kinetic: PathBuf },
    /// Held, not read: its pipe closes when this process is gone.
    Started { _reaper: super::container::Reaper },
    /// The caller removes what it starts.
    Off,
}

impl Containers {
    /// Containers on `engine` labelled as `owner`'s. With `reaper` (the kinetic binary), the first
    /// container started also starts `kinetic __container-reaper`, which removes this owner's
    /// containers once this process is gone, however it ended; a kinetic that runs no container
    /// starts no reaper.
    pub fn new(
        engine: super::container::Engine,
        owner: super::container::Owner,
        reaper: Option<PathBuf>,
    ) -> Self {
        let reaping = match reaper {
            Some(kinetic) => Reaping::OnFirstContainer { kinetic },
            None => Reaping::Off,
        };
        Self {
            engine,
            owner,
            reaper: Arc::new(Mutex::new(reaping)),
        }
    }

    /// Starts the reaper unless it runs already (or is off).
    pub(crate) fn ensure_reaper(&self) -> io::Result<()> {
        let mut reaping = lock(&self.reaper);
        if let Reaping::OnFirstContainer { kinetic } = &*reaping {
            let reaper = super::container::Reaper::start(kinetic, &self.engine, &self.owner.id)?;
            *reaping = Reaping::Started { _reaper: reaper };
        }
        Ok(())
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            shim: None,
            grace_period: Duration::from_secs(30),
            probe_period: Duration::from_millis(1),
            probe_period_max: Duration::from_millis(50),
            probe_timeout: Duration::from_secs(1),
            probe_hold: Duration::from_millis(25),
            log_lines: 1000,
            max_log_line_bytes: 16 * 1024,
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            restart_backoff_reset: Duration::from_secs(60),
            log_dir: None,
            log_rotation: Rotation::default(),
            max_instances: DEFAULT_MAX_INSTANCES,
            exec_allow: ExecAllow::default(),
            cgroups: false,
            containers: None,
            sidecar: None,
        }
    }
}

impl ProcessConfig {
    pub(crate) fn probe(&self) -> ProbeConfig {
        ProbeConfig {
            period: self.probe_period,
            period_max: self.probe_period_max,
            timeout: self.probe_timeout,
            hold: self.probe_hold,
        }
    }

    fn backoff(&self) -> BackoffConfig {
        BackoffConfig {
            initial: self.restart_backoff,
            max: self.restart_backoff_max,
            reset_after: self.restart_backoff_reset,
        }
    }
}

/// Runs revisions' instances as local processes. See the module documentation.
#[derive(Debug)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

/// A live instance's process group and cgroups, by instance id.
type LiveGroups = HashMap<u64, (Pid, Option<Arc<InstanceCgroup>>)>;

/// State shared by the runtime, its supervisors and its instance tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub config: ProcessConfig,
    pub logs: LogStore,
    /// Every supervisor, instance and output task, for [`Runtime::shutdown`] to wait on.
    pub tracker: TaskTracker,
    /// Cancelled at shutdown; every instance's stop token is a child.
    cancel: CancellationToken,
    revisions: Mutex<HashMap<(String, String), Revision>>,
    /// Live process groups (and cgroups) by instance id, for [`Drop`] to kill without any task
    /// running.
    groups: Mutex<LiveGroups>,
    /// Where instances' cgroups go, found at start.
    pub cgroups: Cgroups,
    /// Instances started and not yet exited, across all revisions.
    instances: AtomicU32,
    /// Notified when an instance exits, for revisions waiting under the cap.
    freed: Notify,
    /// kinetic's own uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// Ports handed to live instances, so two starting at once never share one.
    ports: Mutex<HashSet<u16>>,
    next_id: AtomicU64,
}

/// The channels of one revision. Kept for the runtime's life so that receivers handed out by
/// [`Runtime::instances`] keep working across scale to zero and back.
#[derive(Debug)]
struct Revision {
    ready: watch::Sender<Vec<Arc<Instance>>>,
    status: watch::Sender<RevisionStatus>,
    /// `None` until the first scale starts the supervisor.
    desired: Option<watch::Sender<(Arc<InstanceSpec>, u32)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The sections never panic half-way; a poisoned lock still holds consistent data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProcessRuntime {
    /// A runtime with `config`. With [`ProcessConfig::cgroups`], looks for usable cgroups first
    /// (a few blocking file-system calls).
    pub fn new(config: ProcessConfig) -> Self {
        let logs = LogStore::new(config.log_lines);
        let cgroups = if config.cgroups {
            Cgroups::detect()
        } else {
            Cgroups::none()
        };
        Self {
            inner: Arc::new(Inner {
                config,
                logs,
                cgroups,
                instances: AtomicU32::new(0),
                freed: Notify::new(),
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
                revisions: Mutex::default(),
                groups: Mutex::default(),
                ports: Mutex::default(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// What this runtime can enforce on this machine.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.cgroups.capabilities()
    }

    fn with_revision<T>(
        &self,
        namespace: &str,
        revision: &str,
        f: impl FnOnce(&mut Revision) -> T,
    ) -> T {
        let mut revisions = lock(&self.inner.revisions);
        let entry = revisions
            .entry((namespace.to_owned(), revision.to_owned()))
            .or_insert_with(|| Revision {
                ready: watch::Sender::new(Vec::new()),
                status: watch::Sender::new(RevisionStatus::default()),
                desired: None,
            });
        f(entry)
    }
}

impl Runtime for ProcessRuntime {
    fn scale(&self, spec: Arc<InstanceSpec>, desired: u32) {
        if self.inner.cancel.is_cancelled() {
            warn!(namespace = %spec.namespace, revision = %spec.revision, desired, "Scale after shutdown ignored.");
            return;
        }
        let (namespace, revision) = (spec.namespace.clone(), spec.revision.clone());
        self.with_revision(&namespace, &revision, |entry| match &entry.desired {
            Some(sender) => {
                sender.send_replace((spec, desired));
            }
            None => {
                let (sender, receiver) = watch::channel((Arc::clone(&spec), desired));
                entry.desired = Some(sender);
                let supervisor = Supervisor::new(
                    Arc::clone(&self.inner),
                    spec,
                    receiver,
                    entry.ready.clone(),
                    entry.status.clone(),
                );
                self.inner.tracker.spawn(supervisor.run());
            }
        });
    }

    fn instances(&self, namespace: &str, revision: &str) -> watch::Receiver<Vec<Arc<Instance>>> {
        self.with_revision(namespace, revision, |entry| entry.ready.subscribe())
    }

    fn status(&self, namespace: &str, revision: &str) -> RevisionStatus {
        let revisions = lock(&self.inner.revisions);
        revisions
            .get(&(namespace.to_owned(), revision.to_owned()))
            .map(|entry| entry.status.borrow().clone())
            .unwrap_or_default()
    }

    fn logs(&self, namespace: &str, service: &str, limit: usize) -> Vec<LogLine> {
        self.inner.logs.tail(namespace, service, limit)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.cancel.cancel();
            self.inner.tracker.close();
            self.inner.tracker.wait().await;
            // Every instance task removed its container; what a task torn down mid-way left
            // goes here.
            if let Some(containers) = &self.inner.config.containers {
                match containers
                    .engine
                    .labelled(super::container::OWNER_LABEL, &containers.owner.id)
                    .await
                {
                    Ok(left) => {
                        for (id, _) in left {
                            containers.engine.remove(&id).await;
                        }
                    }
                    Err(error) => {
                        warn!(%error, "Listing this kinetic's containers at shutdown failed; the next start removes them.");
                    }
                }
            }
            self.inner.cgroups.remove();
        })
    }
}

impl Drop for ProcessRuntime {
    /// Kills every instance's group at once, without waiting: the last resort when nobody called
    /// [`Runtime::shutdown`]. The tasks then wind down on their own if their Tokio runtime lives on.
    fn drop(&mut self) {
        self.inner.cancel.cancel();
        for (pgid, cgroup) in lock(&self.inner.groups).values() {
            let _ = killpg(*pgid, Signal::SIGKILL);
            if let Some(cgroup) = cgroup {
                cgroup.kill();
            }
        }
    }
}

impl Inner {
    pub(crate) fn register_group(&self, id: u64, pgid: Pid, cgroup: Option<Arc<InstanceCgroup>>) {
        // A group spawned while the runtime was being dropped is missed by `Drop`; its task sees
        // the cancelled stop token and stops it instead.
        lock(&self.groups).insert(id, (pgid, cgroup));
    }

    /// Counts one more instance, unless the process-wide cap is reached.
    fn reserve_instance(&self) -> bool {
        let max = self.config.max_instances;
        self.instances
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release_instance(&self) {
        let _ = self
            .instances
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.freed.notify_waiters();
    }

    pub(crate) fn unregister_group(&self, id: u64) {
        lock(&self.groups).remove(&id);
    }

    /// A loopback port free right now and not handed to another live instance. Between this and the
    /// process binding it another program may take it; the instance then fails and is restarted on
    /// a new port.
    fn take_port(&self) -> io::Result<u16> {
        let mut ports = lock(&self.ports);
        for _ in 0..32 {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let port = listener.local_addr()?.port();
            if ports.insert(port) {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "the system kept offering ports that instances already use",
        ))
    }

    fn release_port(&self, port: u16) {
        lock(&self.ports).remove(&port);
    }
}

/// One instance as its supervisor tracks it.
struct Slot {
    instance: Arc<Instance>,
    /// The loopback ports kinetic picked for it (its own; with a sidecar also the sidecar's two).
    ports: Vec<u16>,
    /// What it runs; an older spec's instance is replaced (see [`plan::plan`]).
    spec: Arc<InstanceSpec>,
    phase: Phase,
    stop: CancellationToken,
    started: Instant,
    /// Its process died; it leaves the ready set at once and the slots at `Exited`.
    dead: bool,
}

/// Owns one revision's instances; see the module documentation.
struct Supervisor {
    inner: Arc<Inner>,
    spec: Arc<InstanceSpec>,
    desired: u32,
    desired_rx: watch::Receiver<(Arc<InstanceSpec>, u32)>,
    slots: BTreeMap<u64, Slot>,
    backoff: Backoff,
    /// Crashed instances not yet replaced.
    owed_restarts: u32,
    /// Starts are held back by the process-wide instance cap.
    capped: bool,
    /// What the spec asks for that this machine cannot enforce.
    unenforced: Vec<Condition>,
    /// Counters carried from event to event; the instance counts are recomputed from `slots`.
    status: RevisionStatus,
    ready_tx: watch::Sender<Vec<Arc<Instance>>>,
    status_tx: watch::Sender<RevisionStatus>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
}

impl Supervisor {
    fn new(
        inner: Arc<Inner>,
        spec: Arc<InstanceSpec>,
        mut desired_rx: watch::Receiver<(Arc<InstanceSpec>, u32)>,
        ready_tx: watch::Sender<Vec<Arc<Instance>>>,
        status_tx: watch::Sender<RevisionStatus>,
    ) -> Self {
        let desired = desired_rx.borrow_and_update().1;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let status = status_tx.borrow().clone();
        let unenforced = Self::unenforced_of(&inner, &spec);
        Self {
            inner,
            spec,
            desired,
            desired_rx,
            slots: BTreeMap::new(),
            backoff: Backoff::default(),
            owed_restarts: 0,
            capped: false,
            unenforced,
            status,
            ready_tx,
            status_tx,
            events_tx,
            events_rx,
        }
    }

    fn unenforced_of(inner: &Inner, spec: &InstanceSpec) -> Vec<Condition> {
        super::enforce::unenforced(spec, inner.cgroups.capabilities(), inner.uid, inner.gid)
    }

    /// Runs until shutdown has stopped every instance. Events are bounded by the instances
    /// started, two each, so the unbounded channel is not.
    async fn run(mut self) {
        let cancel = self.inner.cancel.clone();
        let mut desired_open = true;
        loop {
            let now = Instant::now();
            self.reconcile(now);
            self.publish();
            if cancel.is_cancelled() && self.slots.is_empty() {
                return;
            }
            let wake = self
                .backoff
                .not_before()
                .filter(|at| *at > now && self.live() < self.desired)
                .or_else(|| {
                    (self.capped && self.live() < self.desired).then(|| now + CAPPED_RETRY)
                });
            let freed = self.inner.freed.notified();
            tokio::select! {
                changed = self.desired_rx.changed(), if desired_open && !cancel.is_cancelled() => {
                    match changed {
                        Ok(()) => {
                            let (spec, desired) = self.desired_rx.borrow_and_update().clone();
                            if spec != self.spec {
                                self.unenforced = Self::unenforced_of(&self.inner, &spec);
                            }
                            self.spec = spec;
                            self.desired = desired;
                        }
                        Err(_) => desired_open = false,
                    }
                }
                Some(event) = self.events_rx.recv() => self.on_event(event, Instant::now()),
                () = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
                () = freed, if self.capped => {}
                () = cancel.cancelled(), if !cancel.is_cancelled() => {}
            }
        }
    }

    /// Instances of the current spec that are starting or ready.
    fn live(&self) -> u32 {
        self.slots
            .values()
            .filter(|s| s.phase != Phase::Stopping && s.spec == self.spec)
            .count() as u32
    }

    fn reconcile(&mut self, now: Instant) {
        let shutting_down = self.inner.cancel.is_cancelled();
        if shutting_down {
            self.desired = 0;
        }
        self.owed_restarts = self
            .owed_restarts
            .min(self.desired.saturating_sub(self.live()));
        let views: Vec<SlotView> = self
            .slots
            .iter()
            .map(|(&id, slot)| SlotView {
                id,
                phase: slot.phase,
                in_flight: slot.instance.in_flight(),
                started: slot.started,
                current: slot.spec == self.spec,
            })
            .collect();
        let may_start = !shutting_down && self.backoff.may_start(now);
        let plan = plan::plan(self.desired, &views, may_start);
        self.capped = false;
        for id in plan.stop {
            if let Some(slot) = self.slots.get_mut(&id) {
                debug!(revision = %self.spec.revision, instance = id, "Stopping instance.");
                slot.phase = Phase::Stopping;
                // Out of the ready set at the next publish, and no new request from now on.
                slot.instance.drain();
                slot.stop.cancel();
            }
        }
        for _ in 0..plan.start {
            if !self.start(now) {
                break;
            }
        }
        if self.capped {
            // The process-wide cap holds back the replacements of an older spec's instances: they
            // make room, or they would serve the old spec for as long as the cap is reached.
            let spec = &self.spec;
            for (id, slot) in &mut self.slots {
                if slot.phase != Phase::Stopping && slot.spec != *spec {
                    debug!(revision = %spec.revision, instance = id, "Stopping an instance of an older spec to make room.");
                    slot.phase = Phase::Stopping;
                    slot.instance.drain();
                    slot.stop.cancel();
                }
            }
        }
    }

    /// Starts one instance; false if even that failed (then counted as a crash) or the
    /// process-wide cap is reached.
    fn start(&mut self, now: Instant) -> bool {
        if !self.inner.reserve_instance() {
            self.capped = true;
            return false;
        }
        // A process listens on a port kinetic picks; a container's is published on a port the
        // engine picks, so no other program can take it in between.
        let wanted = match (&self.spec.image, &self.inner.config.sidecar) {
            (Some(_), _) => 0,
            (None, None) => 1,
            // The sidecar's listener (the instance's address), its admin listener, the process.
            (None, Some(_)) => 3,
        };
        let mut ports = Vec::with_capacity(wanted);
        let mut taken = Ok(());
        for _ in 0..wanted {
            match self.inner.take_port() {
                Ok(port) => ports.push(port),
                Err(error) => {
                    taken = Err(error);
                    break;
                }
            }
        }
        match taken {
            Ok(()) => {}
            Err(source) => {
                for port in ports {
                    self.inner.release_port(port);
                }
                self.inner.release_instance();
                self.crashed(
                    Crash {
                        error: Error::NoPort(source),
                        uptime: Duration::ZERO,
                    },
                    now,
                );
                return false;
            }
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let instance = Instance::unplaced(id);
        let loopback = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if let Some(port) = ports.first() {
            instance.place(loopback(*port));
        }
        let upstream = match ports.as_slice() {
            [_, admin, process] => {
                instance.place_admin(loopback(*admin));
                Some(*process)
            }
            _ => None,
        };
        let instance = Arc::new(instance);
        let stop = self.inner.cancel.child_token();
        if self.owed_restarts > 0 {
            self.owed_restarts -= 1;
            self.status.restarts += 1;
        }
        self.slots.insert(
            id,
            Slot {
                instance: Arc::clone(&instance),
                ports,
                spec: Arc::clone(&self.spec),
                phase: Phase::Starting,
                stop: stop.clone(),
                started: now,
                dead: false,
            },
        );
        let launch = Launch {
            instance,
            upstream,
            spec: Arc::clone(&self.spec),
            stop,
            events: self.events_tx.clone(),
        };
        self.inner
            .tracker
            .spawn(lifecycle::run(Arc::clone(&self.inner), launch));
        true
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Ready { id, startup } => {
                if let Some(slot) = self.slots.get_mut(&id)
                    && slot.phase == Phase::Starting
                {
                    slot.phase = Phase::Ready;
                    self.status.startups += 1;
                    self.status.last_startup = Some(startup);
                }
            }
            Event::Died { id } => {
                // Still live for `plan` until `Exited`, so the replacement waits for the backoff.
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.dead = true;
                }
            }
            Event::Exited { id, crash } => {
                let Some(slot) = self.slots.remove(&id) else {
                    return;
                };
                for port in slot.ports {
                    self.inner.release_port(port);
                }
                self.inner.release_instance();
                // An instance asked to stop may die of anything on the way out.
                if let Some(crash) = crash
                    && slot.phase != Phase::Stopping
                {
                    self.crashed(crash, now);
                    self.owed_restarts += 1;
                }
            }
        }
    }

    fn crashed(&mut self, crash: Crash, now: Instant) {
        self.status.crashes += 1;
        self.status.last_error = Some(Arc::new(crash.error));
        self.backoff
            .crashed(&self.inner.config.backoff(), crash.uptime, now);
    }

    fn publish(&mut self) {
        let ready: Vec<Arc<Instance>> = self
            .slots
            .values()
            .filter(|s| s.phase == Phase::Ready && !s.dead)
            .map(|s| Arc::clone(&s.instance))
            .collect();
        self.ready_tx.send_if_modified(|current| {
            let same = current.len() == ready.len()
                && current.iter().zip(&ready).all(|(a, b)| a.id == b.id);
            if !same {
                *current = ready;
            }
            !same
        });
        let count = |phase| self.slots.values().filter(|s| s.phase == phase).count() as u32;
        self.status.desired = self.desired;
        self.status.starting = count(Phase::Starting);
        self.status.ready = count(Phase::Ready);
        self.status.draining = count(Phase::Stopping);
        self.status.conditions = self.unenforced.clone();
        if self.capped && self.live() < self.desired {
            self.status.conditions.push(Condition {
                kind: "ResourcesAvailable",
                status: "False",
                reason: "InstanceLimit",
                message: format!(
                    "{} of {} instances run; kinetic runs at most {} instances at once (--max-instances), so the rest wait for others to stop",
                    self.live(),
                    self.desired,
                    self.inner.config.max_instances
                ),
            });
        }
        self.status_tx.send_replace(self.status.clone());
    }
}
