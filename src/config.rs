//! Process settings from flags and `KINETIC_*` environment variables, validated before any port is
//! bound.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where state lives.
/// Where `kinetic autoscaler` runs revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Local processes on this machine, each behind a `kinetic queue-proxy`.
    Process,
    /// A Deployment per revision, its pods running the user's container and a queue-proxy
    /// sidecar; the autoscaler's replicas elect a leader with a Lease.
    Kubernetes,
}

#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Store URL: `sqlite:///path/state.db` or `postgres://user@host:port/db`. Default: a SQLite file
    /// in the state directory.
    #[arg(long, env = "KINETIC_STORE")]
    pub store: Option<String>,
    /// Directory of the default SQLite store.
    #[arg(long, env = "KINETIC_STATE_DIR", default_value = ".kinetic")]
    pub state_dir: PathBuf,
}

impl StoreSettings {
    pub fn url(&self) -> String {
        match &self.store {
            Some(url) => url.clone(),
            None => {
                let path = self.state_dir.join("state.db");
                let absolute = std::path::absolute(&path).unwrap_or(path);
                format!("sqlite://{}", absolute.display())
            }
        }
    }
}

/// Where a scale-out component reads the resources (Brokers, Triggers, sources, Services) from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResourceSource {
    /// The store's resources table, written by `kinetic apply` through a broker's admin API.
    Store,
    /// The Kubernetes API (in-cluster, or the kubeconfig's cluster), where `kubectl apply` puts
    /// them; `kinetic controller` does what applying does beside storing.
    Kubernetes,
}

#[derive(Debug, Clone, Args)]
pub struct ResourceSettings {
    /// Where the resources are read from: `store` (applied with `kinetic apply`) or `kubernetes`
    /// (applied with `kubectl apply`; the admin API then refuses `apply` and `delete`).
    #[arg(long = "resources", env = "KINETIC_RESOURCES", value_enum, default_value_t = ResourceSource::Store)]
    pub source: ResourceSource,
}

/// Traces, for every command that runs a component.
#[derive(Debug, Clone, Args)]
pub struct TraceSettings {
    /// Export OpenTelemetry traces to this OTLP/HTTP collector URL (protobuf), e.g.
    /// http://127.0.0.1:4318/v1/traces. Off when not set.
    #[arg(long, global = true, env = "KINETIC_OTLP_ENDPOINT", value_parser = kinetic_telemetry::parse_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// Share of the traces kinetic starts that are exported, 0 to 1. A request that arrives with a
    /// `traceparent` keeps its caller's decision.
    #[arg(long, global = true, env = "KINETIC_TRACE_SAMPLING_RATIO", default_value = "1", value_parser = kinetic_telemetry::parse_ratio)]
    pub trace_sampling_ratio: f64,
}

/// Settings of the broker ingress.
#[derive(Debug, Clone, Args)]
pub struct IngressSettings {
    /// Largest event (or batch) accepted, in bytes.
    #[arg(long, env = "KINETIC_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Request bytes the ingress holds at once, from reading a body until its events are stored;
    /// past it a request waits up to 2 s, then gets 503.
    #[arg(long, env = "KINETIC_MAX_INFLIGHT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_inflight_bytes: usize,
    /// How long an event's (source, id) is remembered to drop duplicates, ISO-8601 (e.g. PT24H).
    /// On SQLite the window's keys are also indexed in memory, about 32 bytes per key.
    #[arg(long, env = "KINETIC_DEDUPE_WINDOW", default_value = "PT24H", value_parser = parse_duration)]
    pub dedupe_window: Duration,
}

