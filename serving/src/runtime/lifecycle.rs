//! One instance's life as a process: spawn, probe until ready, serve, then either crash or drain
//! and stop. Each instance runs as one task that tells its revision's supervisor when it became
//! ready and when it is gone.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cgroup::InstanceCgroup;
use super::container::{self, ContainerRequest, Security};
use super::logs::{self, Sink};
use super::probe::{self, Check};
use super::process::{Inner, PARENT_PID_ENV};
use super::shim::ShimOptions;
use super::{ContainerImage, Error, ImagePull, Instance, InstanceSpec, LogStream, env};

/// What an instance task reports to its supervisor.
#[derive(Debug)]
pub(crate) enum Event {
    Ready {
        id: u64,
        startup: Duration,
    },
    /// A ready instance's process died; `Exited` follows once its output is collected.
    Died {
        id: u64,
    },
    Exited {
        id: u64,
        crash: Option<Crash>,
    },
}

/// An exit nobody asked for, or a start that failed.
#[derive(Debug)]
pub(crate) struct Crash {
    pub error: Error,
    /// How long the process had been running; zero if it never started.
    pub uptime: Duration,
}

/// Everything one instance task needs.
pub(crate) struct Launch {
    pub instance: Arc<Instance>,
    /// With a queue-proxy in front (the runtime's sidecar), the port the process itself listens
    /// on; the instance's address is the queue-proxy's.
    pub upstream: Option<u16>,
    pub spec: Arc<InstanceSpec>,
    /// Cancelled when the supervisor wants the instance gone, or at shutdown.
    pub stop: CancellationToken,
    pub events: mpsc::UnboundedSender<Event>,
}

/// How long to wait for SIGKILLed members of a group to be gone.
const GROUP_EXIT_WAIT: Duration = Duration::from_secs(1);

/// How long to wait, once the process is gone, for the rest of its output.
const OUTPUT_LINGER: Duration = Duration::from_millis(250);

/// Runs one instance to its end and reports it. Must run on a Tokio worker thread (a spawned task),
/// never in `spawn_blocking`: with the shim, the child's parent-death signal fires when the *thread*
/// that spawned it exits, and blocking-pool threads exit when idle.
pub(crate) async fn run(inner: Arc<Inner>, launch: Launch) {
    let id = launch.instance.id;
    let crash = match &launch.spec.image {
        Some(image) => run_container(&inner, &launch, image).await,
        None => match spawn(&inner, &launch) {
            Ok(process) => supervise(&inner, &launch, process).await,
            Err(error) => Some(Crash {
                error,
                uptime: Duration::ZERO,
            }),
        },
    };
    launch.instance.drain();
    if let Some(crash) = &crash {
        warn!(
            namespace = %launch.spec.namespace,
            revision = %launch.spec.revision,
            instance = id,
            error = %crash.error,
            "Instance crashed."
        );
    }
    // The supervisor waits for every instance's `Exited`; the send fails only if its task was torn
    // down with the Tokio runtime, and then nobody is left to tell.
    let _ = launch.events.send(Event::Exited { id, crash });
}

