//! Runtimes: where a revision's instances run.
//!
//! [`Runtime`] is all the rest of serving sees: the autoscaler says how many instances a revision
//! should have ([`Runtime::scale`]), the data plane watches which are ready ([`Runtime::instances`])
//! and counts its requests on each ([`Instance::begin`]), the controller reads counts and the last
//! failure for the revision's status ([`Runtime::status`]), and the CLI shows output
//! ([`Runtime::logs`]).
//!
//! [`ProcessRuntime`] runs instances as local processes (start in `process.rs`, one instance's life
//! in `lifecycle.rs`, what happens in the new process before the program in `shim.rs`); a
//! Kubernetes runtime will implement the same trait. The decisions (which instance to stop, how
//! long to wait before a restart, how often to probe, what a function's environment is, what the
//! machine cannot enforce) are plain functions in `plan.rs`, `probe.rs`, `env.rs` and
//! `enforce.rs`; limits are applied through `cgroup.rs`, allowed programs checked in `allow.rs`.

pub mod allow;
pub mod cgroup;
pub mod container;
pub mod enforce;
pub mod env;
pub mod kubernetes;
mod lifecycle;
mod logs;
mod plan;
pub(crate) mod probe;
pub mod process;
pub mod shim;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

pub use allow::ExecAllow;
pub use cgroup::Capabilities;
pub use kubernetes::{KubernetesConfig, KubernetesRuntime};
pub use logs::Rotation;
pub use process::{
    Containers, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_SCALE, ProcessConfig, ProcessRuntime,
};
pub use shim::exec_shim;

/// One revision's container, shared by all of its instances. A revision is immutable, so the
/// runtime keeps whichever spec it was last given for a revision and starts new instances from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSpec {
    pub namespace: String,
    pub service: String,
    pub configuration: String,
    pub revision: String,
    /// Program then arguments: the container's `command` and `args`, joined by the caller.
    pub command: Vec<String>,
    /// The image the instances run as containers on the container engine, when the Service names
    /// no `command`.
    pub image: Option<ContainerImage>,
    /// The Service's environment: with `PATH`, `HOME`, `LANG`, `TZ` from kinetic's and Knative's
    /// `PORT`, `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION`, all an instance gets (see `env.rs`).
    pub env: Vec<(String, EnvValue)>,
    pub working_dir: Option<PathBuf>,
    /// `readinessProbe.httpGet.path`: any 2xx answer means ready. `None` probes with a TCP connect.
    pub readiness_path: Option<String>,
    /// The container's declared port. The process runtime only documents it: each instance gets a
    /// free loopback port in `PORT`, since instances of one revision cannot share a port.
    pub container_port: Option<u16>,
    /// `resources.limits`.
    pub limits: kinetic_api::serving::Limits,
    /// `securityContext.runAsUser` and `runAsGroup`.
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    /// `securityContext.runAsNonRoot`.
    pub run_as_non_root: bool,
    /// `securityContext.readOnlyRootFilesystem` (containers).
    pub read_only_root: bool,
    /// `securityContext.allowPrivilegeEscalation: false` (containers).
    pub no_new_privileges: bool,
    /// `securityContext.capabilities.add` and `drop` (containers).
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// `securityContext` fields that were set and that no runtime of kinetic enforces locally.
    pub unenforced_security: Vec<String>,
    /// `containerConcurrency` (0: no limit), for a queue-proxy in front of the instance.
    pub container_concurrency: u32,
    /// `timeoutSeconds`, for a queue-proxy in front of the instance.
    pub timeout: Duration,
    /// The Revision's uid: what a runtime's objects are owned by and selected with.
    pub revision_uid: String,
    /// The container as the Service's template writes it (Knative's fields), for a runtime that
    /// hands it to Kubernetes unchanged.
    pub container: Option<serde_json::Value>,
}

/// An image whose containers are a revision's instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerImage {
    pub image: String,
    /// `args`: replaces the image's command when set.
    pub args: Vec<String>,
    /// `imagePullPolicy`.
    pub pull: ImagePull,
}

/// When the image is pulled from its registry before an instance starts (`imagePullPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImagePull {
    /// Only when this machine does not have it (the default here: local images work offline).
    #[default]
    IfNotPresent,
    /// Before every start; a failed pull fails the start.
    Always,
    /// Never: the image must be on this machine.
    Never,
}

/// The value of one of a Service's variables: written in the Service, or read from a secret each
/// time an instance starts (so a rotated secret reaches new instances, and the value is never
/// stored, shown or logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Value(String),
    Secret(kinetic_api::sources::SecretKeySelector),
}

