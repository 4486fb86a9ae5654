//! Wiring components into processes: `kinetic up` (everything), `kinetic broker` (ingress and the
//! control-plane API) and `kinetic dispatcher` (delivery), with graceful shutdown on SIGINT/SIGTERM.
//!
//! `up` and `broker` serve two listeners: the public one (`--listen`: broker ingress, webhooks, S3
//! push, health) and the admin one (`--admin-listen`: `/api/v1`, `/metrics`, behind
//! [`crate::admin`]'s tokens). The dispatcher's one listener serves health, and metrics behind the
//! same tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kinetic_broker::{BrokerDirectory, Committers, IngressConfig};
use kinetic_log::kafka::{KafkaLog, TopicSettings};
use kinetic_log::{CommitMetrics, Committer, StoreLog};
use kinetic_outbound::destination::Resolver;
use kinetic_store::Store;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Tokens};
use crate::api::{self, ApiState};
use crate::apply;
use crate::config::{
    AdminListen, AdminSettings, AuthSettings, ConnectionSettings, DispatcherSettings,
    EgressSettings, IngressSettings, KafkaSettings, ResourceSource, RetentionSettings,
    ServingSettings, StoreSettings, TlsSettings,
};
use crate::serve::{Limits, Tls};

/// How often delivered events and expired dedupe entries are removed; often, so each removal is small.
const PRUNE_INTERVAL: Duration = Duration::from_secs(2);
/// How long in-flight work may take to finish after a shutdown signal.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Opens the store, holding an exclusive lock on a SQLite file so two processes never share it.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    pub url: String,
    _lock: Option<std::fs::File>,
}

pub async fn open_store(settings: &StoreSettings) -> anyhow::Result<OpenedStore> {
    let url = settings.url();
    let mut lock = None;
    if let Some(path) = url.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the state directory {}", parent.display()))?;
        }
        let lock_path = path.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        file.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "{} is in use by another kinetic process; stop it, or give this one its own store with --store sqlite:///other/state.db",
                path.display()
            )
        })?;
        lock = Some(file);
    }
    let store = kinetic_store::open(&url)
        .await
        .with_context(|| format!("opening the store {}", kinetic_api::meta::redact_url(&url)))?;
    if let Some(path) = url.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
        // Every event and resource is in these files: kinetic's user alone reads them.
        use std::os::unix::fs::PermissionsExt as _;
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{path}{suffix}");
            if std::path::Path::new(&file).exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {file} to kinetic's user"))?;
            }
        }
    }
    if store.engine() == "sqlite" {
        // The file lock proves no other process uses this store: leases left are from a previous run.
        store
            .release_all_leases()
            .await
            .context("releasing leases of a previous run")?;
    }
    Ok(OpenedStore {
        store,
        url,
        _lock: lock,
    })
}

/// Resolves when SIGINT or SIGTERM arrives, then cancels `token`.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            if let Ok(mut signal) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                signal.recv().await;
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
        tracing::info!("Shutting down.");
        token.cancel();
    });
}

/// `listener`, its connections sending small answers at once (no Nagle delay).
fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    })
}

pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("listening on {addr} (is another process using it? choose another with --listen)")
    })
}

/// The admin listener, bound: TCP, or a unix socket (removed again when kinetic stops).
enum AdminSocket {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl AdminSocket {
    async fn bind(listen: &AdminListen) -> anyhow::Result<Self> {
        match listen {
            AdminListen::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("listening on {addr} for the admin API (is another process using it? choose another with --admin-listen)")
                })?;
                Ok(Self::Tcp(listener))
            }
            AdminListen::Unix(path) => {
                // A socket file left by a process that is gone is replaced; one in use is not.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    anyhow::bail!(
                        "--admin-listen unix:{}: another process listens on it; stop it or choose another path",
                        path.display()
                    );
                }
                let _ = std::fs::remove_file(path);
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("creating {} for --admin-listen", parent.display())
                    })?;
                }
                let listener = tokio::net::UnixListener::bind(path).with_context(|| {
                    format!("listening on unix:{} for the admin API", path.display())
                })?;
                // Only kinetic's own user may connect (the token is still needed).
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting unix:{}", path.display()))?;
                Ok(Self::Unix(listener, path.clone()))
            }
        }
    }

    fn bound(&self) -> anyhow::Result<admin::Bound> {
        Ok(match self {
            Self::Tcp(listener) => admin::Bound::Tcp(listener.local_addr()?),
            Self::Unix(_, path) => admin::Bound::Unix(path.clone()),
        })
    }

    /// `http(s)://ADDRESS` or `unix:PATH`: what the CLI's `--server` takes.
    fn url(&self, tls: bool) -> anyhow::Result<String> {
        let scheme = if tls { "https" } else { "http" };
        Ok(match self.bound()? {
            admin::Bound::Tcp(address) => format!("{scheme}://{address}"),
            admin::Bound::Unix(path) => format!("unix:{}", path.display()),
        })
    }

    /// Runs `router` behind `guard` within `limits` until `cancel`, finishing in-flight requests.
    async fn serve(
        self,
        router: axum::Router,
        guard: Arc<admin::Guard>,
        tls: Option<Tls>,
        limits: Limits,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let router = router.layer(axum::middleware::from_fn_with_state(guard, admin::guard));
        match self {
            Self::Tcp(listener) => {
                crate::serve::serve(nodelay(listener), router, tls, limits, cancel).await
            }
            Self::Unix(listener, path) => {
                let served = crate::serve::serve(listener, router, None, limits, cancel)
                    .await
                    .context("serving the admin API");
                let _ = std::fs::remove_file(&path);
                served
            }
        }
    }
}

/// The two listeners of `up` and `broker`, bound, with what serving them needs.
struct Listeners {
    public: tokio::net::TcpListener,
    /// `http(s)://ADDRESS` of the public listener.
    public_url: String,
    admin: AdminSocket,
    admin_url: String,
    guard: Arc<admin::Guard>,
    tls: Option<Tls>,
    limits: Limits,
}