/// How long the store keeps what no one needs to deliver any more.
#[derive(Debug, Clone, Args)]
pub struct RetentionSettings {
    /// Dead letters older than this are deleted, ISO-8601 (e.g. P30D).
    #[arg(long, env = "KINETIC_DEAD_LETTER_RETENTION", default_value = "P14D", value_parser = parse_duration)]
    pub dead_letter_retention: Duration,
    /// Each trigger keeps at most this many dead letters, the newest.
    #[arg(long, env = "KINETIC_DEAD_LETTERS_PER_TRIGGER", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_letters_per_trigger: u64,
    /// A trigger disabled (its subscriber answered 410 Gone) longer than this no longer holds its
    /// broker's events: they are released, and it starts from the newest when enabled again.
    #[arg(long, env = "KINETIC_DISABLED_TRIGGER_RETENTION", default_value = "P7D", value_parser = parse_duration)]
    pub disabled_trigger_retention: Duration,
}

/// Settings of the dispatcher.
#[derive(Debug, Clone, Args)]
pub struct DispatcherSettings {
    /// Deliveries in flight per trigger.
    #[arg(long, env = "KINETIC_DELIVERY_CONCURRENCY", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub delivery_concurrency: u32,
    /// Deliveries in flight to one outside subscriber (scheme, host and port), across triggers:
    /// `adaptive` (learned from its answers: latency, connection failures, timeouts, 429, 503) or
    /// a fixed number.
    #[arg(
        long,
        env = "KINETIC_SUBSCRIBER_CONCURRENCY",
        default_value = "adaptive"
    )]
    pub subscriber_concurrency: kinetic_outbound::limit::Policy,
    /// Events read from the log per batch.
    #[arg(long, env = "KINETIC_DELIVERY_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub delivery_batch: u32,
    /// How often a trigger's log is read when no append signal arrives, ISO-8601. New events are
    /// normally signalled at once (in-process, or by PostgreSQL NOTIFY); this is the fallback.
    #[arg(long, env = "KINETIC_POLL_INTERVAL", default_value = "PT1S", value_parser = parse_duration)]
    pub poll_interval: Duration,
}

/// Where deliveries to outside URLs may go.
#[derive(Debug, Clone, Args)]
pub struct EgressSettings {
    /// Address classes that deliveries to subscriber and dead-letter-sink URLs, sources'
    /// endpoints and the Kafka servers a Broker's ConfigMap names may reach, comma separated:
    /// loopback, private, link-local, metadata, cgnat, multicast, unspecified, reserved; `all`
    /// turns the guard off, `none` (the default) allows public addresses only. A Broker's ingress,
    /// Services and the process's own `--kafka-bootstrap-servers` are always reachable.
    #[arg(long, env = "KINETIC_EGRESS_ALLOW", value_delimiter = ',', value_parser = parse_egress)]
    pub egress_allow: Vec<kinetic_outbound::egress::Allow>,
}

impl EgressSettings {
    pub fn egress(&self) -> kinetic_outbound::egress::Egress {
        kinetic_outbound::egress::Egress::new(&self.egress_allow)
    }
}

fn parse_egress(text: &str) -> Result<kinetic_outbound::egress::Allow, String> {
    text.parse().map_err(|error| format!("{error}"))
}

/// The Kafka cluster of the Kafka broker class (`eventing.knative.dev/broker.class: Kafka`).
#[derive(Debug, Clone, Args)]
pub struct KafkaSettings {
    /// Bootstrap servers (`host:port,host:port`) of the Kafka cluster that keeps Kafka-class
    /// brokers' topics. Without it, Kafka-class brokers answer 503 and their triggers wait.
    #[arg(long, env = "KINETIC_KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: Option<String>,
    /// Partitions of a new broker topic (`knative-broker-{namespace}-{name}`).
    #[arg(long, env = "KINETIC_KAFKA_TOPIC_PARTITIONS", default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_topic_partitions: i32,
    /// Replication factor of a new broker topic.
    #[arg(long, env = "KINETIC_KAFKA_TOPIC_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub kafka_topic_replication_factor: i32,
    /// A librdkafka property for every Kafka client, `KEY=VALUE` (repeat the flag; e.g.
    /// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `sasl.username=...`).
    #[arg(long = "kafka-property", env = "KINETIC_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
}

