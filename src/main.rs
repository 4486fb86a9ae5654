//! The `kinetic` binary: the CLI, process settings, and the wiring of the components for `kinetic up`
//! (everything in one process) and for each scale-out shape (`broker`, `dispatcher`). Domain logic
//! lives in the crates: `kinetic-api`, `kinetic-store`, `kinetic-broker`, `kinetic-triggers`,
//! `kinetic-serving`.
//! Start reading at [`Command`], then `server.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod api;
mod apply;
mod client;
mod config;
mod console;
mod serve;
mod server;
mod split;
mod webhook;

use config::{
    AdminListen, AdminSettings, AuthSettings, ConnectionSettings, DispatcherSettings,
    EgressSettings, IngressSettings, KafkaSettings, ResourceSettings, RetentionSettings,
    SecretSettings, ServingSettings, StoreSettings, TlsSettings,
};

// Every event allocates on its way through HTTP, JSON and the store; glibc's allocator spends a
// tenth of the process's time on it under load (measured with perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "kinetic",
    version,
    about = "Event brokers, triggers and durable delivery with Knative semantics."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    traces: config::TraceSettings,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once at start and moved once; its size costs nothing.
enum Command {
    /// Run everything in one process: broker ingress, dispatcher, serving gateway and functions,
    /// control-plane API.
    Up {
        /// Resource files or directories (YAML/JSON), applied at start and re-applied when changed.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Address of the public listener: broker ingress, webhooks, S3 push, health. The one to
        /// expose.
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin listener (`/api/v1`, `/metrics`, behind tokens): HOST:PORT or
        /// unix:PATH. Never expose it to the internet.
        #[arg(long, env = "KINETIC_ADMIN_LISTEN", default_value = "127.0.0.1:8070", value_parser = config::parse_admin_listen)]
        admin_listen: AdminListen,
        #[command(flatten)]
        admin: AdminSettings,
        #[command(flatten)]
        auth: AuthSettings,
        #[command(flatten)]
        tls: TlsSettings,
        #[command(flatten)]
        connections: ConnectionSettings,
        #[command(flatten)]
        secrets: SecretSettings,
        #[command(flatten)]
        retention: RetentionSettings,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        ingress: IngressSettings,
        #[command(flatten)]
        dispatcher: DispatcherSettings,
        /// Address of the gateway that routes requests to services by Host.
        #[arg(long, env = "KINETIC_GATEWAY_LISTEN", default_value = "127.0.0.1:8081")]
        gateway_listen: SocketAddr,
        #[command(flatten)]
        serving: ServingSettings,
        #[command(flatten)]
        kafka: KafkaSettings,
        #[command(flatten)]
        egress: EgressSettings,
    },
    /// Run the broker ingress and control-plane API only (scale-out; share a PostgreSQL store).
    Broker {
        /// Address of the public listener: broker ingress and health.
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin listener (`/api/v1`, `/metrics`, behind tokens): HOST:PORT or
        /// unix:PATH.
        #[arg(long, env = "KINETIC_ADMIN_LISTEN", default_value = "127.0.0.1:8070", value_parser = config::parse_admin_listen)]
        admin_listen: AdminListen,
        /// Also serve `/metrics` alone on this address (behind the admin tokens unless
        /// --metrics-public): for a Prometheus that scrapes pods, while the admin listener stays
        /// on loopback.
        #[arg(long, env = "KINETIC_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        admin: AdminSettings,
        #[command(flatten)]
        auth: AuthSettings,
        #[command(flatten)]
        tls: TlsSettings,
        #[command(flatten)]
        connections: ConnectionSettings,
        #[command(flatten)]
        secrets: SecretSettings,
        #[command(flatten)]
        retention: RetentionSettings,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        ingress: IngressSettings,
        #[command(flatten)]
        kafka: KafkaSettings,
        #[command(flatten)]
        egress: EgressSettings,
        #[command(flatten)]
        resources: ResourceSettings,
    },
    /// Run delivery only (scale-out; several dispatchers share the work of one PostgreSQL store).
    Dispatcher {
        /// Address for /healthz, /readyz and /metrics (metrics need a viewer token unless
        /// --metrics-public).
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8082")]
        listen: SocketAddr,
        #[command(flatten)]
        admin: AdminSettings,
        #[command(flatten)]
        connections: ConnectionSettings,
        #[command(flatten)]
        secrets: SecretSettings,
        /// Base URL of the broker ingress, for destinations that reference a Broker.
        #[arg(
            long,
            env = "KINETIC_INGRESS_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        ingress_url: String,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        dispatcher: DispatcherSettings,
        /// kinetic's issuer URL, as the brokers' `--issuer-url` (with their signing key in
        /// --state-dir): deliveries to Brokers and to destinations with an `audience` then carry a
        /// token signed for the trigger. Without it they carry none.
        #[arg(long, env = "KINETIC_ISSUER_URL")]
        issuer_url: Option<String>,
        /// Dedupe window used for replies, ISO-8601.
        #[arg(long, env = "KINETIC_DEDUPE_WINDOW", default_value = "PT24H", value_parser = config::parse_duration)]
        dedupe_window: std::time::Duration,
        /// Largest reply read back from a subscriber, in bytes: the brokers' --max-body-bytes.
        #[arg(long, env = "KINETIC_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
        max_body_bytes: usize,
        /// The serving gateway's address (`kinetic gateway`): Services named as subscribers are
        /// reached there, at `SERVICE.NAMESPACE.DOMAIN`. Without it, a trigger whose subscriber
        /// is a Service is not ready.
        #[arg(long, env = "KINETIC_GATEWAY")]
        gateway: Option<SocketAddr>,
        /// The serving domain of --gateway.
        #[arg(long, env = "KINETIC_DOMAIN", default_value = "kinetic.localhost", value_parser = config::parse_domain)]
        domain: String,
        #[command(flatten)]
        kafka: KafkaSettings,
        #[command(flatten)]
        egress: EgressSettings,
        #[command(flatten)]
        resources: ResourceSettings,
    },
    /// Run the sources only (scale-out; share a PostgreSQL store): webhook and bucket-notification
    /// endpoints, SQS readers, bucket pollers, KafkaSource consumers and PingSources, sending to the
    /// brokers at --ingress-url.
    Sources {
        /// Address of the listener: the sources' endpoints (`/webhooks/…`, `/sources/…`),
        /// /healthz, /readyz and /metrics (metrics need a viewer token unless --metrics-public).
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8083")]
        listen: SocketAddr,
        #[command(flatten)]
        admin: AdminSettings,
        #[command(flatten)]
        tls: TlsSettings,
        #[command(flatten)]
        connections: ConnectionSettings,
        #[command(flatten)]
        secrets: SecretSettings,
        /// Base URL of the broker ingress, for sinks that reference a Broker.
        #[arg(
            long,
            env = "KINETIC_INGRESS_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        ingress_url: String,
        #[command(flatten)]
        store: StoreSettings,
        /// kinetic's issuer URL, as the brokers' `--issuer-url` (with their signing key in
        /// --state-dir): events sent to Brokers and to sinks with an `audience` then carry a token
        /// signed for the source, so EventPolicies can name it. Without it they carry none.
        #[arg(long, env = "KINETIC_ISSUER_URL")]
        issuer_url: Option<String>,
        #[command(flatten)]
        egress: EgressSettings,
        #[command(flatten)]
        resources: ResourceSettings,
    },
    /// On Kubernetes: do what applying a resource does beside storing it, for resources applied
    /// with `kubectl` (a new Trigger's cursor, cleanup in the store on delete, a Service's
    /// Revisions, Configuration and Route, status conditions). Replicas elect a leader with a
    /// Lease; only it reconciles.
    Controller {
        /// Address for /healthz and /readyz.
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8084")]
        listen: SocketAddr,
        #[command(flatten)]
        connections: ConnectionSettings,
        #[command(flatten)]
        secrets: SecretSettings,
        #[command(flatten)]
        store: StoreSettings,
        /// The broker ingress's URL on the cluster: Brokers' addresses and Broker destinations.
        #[arg(
            long,
            env = "KINETIC_INGRESS_URL",
            default_value = "http://kinetic-broker.kinetic-system.svc.cluster.local"
        )]
        ingress_url: String,
        /// Namespace of the leader-election Lease (the controller's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "kinetic-system")]
        namespace: String,
        /// This replica's name in the Lease (its pod's name). Default: the host name.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Seconds a Lease not renewed stays held: how long a dead leader blocks a successor.
        #[arg(long, env = "KINETIC_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
        lease_seconds: u64,
        /// The serving gateway's host name: each Knative Service's cluster-local name
        /// (`NAME.NAMESPACE.svc.cluster.local`) becomes a Service of type ExternalName pointing
        /// there. Empty: no such names.
        #[arg(
            long,
            env = "KINETIC_GATEWAY_HOST",
            default_value = "kinetic-gateway.kinetic-system.svc.cluster.local"
        )]
        gateway_host: String,
    },
    /// On Kubernetes: admission for kinetic's kinds over HTTPS: validation (/validate), so
    /// `kubectl apply` of a resource kinetic refuses fails with kinetic's message, and defaulting
    /// (/default: a new Broker's class from config-br-defaults).
    Webhook {
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        #[command(flatten)]
        connections: ConnectionSettings,
        #[command(flatten)]
        tls: TlsSettings,
        /// Make the certificate and keep it in a Secret of --namespace shared by the replicas,
        /// its CA in the ValidatingWebhookConfiguration (instead of --tls-cert and --tls-key).
        #[arg(long, env = "KINETIC_WEBHOOK_MANAGE_CERTS")]
        manage_certs: bool,
        /// Namespace of the webhook's Service and certificate Secret.
        #[arg(long, env = "POD_NAMESPACE", default_value = "kinetic-system")]
        namespace: String,
        /// Directory the managed certificate is written to.
        #[arg(long, env = "KINETIC_STATE_DIR", default_value = ".kinetic")]
        state_dir: PathBuf,
    },
    /// Print the CustomResourceDefinitions of every kind kinetic implements, as YAML (what
    /// `deploy/base/crds.yaml` holds), for `kubectl apply -f -`.
    Crds,
    /// Create or upgrade the store's schema, then exit.
    Migrate {
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Apply resource files to a running kinetic.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        server: client::ServerArg,
    },
    /// Show brokers or triggers.
    Get {
        /// brokers | triggers
        kind: String,
        name: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum, default_value_t = client::Output::Table)]
        output: client::Output,
        #[command(flatten)]
        server: client::ServerArg,
    },
    /// Delete resources named in files, or one by kind and name.
    Delete {
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// broker | trigger
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        server: client::ServerArg,
    },
    /// Recent output of a service's instances.
    Logs {
        /// The Service's name.
        service: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Lines to show, newest last.
        #[arg(long, default_value_t = 200)]
        tail: usize,
        #[command(flatten)]
        server: client::ServerArg,
    },
    /// Serving split across processes: the serving controller and the KPA of every served
    /// revision, its instances (local processes, each behind a `kinetic queue-proxy`), and the
    /// routing table `kinetic gateway` and `kinetic activator` follow.
    Autoscaler {
        /// Address of its API: the table (`/v1/table`), the activators' reports and pokes, the
        /// revisions and services (`/v1/revisions`, `/v1/services`), /healthz, /readyz and
        /// /metrics. Only gateways and activators need it; never expose it.
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// The gateways' port, for the Services' URLs it shows.
        #[arg(long, env = "KINETIC_GATEWAY_PORT", default_value_t = 8081)]
        gateway_port: u16,
        /// Where revisions run: `process` (local processes) or `kubernetes` (a Deployment per
        /// revision; replicas elect a leader with the Lease `kinetic-autoscaler`).
        #[arg(long, env = "KINETIC_RUNTIME", value_enum, default_value_t = config::RuntimeKind::Process)]
        runtime: config::RuntimeKind,
        /// kinetic's image, which the queue-proxy sidecars of `--runtime kubernetes` run.
        #[arg(long, env = "KINETIC_QUEUE_PROXY_IMAGE")]
        queue_proxy_image: Option<String>,
        /// Namespace of the leader-election Lease (`--runtime kubernetes`).
        #[arg(long, env = "POD_NAMESPACE", default_value = "kinetic-system")]
        namespace: String,
        /// This replica's name in the Lease (its pod's name). Default: the host name.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Seconds a Lease not renewed stays held: how long a dead leader blocks a successor.
        #[arg(long, env = "KINETIC_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
        lease_seconds: u64,
        #[command(flatten)]
        connections: ConnectionSettings,
        #[command(flatten)]
        secrets: SecretSettings,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        serving: ServingSettings,
        #[command(flatten)]
        resources: ResourceSettings,
    },
    /// Serving's gateway alone: routes requests by Host to a Service's revisions (traffic split,
    /// tags), straight to their queue-proxies, or through an activator while a revision is at zero
    /// or short of burst capacity. Follows the table of `kinetic autoscaler`.
    Gateway {
        /// Where requests for Services arrive.
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Address for /healthz, /readyz and /metrics.
        #[arg(long, env = "KINETIC_HEALTH_LISTEN", default_value = "127.0.0.1:8086")]
        health_listen: SocketAddr,
        /// The autoscaler's URL.
        #[arg(
            long,
            env = "KINETIC_AUTOSCALER_URL",
            default_value = "http://127.0.0.1:8090"
        )]
        autoscaler_url: String,
        /// An activator's HOST:PORT; repeat, or separate with commas. Without any, this gateway
        /// holds requests for revisions at zero itself (gateway and activator in one process).
        #[arg(long = "activator", env = "KINETIC_ACTIVATORS", value_delimiter = ',', value_parser = config::parse_authority)]
        activators: Vec<http::uri::Authority>,
        /// Services answer at `http://SERVICE.NAMESPACE.DOMAIN`.
        #[arg(long, env = "KINETIC_DOMAIN", default_value = "kinetic.localhost", value_parser = config::parse_domain)]
        domain: String,
        /// Also route `SERVICE.NAMESPACE.{this}`: on Kubernetes a Knative Service's
        /// cluster-local name points at the gateway (`kinetic controller --gateway-host`). Repeat
        /// for several.
        #[arg(long = "local-domain", env = "KINETIC_LOCAL_DOMAINS", value_delimiter = ',', value_parser = config::parse_domain)]
        local_domains: Vec<String>,
        /// This replica's name in its reports to the autoscaler (its pod's). Default: host and pid.
        #[arg(long, env = "POD_NAME")]
        name: Option<String>,
        #[command(flatten)]
        connections: ConnectionSettings,
    },
    /// Serving's activator alone: holds the requests gateways send for revisions at zero or
    /// short of burst capacity, wakes the autoscaler at once, and forwards them to instances with
    /// free capacity. Follows the table of `kinetic autoscaler`.
    Activator {
        /// Where gateways send requests.
        #[arg(long, env = "KINETIC_LISTEN", default_value = "127.0.0.1:8085")]
        listen: SocketAddr,
        /// Address for /healthz, /readyz and /metrics.
        #[arg(long, env = "KINETIC_HEALTH_LISTEN", default_value = "127.0.0.1:8088")]
        health_listen: SocketAddr,
        /// The autoscaler's URL.
        #[arg(
            long,
            env = "KINETIC_AUTOSCALER_URL",
            default_value = "http://127.0.0.1:8090"
        )]
        autoscaler_url: String,
        /// This replica's name in its reports to the autoscaler (its pod's). Default: host and pid.
        #[arg(long, env = "POD_NAME")]
        name: Option<String>,
        #[command(flatten)]
        connections: ConnectionSettings,
    },
    /// Run the queue-proxy in front of one instance (a sidecar, as on Kubernetes).
    QueueProxy {
        /// Where requests arrive.
        #[arg(
            long,
            env = "KINETIC_QUEUE_PROXY_LISTEN",
            default_value = "127.0.0.1:8012"
        )]
        listen: SocketAddr,
        /// Readiness (`/ready`) and per-second stats (`/stats`) for the autoscaler.
        #[arg(
            long,
            env = "KINETIC_QUEUE_PROXY_ADMIN_LISTEN",
            default_value = "127.0.0.1:8022"
        )]
        admin_listen: SocketAddr,
        /// The instance's address.
        #[arg(
            long,
            env = "KINETIC_QUEUE_PROXY_UPSTREAM",
            default_value = "127.0.0.1:8080"
        )]
        upstream: SocketAddr,
        /// Requests the instance takes at once; 0 = no limit.
        #[arg(long, env = "CONTAINER_CONCURRENCY", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
        container_concurrency: u32,
        /// Longest a request may take, in seconds.
        #[arg(long, env = "REVISION_TIMEOUT_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_seconds: u64,
        /// The instance's readiness path (`readinessProbe.httpGet.path`): `/ready` answers 200
        /// only while a GET of it on the instance answers 2xx. Without it, a TCP connect.
        #[arg(long, env = "KINETIC_READINESS_PATH", value_parser = config::parse_http_path)]
        readiness_path: Option<String>,
    },
    /// Internal: start a function's process so that it dies with kinetic (parent-death signal), in
    /// its cgroups and as its user.
    /// Removes the containers of a kinetic process once its pipe on stdin closes (started by
    /// `kinetic up` when it runs containers).
    #[command(name = "__container-reaper", hide = true)]
    ContainerReaper {
        #[arg(long)]
        engine: String,
        #[arg(long)]
        owner: String,
    },
    #[command(name = "__exec", hide = true)]
    Exec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
    /// Send a CloudEvent to a broker (like `kn event send`).
    Send(client::SendArgs),
    /// CloudEvents SQL tools.
    Cesql {
        #[command(subcommand)]
        command: CesqlCommand,
    },
    /// Dead letters: list and replay.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Tokens for senders to brokers, signed by kinetic's own issuer.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Tokens of the admin API, for `--admin-tokens` files.
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// A JWT for `--sub` to present to the broker whose audience is `--audience` (needs the admin
    /// role). Prints the token.
    Create {
        /// The subject an EventPolicy's `spec.from` names, e.g.
        /// system:serviceaccount:default:checkout.
        #[arg(long)]
        sub: String,
        /// The broker's audience, as `kinetic get brokers` shows it
        /// (eventing.knative.dev/broker/NAMESPACE/NAME).
        #[arg(long)]
        audience: String,
        /// How long it is valid: 30s, 15m, 1h, 7d or ISO-8601 (PT1H); at most 30 days.
        #[arg(long, default_value = "1h", value_parser = client::parse_ttl)]
        ttl: std::time::Duration,
        #[command(flatten)]
        server: client::ServerArg,
    },
}