impl Listeners {
    /// Reads the admin tokens and TLS files and checks the exposure before binding anything, so
    /// a mistake fails fast.
    async fn bind(
        listen: SocketAddr,
        admin_listen: &AdminListen,
        admin_settings: &AdminSettings,
        auth_settings: &AuthSettings,
        tls_settings: &TlsSettings,
        connections: &ConnectionSettings,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let tokens = admin_tokens(admin_settings, state_dir)?;
        auth_settings.check_exposure(listen)?;
        let tls = tls_settings.load()?;
        let public = bind(listen).await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = format!("{scheme}://{}", public.local_addr()?);
        let admin = AdminSocket::bind(admin_listen).await?;
        let guard = admin_guard(tokens, admin_settings, admin.bound()?, tls.is_some());
        let admin_url = admin.url(tls.is_some())?;
        Ok(Self {
            public,
            public_url,
            admin,
            admin_url,
            guard,
            tls,
            limits: connections.limits(),
        })
    }
}

/// The admin tokens: `--admin-tokens`, or the state directory's own admin token. Read before any
/// port is bound, so a mistake fails fast.
fn admin_tokens(settings: &AdminSettings, state_dir: &std::path::Path) -> anyhow::Result<Tokens> {
    match &settings.admin_tokens {
        Some(file) => Tokens::from_file(file),
        None => Tokens::local(state_dir),
    }
}

fn admin_guard(
    tokens: Tokens,
    settings: &AdminSettings,
    bound: admin::Bound,
    tls: bool,
) -> Arc<admin::Guard> {
    let mut guard = admin::Guard::new(
        tokens,
        bound,
        &settings.admin_hosts,
        settings.metrics_public,
    );
    if tls {
        guard.scheme = "https";
    }
    Arc::new(guard)
}

/// The Kafka class's log: the process's cluster, if configured, for brokers whose `spec.config`
/// (or `config-br-defaults`) names none; servers a ConfigMap names are held to the egress rules.
/// Brokers and ConfigMaps are read from `resources`.
fn kafka_log(
    settings: &KafkaSettings,
    store: &Arc<dyn Store>,
    resources: &kinetic_resources::Watch,
    egress: &EgressSettings,
) -> Arc<KafkaLog> {
    let topics = TopicSettings {
        partitions: settings.kafka_topic_partitions,
        replication_factor: settings.kafka_topic_replication_factor,
    };
    Arc::new(
        KafkaLog::new(settings.client(), topics, store.clone())
            .with_resources(resources.clone())
            .with_server_check(host_check(egress)),
    )
}

/// The egress rules' check of a host kinetic is asked to connect to by a resource
/// ([`kinetic_outbound::egress::Egress::check_host`]), as the sources and the Kafka log take it.
fn host_check(
    egress: &EgressSettings,
) -> Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync> {
    let egress = Arc::new(egress.egress());
    Arc::new(move |host: String| {
        let egress = egress.clone();
        Box::pin(async move { egress.check_host(&host).await.map_err(|r| r.to_string()) })
    })
}

/// Pieces of the ingress side, shared by `up` and `broker`.
struct IngressParts {
    router: axum::Router,
    /// The store-backed classes' group commit, which the in-process dispatcher's replies share.
    committer: Committer,
    committer_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Waits (bounded) for the committers to drain once the router is dropped.
async fn drain(committer_tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in committer_tasks {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, task).await;
    }
}

/// The resources as this process's components read them: read once now (a store that cannot be
/// read fails the start), then every second and at once after a change made here, until `cancel`.
pub(crate) async fn watch_resources(
    store: &Arc<dyn Store>,
    source: ResourceSource,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<kinetic_resources::Watch> {
    let (feed, mut watch) = kinetic_resources::channel();
    match source {
        ResourceSource::Store => {
            let first = store
                .all_resources()
                .await
                .context("reading the resources")?;
            feed.publish(kinetic_resources::Snapshot::new(first));
            tracker.spawn(kinetic_resources::poll(
                store.clone(),
                feed,
                Duration::from_secs(1),
                cancel.clone(),
            ));
        }
        ResourceSource::Kubernetes => {
            let client = kinetic_k8s::client().await.context(
                "connecting to the Kubernetes API (in a pod, its service account; elsewhere, KUBECONFIG or ~/.kube/config)",
            )?;
            tracker.spawn(kinetic_k8s::feed::run(client, feed, cancel.clone()));
            match tokio::time::timeout(KUBERNETES_FIRST_LIST, watch.loaded()).await {
                Ok(Some(_)) => {}
                _ => anyhow::bail!(
                    "the Kubernetes API did not list kinetic's resources within {} s: are the CRDs installed (`kinetic crds | kubectl apply -f -`), and may this service account list them (deploy/base/rbac.yaml)? The log above says why each list failed",
                    KUBERNETES_FIRST_LIST.as_secs()
                ),
            }
        }
    }
    Ok(watch)
}

/// How long a component waits for the Kubernetes API's first listing before giving up.
const KUBERNETES_FIRST_LIST: Duration = Duration::from_secs(60);

/// Where applying resources goes when they live in the Kubernetes API.
const KUBERNETES_WRITES: &str =
    "this kinetic reads them from the Kubernetes API; apply them with `kubectl apply -f`";

pub(crate) fn written_elsewhere(source: ResourceSource) -> Option<&'static str> {
    (source == ResourceSource::Kubernetes).then_some(KUBERNETES_WRITES)
}

/// kinetic's issuer and the brokers' gate (EventPolicy, tokens), with the policies of the resource
/// snapshot read before anything is served, then of every new one.
struct Auth {
    issuer: Arc<kinetic_auth::Issuer>,
    gate: Arc<kinetic_auth::Gate>,
}