/// One instance as a container of `image` on the container engine: run, probe, serve, then either
/// crash or drain and stop; the container is removed either way. Returns the crash if it ended
/// unasked or could not start.
async fn run_container(
    inner: &Arc<Inner>,
    launch: &Launch,
    image: &ContainerImage,
) -> Option<Crash> {
    let failed = |error| {
        Some(Crash {
            error,
            uptime: Duration::ZERO,
        })
    };
    let Some(containers) = &inner.config.containers else {
        return failed(Error::NoEngine {
            image: image.image.clone(),
        });
    };
    let spec = &launch.spec;
    let instance = &launch.instance;
    let port = spec
        .container_port
        .unwrap_or(container::DEFAULT_CONTAINER_PORT);
    // The instance's environment as a process's, but nothing of this machine's: the image has its
    // own PATH and HOME (kept unless the Service sets them).
    let environment = match env::build(spec, port, |_| None, None, kinetic_api::secret::read) {
        Ok(environment) => environment,
        Err(error) => return failed(error),
    };
    let named = |name: &str| spec.env.iter().any(|(n, _)| n == name);
    let env = environment
        .into_iter()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .filter(|(name, _)| !matches!(name.as_str(), "PATH" | "HOME") || named(name))
        .collect();
    let request = ContainerRequest {
        namespace: spec.namespace.clone(),
        revision: spec.revision.clone(),
        instance: instance.id,
        image: image.image.clone(),
        command: Vec::new(),
        args: image.args.clone(),
        env,
        working_dir: spec.working_dir.as_ref().map(|d| d.display().to_string()),
        container_port: port,
        // The engine picks the host port; `run` reads it back.
        host_port: None,
        memory_bytes: spec.limits.memory_bytes,
        cpu_millis: spec.limits.cpu_millis,
        security: Security {
            run_as_user: spec.run_as_user,
            run_as_group: spec.run_as_group,
            read_only_root: spec.read_only_root,
            capabilities_add: spec.capabilities_add.clone(),
            capabilities_drop: spec.capabilities_drop.clone(),
            no_new_privileges: spec.no_new_privileges,
        },
    };
    let engine = &containers.engine;
    let pulled = match image.pull {
        ImagePull::Always => engine.pull(&image.image).await,
        ImagePull::IfNotPresent => match engine.has_image(&image.image).await {
            Ok(true) => Ok(()),
            Ok(false) => engine.pull(&image.image).await,
            Err(error) => Err(error),
        },
        // A missing image is reported by the start.
        ImagePull::Never => Ok(()),
    };
    if let Err(error) = pulled {
        return failed(Error::Container(error));
    }
    if spec.run_as_non_root {
        let as_root = match spec.run_as_user {
            Some(uid) => uid == 0,
            None => match engine.image_runs_as_root(&image.image).await {
                Ok(as_root) => as_root,
                Err(error) => return failed(Error::Container(error)),
            },
        };
        if as_root {
            return failed(Error::RunsAsRoot {
                kinetic_is_root: false,
            });
        }
    }
    if let Err(error) = containers.ensure_reaper() {
        return failed(Error::Reaper(error));
    }
    let started = Instant::now();
    let running = match engine
        .run(&container::plan(&request, &containers.owner))
        .await
    {
        Ok(running) => running,
        Err(error) => return failed(Error::Container(error)),
    };
    instance.place(running.address);
    let last_stderr = Arc::new(Mutex::new(None));
    let mut pumps = pump_container_output(inner, launch, engine, &running.id, &last_stderr);
    debug!(
        namespace = %spec.namespace,
        revision = %spec.revision,
        instance = instance.id,
        container = %running.id,
        address = %running.address,
        "Instance started as a container."
    );
    let exited = engine.wait(&running.id);
    tokio::pin!(exited);
    let probe_config = inner.config.probe();
    let ready = tokio::select! {
        biased;
        () = launch.stop.cancelled() => false,
        exit = &mut exited => {
            finish_pumps(&mut pumps).await;
            return Some(container_crashed(engine, &running.id, exit, false, started, &last_stderr, launch).await);
        }
        () = probe::until_ready(&probe_config, running.address, Check::new(spec.readiness_path.as_deref(), true), started) => true,
    };
    if ready {
        announce_ready(launch, started);
        tokio::select! {
            biased;
            () = launch.stop.cancelled() => {}
            exit = &mut exited => {
                finish_pumps(&mut pumps).await;
                return Some(container_crashed(engine, &running.id, exit, true, started, &last_stderr, launch).await);
            }
        }
    }
    // Drain, then SIGTERM with the grace period, then gone.
    instance.drain();
    let grace = inner.config.grace_period;
    tokio::select! {
        drained = tokio::time::timeout(grace, instance.idle()) => {
            if drained.is_err() {
                warn!(instance = instance.id, in_flight = instance.in_flight(), "Requests still in flight after the grace period; stopping the instance anyway.");
            }
        }
        _ = &mut exited => {}
    }
    if let Err(error) = engine.stop(&running.id, grace).await {
        warn!(instance = instance.id, container = %running.id, %error, "Stopping a container failed; removing it.");
    }
    finish_pumps(&mut pumps).await;
    engine.remove(&running.id).await;
    None
}