impl KafkaSettings {
    /// The client settings, when a cluster is configured.
    pub fn client(&self) -> Option<kinetic_kafka::Settings> {
        let servers = self.kafka_bootstrap_servers.as_deref()?.trim();
        if servers.is_empty() {
            return None;
        }
        let mut settings = kinetic_kafka::Settings::new(servers);
        settings.properties = self.kafka_properties.iter().cloned().collect();
        Some(settings)
    }
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!(
            "`{text}` is not KEY=VALUE; write e.g. `--kafka-property security.protocol=SASL_SSL`"
        )),
    }
}

/// Parses an ISO-8601 duration flag.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    kinetic_api::duration::parse(text)
}

/// Settings of serving (functions) in `kinetic up`.
#[derive(Debug, Clone, Args)]
pub struct ServingSettings {
    /// Services answer at `http://SERVICE.NAMESPACE.DOMAIN`.
    #[arg(long, env = "KINETIC_DOMAIN", default_value = "kinetic.localhost", value_parser = parse_domain)]
    pub domain: String,
    /// How long a request waits for an instance (e.g. during a cold start) before 503/504, ISO-8601.
    #[arg(long, env = "KINETIC_ACTIVATION_TIMEOUT", default_value = "PT60S", value_parser = parse_duration)]
    pub activation_timeout: Duration,
    /// Requests one revision may hold while it has no free instance; more are refused with 503 at
    /// once.
    #[arg(long, env = "KINETIC_ACTIVATOR_CAPACITY", default_value_t = kinetic_serving::activator::DEFAULT_CAPACITY as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub activator_capacity: u32,
    /// Function instances (local processes) that may run at once, across all revisions. A revision
    /// that wants more waits, and says so in `kinetic get revisions`.
    #[arg(long, env = "KINETIC_MAX_INSTANCES", default_value_t = kinetic_serving::runtime::DEFAULT_MAX_INSTANCES, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_instances: u32,
    /// A directory (or file) whose programs Services may run; repeat for several. A Service whose
    /// program (found in PATH, links resolved) lies elsewhere is refused when applied. Without
    /// it, any program may run.
    #[arg(long = "exec-allow", env = "KINETIC_EXEC_ALLOW", value_delimiter = ',')]
    pub exec_allow: Vec<PathBuf>,
    /// A function's log file (state directory's `logs/`) is rotated when it reaches this many
    /// bytes.
    #[arg(long, env = "KINETIC_FUNCTION_LOG_MAX_BYTES", default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub function_log_max_bytes: u64,
    /// Rotated log files kept per function instance.
    #[arg(long, env = "KINETIC_FUNCTION_LOG_FILES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub function_log_files: u32,
    /// How long a stopping instance may finish its requests, and then exit after SIGTERM, ISO-8601.
    #[arg(long, env = "KINETIC_TERMINATION_GRACE", default_value = "PT30S", value_parser = parse_duration)]
    pub termination_grace: Duration,
    /// The container engine that runs Services naming only an `image` (Docker Engine, or Podman's
    /// Docker-compatible socket): `unix:///PATH`, or `none`. Without it, the engine answering at
    /// `$DOCKER_HOST` or a default socket (`/var/run/docker.sock`, Podman's) is used if there is
    /// one; a named engine that does not answer stops kinetic at start.
    #[arg(long, env = "KINETIC_CONTAINER_ENGINE", value_parser = parse_engine)]
    pub container_engine: Option<String>,
    /// Process configuration file (YAML); its `autoscaler:` map sets Knative's `config-autoscaler`
    /// keys (`stable-window`, `scale-to-zero-grace-period`, …). Functions run as local processes,
    /// so `max-scale` defaults to 10 rather than Knative's unbounded 0; set it to change that.
    #[arg(long = "config", env = "KINETIC_CONFIG")]
    pub config_file: Option<PathBuf>,
}

fn parse_engine(text: &str) -> Result<String, String> {
    if text == "none" || (text.starts_with("unix:///") && text.len() > "unix:///".len()) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a container engine endpoint; use `unix:///var/run/docker.sock` (a unix socket's path), or `none` to run no containers"
        ))
    }
}