async fn auth(
    settings: &AuthSettings,
    state_dir: &std::path::Path,
    public_url: &str,
    resources: &kinetic_resources::Watch,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<Auth> {
    let url = settings.issuer_url.as_deref().unwrap_or(public_url);
    kinetic_api::meta::validate_absolute_url(url)
        .map_err(|e| anyhow::anyhow!("--issuer-url: {e}"))?;
    let issuer = Arc::new(
        kinetic_auth::Issuer::load_or_create(state_dir, url)
            .context("kinetic's token signing key")?,
    );
    let verifier = kinetic_auth::Verifier::new(Some(&issuer), &settings.oidc_issuers)
        .map_err(|e| anyhow::anyhow!("verifying senders' tokens: {e}"))?;
    if let Err(error) = verifier.preload().await {
        // A file is the operator's to fix now; a URL may come back (it is fetched again later).
        let files = settings
            .oidc_issuers
            .iter()
            .any(|spec| matches!(spec.keys, kinetic_auth::verify::KeySource::File(_)));
        if files {
            anyhow::bail!("--oidc-issuer: {error}");
        }
        tracing::warn!(%error, "An issuer's keys could not be read yet; tokens it signed are refused until they can.");
    }
    let gate = Arc::new(kinetic_auth::Gate::new(Arc::new(verifier), settings.mode()));
    // The policies of the first snapshot are in force before anything is served.
    let first = resources
        .latest()
        .context("the resources were read before the gate was made")?;
    gate.update(&first);
    tracker.spawn(gate.clone().run(resources.clone(), cancel.clone()));
    Ok(Auth { issuer, gate })
}

/// kinetic's OIDC discovery document and key set, on the public listener.
fn discovery_router(issuer: Arc<kinetic_auth::Issuer>) -> axum::Router {
    use axum::routing::get;
    let jwks = issuer.clone();
    axum::Router::new()
        .route(
            kinetic_auth::issuer::DISCOVERY_PATH,
            get(move || async move { axum::Json(issuer.discovery()) }),
        )
        .route(
            kinetic_auth::issuer::JWKS_PATH,
            get(move || async move { axum::Json(jwks.jwks()) }),
        )
}

#[allow(clippy::too_many_arguments)] // The pieces an ingress is made of, each from its owner.
fn ingress(
    store: &Arc<dyn Store>,
    resources: &kinetic_resources::Watch,
    kafka: Arc<KafkaLog>,
    settings: &IngressSettings,
    registry: &mut Registry,
    committed: watch::Sender<u64>,
    admission: Arc<dyn kinetic_broker::Admission>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> IngressParts {
    let metrics = kinetic_broker::metrics::Metrics::new(registry);
    let commits = CommitMetrics::new(registry);
    let (committer, committer_task) = Committer::start(
        Arc::new(StoreLog(store.clone())),
        settings.dedupe_window,
        committed,
        commits.clone(),
    );
    // Kafka-class triggers read their topics, not the store's log: nothing to wake.
    let (produced, _) = watch::channel(0u64);
    let (kafka, kafka_task) = Committer::start(kafka, settings.dedupe_window, produced, commits);
    let committer_tasks = vec![committer_task, kafka_task];
    let directory = BrokerDirectory::new(store.clone());
    tracker.spawn(directory.clone().run(resources.clone(), cancel.clone()));
    let router = kinetic_broker::router(
        IngressConfig {
            max_body_bytes: settings.max_body_bytes,
            max_inflight_bytes: settings.max_inflight_bytes,
        },
        Committers {
            store: committer.clone(),
            kafka,
        },
        directory,
        metrics,
        Some(admission),
    );
    IngressParts {
        router,
        committer,
        committer_tasks,
    }
}

/// Where the dispatcher appends: Kafka-class topics, and the store's log through a group commit.
struct DispatcherLogs {
    kafka: Arc<KafkaLog>,
    replies: Committer,
}

/// The dispatcher's settings from the process's.
///
/// With kinetic's `issuer`, deliveries to destinations with an audience (Broker refs, Knative's
/// `Destination.audience`) carry a token signed for the trigger's identity.
fn dispatcher_config(
    settings: &DispatcherSettings,
    egress: &EgressSettings,
    (dedupe_window, max_reply_bytes): (Duration, usize),
    resolver: Resolver,
    issuer: Option<Arc<kinetic_auth::Issuer>>,
) -> kinetic_triggers::Config {
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let mut config = kinetic_triggers::Config::new(owner, resolver);
    config.concurrency = settings.delivery_concurrency as usize;
    config.subscriber_concurrency = settings.subscriber_concurrency;
    config.batch_size = settings.delivery_batch as usize;
    config.poll_interval = settings.poll_interval.max(Duration::from_millis(10));
    config.dedupe_window = dedupe_window;
    config.max_reply_bytes = max_reply_bytes;
    config.egress = egress.egress();
    config.tokens = issuer.map(|issuer| {
        kinetic_outbound::sender::TokenSigner::new(move |subject, audience| {
            issuer.token_for(subject, audience)
        })
    });
    config
}

/// Sources reach their sinks with the dispatcher's clients: kinetic's own destinations directly,
/// outside URLs (and an SNS subscription's confirmation URL) only within `--egress-allow`.
///
/// Events to a broker (or a destination with an `audience`) go with a token kinetic's issuer signs
/// for the source's identity, so EventPolicies can name sources with `from.ref`. The hosts sources
/// connect to by themselves (S3 endpoints, SQS queues, Kafka brokers) are held to the same egress
/// rules, checked when the source starts.
fn source_sink(
    resolver: &Resolver,
    egress: &EgressSettings,
    issuer: Option<Arc<kinetic_auth::Issuer>>,
) -> anyhow::Result<kinetic_sources::Sink> {
    let sender = kinetic_outbound::sender::Sender::new(
        resolver.gateway.as_ref(),
        Some(&resolver.ingress_url),
        egress.egress(),
    );
    // Fail closed now: no source runs without its guarded client.
    sender
        .ready_clients()
        .map_err(|e| anyhow::anyhow!("sources' HTTP clients: {e}"))?;
    let batches = sender.clone();
    let sink = kinetic_sources::Sink::new(Arc::new(move |url: &reqwest::Url| {
        sender.client_for(url).cloned()
    }))
    .with_endpoint_check(host_check(egress))
    // A broker's ingress commits a batch-mode POST as one: sources with much to send (a
    // KafkaSource behind its topic) send it many events at a time.
    .with_batches(Arc::new(move |url: &reqwest::Url| {
        batches.is_broker_ingress(url)
    }));
    Ok(match issuer {
        Some(issuer) => sink.with_signer(Arc::new(move |subject, audience| {
            issuer.token_for(subject, audience)
        })),
        None => sink,
    })
}

/// The sources of a process, sending to what `resolver` resolves.
fn sources(
    store: &Arc<dyn Store>,
    resources: &kinetic_resources::Watch,
    resolver: Resolver,
    egress: &EgressSettings,
    issuer: Option<Arc<kinetic_auth::Issuer>>,
    registry: &mut Registry,
) -> anyhow::Result<Arc<kinetic_sources::Sources>> {
    kinetic_sources::Sources::new(
        store.clone(),
        resources.clone(),
        source_sink(&resolver, egress, issuer)?,
        Arc::new(move |destination, namespace| {
            let url = resolver.resolve(destination, namespace)?;
            Ok((
                url,
                kinetic_api::policy::destination_audience(destination, namespace),
            ))
        }),
        kinetic_sources::metrics::Metrics::new(registry),
        kinetic_sources::Clock::system(),
    )
    .map_err(|e| anyhow::anyhow!("sources: {e}"))
}

fn dispatcher(
    store: &Arc<dyn Store>,
    resources: &kinetic_resources::Watch,
    logs: DispatcherLogs,
    config: kinetic_triggers::Config,
    registry: &mut Registry,
    committed: watch::Sender<u64>,
) -> kinetic_triggers::Dispatcher {
    let metrics = kinetic_triggers::metrics::Metrics::new(registry);
    kinetic_triggers::Dispatcher::new(
        store.clone(),
        resources.clone(),
        config,
        metrics,
        committed,
        Some(logs.kafka),
        Some(logs.replies),
    )
}

/// Runs `router` on `listener` in plain HTTP until `cancel`, finishing in-flight requests.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    crate::serve::serve(nodelay(listener), router, None, limits, cancel).await
}

/// The components' settings of `kinetic up`.
pub struct UpSettings {
    pub tls: TlsSettings,
    pub connections: ConnectionSettings,
    pub retention: RetentionSettings,
    pub admin_listen: AdminListen,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub ingress: IngressSettings,
    pub dispatcher: DispatcherSettings,
    pub gateway_listen: SocketAddr,
    pub serving: ServingSettings,
    pub kafka: KafkaSettings,
    pub egress: EgressSettings,
}

/// The settings of `kinetic broker`.
pub struct BrokerSettings {
    pub tls: TlsSettings,
    pub connections: ConnectionSettings,
    pub retention: RetentionSettings,
    pub listen: SocketAddr,
    pub admin_listen: AdminListen,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub state_dir: PathBuf,
    pub ingress: IngressSettings,
    pub kafka: KafkaSettings,
    /// For the Kafka servers a broker's ConfigMap names.
    pub egress: EgressSettings,
    pub resources: ResourceSource,
    /// A listener of `/metrics` alone, beside the admin listener.
    pub metrics_listen: Option<SocketAddr>,
}

/// The delivery settings of `kinetic dispatcher`.
pub struct DispatchSettings {
    pub admin: AdminSettings,
    pub connections: ConnectionSettings,
    /// kinetic's issuer URL, as the brokers' `--issuer-url`.
    pub issuer_url: Option<String>,
    pub dispatcher: DispatcherSettings,
    /// For replies.
    pub dedupe_window: Duration,
    /// Largest reply read back.
    pub max_body_bytes: usize,
    /// Where Services are served (`kinetic gateway`).
    pub gateway: Option<kinetic_outbound::sender::GatewayAddress>,
    pub kafka: KafkaSettings,
    pub egress: EgressSettings,
    pub resources: ResourceSource,
}

/// `kinetic sources`'s settings besides the store and the listener.
pub struct SourcesSettings {
    pub admin: AdminSettings,
    pub tls: TlsSettings,
    pub connections: ConnectionSettings,
    /// kinetic's issuer URL, as the brokers' `--issuer-url`.
    pub issuer_url: Option<String>,
    pub egress: EgressSettings,
    pub resources: ResourceSource,
}

/// The issuer whose key is in `state_dir`, at `url` (the brokers' `--issuer-url`), or none.
fn issuer_at(
    url: Option<&str>,
    state_dir: &std::path::Path,
) -> anyhow::Result<Option<Arc<kinetic_auth::Issuer>>> {
    let Some(url) = url else {
        return Ok(None);
    };
    kinetic_api::meta::validate_absolute_url(url)
        .map_err(|e| anyhow::anyhow!("--issuer-url: {e}"))?;
    Ok(Some(Arc::new(
        kinetic_auth::Issuer::load_or_create(state_dir, url)
            .context("kinetic's token signing key")?,
    )))
}

/// `kinetic sources`: the sources alone (webhook and bucket-notification endpoints on the public
/// listener, SQS readers, bucket pollers, KafkaSource consumers, PingSources), sending to the
/// brokers at `ingress_url`; with health on the same listener and metrics behind the admin
/// tokens. Several share the work of one store: a PingSource tick fires once (a checkpoint
/// advanced by compare-and-set), SQS messages go to one reader, a KafkaSource's partitions are
/// shared through its consumer group.
pub async fn sources_only(
    store: OpenedStore,
    listen: SocketAddr,
    state_dir: PathBuf,
    ingress_url: String,
    settings: SourcesSettings,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let tokens = admin_tokens(&settings.admin, &state_dir)?;
    let issuer = issuer_at(settings.issuer_url.as_deref(), &state_dir)?;
    let tls = settings.tls.load()?;
    let listener = bind(listen).await?;
    let guard = admin_guard(
        tokens,
        &settings.admin,
        admin::Bound::Tcp(listener.local_addr()?),
        tls.is_some(),
    );
    let tracker = TaskTracker::new();
    let mut registry = Registry::default();
    let resources = watch_resources(&store.store, settings.resources, &tracker, &cancel).await?;
    let sources = sources(
        &store.store,
        &resources,
        Resolver {
            ingress_url,
            gateway: None,
        },
        &settings.egress,
        issuer,
        &mut registry,
    )?;
    let api_state = ApiState {
        control: kinetic_control::Control {
            sources: Some(sources.clone()),
            written_elsewhere: written_elsewhere(settings.resources),
            ..kinetic_control::Control::new(store.store.clone(), resources)
        },
        registry: Arc::new(Mutex::new(registry)),
        issuer: None,
    };
    // Sources' endpoints and health for everyone; metrics behind the admin tokens. Never the
    // admin API.
    let router = sources
        .router()
        .merge(api::health_router(api_state.clone()))
        .merge(
            api::metrics_router(api_state)
                .layer(axum::middleware::from_fn_with_state(guard, admin::guard)),
        );
    if let Some(tls) = &tls {
        tracker.spawn(tls.clone().watch(cancel.clone()));
    }
    tracker.spawn(sources.run(cancel.child_token()));
    tracing::info!(listen = %listener.local_addr()?, store = %kinetic_api::meta::redact_url(&store.url), "kinetic sources is up.");
    let limits = settings.connections.limits();
    let served = crate::serve::serve(nodelay(listener), router, tls, limits, cancel.clone()).await;
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("Sources did not stop within the grace period.");
    }
    served
}