/// Logs and reports that the instance passed its readiness probe, started at `started`.
fn announce_ready(launch: &Launch, started: Instant) {
    let startup = started.elapsed();
    info!(
        namespace = %launch.spec.namespace,
        revision = %launch.spec.revision,
        instance = launch.instance.id,
        startup_ms = startup.as_millis() as u64,
        "Instance ready."
    );
    let _ = launch.events.send(Event::Ready {
        id: launch.instance.id,
        startup,
    });
}

/// Cleans up after a container that ended unasked and says why.
async fn container_crashed(
    engine: &container::Engine,
    id: &str,
    exit: Result<container::Exit, container::EngineError>,
    ready: bool,
    started: Instant,
    last_stderr: &Mutex<Option<String>>,
    launch: &Launch,
) -> Crash {
    let uptime = started.elapsed();
    launch.instance.drain();
    if ready {
        let _ = launch.events.send(Event::Died {
            id: launch.instance.id,
        });
    }
    engine.remove(id).await;
    let error = match exit {
        Ok(exit) => Error::Exited {
            // An exit code as a wait status (the engine reports a signal as 128 + its number).
            status: std::os::unix::process::ExitStatusExt::from_raw(
                i32::try_from(exit.code & 0xff).unwrap_or(0xff) << 8,
            ),
            ready,
            stderr: last_stderr.lock().unwrap_or_else(|e| e.into_inner()).take(),
            oom_killed: exit.oom_killed,
        },
        Err(error) => Error::Container(error),
    };
    Crash { error, uptime }
}

/// Where an instance's stdout and stderr go: its service's ring (`kinetic logs`) and, with a log
/// directory, its file; the last stderr line is kept in `last_stderr` for a crash's message.
fn sinks(
    inner: &Arc<Inner>,
    launch: &Launch,
    last_stderr: &Arc<Mutex<Option<String>>>,
) -> [Sink; 2] {
    let spec = &launch.spec;
    let revision: Arc<str> = Arc::from(spec.revision.as_str());
    let ring = inner.logs.ring(&spec.namespace, &spec.service);
    let file = inner.config.log_dir.as_deref().map(|dir| {
        let path = logs::file_path(
            dir,
            &spec.namespace,
            &spec.service,
            &spec.revision,
            launch.instance.id,
        );
        Arc::new(tokio::sync::Mutex::new(logs::LogFile::new(
            path,
            inner.config.log_rotation,
        )))
    });
    let sink = |stream, last_line| Sink {
        revision: Arc::clone(&revision),
        instance: launch.instance.id,
        stream,
        ring: Arc::clone(&ring),
        file: file.clone(),
        max_line: inner.config.max_log_line_bytes,
        last_line,
    };
    [
        sink(LogStream::Stdout, None),
        sink(LogStream::Stderr, Some(Arc::clone(last_stderr))),
    ]
}

