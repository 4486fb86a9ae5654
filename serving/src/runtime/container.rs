//! Containers on the local container engine: Docker Engine, or Podman's Docker-compatible socket,
//! spoken to over its unix socket with `bollard`. An instance of a revision that names only an
//! `image` is one container:
//!
//! - the image, with the Service's `command` replacing the image's entrypoint and `args` its
//!   command, as Kubernetes does (either left empty keeps the image's);
//! - the Service's environment with `PORT` (the container port: `containerPort`, default 8080)
//!   and Knative's `K_*`, and its `workingDir`;
//! - the container port published on a loopback port of this machine, which is the instance's
//!   address;
//! - `resources.limits` as the container's memory and CPU limits;
//! - `securityContext`: the user and group, a read-only root filesystem, capabilities dropped,
//!   no new privileges;
//! - labels naming the kinetic process that owns it ([`Owner`]), so that what a killed kinetic
//!   left behind is found and removed.
//!
//! [`plan`] is the pure mapping from what the instance needs to the engine's create request;
//! [`Engine`] talks to the engine.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptions,
};
use futures::StreamExt as _;

/// The engine's sockets tried when none is named: Docker's, then Podman's (root, then the user's).
pub const DEFAULT_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/podman/podman.sock"];

/// The label naming the kinetic process that owns a container.
pub const OWNER_LABEL: &str = "dev.kinetic.owner";
/// The label naming the state directory of the kinetic that owns a container: a kinetic started
/// again on the same state directory removes what its earlier run left.
pub const STATE_LABEL: &str = "dev.kinetic.state";
const NAMESPACE_LABEL: &str = "dev.kinetic.namespace";
const REVISION_LABEL: &str = "dev.kinetic.revision";
const INSTANCE_LABEL: &str = "dev.kinetic.instance";

/// The port a container listens on when its Service declares none, as in Knative.
pub const DEFAULT_CONTAINER_PORT: u16 = 8080;

/// How long one request to the engine may take (pulls and waits are streamed, not bounded by it).
const ENGINE_TIMEOUT_SECS: u64 = 120;

/// Who owns a container: this kinetic process (`id`, new at every start) and its state directory
/// (`state`, the same across restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub state: String,
}

/// `securityContext`, as a container enforces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub read_only_root: bool,
    /// `capabilities.add` and `capabilities.drop` (`ALL` drops every one).
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
}

/// Everything one instance's container is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRequest {
    pub namespace: String,
    pub revision: String,
    pub instance: u64,
    pub image: String,
    /// Replaces the image's entrypoint; empty keeps it.
    pub command: Vec<String>,
    /// Replaces the image's command; empty keeps it.
    pub args: Vec<String>,
    /// The whole environment (`PORT` and `K_*` included), values resolved.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// The port the container listens on.
    pub container_port: u16,
    /// The loopback port of this machine it is published on; `None` lets the engine pick a free
    /// one (then [`Engine::run`] says which).
    pub host_port: Option<u16>,
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub security: Security,
}

/// A container to create: its name and the engine's create body.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub name: String,
    pub body: ContainerCreateBody,
}

/// The container of one instance, owned by `owner`.
pub fn plan(request: &ContainerRequest, owner: &Owner) -> ContainerPlan {
    let port = format!("{}/tcp", request.container_port);
    let labels = HashMap::from([
        (OWNER_LABEL.to_owned(), owner.id.clone()),
        (STATE_LABEL.to_owned(), owner.state.clone()),
        (NAMESPACE_LABEL.to_owned(), request.namespace.clone()),
        (REVISION_LABEL.to_owned(), request.revision.clone()),
        (INSTANCE_LABEL.to_owned(), request.instance.to_string()),
    ]);
    let user = match (request.security.run_as_user, request.security.run_as_group) {
        (Some(user), Some(group)) => Some(format!("{user}:{group}")),
        (Some(user), None) => Some(user.to_string()),
        // A group alone: the image's user, with the group added (an engine cannot change the
        // primary group without naming the user).
        (None, _) => None,
    };
    let group_add = match (request.security.run_as_user, request.security.run_as_group) {
        (None, Some(group)) => Some(vec![group.to_string()]),
        _ => None,
    };
    let mut security_opt = Vec::new();
    if request.security.no_new_privileges {
        security_opt.push("no-new-privileges".to_owned());
    }
    let host_config = HostConfig {
        port_bindings: Some(HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_owned()),
                // Empty: the engine picks a free port, so nothing else can take it in between.
                host_port: Some(request.host_port.map(|p| p.to_string()).unwrap_or_default()),
            }]),
        )])),
        memory: request
            .memory_bytes
            .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
        // The same limit with swap, so the memory limit is the whole limit.
        memory_swap: request
            .memory_bytes
            .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
        nano_cpus: request
            .cpu_millis
            .map(|millis| i64::try_from(millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
        readonly_rootfs: Some(request.security.read_only_root),
        cap_add: (!request.security.capabilities_add.is_empty())
            .then(|| request.security.capabilities_add.clone()),
        cap_drop: (!request.security.capabilities_drop.is_empty())
            .then(|| request.security.capabilities_drop.clone()),
        security_opt: (!security_opt.is_empty()).then_some(security_opt),
        group_add,
        // An init reaps the function's children and passes SIGTERM on.
        init: Some(true),
        ..HostConfig::default()
    };
    ContainerPlan {
        name: format!(
            "kinetic-{}-{}-{}-{}",
            request.namespace,
            request.revision,
            request.instance,
            short(&owner.id)
        ),
        body: ContainerCreateBody {
            image: Some(request.image.clone()),
            entrypoint: (!request.command.is_empty()).then(|| request.command.clone()),
            cmd: (!request.args.is_empty()).then(|| request.args.clone()),
            env: Some(
                request
                    .env
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect(),
            ),
            working_dir: request.working_dir.clone(),
            user,
            labels: Some(labels),
            exposed_ports: Some(vec![port]),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        },
    }
}