#[derive(Debug, Subcommand)]
enum AdminTokenCommand {
    /// Make a new token (256 random bits). Prints the token, then the line to add to the
    /// `--admin-tokens` file, which holds only the token's hash.
    Create {
        /// admin (everything), operator (read, replay dead letters) or viewer (read, /metrics).
        #[arg(long, value_parser = parse_role)]
        role: admin::Role,
        /// A name for the token, shown in refusals and logs (e.g. who holds it).
        #[arg(long)]
        name: String,
    },
}

fn parse_role(text: &str) -> Result<admin::Role, String> {
    text.parse()
}

#[derive(Debug, Subcommand)]
enum CesqlCommand {
    /// Evaluate an expression against an event; prints one JSON object.
    Eval {
        #[arg(long)]
        expression: String,
        /// A structured-mode JSON CloudEvent; a minimal valid event when absent.
        #[arg(long)]
        event: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first, a page at a time.
    List {
        /// Only this trigger, as NAMESPACE/NAME.
        #[arg(long)]
        trigger: Option<String>,
        /// Dead letters per page (at most 1000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Where the page starts: the token the previous page printed.
        #[arg(long = "continue")]
        after: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = client::Output::Table)]
        output: client::Output,
        #[command(flatten)]
        server: client::ServerArg,
    },
    /// Deliver dead letters again to their trigger's subscriber.
    Replay {
        /// Dead-letter ids.
        ids: Vec<String>,
        /// Every dead letter of this trigger (NAMESPACE/NAME) not replayed yet; needs --all.
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: client::ServerArg,
    },
    /// Delete dead letters: by id, every one of a trigger, or all.
    Delete {
        /// Dead-letter ids.
        #[arg(long = "id", conflicts_with_all = ["trigger", "all"])]
        ids: Vec<String>,
        /// Every dead letter of this trigger (NAMESPACE/NAME).
        #[arg(long, conflicts_with = "all")]
        trigger: Option<String>,
        /// Every dead letter of every trigger.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: client::ServerArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Exec { argv } = &cli.command {
        // Replaces this process; returns only when the program could not be started.
        let error = kinetic_serving::runtime::exec_shim(argv);
        eprintln!("error: {error}");
        return ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        });
    }
    let telemetry = match kinetic_telemetry::init(&kinetic_telemetry::Settings {
        service: cli.command.service_name().to_owned(),
        otlp_endpoint: cli.traces.otlp_endpoint.clone(),
        sampling_ratio: cli.traces.trace_sampling_ratio,
    }) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans are exported off the runtime (the exporter blocks).
    telemetry.shutdown();
    code
}