/// Pumps a container's output (the engine's log stream, followed) into the instance's sinks,
/// through the same line splitting as a process's pipes.
fn pump_container_output(
    inner: &Arc<Inner>,
    launch: &Launch,
    engine: &container::Engine,
    id: &str,
    last_stderr: &Arc<Mutex<Option<String>>>,
) -> Vec<JoinHandle<()>> {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let [stdout_sink, stderr_sink] = sinks(inner, launch, last_stderr);
    let (mut stdout_in, stdout_out) = tokio::io::duplex(64 * 1024);
    let (mut stderr_in, stderr_out) = tokio::io::duplex(64 * 1024);
    let mut output = engine.output(id);
    let feed = inner.tracker.spawn(async move {
        while let Some((stream, bytes)) = output.next().await {
            let pipe = match stream {
                LogStream::Stdout => &mut stdout_in,
                LogStream::Stderr => &mut stderr_in,
            };
            if pipe.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // Dropping the write halves ends the pumps.
    });
    vec![
        feed,
        inner.tracker.spawn(logs::pump(stdout_out, stdout_sink)),
        inner.tracker.spawn(logs::pump(stderr_out, stderr_sink)),
    ]
}

/// Lets the pumps take in what was written before the end, then gives up on the rest.
async fn finish_pumps(pumps: &mut [JoinHandle<()>]) {
    let deadline = Instant::now() + OUTPUT_LINGER;
    for pump in pumps {
        if tokio::time::timeout_at(deadline, &mut *pump).await.is_err() {
            pump.abort();
        }
    }
}

/// A spawned process with its output pumps.
struct Process {
    child: Child,
    /// The queue-proxy in front of it, when the runtime puts one there.
    sidecar: Option<Child>,
    group: Group,
    spawned: Instant,
    pumps: Vec<JoinHandle<()>>,
    last_stderr: Arc<Mutex<Option<String>>>,
}

fn spawn(inner: &Arc<Inner>, launch: &Launch) -> Result<Process, Error> {
    let spec = &launch.spec;
    let (program, args) = spec.command.split_first().ok_or(Error::EmptyCommand)?;
    // Checked first: a missing directory makes the spawn fail with "not found", which would blame
    // the program.
    if let Some(dir) = &spec.working_dir {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::WorkingDir {
                    path: dir.clone(),
                    source: std::io::ErrorKind::NotADirectory.into(),
                });
            }
            Err(source) => {
                return Err(Error::WorkingDir {
                    path: dir.clone(),
                    source,
                });
            }
        }
    }
    let path_var = env::path_of(spec, |name| std::env::var_os(name));
    inner
        .config
        .exec_allow
        .check(program, &path_var, spec.working_dir.as_deref())
        .map_err(Error::NotAllowed)?;
    let identity = identity(inner, spec)?;
    let cgroup = inner
        .cgroups
        .create(
            &format!("{}-{}", spec.revision, launch.instance.id),
            spec.limits,
        )
        .map_err(Error::Cgroup)?
        .map(Arc::new);
    let environment = match env::build(
        spec,
        launch
            .upstream
            .unwrap_or_else(|| launch.instance.address().port()),
        |name| std::env::var_os(name),
        identity.home.clone(),
        kinetic_api::secret::read,
    ) {
        Ok(environment) => environment,
        Err(error) => {
            if let Some(cgroup) = &cgroup {
                cgroup.remove();
            }
            return Err(error);
        }
    };
    let mut command = match &inner.config.shim {
        Some(shim) => {
            let options = ShimOptions {
                cgroups: cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
                uid: identity.uid,
                gid: identity.gid,
            };
            let mut command = Command::new(shim);
            command
                .args(options.args(&spec.command))
                .env_clear()
                .envs(&environment)
                // For the shim only; it removes it before the program starts.
                .env(PARENT_PID_ENV, std::process::id().to_string());
            command
        }
        None => {
            let mut command = Command::new(program);
            command.args(args).env_clear().envs(&environment);
            if let Some(gid) = identity.gid {
                command.gid(gid);
            }
            if let Some(uid) = identity.uid {
                command.uid(uid);
            }
            command
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so stopping it reaches everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    let spawned_child = command.spawn();
    let mut child = match spawned_child {
        Ok(child) => child,
        Err(source) => {
            if let Some(cgroup) = &cgroup {
                cgroup.remove();
            }
            return Err(Error::Spawn {
                program: program.clone(),
                source,
            });
        }
    };
    // Without the shim the program joins its cgroups a moment after it started.
    if inner.config.shim.is_none()
        && let (Some(cgroup), Some(pid)) = (&cgroup, child.id())
        && let Err(error) = cgroup.join(pid)
    {
        let _ = child.start_kill();
        cgroup.remove();
        return Err(Error::Cgroup(error));
    }
    let spawned = Instant::now();
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw)
        .expect("a child just spawned has not been reaped");
    let group = Group::new(Arc::clone(inner), launch.instance.id, pid, cgroup);

    let last_stderr = Arc::new(Mutex::new(None));
    let [stdout_sink, stderr_sink] = sinks(inner, launch, &last_stderr);
    let mut pumps = Vec::with_capacity(2);
    if let Some(stdout) = child.stdout.take() {
        pumps.push(inner.tracker.spawn(logs::pump(stdout, stdout_sink)));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(inner.tracker.spawn(logs::pump(stderr, stderr_sink)));
    }
    debug!(
        namespace = %spec.namespace,
        revision = %spec.revision,
        instance = launch.instance.id,
        pid = pid.as_raw(),
        address = %launch.instance.address(),
        "Instance started."
    );
    let sidecar = match (
        &inner.config.sidecar,
        launch.upstream,
        launch.instance.admin(),
    ) {
        (Some(kinetic), Some(upstream), Some(admin)) => {
            match spawn_sidecar(inner, kinetic, launch, upstream, admin) {
                Ok(sidecar) => Some(sidecar),
                // The group is killed as `group` drops.
                Err(error) => return Err(Error::Sidecar(error)),
            }
        }
        _ => None,
    };
    Ok(Process {
        child,
        sidecar,
        group,
        spawned,
        pumps,
        last_stderr,
    })
}