/// The first 12 characters of an id, as container names show them.
fn short(id: &str) -> &str {
    let end = id
        .char_indices()
        .nth(12)
        .map_or(id.len(), |(index, _)| index);
    &id[..end]
}

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "no container engine answers at {endpoint}: {reason}; start one (Docker Engine or Podman's socket) or name it with --container-engine"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error("image `{image}` is not on this machine: {reason}")]
    ImageMissing { image: String, reason: String },
    #[error("the container engine did not publish port {port}")]
    Unpublished { port: String },
    #[error("the container engine refused: {0}")]
    Api(#[from] bollard::errors::Error),
}

/// A started container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub id: String,
    /// Where its port is published on this machine.
    pub address: std::net::SocketAddr,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i64,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

/// A container engine kinetic talks to.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    endpoint: String,
}

/// Engines are the same when they are at the same endpoint.
impl PartialEq for Engine {
    fn eq(&self, other: &Engine) -> bool {
        self.endpoint == other.endpoint
    }
}

impl Eq for Engine {}

impl Engine {
    /// Connects to the engine at `endpoint` (`unix:///path` or a socket path) and checks that it
    /// answers.
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
        let unreachable = |reason: String| EngineError::Unreachable {
            endpoint: format!("unix://{path}"),
            reason,
        };
        let docker =
            Docker::connect_with_unix(path, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                .map_err(|error| unreachable(error.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        Ok(Engine {
            docker,
            endpoint: format!("unix://{path}"),
        })
    }

    /// The first engine that answers: at `$DOCKER_HOST` when it names a unix socket, else at the
    /// [`DEFAULT_SOCKETS`] and the user's Podman socket.
    pub async fn detect() -> Option<Engine> {
        let mut candidates: Vec<String> = Vec::new();
        if let Ok(host) = std::env::var("DOCKER_HOST")
            && host.starts_with("unix://")
        {
            candidates.push(host);
        }
        candidates.extend(DEFAULT_SOCKETS.iter().map(|s| (*s).to_owned()));
        if let Ok(runtime) = std::env::var("XDG_RUNTIME_DIR") {
            candidates.push(format!("{runtime}/podman/podman.sock"));
        }
        for candidate in candidates {
            if let Ok(engine) = Engine::connect(&candidate).await {
                return Some(engine);
            }
        }
        None
    }

    /// Where it is, as `unix:///path`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the engine has `image`.
    pub async fn has_image(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether `image` runs as root when no user is given: its configured user is empty, `root` or
    /// uid 0 (numerically, or by name in a `user:group` pair).
    pub async fn image_runs_as_root(&self, image: &str) -> Result<bool, EngineError> {
        let inspected = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|error| match error {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                } => EngineError::ImageMissing {
                    image: image.to_owned(),
                    reason: message,
                },
                other => EngineError::Api(other),
            })?;
        let user = inspected
            .config
            .and_then(|config| config.user)
            .unwrap_or_default();
        let name = user.split(':').next().unwrap_or_default();
        Ok(name.is_empty() || name == "root" || name == "0")
    }

    /// Pulls `image` from its registry; the error says why not (an unreachable registry, an image
    /// it does not know).
    pub async fn pull(&self, image: &str) -> Result<(), EngineError> {
        let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            if let Err(error) = step {
                return Err(EngineError::ImageMissing {
                    image: image.to_owned(),
                    reason: format!("pulling it failed: {error}"),
                });
            }
        }
        Ok(())
    }