/// `kinetic up`: everything in one process.
pub async fn up(
    store: OpenedStore,
    listen: SocketAddr,
    files: Vec<PathBuf>,
    settings: UpSettings,
    state_dir: PathBuf,
) -> anyhow::Result<()> {
    let UpSettings {
        tls: tls_settings,
        connections,
        retention,
        admin_listen,
        admin: admin_settings,
        auth: auth_settings,
        ingress: ingress_settings,
        dispatcher: dispatcher_settings,
        gateway_listen,
        serving: serving_settings,
        kafka: kafka_settings,
        egress: egress_settings,
    } = settings;
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    // Resource files and configuration are read and validated before any port is bound: a mistake
    // fails fast.
    let containers = containers(&serving_settings, &state_dir).await?;
    let checks = kinetic_control::ServiceChecks {
        autoscaler: serving_settings.autoscaler_defaults()?,
        exec_allow: serving_settings.exec_allow()?,
        containers: containers.is_some(),
    };
    let files = apply::expand_paths(&files).context("reading -f")?;
    let resources = files
        .iter()
        .map(|file| read_resources(file, &checks))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let Listeners {
        public: listener,
        public_url: base_url,
        admin: admin_socket,
        admin_url,
        guard: admin_guard,
        tls,
        limits,
    } = Listeners::bind(
        listen,
        &admin_listen,
        &admin_settings,
        &auth_settings,
        &tls_settings,
        &connections,
        &state_dir,
    )
    .await?;
    let address = listener.local_addr()?;
    let gateway_listener = tokio::net::TcpListener::bind(gateway_listen)
        .await
        .with_context(|| {
            format!(
                "listening on {gateway_listen} for the serving gateway (is another process using it? choose another with --gateway-listen)"
            )
        })?;
    let gateway_address = gateway_listener.local_addr()?;
    let store_handle = store.store.clone();
    for (file, resources) in files.iter().zip(&resources) {
        apply_resources(&store_handle, file, resources).await?;
    }
    let tracker = TaskTracker::new();
    // No prefix: an empty one would still be joined with `_` (`_kinetic_...`).
    let mut registry = Registry::default();
    let (committed, _) = watch::channel(0u64);
    let watch = watch_resources(&store_handle, ResourceSource::Store, &tracker, &cancel).await?;
    let kafka = kafka_log(&kafka_settings, &store_handle, &watch, &egress_settings);
    let auth = auth(
        &auth_settings,
        &state_dir,
        &base_url,
        &watch,
        &tracker,
        &cancel,
    )
    .await?;
    let IngressParts {
        router: ingress_router,
        committer,
        committer_tasks,
    } = ingress(
        &store_handle,
        &watch,
        kafka.clone(),
        &ingress_settings,
        &mut registry,
        committed.clone(),
        auth.gate.clone(),
        &tracker,
        &cancel,
    );
    let gateway = kinetic_outbound::sender::GatewayAddress {
        domain: serving_settings.domain.clone(),
        address: gateway_address,
    };
    let resolver = Resolver {
        ingress_url: base_url.clone(),
        gateway: Some(gateway.clone()),
    };
    let feed = committer.clone();
    let dispatcher = dispatcher(
        &store_handle,
        &watch,
        DispatcherLogs {
            kafka,
            replies: committer,
        },
        dispatcher_config(
            &dispatcher_settings,
            &egress_settings,
            (
                ingress_settings.dedupe_window,
                ingress_settings.max_body_bytes,
            ),
            resolver.clone(),
            Some(auth.issuer.clone()),
        ),
        &mut registry,
        committed,
    );
    // The dispatcher reads what the ingress just committed from memory. The handle is dropped at
    // once: the commit task ends (and shutdown proceeds) only when every handle is gone.
    feed.feed(dispatcher.log_feed());
    drop(feed);
    let sources = sources(
        &store_handle,
        &watch,
        resolver,
        &egress_settings,
        Some(auth.issuer.clone()),
        &mut registry,
    )?;
    let (serving, gateway) = serving(
        &watch,
        &serving_settings,
        checks.clone(),
        containers,
        gateway_address.port(),
        &state_dir,
        &mut registry,
    );
    let registry = Arc::new(Mutex::new(registry));
    let api_state = ApiState {
        control: kinetic_control::Control {
            serving: Some(serving.clone()),
            sources: Some(sources.clone()),
            triggers: Some(dispatcher.problems()),
            subscriber_limits: Some(dispatcher.subscriber_limits()),
            ..kinetic_control::Control::new(store_handle.clone(), watch.clone())
        },
        registry,
        issuer: Some(auth.issuer.clone()),
    };
    let router = ingress_router
        .merge(api::health_router(api_state.clone()))
        .merge(discovery_router(auth.issuer.clone()))
        .merge(sources.router());
    let console = crate::console::router(crate::console::ConsoleState::new(
        api_state.control.clone(),
        api_state.registry.clone(),
        tls.is_some(),
    ));
    let admin_task = tokio::spawn(admin_socket.serve(
        api::router(api_state).merge(console),
        admin_guard,
        tls.clone(),
        limits,
        cancel.clone(),
    ));
    if let Some(tls) = &tls {
        tracker.spawn(tls.clone().watch(cancel.clone()));
    }
    tracker.spawn(sources.run(cancel.child_token()));
    let dispatcher_cancel = cancel.child_token();
    tracker.spawn(dispatcher.run(dispatcher_cancel));
    // Serving stops after the gateway: requests in flight finish, then instances are drained.
    let serving_cancel = CancellationToken::new();
    let serving_task = tokio::spawn(serving.clone().run(serving_cancel.clone()));
    let gateway_task = tokio::spawn(serve(
        gateway_listener,
        kinetic_serving::gateway::router(gateway),
        Limits {
            // A request to a Service may stream its body for as long as the longest timeoutSeconds.
            body_read: limits.body_read.max(Duration::from_secs(3600)),
            ..limits
        },
        cancel.clone(),
    ));
    if !files.is_empty() {
        tracker.spawn(watch_files(
            store_handle.clone(),
            watch.clone(),
            checks.clone(),
            files.clone(),
            cancel.clone(),
        ));
    }
    tracker.spawn(prune_loop(
        store_handle.clone(),
        ingress_settings.dedupe_window,
        retention,
        cancel.clone(),
    ));
    let gateway_url = format!("http://{gateway_address}");
    print_banner(
        &base_url,
        &admin_url,
        &gateway_url,
        &serving_settings.domain,
        &store.url,
        &files,
    );
    tracing::info!(listen = %address, admin = %admin_url, gateway = %gateway_address, store = %kinetic_api::meta::redact_url(&store.url), "kinetic is up.");
    let served = crate::serve::serve(nodelay(listener), router, tls, limits, cancel.clone()).await;
    cancel.cancel();
    let admin_served = tokio::time::timeout(SHUTDOWN_GRACE, admin_task).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, gateway_task).await;
    serving_cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE * 2, serving_task)
        .await
        .is_err()
    {
        tracing::warn!("Instances did not stop within the grace period.");
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "Shutdown grace period passed; stopping with work in flight (it will be redelivered)."
        );
    }
    // The router and the dispatcher (and with them every committer handle) are gone: the
    // committers drain and end.
    drain(committer_tasks).await;
    drop(store);
    served?;
    match admin_served {
        Ok(Ok(result)) => result,
        Ok(Err(panicked)) => Err(anyhow::anyhow!("the admin listener failed: {panicked}")),
        Err(_) => Ok(()),
    }
}