/// An activator's `host:port`.
pub fn parse_authority(text: &str) -> Result<http::uri::Authority, String> {
    match text.parse::<http::uri::Authority>() {
        Ok(authority) if authority.port_u16().is_some() => Ok(authority),
        _ => Err(format!(
            "`{text}` is not HOST:PORT; name an activator like 127.0.0.1:8085 or kinetic-activator.kinetic-system.svc:80"
        )),
    }
}

/// An HTTP path, as a readiness probe's: starts with `/`, no spaces.
pub fn parse_http_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') && text.parse::<http::uri::PathAndQuery>().is_ok() {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not an HTTP path; use one that starts with `/`, e.g. /healthz"
        ))
    }
}

pub fn parse_domain(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a domain name; use lower-case DNS labels separated by dots, e.g. kinetic.localhost"
        ))
    }
}

/// The process configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Knative's `config-autoscaler` keys and values.
    #[serde(default)]
    pub autoscaler: serde_json::Map<String, serde_json::Value>,
}

impl ServingSettings {
    /// Reads the configuration file, if any, and the autoscaler defaults in it.
    /// Serving's settings, with what applying checks and the gateway's port for URLs.
    pub fn serving_config(
        &self,
        checks: kinetic_control::ServiceChecks,
        gateway_port: u16,
    ) -> kinetic_serving::ServingConfig {
        kinetic_serving::ServingConfig {
            domain: self.domain.clone(),
            gateway_port,
            activation_timeout: self.activation_timeout,
            activator_capacity: self.activator_capacity as usize,
            autoscaler: checks.autoscaler,
            exec_allow: checks.exec_allow,
            containers: checks.containers,
        }
    }

    pub fn autoscaler_defaults(&self) -> anyhow::Result<kinetic_serving::autoscaler::Defaults> {
        let Some(path) = &self.config_file else {
            return kinetic_serving::autoscaler::Defaults::from_map_for_processes(
                &serde_json::Map::new(),
            )
            .map_err(|error| anyhow::anyhow!("{error}"));
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("--config {name}: {error}"))?;
        let file: ConfigFile = serde_saphyr::from_str(&text).map_err(|error| {
            anyhow::anyhow!(
                "--config {name}: {error} (hint: the file holds a top-level `autoscaler:` map of Knative config-autoscaler keys)"
            )
        })?;
        kinetic_serving::autoscaler::Defaults::from_map_for_processes(&file.autoscaler)
            .map_err(|error| anyhow::anyhow!("--config {}", error.in_file(name)))
    }

    /// The container engine for image-only Services: the one `--container-engine` names (which
    /// must answer), none with `none`, else the first that answers at the default sockets.
    pub async fn container_engine(
        &self,
    ) -> anyhow::Result<Option<kinetic_serving::runtime::container::Engine>> {
        use kinetic_serving::runtime::container::Engine;
        match self.container_engine.as_deref() {
            Some("none") => Ok(None),
            Some(endpoint) => Engine::connect(endpoint)
                .await
                .map(Some)
                .map_err(|error| anyhow::anyhow!("--container-engine: {error}")),
            None => Ok(Engine::detect().await),
        }
    }

    /// The `--exec-allow` prefixes, checked (absolute) before any port is bound.
    pub fn exec_allow(&self) -> anyhow::Result<kinetic_serving::runtime::ExecAllow> {
        kinetic_serving::runtime::ExecAllow::new(&self.exec_allow).map_err(anyhow::Error::msg)
    }
}