    /// Creates and starts the container of `plan`: its id, and the loopback address its port is
    /// published on.
    pub async fn run(&self, plan: &ContainerPlan) -> Result<Running, EngineError> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&plan.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), plan.body.clone())
            .await
            .map_err(|error| match error {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                } => EngineError::ImageMissing {
                    image: plan.body.image.clone().unwrap_or_default(),
                    reason: message,
                },
                other => EngineError::Api(other),
            })?;
        if let Err(error) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(error.into());
        }
        match self.published(&created.id, plan).await {
            Ok(address) => Ok(Running {
                id: created.id,
                address,
            }),
            Err(error) => {
                self.remove(&created.id).await;
                Err(error)
            }
        }
    }

    /// The loopback address the engine published the container's port on.
    async fn published(
        &self,
        id: &str,
        plan: &ContainerPlan,
    ) -> Result<std::net::SocketAddr, EngineError> {
        let port = plan
            .body
            .exposed_ports
            .as_ref()
            .and_then(|ports| ports.first())
            .cloned()
            .unwrap_or_default();
        let inspected = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await?;
        let host_port = inspected
            .network_settings
            .and_then(|settings| settings.ports)
            .and_then(|ports| ports.get(&port).cloned().flatten())
            .and_then(|bindings| {
                bindings
                    .into_iter()
                    .find_map(|b| b.host_port.and_then(|p| p.parse::<u16>().ok()))
            });
        match host_port {
            Some(host_port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], host_port))),
            None => Err(EngineError::Unpublished { port }),
        }
    }

    /// Waits until the container `id` exits; how it ended.
    pub async fn wait(&self, id: &str) -> Result<Exit, EngineError> {
        let mut waiting = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let code = match waiting.next().await {
            Some(Ok(answer)) => answer.status_code,
            // A non-zero exit comes as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(error)) => return Err(error.into()),
            None => -1,
        };
        let state = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await?
            .state;
        Ok(Exit {
            code,
            oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        })
    }

    /// The container's output from its start on, followed until it ends: each chunk with the
    /// stream it was written to. Ends quietly when the engine stops sending.
    pub fn output(
        &self,
        id: &str,
    ) -> futures::stream::BoxStream<'static, (super::LogStream, bytes::Bytes)> {
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        self.docker
            .logs(id, Some(options))
            .take_while(|chunk| std::future::ready(chunk.is_ok()))
            .filter_map(|chunk| {
                std::future::ready(match chunk {
                    Ok(bollard::container::LogOutput::StdOut { message })
                    | Ok(bollard::container::LogOutput::Console { message }) => {
                        Some((super::LogStream::Stdout, message))
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        Some((super::LogStream::Stderr, message))
                    }
                    _ => None,
                })
            })
            .boxed()
    }

    /// Asks the container to stop (SIGTERM), killing it after `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let seconds = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.docker.stop_container(id, Some(options)).await {
            // 304: it had stopped already.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes the container `id`, killing it if it still runs. Best effort: a container already
    /// gone is not an error, and a failure is logged (the reaper tries again).
    pub async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => {
                tracing::warn!(container = %id, %error, "Removing a container failed; it is tried again later.");
            }
        }
    }

    /// Removes every container of kinetic processes on the state directory `state` other than
    /// `except` (an earlier run of this kinetic, killed before it could remove them); how many.
    pub async fn remove_left_by_others(
        &self,
        state: &str,
        except: &str,
    ) -> Result<usize, EngineError> {
        let mut removed = 0;
        for (id, labels) in self.labelled(STATE_LABEL, state).await? {
            if labels.get(OWNER_LABEL).map(String::as_str) != Some(except) {
                self.remove(&id).await;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every container of the kinetic process `owner`; how many.
    pub async fn remove_owned_by(&self, owner: &str) -> Result<usize, EngineError> {
        let owned = self.labelled(OWNER_LABEL, owner).await?;
        for (id, _) in &owned {
            self.remove(id).await;
        }
        Ok(owned.len())
    }

    /// The containers (running or not) labelled `label=value`, with their labels.
    pub async fn labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self.docker.list_containers(Some(options)).await?;
        Ok(found
            .into_iter()
            .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
            .collect())
    }
}

/// Waits until `watched` ends, then removes the containers of `owner`; how many. `watched` is the
/// read end of a pipe whose write end only the owning kinetic process holds: it ends when that
/// process is gone, however it ended (SIGKILL included), so no container outlives it by more
/// than this removal. A kinetic that stops normally has removed its containers already.
pub async fn reap_after(
    engine: &Engine,
    owner: &str,
    mut watched: impl tokio::io::AsyncRead + Unpin,
) -> Result<usize, EngineError> {
    let mut sink = tokio::io::sink();
    // Nothing is ever written; an error reading is the end as well.
    let _ = tokio::io::copy(&mut watched, &mut sink).await;
    engine.remove_owned_by(owner).await
}

/// The process that removes this kinetic's containers once it is gone: `{kinetic}
/// __container-reaper`, in its own process group (a signal to kinetic's group leaves it be), reading
/// a pipe whose write end this struct holds. Dropping it (kinetic ending, in any way) closes the
/// pipe.
#[derive(Debug)]
pub struct Reaper {
    _pipe: std::process::ChildStdin,
}

impl Reaper {
    /// Starts `kinetic` (this binary) as the reaper of `owner`'s containers on `engine`.
    pub fn start(
        kinetic: &std::path::Path,
        engine: &Engine,
        owner: &str,
    ) -> std::io::Result<Reaper> {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new(kinetic)
            .args([
                "__container-reaper",
                "--engine",
                engine.endpoint(),
                "--owner",
                owner,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the reaper's stdin was not piped"))?;
        // It outlives this process by design; it exits once it has done its work.
        drop(child);
        Ok(Reaper { _pipe: pipe })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ContainerRequest {
        ContainerRequest {
            namespace: "default".into(),
            revision: "hello-00001".into(),
            instance: 7,
            image: "registry.example/hello:1".into(),
            command: vec![],
            args: vec![],
            env: vec![
                ("PORT".into(), "8080".into()),
                ("TARGET".into(), "world".into()),
            ],
            working_dir: None,
            container_port: 8080,
            host_port: Some(41234),
            memory_bytes: None,
            cpu_millis: None,
            security: Security::default(),
        }
    }

    fn owner() -> Owner {
        Owner {
            id: "0193a5b0-7c1e-7d2a-9f00-123456789abc".into(),
            state: "/var/lib/kinetic".into(),
        }
    }

    #[test]
    fn an_image_alone_keeps_its_entrypoint_and_is_published_on_loopback() {
        let plan = plan(&request(), &owner());
        assert_eq!(plan.name, "kinetic-default-hello-00001-7-0193a5b0-7c1");
        let body = &plan.body;
        assert_eq!(body.image.as_deref(), Some("registry.example/hello:1"));
        assert_eq!((&body.entrypoint, &body.cmd), (&None, &None));
        assert_eq!(
            body.env.as_deref(),
            Some(&["PORT=8080".to_owned(), "TARGET=world".to_owned()][..])
        );
        assert_eq!(
            body.exposed_ports.as_deref(),
            Some(&["8080/tcp".to_owned()][..])
        );
        let host = body.host_config.as_ref().unwrap();
        let binding = &host.port_bindings.as_ref().unwrap()["8080/tcp"]
            .as_ref()
            .unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("41234"));
        assert_eq!(
            (host.memory, host.nano_cpus, &host.cap_drop),
            (None, None, &None)
        );
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[OWNER_LABEL], owner().id);
        assert_eq!(labels[STATE_LABEL], "/var/lib/kinetic");
        assert_eq!(labels["dev.kinetic.revision"], "hello-00001");
    }

    #[test]
    fn command_args_limits_and_security_context_map_as_kubernetes_does() {
        let mut request = request();
        request.command = vec!["/bin/server".into()];
        request.args = vec!["--verbose".into()];
        request.working_dir = Some("/srv".into());
        request.memory_bytes = Some(64 * 1024 * 1024);
        request.cpu_millis = Some(250);
        request.security = Security {
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            read_only_root: true,
            capabilities_add: vec!["NET_BIND_SERVICE".into()],
            capabilities_drop: vec!["ALL".into()],
            no_new_privileges: true,
        };
        let body = plan(&request, &owner()).body;
        assert_eq!(body.entrypoint, Some(vec!["/bin/server".to_owned()]));
        assert_eq!(body.cmd, Some(vec!["--verbose".to_owned()]));
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!(body.user.as_deref(), Some("65532:65532"));
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, Some(64 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
    }

    #[test]
    fn a_group_alone_runs_as_the_images_user_with_that_group_added() {
        let mut request = request();
        request.security.run_as_group = Some(1000);
        let body = plan(&request, &owner()).body;
        assert_eq!(body.user, None);
        assert_eq!(
            body.host_config.unwrap().group_add,
            Some(vec!["1000".to_owned()])
        );
    }
}