impl From<&str> for EnvValue {
    fn from(value: &str) -> Self {
        EnvValue::Value(value.to_owned())
    }
}

/// A condition of a revision, as Knative's status conditions: `status` is "True" or "False",
/// `reason` a stable code, `message` for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Bit of [`Instance::state`] set once the instance stops taking requests.
const DRAINING: u64 = 1 << 63;

/// One ready instance as the data plane sees it: where to send requests, and how many are on it.
#[derive(Debug)]
pub struct Instance {
    /// Unique within one runtime for its whole life, never reused.
    pub id: u64,
    /// Where it listens: known at creation for a process (kinetic picks its port), once running
    /// for a container (the engine publishes a port of its choosing). Always set before the
    /// instance joins the ready set.
    address: OnceLock<SocketAddr>,
    /// Where its queue-proxy answers `/ready` and `/stats`, when one stands in front of it (the
    /// split shape, Kubernetes); the autoscaler scrapes it.
    admin: OnceLock<SocketAddr>,
    /// Requests in flight in the low bits, [`DRAINING`] in the top bit: one atomic word, so a
    /// request can never begin after the drain saw zero.
    state: AtomicU64,
    idle: Notify,
}

impl Instance {
    pub fn new(id: u64, address: SocketAddr) -> Self {
        let instance = Self::unplaced(id);
        instance.place(address);
        instance
    }

    /// An instance whose address is known only once it runs: [`Instance::place`] sets it.
    pub(crate) fn unplaced(id: u64) -> Self {
        Self {
            id,
            address: OnceLock::new(),
            admin: OnceLock::new(),
            state: AtomicU64::new(0),
            idle: Notify::new(),
        }
    }

    /// Sets where the instance listens; the first call wins.
    pub(crate) fn place(&self, address: SocketAddr) {
        let _ = self.address.set(address);
    }

    /// An instance at `address` whose queue-proxy reports at `admin`.
    pub fn with_admin(id: u64, address: SocketAddr, admin: SocketAddr) -> Self {
        let instance = Self::new(id, address);
        instance.place_admin(admin);
        instance
    }

    /// Sets where the instance's queue-proxy reports; the first call wins.
    pub(crate) fn place_admin(&self, admin: SocketAddr) {
        let _ = self.admin.set(admin);
    }

    /// Where the instance's queue-proxy answers `/ready` and `/stats`, if it has one.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin.get().copied()
    }

    /// Where the instance listens; `0.0.0.0:0`, which nothing answers, before it is placed (no
    /// instance joins the ready set before).
    pub fn address(&self) -> SocketAddr {
        self.address
            .get()
            .copied()
            .unwrap_or(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// Counts one request until the guard drops. `None` once the instance is draining or gone:
    /// the caller picks another instance (its list of ready instances was a moment old).
    pub fn begin(self: &Arc<Self>) -> Option<InFlight> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current & DRAINING != 0 {
                return None;
            }
            match self.state.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(InFlight {
                        instance: Arc::clone(self),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !DRAINING
    }

    /// Whether the instance has stopped taking requests.
    pub fn is_draining(&self) -> bool {
        self.state.load(Ordering::Acquire) & DRAINING != 0
    }

    /// Refuses new requests from now on; the ones in flight go on. Idempotent. Only the runtime
    /// drains, as it removes the instance from the ready set.
    pub(crate) fn drain(&self) {
        self.state.fetch_or(DRAINING, Ordering::AcqRel);
    }

    /// Resolves once no request is in flight. Cancel safe. Once the instance is draining
    /// ([`Instance::is_draining`]), that stays true.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a guard dropping in between still wakes us.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One request in flight on an [`Instance`]; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    instance: Arc<Instance>,
}

impl InFlight {
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.instance.state.fetch_sub(1, Ordering::AcqRel);
        if before & !DRAINING == 1 {
            self.instance.idle.notify_waiters();
        }
    }
}

/// Counts for a revision's status and metrics.
#[derive(Debug, Clone, Default)]
pub struct RevisionStatus {
    /// What the last [`Runtime::scale`] asked for (0 after shutdown).
    pub desired: u32,
    /// Started, not yet ready.
    pub starting: u32,
    /// Ready and in the set [`Runtime::instances`] returns.
    pub ready: u32,
    /// Asked to stop: finishing their requests, or terminating.
    pub draining: u32,
    /// Instances that exited without being asked to, or could not be started at all.
    pub crashes: u64,
    /// Instances started to replace a crashed one.
    pub restarts: u64,
    /// Instances that became ready.
    pub startups: u64,
    /// Start-up duration of the instance that became ready last, from spawn to its first
    /// successful readiness probe: the process part of a cold start.
    pub last_startup: Option<Duration>,
    /// Why the last crash happened, for the revision's status message.
    pub last_error: Option<Arc<Error>>,
    /// What is not as the revision asked: limits or security settings this machine cannot
    /// enforce, instances held back by the process-wide cap.
    pub conditions: Vec<Condition>,
}

/// Which of an instance's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl std::fmt::Display for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an instance's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub revision: Arc<str>,
    pub instance: u64,
    pub stream: LogStream,
    pub time: SystemTime,
    /// The line without its end, decoded as UTF-8 with invalid bytes replaced.
    pub text: String,
    /// The line was longer than the runtime keeps; `text` is its beginning.
    pub truncated: bool,
}