/// Who may call the admin API (`/api/v1`, `/metrics`) and from where.
#[derive(Debug, Clone, Args)]
pub struct AdminSettings {
    /// Admin tokens with their roles, one per line: `ROLE NAME sha256:HEX` (ROLE is admin, operator
    /// or viewer; `kinetic admin-token create` prints a token and its line). Without it, the state
    /// directory's `admin-token` (created on first start, mode 0600) is the one admin token.
    #[arg(long, env = "KINETIC_ADMIN_TOKENS")]
    pub admin_tokens: Option<PathBuf>,
    /// A host name under which the admin listener is reached (repeatable), besides its own address
    /// and `localhost`; requests naming any other Host are refused, which stops DNS rebinding.
    #[arg(
        long = "admin-host",
        env = "KINETIC_ADMIN_HOSTS",
        value_delimiter = ','
    )]
    pub admin_hosts: Vec<String>,
    /// Serve `/metrics` without a token (e.g. for a Prometheus that cannot send one).
    #[arg(long, env = "KINETIC_METRICS_PUBLIC")]
    pub metrics_public: bool,
}

/// Where the admin listener is: `HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(address) => write!(f, "{address}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

pub fn parse_admin_listen(text: &str) -> Result<AdminListen, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("`unix:` needs a socket path, e.g. unix:/run/kinetic/admin.sock".into());
        }
        return Ok(AdminListen::Unix(PathBuf::from(path)));
    }
    text.parse().map(AdminListen::Tcp).map_err(|_| {
        format!("`{text}` is neither HOST:PORT (e.g. 127.0.0.1:8070) nor unix:PATH (e.g. unix:/run/kinetic/admin.sock)")
    })
}

/// Who may send events to brokers (Knative's EventPolicy, OIDC tokens).
#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    /// Who may send to a broker that no EventPolicy applies to: `allow-all` (anyone, no token;
    /// the default on loopback), `deny-all`, or `allow-same-namespace` (tokens whose subject is
    /// `system:serviceaccount:NAMESPACE:…`). Brokers that a policy names always need a token.
    #[arg(long, env = "KINETIC_DEFAULT_AUTHORIZATION_MODE", value_parser = parse_mode)]
    pub default_authorization_mode: Option<kinetic_auth::Mode>,
    /// An outside OIDC issuer whose tokens senders may present, `ISSUER=JWKS` (JWKS: a file, or an
    /// https URL fetched again when a token names an unknown key); repeat for several. On
    /// Kubernetes, the cluster's service-account issuer.
    #[arg(long = "oidc-issuer", env = "KINETIC_OIDC_ISSUERS", value_delimiter = ' ', value_parser = parse_issuer)]
    pub oidc_issuers: Vec<kinetic_auth::IssuerSpec>,
    /// kinetic's own issuer URL: the `iss` of the tokens it signs, under which the public listener
    /// serves `/.well-known/openid-configuration`. Default: the public listener's URL.
    #[arg(long, env = "KINETIC_ISSUER_URL")]
    pub issuer_url: Option<String>,
}

impl AuthSettings {
    /// The mode in force: allow-all unless given.
    pub fn mode(&self) -> kinetic_auth::Mode {
        self.default_authorization_mode
            .unwrap_or(kinetic_auth::Mode::AllowAll)
    }

    /// Refuses a public listener off loopback that lets anyone in by default, unless that was
    /// asked for. Checked before any port is bound.
    pub fn check_exposure(&self, listen: std::net::SocketAddr) -> anyhow::Result<()> {
        if listen.ip().is_loopback() || self.default_authorization_mode.is_some() {
            return Ok(());
        }
        anyhow::bail!(
            "--listen {listen} is reachable from other machines, and with no EventPolicy every broker would accept events from anyone (the default authorization mode is allow-all). Start with --default-authorization-mode deny-all or allow-same-namespace and apply EventPolicies for your senders; or say --default-authorization-mode allow-all if open brokers are what you want"
        )
    }
}

fn parse_mode(text: &str) -> Result<kinetic_auth::Mode, String> {
    text.parse()
}

fn parse_issuer(text: &str) -> Result<kinetic_auth::IssuerSpec, String> {
    text.parse()
}