/// The queue-proxy in front of one process instance: `kinetic queue-proxy` on the instance's
/// address, forwarding to the process's own port. Through the shim when there is one, so that it
/// too dies with kinetic.
fn spawn_sidecar(
    inner: &Arc<Inner>,
    kinetic: &std::path::Path,
    launch: &Launch,
    upstream: u16,
    admin: std::net::SocketAddr,
) -> std::io::Result<Child> {
    let spec = &launch.spec;
    let mut argv: Vec<String> = vec![
        kinetic.display().to_string(),
        "queue-proxy".into(),
        "--listen".into(),
        launch.instance.address().to_string(),
        "--admin-listen".into(),
        admin.to_string(),
        "--upstream".into(),
        format!("127.0.0.1:{upstream}"),
        "--container-concurrency".into(),
        spec.container_concurrency.to_string(),
        "--timeout-seconds".into(),
        spec.timeout.as_secs().clamp(1, 3600).to_string(),
    ];
    if let Some(path) = &spec.readiness_path {
        argv.push("--readiness-path".into());
        argv.push(path.clone());
    }
    let mut command = match &inner.config.shim {
        Some(shim) => {
            let mut command = Command::new(shim);
            command
                .args(ShimOptions::default().args(&argv))
                .env(PARENT_PID_ENV, std::process::id().to_string());
            command
        }
        None => {
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]);
            command
        }
    };
    // Only what the queue-proxy reads: none of the function's variables.
    command
        .env_remove("KINETIC_LISTEN")
        .env_remove("KINETIC_ADMIN_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

/// Resolves when the sidecar exits; never without one.
async fn sidecar_exit(sidecar: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match sidecar {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// Probes, serves and stops one process. Returns the crash if it exited unasked.
async fn supervise(inner: &Arc<Inner>, launch: &Launch, mut process: Process) -> Option<Crash> {
    let instance = &launch.instance;
    let spec = &launch.spec;
    let probe_config = inner.config.probe();
    // Behind a queue-proxy the instance is ready when the queue-proxy says so: it takes requests,
    // and the process passes the revision's readiness check.
    let (probed, check) = match (&process.sidecar, instance.admin()) {
        (Some(_), Some(admin)) => (admin, Check::Get("/ready")),
        _ => (
            instance.address(),
            Check::new(spec.readiness_path.as_deref(), false),
        ),
    };
    let ready = tokio::select! {
        // Biased: when a stop and an exit race, the exit was asked for.
        biased;
        () = launch.stop.cancelled() => false,
        status = process.child.wait() => {
            return Some(process.crashed(status, false, launch).await);
        }
        status = sidecar_exit(&mut process.sidecar) => {
            return Some(process.sidecar_crashed(status, false, launch).await);
        }
        () = probe::until_ready(&probe_config, probed, check, process.spawned) => true,
    };
    if ready {
        announce_ready(launch, process.spawned);
        tokio::select! {
            biased;
            () = launch.stop.cancelled() => {}
            status = process.child.wait() => {
                return Some(process.crashed(status, true, launch).await);
            }
            status = sidecar_exit(&mut process.sidecar) => {
                return Some(process.sidecar_crashed(status, true, launch).await);
            }
        }
    }
    process.stop(instance, inner.config.grace_period).await;
    None
}

impl Process {
    /// Cleans up after an exit nobody asked for and says why it happened.
    async fn crashed(
        mut self,
        status: std::io::Result<ExitStatus>,
        ready: bool,
        launch: &Launch,
    ) -> Crash {
        let uptime = self.spawned.elapsed();
        // Out of the ready set now, not after the output is collected.
        launch.instance.drain();
        if ready {
            let _ = launch.events.send(Event::Died {
                id: launch.instance.id,
            });
        }
        // Whatever the process left behind in its group goes with it.
        self.group.kill().await;
        self.finish_output().await;
        let stderr = self
            .last_stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let oom_killed = self
            .group
            .cgroup
            .as_ref()
            .is_some_and(|cgroup| cgroup.oom_killed());
        let error = match status {
            Ok(status) => Error::Exited {
                status,
                ready,
                stderr,
                oom_killed,
            },
            Err(source) => Error::Wait(source),
        };
        Crash { error, uptime }
    }

    /// The queue-proxy in front of the process exited unasked: the instance goes with it.
    async fn sidecar_crashed(
        mut self,
        status: std::io::Result<ExitStatus>,
        ready: bool,
        launch: &Launch,
    ) -> Crash {
        let uptime = self.spawned.elapsed();
        launch.instance.drain();
        if ready {
            let _ = launch.events.send(Event::Died {
                id: launch.instance.id,
            });
        }
        self.group.kill().await;
        let _ = self.child.wait().await;
        self.finish_output().await;
        let error = match status {
            Ok(status) => Error::SidecarExited(status),
            Err(source) => Error::Wait(source),
        };
        Crash { error, uptime }
    }

    /// Drains then terminates: waits for requests in flight (up to `grace`), SIGTERMs the group,
    /// waits for the process (up to `grace` again), then SIGKILLs the group. A queue-proxy in
    /// front drains first: SIGTERMed, it refuses new requests, finishes those in flight and exits
    /// (up to `grace`).
    async fn stop(mut self, instance: &Instance, grace: Duration) {
        instance.drain();
        if let Some(mut sidecar) = self.sidecar.take() {
            if let Some(pid) = sidecar.id().and_then(|pid| i32::try_from(pid).ok()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            if tokio::time::timeout(grace, sidecar.wait()).await.is_err() {
                warn!(
                    instance = instance.id,
                    "The queue-proxy was still draining after the grace period; stopping the instance anyway."
                );
                let _ = sidecar.start_kill();
                let _ = sidecar.wait().await;
            }
        }
        tokio::select! {
            drained = tokio::time::timeout(grace, instance.idle()) => {
                if drained.is_err() {
                    warn!(instance = instance.id, in_flight = instance.in_flight(), "Requests still in flight after the grace period; stopping the instance anyway.");
                }
            }
            // It may go on its own meanwhile; then there is nothing left to wait for.
            _ = self.child.wait() => {}
        }
        self.group.signal(Signal::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            warn!(
                instance = instance.id,
                grace_ms = grace.as_millis() as u64,
                "Instance ignored SIGTERM for the grace period; killing it."
            );
            self.group.signal(Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
        // Stragglers that outlived the leader.
        self.group.kill().await;
        self.finish_output().await;
    }

    /// Lets the pumps read what the process wrote before it went, then gives up on output held
    /// open by a process that left the group.
    async fn finish_output(&mut self) {
        finish_pumps(&mut self.pumps).await;
    }
}

/// A process group this runtime started. SIGKILLs the group when dropped, so a task that is torn
/// down mid-way (its runtime shutting down) leaves nothing behind; and registers the group so that
/// dropping the [`super::ProcessRuntime`] can kill it synchronously.
struct Group {
    inner: Arc<Inner>,
    id: u64,
    pgid: Pid,
    /// The instance's cgroups, when it has any: killing them reaches processes that left the
    /// process group.
    cgroup: Option<Arc<InstanceCgroup>>,
}

impl Group {
    fn new(inner: Arc<Inner>, id: u64, pgid: Pid, cgroup: Option<Arc<InstanceCgroup>>) -> Self {
        inner.register_group(id, pgid, cgroup.clone());
        Self {
            inner,
            id,
            pgid,
            cgroup,
        }
    }

    fn signal(&self, signal: Signal) {
        // ESRCH: the group is already empty.
        let _ = killpg(self.pgid, signal);
        if signal == Signal::SIGKILL
            && let Some(cgroup) = &self.cgroup
        {
            cgroup.kill();
        }
    }

    /// SIGKILLs the group and waits until nothing in it runs, so that a stopped instance leaves
    /// nothing behind when its task ends. A SIGKILLed process takes a moment to go; the wait is
    /// bounded in case it does not.
    async fn kill(&self) {
        self.signal(Signal::SIGKILL);
        let deadline = Instant::now() + GROUP_EXIT_WAIT;
        let mut pause = Duration::from_millis(1);
        while self.runs().await && Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Whether a member of the group still runs. Members that were orphaned stay zombies until
    /// init reaps them, which some inits do only every few seconds; those do not count.
    async fn runs(&self) -> bool {
        if let Some(cgroup) = &self.cgroup {
            let cgroup = Arc::clone(cgroup);
            if tokio::task::spawn_blocking(move || cgroup.populated())
                .await
                .unwrap_or(true)
            {
                return true;
            }
        }
        if killpg(self.pgid, None) == Err(Errno::ESRCH) {
            return false;
        }
        if cfg!(target_os = "linux") {
            let pgid = self.pgid.as_raw();
            // Reading /proc is quick but blocking.
            return tokio::task::spawn_blocking(move || live_members(pgid))
                .await
                .unwrap_or(true);
        }
        true
    }
}

/// Whether a process of group `pgid` is alive and not a zombie, from `/proc/<pid>/stat`.
fn live_members(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may contain anything, so split after its `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        group == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        self.inner.unregister_group(self.id);
        if let Some(cgroup) = &self.cgroup {
            // Empty by now unless a process ignored the kill for longer than the wait; then the
            // directory stays until kinetic's own group is removed at shutdown.
            cgroup.remove();
        }
    }
}

/// Who an instance runs as: the uid and gid to switch to (none: stay kinetic's), and its `HOME`.
struct Identity {
    uid: Option<u32>,
    gid: Option<u32>,
    home: Option<std::ffi::OsString>,
}

/// The Service's `runAsUser`/`runAsGroup` when kinetic can switch to them (as root), and the
/// `runAsNonRoot` check against the uid the program would really run as.
fn identity(inner: &Inner, spec: &InstanceSpec) -> Result<Identity, Error> {
    let switch = inner.cgroups.capabilities().switch_user;
    let uid = spec.run_as_user.filter(|_| switch);
    let effective = uid.unwrap_or(inner.uid);
    if spec.run_as_non_root && effective == 0 {
        return Err(Error::RunsAsRoot {
            kinetic_is_root: inner.uid == 0 && spec.run_as_user.is_none(),
        });
    }
    let Some(uid) = uid.filter(|u| *u != inner.uid) else {
        let gid = spec.run_as_group.filter(|g| switch && *g != inner.gid);
        return Ok(Identity {
            uid: None,
            gid,
            home: None,
        });
    };
    // The user's primary group and home from the password database; a uid it does not know gets
    // its own number as group and `/` as home, never root's.
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    let gid = spec
        .run_as_group
        .or_else(|| user.as_ref().map(|u| u.gid.as_raw()))
        .unwrap_or(uid);
    let home = user
        .map(|u| u.dir.into_os_string())
        .unwrap_or_else(|| "/".into());
    Ok(Identity {
        uid: Some(uid),
        gid: Some(gid),
        home: Some(home),
    })
}