/// `kinetic broker`: the ingress and control-plane API, no delivery.
pub async fn broker(store: OpenedStore, settings: BrokerSettings) -> anyhow::Result<()> {
    let BrokerSettings {
        tls: tls_settings,
        connections,
        retention,
        listen,
        admin_listen,
        admin: admin_settings,
        auth: auth_settings,
        state_dir,
        ingress: settings,
        kafka: kafka_settings,
        egress,
        resources: resource_source,
        metrics_listen,
    } = settings;
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let Listeners {
        public: listener,
        public_url,
        admin: admin_socket,
        admin_url,
        guard: admin_guard,
        tls,
        limits,
    } = Listeners::bind(
        listen,
        &admin_listen,
        &admin_settings,
        &auth_settings,
        &tls_settings,
        &connections,
        &state_dir,
    )
    .await?;
    let tracker = TaskTracker::new();
    let resources = watch_resources(&store.store, resource_source, &tracker, &cancel).await?;
    let kafka = kafka_log(&kafka_settings, &store.store, &resources, &egress);
    let auth = auth(
        &auth_settings,
        &state_dir,
        &public_url,
        &resources,
        &tracker,
        &cancel,
    )
    .await?;
    let mut registry = Registry::default();
    let (committed, _) = watch::channel(0u64);
    let IngressParts {
        router: ingress_router,
        // Only `kinetic up`'s dispatcher shares it; held here, the group commit would never see
        // its last handle go, and a stopping broker would wait out the whole grace for it.
        committer: _,
        committer_tasks,
    } = ingress(
        &store.store,
        &resources,
        kafka,
        &settings,
        &mut registry,
        committed,
        auth.gate.clone(),
        &tracker,
        &cancel,
    );
    // Whether each trigger can run, as the dispatchers' planner finds it, for `kinetic get`.
    let problems = kinetic_triggers::plan::ProblemTable::default();
    tracker.spawn(kinetic_triggers::plan::watch_problems(
        resources.clone(),
        Resolver {
            ingress_url: public_url.clone(),
            gateway: None,
        },
        kinetic_triggers::policy::Defaults::default(),
        problems.clone(),
        Duration::from_secs(1),
        cancel.clone(),
    ));
    let api_state = ApiState {
        control: kinetic_control::Control {
            written_elsewhere: written_elsewhere(resource_source),
            triggers: Some(problems),
            ..kinetic_control::Control::new(store.store.clone(), resources)
        },
        registry: Arc::new(Mutex::new(registry)),
        issuer: Some(auth.issuer.clone()),
    };
    let router = ingress_router
        .merge(api::health_router(api_state.clone()))
        .merge(discovery_router(auth.issuer.clone()));
    if let Some(address) = metrics_listen {
        // Behind the same tokens as the admin listener, unless --metrics-public.
        let listener = bind(address).await?;
        let guard = self::admin_guard(
            admin_tokens(&admin_settings, &state_dir)?,
            &admin_settings,
            admin::Bound::Tcp(listener.local_addr()?),
            false,
        );
        let router = api::metrics_router(api_state.clone())
            .layer(axum::middleware::from_fn_with_state(guard, admin::guard));
        tracing::info!(metrics = %listener.local_addr()?, "Serving /metrics.");
        tracker.spawn(serve(listener, router, limits, cancel.clone()));
    }
    let console = crate::console::router(crate::console::ConsoleState::new(
        api_state.control.clone(),
        api_state.registry.clone(),
        tls.is_some(),
    ));
    let admin_task = tokio::spawn(admin_socket.serve(
        api::router(api_state).merge(console),
        admin_guard,
        tls.clone(),
        limits,
        cancel.clone(),
    ));
    if let Some(tls) = &tls {
        tracker.spawn(tls.clone().watch(cancel.clone()));
    }
    tracker.spawn(prune_loop(
        store.store.clone(),
        settings.dedupe_window,
        retention,
        cancel.clone(),
    ));
    tracing::info!(listen = %listener.local_addr()?, admin = %admin_url, store = %kinetic_api::meta::redact_url(&store.url), "kinetic broker is up.");
    let served = crate::serve::serve(nodelay(listener), router, tls, limits, cancel.clone()).await;
    cancel.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, admin_task).await;
    drain(committer_tasks).await;
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    served
}