/// Where a revision's instances run.
///
/// Every method returns at once: starting, probing, draining and stopping happen in the background,
/// and callers learn about them through [`Runtime::instances`] and [`Runtime::status`]. Methods
/// must be called from within a Tokio runtime.
pub trait Runtime: Send + Sync {
    /// Ensures the revision runs `desired` instances (0 stops all). Idempotent; the latest call wins.
    fn scale(&self, spec: Arc<InstanceSpec>, desired: u32);

    /// The ready instances of a revision, ordered by id. The value changes as soon as an instance
    /// becomes ready, is removed for draining, or dies. A revision never scaled has none.
    fn instances(&self, namespace: &str, revision: &str) -> watch::Receiver<Vec<Arc<Instance>>>;

    /// Counts and the last failure of a revision; all zero for a revision never scaled.
    fn status(&self, namespace: &str, revision: &str) -> RevisionStatus;

    /// The last `limit` output lines of a service's instances (all revisions), oldest first.
    fn logs(&self, namespace: &str, service: &str, limit: usize) -> Vec<LogLine>;

    /// The revision is no longer served: after [`Runtime::scale`] to 0, what the runtime keeps
    /// for it beyond its instances can go (on Kubernetes its Deployment and Service). A later
    /// `scale` starts it again from nothing.
    fn release(&self, _namespace: &str, _revision: &str) {}

    /// Stops every instance (drain, SIGTERM, SIGKILL after the grace period) and resolves once all
    /// have exited. Later [`Runtime::scale`] calls are ignored. Idempotent; cancelling the future
    /// does not cancel the stop, which goes on in the background.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// Why an instance could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the revision has no command: set the container's `command` (or `args`)")]
    EmptyCommand,

    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },

    #[error("working directory `{}` is not usable: {source}", path.display())]
    WorkingDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("lost track of the instance's process: {0}")]
    Wait(#[source] io::Error),

    #[error("no free loopback port for an instance: {0}")]
    NoPort(#[source] io::Error),

    #[error("{0} (hint: {hint})", hint = .0.hint())]
    NotAllowed(#[source] allow::NotAllowed),

    #[error(
        "the revision runs image `{image}` and this kinetic has no container engine (hint: start Docker Engine or Podman's socket, or name one with --container-engine)"
    )]
    NoEngine { image: String },

    #[error("{0}")]
    Container(#[source] container::EngineError),
    /// The process that removes this run's containers should kinetic die could not be started;
    /// no container runs without it.
    #[error("cannot start the container reaper (`kinetic __container-reaper`): {0}")]
    Reaper(#[source] io::Error),

    #[error(
        "securityContext.runAsNonRoot is true but the instance would run as uid 0{} (hint: set securityContext.runAsUser to a non-zero uid)",
        if *kinetic_is_root { " (kinetic runs as root and no runAsUser is set)" } else { "" }
    )]
    RunsAsRoot { kinetic_is_root: bool },

    #[error("the instance's queue-proxy (`kinetic queue-proxy`) exited with {0}")]
    SidecarExited(ExitStatus),

    #[error("cannot start the instance's queue-proxy (`kinetic queue-proxy`): {0}")]
    Sidecar(#[source] io::Error),

    #[error(
        "the revision names no `image`; on Kubernetes every revision runs an image (hint: set the container's `image`)"
    )]
    NoImage,

    #[error("the Kubernetes API refused the revision's {object}: {message}")]
    Kubernetes {
        object: &'static str,
        message: String,
    },

    #[error("cannot create the instance's cgroup for its limits: {0}")]
    Cgroup(#[source] io::Error),

    #[error("env `{variable}` reads {secret}: {problem} (hint: {hint})")]
    Secret {
        variable: String,
        /// Where the value is (`secret NAME key KEY`), never the value.
        secret: String,
        problem: String,
        hint: &'static str,
    },

    #[error(
        "{}instance exited {} with {status}{}",
        if *oom_killed { "OOMKilled: the instance went over resources.limits.memory and the kernel killed it; " } else { "" },
        if *ready { "after becoming ready" } else { "before becoming ready" },
        match stderr { Some(line) => format!("; last stderr line: {line}"), None => String::new() }
    )]
    Exited {
        status: ExitStatus,
        /// Whether it had passed its readiness probe.
        ready: bool,
        /// Its last non-empty line on stderr, which usually says why.
        stderr: Option<String>,
        /// The kernel's OOM killer ended it (its cgroup went over the memory limit).
        oom_killed: bool,
    },
}