/// Which secrets resources may name (`{file: PATH}`, `{env: NAME}`).
#[derive(Debug, Clone, Args)]
pub struct SecretSettings {
    /// Directory whose files resources may name as secrets (repeatable); a relative `file` is
    /// taken inside the first. Default: `secrets` in the state directory, created 0700.
    #[arg(
        long = "secrets-dir",
        env = "KINETIC_SECRETS_DIR",
        value_delimiter = ','
    )]
    pub secrets_dirs: Vec<PathBuf>,
    /// Environment variables resources may name as secrets: names, or patterns `PREFIX*`
    /// (repeatable, or comma separated). None by default.
    #[arg(long = "secret-env", env = "KINETIC_SECRET_ENV", value_delimiter = ',', value_parser = parse_secret_env)]
    pub secret_env: Vec<String>,
}

impl SecretSettings {
    /// The scope, made for `state_dir`: its default secrets directory is created (0700).
    pub fn scope(
        &self,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<kinetic_api::secret::SecretScope> {
        let dirs = if self.secrets_dirs.is_empty() {
            let dir = state_dir.join("secrets");
            private_dir(&dir)?;
            vec![dir]
        } else {
            self.secrets_dirs.clone()
        };
        Ok(kinetic_api::secret::SecretScope::new(
            dirs,
            self.secret_env.clone(),
        ))
    }
}

/// Creates `dir` (and its parents) readable by kinetic's user only, if it does not exist.
pub fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn parse_secret_env(text: &str) -> Result<String, String> {
    if text == "*" {
        return Err("`*` would let resources read every variable of kinetic (its database URL, its keys); name the variables, or a prefix such as `KINETIC_SECRET_*`".into());
    }
    let name = text.strip_suffix('*').unwrap_or(text);
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a variable name or a pattern `PREFIX*` (letters, digits and `_`)"
        ))
    }
}

/// What the listeners allow each client (every listener of the process).
#[derive(Debug, Clone, Args)]
pub struct ConnectionSettings {
    /// How long a client may take to send a request's headers, and how long a keep-alive
    /// connection may sit idle between requests, ISO-8601.
    #[arg(long, env = "KINETIC_HEADER_READ_TIMEOUT", default_value = "PT10S", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body, ISO-8601 (the gateway to Services
    /// allows up to an hour, the longest `timeoutSeconds`).
    #[arg(long, env = "KINETIC_BODY_READ_TIMEOUT", default_value = "PT60S", value_parser = parse_positive_duration)]
    pub body_read_timeout: Duration,
    /// Connections served at once per listener; further ones wait to be accepted.
    #[arg(long, env = "KINETIC_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// On SIGTERM, how long requests in flight may take before their connections are closed,
    /// ISO-8601.
    #[arg(long, env = "KINETIC_SHUTDOWN_GRACE", default_value = "PT30S", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl ConnectionSettings {
    pub fn limits(&self) -> crate::serve::Limits {
        crate::serve::Limits {
            header_read: self.header_read_timeout,
            body_read: self.body_read_timeout,
            max_connections: self.max_connections as usize,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err(format!(
            "`{text}` is zero; give a duration above zero, e.g. PT10S"
        )),
        duration => Ok(duration),
    }
}

/// TLS on the public and admin listeners.
#[derive(Debug, Clone, Args)]
pub struct TlsSettings {
    /// PEM certificate chain (the server's first) served on both listeners; picked up again when
    /// the file changes, without a restart. Needs --tls-key.
    #[arg(long, env = "KINETIC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KINETIC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsSettings {
    /// The TLS acceptor, the files read and checked now.
    pub fn load(&self) -> anyhow::Result<Option<crate::serve::Tls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::serve::Tls::new(crate::serve::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })?)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_secret_env;

    #[test]
    fn secret_env_names_and_patterns() {
        assert_eq!(parse_secret_env("GITHUB_SECRET").unwrap(), "GITHUB_SECRET");
        assert_eq!(
            parse_secret_env("KINETIC_SECRET_*").unwrap(),
            "KINETIC_SECRET_*"
        );
        assert!(
            parse_secret_env("*")
                .unwrap_err()
                .contains("every variable")
        );
        assert!(parse_secret_env("A-B").is_err());
        assert!(parse_secret_env("1X").is_err());
    }
}