/// `kinetic dispatcher`: delivery only, with health and metrics on its own listener.
pub async fn dispatcher_only(
    store: OpenedStore,
    listen: SocketAddr,
    state_dir: PathBuf,
    ingress_url: String,
    settings: DispatchSettings,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let tokens = admin_tokens(&settings.admin, &state_dir)?;
    // The brokers' issuer, to sign tokens for deliveries to audiences: the same key (state
    // directory) and URL as the brokers'.
    let issuer = issuer_at(settings.issuer_url.as_deref(), &state_dir)?;
    let listener = bind(listen).await?;
    let guard = admin_guard(
        tokens,
        &settings.admin,
        admin::Bound::Tcp(listener.local_addr()?),
        false,
    );
    let mut registry = Registry::default();
    let (committed, _) = watch::channel(0u64);
    // Replies go through a group commit of this process's own.
    let (replies, replies_task) = Committer::start(
        Arc::new(StoreLog(store.store.clone())),
        settings.dedupe_window,
        committed.clone(),
        CommitMetrics::new(&mut registry),
    );
    let tracker = TaskTracker::new();
    let resources = watch_resources(&store.store, settings.resources, &tracker, &cancel).await?;
    let kafka = kafka_log(&settings.kafka, &store.store, &resources, &settings.egress);
    let dispatcher = dispatcher(
        &store.store,
        &resources,
        DispatcherLogs { kafka, replies },
        dispatcher_config(
            &settings.dispatcher,
            &settings.egress,
            (settings.dedupe_window, settings.max_body_bytes),
            Resolver {
                ingress_url,
                gateway: settings.gateway.clone(),
            },
            issuer,
        ),
        &mut registry,
        committed,
    );
    let api_state = ApiState {
        control: kinetic_control::Control {
            triggers: Some(dispatcher.problems()),
            subscriber_limits: Some(dispatcher.subscriber_limits()),
            written_elsewhere: written_elsewhere(settings.resources),
            ..kinetic_control::Control::new(store.store.clone(), resources)
        },
        registry: Arc::new(Mutex::new(registry)),
        issuer: None,
    };
    // Health for probes; metrics behind the admin tokens. Never the admin API.
    let router = api::health_router(api_state.clone()).merge(
        api::metrics_router(api_state)
            .layer(axum::middleware::from_fn_with_state(guard, admin::guard)),
    );
    let cancel_dispatcher = cancel.clone();
    tracker.spawn(async move {
        dispatcher.run(cancel_dispatcher).await;
        // The dispatcher held the last handle: the reply committer drains and ends.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, replies_task).await;
    });
    tracing::info!(listen = %listener.local_addr()?, store = %kinetic_api::meta::redact_url(&store.url), "kinetic dispatcher is up.");
    let served = serve(
        listener,
        router,
        settings.connections.limits(),
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    served
}

/// Serving in this process: the local process runtime, the gateway's table and the controller.
/// The container engine for image-only Services, with this run's owner labels; what an earlier run
/// on the same state directory left (it was killed) is removed first.
pub(crate) async fn containers(
    settings: &ServingSettings,
    state_dir: &std::path::Path,
) -> anyhow::Result<Option<kinetic_serving::runtime::Containers>> {
    let Some(engine) = settings.container_engine().await? else {
        return Ok(None);
    };
    let state = std::fs::canonicalize(state_dir)
        .unwrap_or_else(|_| state_dir.to_owned())
        .display()
        .to_string();
    let owner = kinetic_serving::runtime::container::Owner {
        id: uuid::Uuid::now_v7().to_string(),
        state,
    };
    match engine.remove_left_by_others(&owner.state, &owner.id).await {
        Ok(0) => {}
        Ok(removed) => {
            tracing::info!(
                removed,
                "Removed the containers an earlier run of kinetic left."
            );
        }
        Err(error) => {
            tracing::warn!(%error, "Listing the containers an earlier run left failed.");
        }
    }
    tracing::info!(engine = %engine.endpoint(), "Services naming only an image run as containers.");
    // The first container started also starts the reaper, which removes this run's containers
    // once this process is gone, even SIGKILLed.
    let kinetic =
        std::env::current_exe().context("finding the kinetic binary for the container reaper")?;
    Ok(Some(kinetic_serving::runtime::Containers::new(
        engine,
        owner,
        Some(kinetic),
    )))
}

fn serving(
    resources: &kinetic_resources::Watch,
    settings: &ServingSettings,
    checks: kinetic_control::ServiceChecks,
    containers: Option<kinetic_serving::runtime::Containers>,
    gateway_port: u16,
    state_dir: &std::path::Path,
    registry: &mut Registry,
) -> (Arc<kinetic_serving::Serving>, Arc<kinetic_serving::Gateway>) {
    let runtime = process_runtime(settings, &checks, containers, state_dir, false);
    let gateway = kinetic_serving::Gateway::new(settings.domain.clone());
    let serving = kinetic_serving::Serving::new(
        resources.clone(),
        Arc::new(runtime),
        gateway.clone(),
        settings.serving_config(checks, gateway_port),
        kinetic_serving::metrics::Metrics::new(registry),
    );
    (serving, gateway)
}

/// The local process runtime with `settings`; with `sidecar`, a `kinetic queue-proxy` in front of
/// every instance (the split shape).
pub(crate) fn process_runtime(
    settings: &ServingSettings,
    checks: &kinetic_control::ServiceChecks,
    containers: Option<kinetic_serving::runtime::Containers>,
    state_dir: &std::path::Path,
    sidecar: bool,
) -> kinetic_serving::runtime::ProcessRuntime {
    let kinetic = std::env::current_exe().ok();
    kinetic_serving::runtime::ProcessRuntime::new(kinetic_serving::runtime::ProcessConfig {
        // Instances start through this binary's `__exec`, so they die with it even on SIGKILL.
        shim: kinetic.clone(),
        grace_period: settings.termination_grace,
        log_dir: Some(state_dir.join("logs")),
        log_rotation: kinetic_serving::runtime::Rotation {
            max_bytes: settings.function_log_max_bytes,
            keep: settings.function_log_files as usize,
        },
        max_instances: settings.max_instances,
        exec_allow: checks.exec_allow.clone(),
        cgroups: true,
        containers,
        sidecar: kinetic.filter(|_| sidecar),
        ..kinetic_serving::runtime::ProcessConfig::default()
    })
}

/// Reads and validates one resource file.
fn read_resources(
    file: &std::path::Path,
    checks: &kinetic_control::ServiceChecks,
) -> anyhow::Result<Vec<kinetic_api::Resource>> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
    kinetic_control::validate::parse_and_validate(&name, &text, Some(checks))
        .map_err(|error| anyhow::anyhow!("{error}"))
}