impl Error {
    /// Whether starting again the same way fails the same way until something outside changes
    /// (the image loaded, the program installed, the secret written, the settings changed), so
    /// a request waiting for an instance is better told now than at its timeout.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::EmptyCommand
                | Error::Spawn { .. }
                | Error::WorkingDir { .. }
                | Error::NotAllowed(_)
                | Error::RunsAsRoot { .. }
                | Error::Secret { .. }
                | Error::NoEngine { .. }
                | Error::NoImage
                | Error::Container(container::EngineError::ImageMissing { .. })
        )
    }

    /// Why the instance ended, as Kubernetes' `lastState.terminated.reason` says it: `OOMKilled`,
    /// `Error` (it exited or was killed), or why it could not start.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Exited {
                oom_killed: true, ..
            } => "OOMKilled",
            Error::Exited { .. } | Error::Wait(_) | Error::SidecarExited(_) => "Error",
            Error::NotAllowed(_) => "ProgramNotAllowed",
            Error::Container(container::EngineError::ImageMissing { .. }) => "ErrImagePull",
            Error::NoEngine { .. } | Error::Container(_) | Error::Reaper(_) => "StartError",
            Error::RunsAsRoot { .. } => "RunAsNonRoot",
            // Kubernetes' reason for a pod whose secret is missing.
            Error::Secret { .. } => "CreateContainerConfigError",
            Error::EmptyCommand
            | Error::Spawn { .. }
            | Error::WorkingDir { .. }
            | Error::NoPort(_)
            | Error::Sidecar(_)
            | Error::NoImage
            | Error::Kubernetes { .. }
            | Error::Cgroup(_) => "StartError",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> Arc<Instance> {
        Arc::new(Instance::new(1, "127.0.0.1:1".parse().unwrap()))
    }

    #[test]
    fn guards_count_requests() {
        let instance = instance();
        let a = instance.begin().unwrap();
        let b = instance.begin().unwrap();
        assert_eq!(instance.in_flight(), 2);
        drop(a);
        assert_eq!(instance.in_flight(), 1);
        drop(b);
        assert_eq!(instance.in_flight(), 0);
    }

    #[test]
    fn draining_refuses_new_requests_and_keeps_old_ones() {
        let instance = instance();
        let held = instance.begin().unwrap();
        instance.drain();
        assert!(instance.is_draining());
        assert!(instance.begin().is_none());
        assert_eq!(instance.in_flight(), 1);
        drop(held);
        assert_eq!(instance.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_when_the_last_request_ends() {
        let instance = instance();
        let held = instance.begin().unwrap();
        instance.drain();
        let waiter = tokio::spawn({
            let instance = Arc::clone(&instance);
            async move { instance.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("idle resolves")
            .unwrap();
    }

    #[test]
    fn errors_say_what_and_why() {
        let spawn = Error::Spawn {
            program: "nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(spawn.to_string().starts_with("cannot start `nope`: "));
        use std::os::unix::process::ExitStatusExt;
        let exited = Error::Exited {
            status: ExitStatus::from_raw(3 << 8),
            ready: false,
            stderr: Some("boom".into()),
            oom_killed: false,
        };
        assert_eq!(
            exited.to_string(),
            "instance exited before becoming ready with exit status: 3; last stderr line: boom"
        );
        assert_eq!(exited.reason(), "Error");
        let oom = Error::Exited {
            status: ExitStatus::from_raw(9),
            ready: true,
            stderr: None,
            oom_killed: true,
        };
        assert!(oom.to_string().starts_with("OOMKilled: "), "{oom}");
        assert_eq!(oom.reason(), "OOMKilled");
    }
}