impl Command {
    /// The name the process's spans are exported under (`service.name`).
    fn service_name(&self) -> &'static str {
        match self {
            Command::Up { .. } => "kinetic",
            Command::Broker { .. } => "kinetic-broker",
            Command::Dispatcher { .. } => "kinetic-dispatcher",
            Command::Sources { .. } => "kinetic-sources",
            Command::Controller { .. } => "kinetic-controller",
            Command::Webhook { .. } => "kinetic-webhook",
            Command::Autoscaler { .. } => "kinetic-autoscaler",
            Command::Gateway { .. } => "kinetic-gateway",
            Command::Activator { .. } => "kinetic-activator",
            Command::QueueProxy { .. } => "kinetic-queue-proxy",
            _ => "kinetic-cli",
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up {
            files,
            listen,
            admin_listen,
            admin,
            auth,
            tls,
            connections,
            secrets,
            retention,
            store,
            ingress,
            dispatcher,
            gateway_listen,
            serving,
            kafka,
            egress,
        } => {
            let (state_dir, store) = open_state(&store, &secrets).await?;
            let settings = server::UpSettings {
                tls,
                connections,
                retention,
                admin_listen,
                admin,
                auth,
                ingress,
                dispatcher,
                gateway_listen,
                serving,
                kafka,
                egress,
            };
            server::up(store, listen, files, settings, state_dir).await?;
        }
        Command::Logs {
            service,
            namespace,
            tail,
            server,
        } => client::logs(&server, &namespace, &service, tail).await?,
        Command::Autoscaler {
            listen,
            gateway_port,
            runtime,
            queue_proxy_image,
            namespace,
            identity,
            lease_seconds,
            connections,
            secrets,
            store,
            serving,
            resources,
        } => {
            let (state_dir, store) = open_state(&store, &secrets).await?;
            split::autoscaler(
                store,
                split::AutoscalerSettings {
                    listen,
                    gateway_port,
                    runtime,
                    queue_proxy_image,
                    election: kinetic_k8s::controller::leader::Election {
                        lease: kinetic_k8s::controller::leader::AUTOSCALER_LEASE.to_owned(),
                        namespace,
                        identity: match identity {
                            Some(identity) => identity,
                            None => hostname()?,
                        },
                        duration: lease_seconds,
                        grace: (lease_seconds / 3).max(1),
                    },
                    connections,
                    serving,
                    resources: resources.source,
                    state_dir,
                },
            )
            .await?;
        }
        Command::Gateway {
            listen,
            health_listen,
            autoscaler_url,
            activators,
            domain,
            local_domains,
            name,
            connections,
        } => {
            split::follower(
                split::FollowerSettings {
                    listen,
                    health_listen,
                    autoscaler_url,
                    activators,
                    domain,
                    local_domains,
                    name,
                    connections,
                },
                false,
            )
            .await?;
        }
        Command::Activator {
            listen,
            health_listen,
            autoscaler_url,
            name,
            connections,
        } => {
            split::follower(
                split::FollowerSettings {
                    listen,
                    health_listen,
                    autoscaler_url,
                    activators: Vec::new(),
                    domain: "kinetic.localhost".to_owned(),
                    local_domains: Vec::new(),
                    name,
                    connections,
                },
                true,
            )
            .await?;
        }
        Command::QueueProxy {
            listen,
            admin_listen,
            upstream,
            container_concurrency,
            timeout_seconds,
            readiness_path,
        } => {
            let cancel = tokio_util::sync::CancellationToken::new();
            server::cancel_on_signal(cancel.clone());
            kinetic_serving::queue_proxy::sidecar::serve(
                kinetic_serving::queue_proxy::sidecar::SidecarConfig {
                    listen,
                    admin_listen,
                    upstream,
                    container_concurrency: container_concurrency as usize,
                    timeout: std::time::Duration::from_secs(timeout_seconds),
                    readiness_path,
                },
                cancel,
            )
            .await?;
        }
        Command::Exec { .. } => unreachable!("handled before the async runtime starts"),
        Command::ContainerReaper { engine, owner } => {
            use kinetic_serving::runtime::container;
            let engine = container::Engine::connect(&engine).await?;
            let removed = container::reap_after(&engine, &owner, tokio::io::stdin()).await?;
            if removed > 0 {
                tracing::info!(removed, %owner, "Removed the containers of a kinetic that is gone.");
            }
        }
        Command::Broker {
            listen,
            admin_listen,
            metrics_listen,
            admin,
            auth,
            tls,
            connections,
            secrets,
            retention,
            store,
            ingress,
            kafka,
            egress,
            resources,
        } => {
            let (state_dir, store) = open_state(&store, &secrets).await?;
            server::broker(
                store,
                server::BrokerSettings {
                    tls,
                    connections,
                    retention,
                    listen,
                    admin_listen,
                    admin,
                    auth,
                    state_dir,
                    ingress,
                    kafka,
                    egress,
                    resources: resources.source,
                    metrics_listen,
                },
            )
            .await?;
        }
        Command::Dispatcher {
            listen,
            admin,
            connections,
            secrets,
            issuer_url,
            ingress_url,
            store,
            dispatcher,
            dedupe_window,
            max_body_bytes,
            gateway,
            domain,
            kafka,
            egress,
            resources,
        } => {
            kinetic_api::meta::validate_absolute_url(&ingress_url)
                .map_err(|e| anyhow::anyhow!("--ingress-url: {e}"))?;
            let (state_dir, store) = open_state(&store, &secrets).await?;
            server::dispatcher_only(
                store,
                listen,
                state_dir,
                ingress_url,
                server::DispatchSettings {
                    admin,
                    connections,
                    issuer_url,
                    dispatcher,
                    dedupe_window,
                    max_body_bytes,
                    gateway: gateway.map(|address| kinetic_outbound::sender::GatewayAddress {
                        domain,
                        address,
                    }),
                    kafka,
                    egress,
                    resources: resources.source,
                },
            )
            .await?;
        }
        Command::Sources {
            listen,
            admin,
            tls,
            connections,
            secrets,
            ingress_url,
            store,
            issuer_url,
            egress,
            resources,
        } => {
            kinetic_api::meta::validate_absolute_url(&ingress_url)
                .map_err(|e| anyhow::anyhow!("--ingress-url: {e}"))?;
            let (state_dir, store) = open_state(&store, &secrets).await?;
            server::sources_only(
                store,
                listen,
                state_dir,
                ingress_url,
                server::SourcesSettings {
                    admin,
                    tls,
                    connections,
                    issuer_url,
                    egress,
                    resources: resources.source,
                },
            )
            .await?;
        }
        Command::Controller {
            listen,
            connections,
            secrets,
            store,
            ingress_url,
            namespace,
            identity,
            lease_seconds,
            gateway_host,
        } => {
            kinetic_api::meta::validate_absolute_url(&ingress_url)
                .map_err(|e| anyhow::anyhow!("--ingress-url: {e}"))?;
            let identity = match identity {
                Some(identity) => identity,
                None => hostname()?,
            };
            let (_, store) = open_state(&store, &secrets).await?;
            server::controller(
                store,
                server::ControllerSettings {
                    listen,
                    connections,
                    ingress_url,
                    gateway_host: (!gateway_host.is_empty()).then_some(gateway_host),
                    election: kinetic_k8s::controller::leader::Election {
                        lease: kinetic_k8s::controller::leader::LEASE.to_owned(),
                        namespace,
                        identity,
                        duration: lease_seconds,
                        // Renewed a third of the way before expiry, as Knative's (15 s, renewed by 10 s).
                        grace: (lease_seconds / 3).max(1),
                    },
                },
            )
            .await?;
        }
        Command::Webhook {
            listen,
            connections,
            tls,
            manage_certs,
            namespace,
            state_dir,
        } => {
            std::fs::create_dir_all(&state_dir)
                .map_err(|e| anyhow::anyhow!("--state-dir {}: {e}", state_dir.display()))?;
            webhook::run(webhook::WebhookSettings {
                listen,
                connections,
                tls,
                manage_certs: manage_certs.then(|| kinetic_k8s::webhook::certs::Names {
                    namespace,
                    secret: "kinetic-webhook-certs".to_owned(),
                    service: "kinetic-webhook".to_owned(),
                    configuration: "kinetic-webhook".to_owned(),
                }),
                state_dir,
            })
            .await?;
        }
        Command::Crds => print!("{}", kinetic_k8s::crds::yaml()),
        Command::Migrate { store } => {
            let opened = server::open_store(&store).await?;
            println!(
                "The store {} is migrated ({}).",
                kinetic_api::meta::redact_url(&opened.url),
                opened.store.engine()
            );
        }
        Command::Apply { files, server } => client::apply(&server, &files).await?,
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
            server,
        } => {
            client::get(
                &server,
                &kind,
                name.as_deref(),
                (!all_namespaces).then_some(namespace.as_str()),
                output,
            )
            .await?
        }
        Command::Delete {
            files,
            kind,
            name,
            namespace,
            server,
        } => {
            client::delete(
                &server,
                &files,
                kind.as_deref(),
                name.as_deref(),
                &namespace,
            )
            .await?
        }
        Command::Send(args) => client::send(&args).await?,
        Command::Cesql {
            command: CesqlCommand::Eval { expression, event },
        } => return client::cesql_eval(&expression, event.as_deref()),
        Command::Dlq {
            command:
                DlqCommand::List {
                    trigger,
                    limit,
                    after,
                    output,
                    server,
                },
        } => {
            client::dlq_list(
                &server,
                trigger.as_deref(),
                (limit, after.as_deref()),
                output,
            )
            .await?
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    ids,
                    trigger,
                    all,
                    server,
                },
        } => client::dlq_replay(&server, ids, trigger, all).await?,
        Command::Dlq {
            command:
                DlqCommand::Delete {
                    ids,
                    trigger,
                    all,
                    server,
                },
        } => client::dlq_delete(&server, ids, trigger, all).await?,
        Command::Token {
            command:
                TokenCommand::Create {
                    sub,
                    audience,
                    ttl,
                    server,
                },
        } => client::token_create(&server, &sub, &audience, ttl).await?,
        Command::AdminToken {
            command: AdminTokenCommand::Create { role, name },
        } => {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                anyhow::bail!(
                    "--name `{name}` must be one word without spaces, e.g. --name grafana"
                );
            }
            let token = admin::new_token();
            println!("{token}");
            println!("{}", admin::token_line(role, &name, &token));
            eprintln!(
                "The first line is the token: give it to its holder (kinetic's CLI reads it from KINETIC_TOKEN or --token-file). Add the second line to the --admin-tokens file; kinetic reads that file at start."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What every long-running subcommand does first: its state directory made private, the secrets
/// its resources may name confined to what `secrets` allows, and its store opened (and migrated).
async fn open_state(
    store: &StoreSettings,
    secrets: &SecretSettings,
) -> anyhow::Result<(std::path::PathBuf, server::OpenedStore)> {
    let state_dir = store.state_dir.clone();
    config::private_dir(&state_dir)?;
    kinetic_api::secret::confine(secrets.scope(&state_dir)?);
    let store = server::open_store(store).await?;
    Ok((state_dir, store))
}

/// This machine's host name (a pod's name on Kubernetes).
fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    if name.is_empty() {
        anyhow::bail!(
            "this machine's host name is unknown: name this replica with --identity or POD_NAME"
        );
    }
    Ok(name)
}