async fn apply_resources(
    store: &Arc<dyn Store>,
    file: &std::path::Path,
    resources: &[kinetic_api::Resource],
) -> anyhow::Result<()> {
    kinetic_control::validate::check_references(store, &file.display().to_string(), resources)
        .await
        .context("reading stored revisions")?
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    for applied in kinetic_control::apply::apply(store, resources)
        .await
        .context("storing resources")?
    {
        if applied.outcome != "unchanged" {
            tracing::info!(kind = %applied.kind, namespace = %applied.namespace, name = %applied.name, outcome = %applied.outcome, file = %file.display(), "Applied.");
        }
    }
    Ok(())
}

async fn apply_file(
    store: &Arc<dyn Store>,
    file: &std::path::Path,
    checks: &kinetic_control::ServiceChecks,
) -> anyhow::Result<()> {
    let resources = read_resources(file, checks)?;
    apply_resources(store, file, &resources).await
}

/// Re-applies a file when its modification time changes. A file with a mistake is reported and
/// left as it was last applied.
async fn watch_files(
    store: Arc<dyn Store>,
    resources: kinetic_resources::Watch,
    checks: kinetic_control::ServiceChecks,
    files: Vec<PathBuf>,
    cancel: CancellationToken,
) {
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut seen: Vec<Option<SystemTime>> = files.iter().map(modified).collect();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for (file, last) in files.iter().zip(seen.iter_mut()) {
            let now = modified(file);
            if now == *last {
                continue;
            }
            *last = now;
            if let Err(error) = apply_file(&store, file, &checks).await {
                tracing::error!(file = %file.display(), error = %format!("{error:#}"), "Re-applying a changed file failed; the previous version stays applied.");
            }
            resources.refresh();
        }
    }
}

/// Trims the dedupe window and the event log behind every cursor.
/// How often dead letters past their retention are deleted: ten times per retention period, at
/// most once a minute (and at least every [`PRUNE_INTERVAL`]).
fn dead_letter_prune_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(PRUNE_INTERVAL, Duration::from_secs(60))
}

async fn prune_loop(
    store: Arc<dyn Store>,
    dedupe_window: Duration,
    retention: RetentionSettings,
    cancel: CancellationToken,
) {
    let window = i64::try_from(dedupe_window.as_millis()).unwrap_or(i64::MAX);
    let kept = i64::try_from(retention.dead_letter_retention.as_millis()).unwrap_or(i64::MAX);
    // The first pass at start, then once a minute.
    let mut dead_letters_due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        match store.prune(now.saturating_sub(window)).await {
            Ok(deleted) if deleted > 0 => tracing::debug!(deleted, "Pruned delivered events."),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "Pruning the event log failed."),
        }
        if tokio::time::Instant::now() >= dead_letters_due {
            dead_letters_due = tokio::time::Instant::now()
                + dead_letter_prune_interval(retention.dead_letter_retention);
            match store
                .prune_dead_letters(now.saturating_sub(kept), retention.dead_letters_per_trigger)
                .await
            {
                Ok(deleted) if deleted > 0 => {
                    tracing::info!(deleted, "Deleted dead letters past their retention.")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "Deleting old dead letters failed."),
            }
            if let Err(error) = kinetic_triggers::disable::release_expired(
                &*store,
                retention.disabled_trigger_retention,
                now,
            )
            .await
            {
                tracing::warn!(%error, "Releasing the events of long-disabled triggers failed.");
            }
        }
    }
}

fn print_banner(
    base_url: &str,
    admin_url: &str,
    gateway_url: &str,
    domain: &str,
    store_url: &str,
    files: &[PathBuf],
) {
    let applied = if files.is_empty() {
        "no resource files (-f); apply some with `kinetic apply -f FILE`".to_owned()
    } else {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "kinetic is up\n  listening   {base_url}  (public: brokers at {base_url}/NAMESPACE/BROKER, /webhooks, /sources)\n  admin       {admin_url}  (API and /metrics; token in the state directory's admin-token)\n  gateway     {gateway_url}  (services at http://SERVICE.NAMESPACE.{domain}:{port})\n  store       {}\n  resources   {applied}\n  next        kinetic get triggers   |   kinetic send --broker default/default --type demo --source /me --data '{{\"hello\":\"world\"}}'\n              kinetic dlq list       |   kinetic get services",
        kinetic_api::meta::redact_url(store_url),
        port = gateway_url.rsplit(':').next().unwrap_or("8081"),
    );
}

/// `kinetic controller`'s settings besides the store.
pub struct ControllerSettings {
    /// Health (`/healthz`, `/readyz`).
    pub listen: SocketAddr,
    pub connections: ConnectionSettings,
    /// The broker ingress's URL on the cluster: Brokers' addresses, Broker destinations.
    pub ingress_url: String,
    /// The Lease's namespace and this replica's name in it.
    pub election: kinetic_k8s::controller::leader::Election,
    /// The serving gateway's host name, for Knative Services' cluster-local names.
    pub gateway_host: Option<String>,
}

/// `kinetic controller`: on Kubernetes, what applying a resource does beside storing it
/// (cursors, cleanup on delete, Revisions and Routes, status), for the replica holding the Lease.
pub async fn controller(store: OpenedStore, settings: ControllerSettings) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let listener = bind(settings.listen).await?;
    let tracker = TaskTracker::new();
    let resources =
        watch_resources(&store.store, ResourceSource::Kubernetes, &tracker, &cancel).await?;
    let client = kinetic_k8s::client()
        .await
        .context("connecting to the Kubernetes API")?;
    // Services resolve to their cluster-local names, as Knative's do.
    let resolver = Resolver {
        ingress_url: settings.ingress_url,
        gateway: Some(kinetic_outbound::sender::GatewayAddress {
            domain: "svc.cluster.local".to_owned(),
            address: SocketAddr::from(([0, 0, 0, 0], 80)),
        }),
    };
    let context = kinetic_k8s::controller::Context::new(
        client.clone(),
        store.store.clone(),
        resources.clone(),
        resolver,
        Some(settings.election.identity.clone()),
    );
    let context = Arc::new(match settings.gateway_host {
        Some(host) => context.with_gateway(host),
        None => context,
    });
    let election = settings.election;
    let leading_cancel = cancel.clone();
    let leading = tracker.spawn(async move {
        let result = kinetic_k8s::controller::leader::run(
            client,
            &election,
            leading_cancel.clone(),
            move |term| kinetic_k8s::controller::run(context.clone(), term),
        )
        .await;
        if let Err(error) = &result {
            tracing::error!(%error, "Leader election failed; stopping.");
            leading_cancel.cancel();
        }
        result
    });
    let api_state = ApiState {
        control: kinetic_control::Control {
            written_elsewhere: written_elsewhere(ResourceSource::Kubernetes),
            ..kinetic_control::Control::new(store.store.clone(), resources)
        },
        registry: Arc::new(Mutex::new(Registry::default())),
        issuer: None,
    };
    tracing::info!(listen = %listener.local_addr()?, store = %kinetic_api::meta::redact_url(&store.url), "kinetic controller is up.");
    let served = serve(
        listener,
        api::health_router(api_state),
        settings.connections.limits(),
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    if leading.is_finished()
        && let Ok(Err(error)) = leading.await
    {
        return Err(anyhow::anyhow!("leader election: {error}"));
    }
    served
}

#[cfg(test)]
mod tests {
    use super::{Duration, dead_letter_prune_interval};

    #[test]
    fn dead_letters_are_pruned_ten_times_per_retention() {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        assert_eq!(
            dead_letter_prune_interval(days(14)),
            Duration::from_secs(60)
        );
        assert_eq!(
            dead_letter_prune_interval(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            dead_letter_prune_interval(Duration::from_secs(3)),
            Duration::from_secs(2)
        );
    }
}
