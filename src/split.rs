//! Serving split across processes: `kinetic autoscaler`, `kinetic gateway` and
//! `kinetic activator` (see `kinetic_serving::split` for how they talk).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use http::uri::Authority;
use kinetic_serving::split::{Follower, FollowerConfig, Hub, Role};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConnectionSettings, ResourceSource, RuntimeKind, ServingSettings};
use crate::server::{
    OpenedStore, SHUTDOWN_GRACE, bind, cancel_on_signal, process_runtime, serve, watch_resources,
};

/// The settings of `kinetic autoscaler`.
pub struct AutoscalerSettings {
    pub listen: SocketAddr,
    /// The gateways' port, for the URLs shown.
    pub gateway_port: u16,
    pub runtime: RuntimeKind,
    /// kinetic's image, for the queue-proxy sidecars on Kubernetes.
    pub queue_proxy_image: Option<String>,
    /// The Lease the replicas elect a leader with, on Kubernetes.
    pub election: kinetic_k8s::controller::leader::Election,
    pub connections: ConnectionSettings,
    pub serving: ServingSettings,
    pub resources: ResourceSource,
    pub state_dir: std::path::PathBuf,
}

/// The settings of `kinetic gateway` and `kinetic activator`.
pub struct FollowerSettings {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub autoscaler_url: String,
    /// Only for a gateway: the activators it sends held requests to.
    pub activators: Vec<Authority>,
    pub domain: String,
    /// Further domains Services answer under.
    pub local_domains: Vec<String>,
    pub name: Option<String>,
    pub connections: ConnectionSettings,
}

/// `/metrics` of `registry`, in the text format.
fn metrics_text(registry: &Mutex<Registry>) -> axum::response::Response {
    let mut text = String::new();
    let encoded = registry
        .lock()
        .map_err(|_| std::fmt::Error)
        .and_then(|registry| prometheus_client::encoding::text::encode(&mut text, &registry));
    match encoded {
        Ok(()) => (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Clone)]
struct AutoscalerState {
    /// The serving that runs now: always with processes; on Kubernetes, while this replica
    /// leads.
    serving: Arc<Mutex<Option<Arc<kinetic_serving::Serving>>>>,
    registry: Arc<Mutex<Registry>>,
}

impl AutoscalerState {
    fn serving(&self) -> Option<Arc<kinetic_serving::Serving>> {
        self.serving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, serving: Option<Arc<kinetic_serving::Serving>>) {
        *self
            .serving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = serving;
    }
}

/// `kinetic autoscaler`: the serving controller and the KPA of every served revision, its
/// instances (local processes, each behind a `kinetic queue-proxy`), and the table the gateways
/// and activators follow.
pub async fn autoscaler(store: OpenedStore, settings: AutoscalerSettings) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let kubernetes = settings.runtime == RuntimeKind::Kubernetes;
    let checks = kinetic_control::ServiceChecks {
        autoscaler: settings.serving.autoscaler_defaults()?,
        exec_allow: settings.serving.exec_allow()?,
        // On Kubernetes every revision is an image.
        containers: kubernetes,
    };
    let queue_proxy_image = match (&settings.queue_proxy_image, kubernetes) {
        (Some(image), _) => image.clone(),
        (None, false) => String::new(),
        (None, true) => anyhow::bail!(
            "--queue-proxy-image: name kinetic's image (the one this autoscaler runs), which every revision's queue-proxy sidecar runs on Kubernetes"
        ),
    };
    let listener = bind(settings.listen).await?;
    let tracker = TaskTracker::new();
    let resources = watch_resources(&store.store, settings.resources, &tracker, &cancel).await?;
    let mut registry = Registry::default();
    let metrics = kinetic_serving::metrics::Metrics::new(&mut registry);
    let hub = Hub::new();
    let config = settings
        .serving
        .serving_config(checks.clone(), settings.gateway_port);
    let state = AutoscalerState {
        serving: Arc::new(Mutex::new(None)),
        registry: Arc::new(Mutex::new(registry)),
    };
    let serving_cancel = CancellationToken::new();
    let serving_task = if kubernetes {
        let client = kinetic_k8s::client()
            .await
            .context("connecting to the Kubernetes API")?;
        let runtime_config = kinetic_serving::runtime::KubernetesConfig {
            queue_proxy_image,
            termination_grace: settings.serving.termination_grace,
        };
        let election = settings.election.clone();
        let (hub, state) = (hub.clone(), state.clone());
        let term_cancel = serving_cancel.clone();
        tokio::spawn(async move {
            let elected = kinetic_k8s::controller::leader::run(
                client.clone(),
                &election,
                term_cancel,
                move |term| {
                    // A new term starts from what the API server has: the pods kept running.
                    let runtime = kinetic_serving::runtime::KubernetesRuntime::new(
                        client.clone(),
                        runtime_config.clone(),
                    );
                    let serving = kinetic_serving::Serving::remote(
                        resources.clone(),
                        Arc::new(runtime),
                        hub.clone(),
                        config.clone(),
                        metrics.clone(),
                    );
                    state.set(Some(serving.clone()));
                    let state = state.clone();
                    async move {
                        tracing::info!("Leading: scaling the revisions.");
                        serving.run(term).await;
                        state.set(None);
                    }
                },
            )
            .await;
            if let Err(error) = elected {
                tracing::error!(%error, "Leader election failed.");
            }
        })
    } else {
        let runtime = process_runtime(&settings.serving, &checks, None, &settings.state_dir, true);
        let serving = kinetic_serving::Serving::remote(
            resources,
            Arc::new(runtime),
            hub.clone(),
            config,
            metrics,
        );
        state.set(Some(serving.clone()));
        tokio::spawn(serving.run(serving_cancel.clone()))
    };
    tracker.spawn(hub.clone().scrape(cancel.clone()));
    let router =
        kinetic_serving::split::hub_router(hub).merge(
            axum::Router::new()
                .route("/healthz", get(|| async { "ok" }))
                // Ready while it scales revisions: on Kubernetes only the leader, so that the
                // autoscaler's Service sends gateways, activators and reports to it.
                .route(
                    "/readyz",
                    get(|State(state): State<AutoscalerState>| async move {
                        if state.serving().is_some() {
                            (StatusCode::OK, "ready")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "not leading")
                        }
                    }),
                )
                .route(
                    "/metrics",
                    get(|State(state): State<AutoscalerState>| async move {
                        metrics_text(&state.registry)
                    }),
                )
                .route(
                    "/v1/revisions",
                    get(|State(state): State<AutoscalerState>| async move {
                        axum::Json(state.serving().map(|s| s.revisions()).unwrap_or_default())
                    }),
                )
                .route(
                    "/v1/services",
                    get(|State(state): State<AutoscalerState>| async move {
                        axum::Json(state.serving().map(|s| s.services()).unwrap_or_default())
                    }),
                )
                .route("/v1/logs/{namespace}/{service}", get(logs))
                .with_state(state),
        );
    tracing::info!(listen = %listener.local_addr()?, store = %kinetic_api::meta::redact_url(&store.url), "kinetic autoscaler is up.");
    let served = serve(
        listener,
        router,
        settings.connections.limits(),
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    // Instances drain and stop: their queue-proxies finish what they hold.
    serving_cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE * 2, serving_task)
        .await
        .is_err()
    {
        tracing::warn!("Instances did not stop within the grace period.");
    }
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    served
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    limit: Option<usize>,
}

/// The last output lines of a Service's instances, as the admin API's
/// `/api/v1/services/{namespace}/{name}/logs` answers.
async fn logs(
    State(state): State<AutoscalerState>,
    axum::extract::Path((namespace, service)): axum::extract::Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<LogsQuery>,
) -> axum::Json<serde_json::Value> {
    let lines = state
        .serving()
        .map(|serving| {
            serving
                .runtime()
                .logs(&namespace, &service, query.limit.unwrap_or(200).min(10_000))
        })
        .unwrap_or_default();
    axum::Json(crate::api::log_lines(lines))
}

/// This process's name in reports: its pod's, else host and pid.
fn reporter(name: Option<String>) -> String {
    name.unwrap_or_else(|| {
        let host = crate::hostname().unwrap_or_else(|_| "kinetic".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

#[derive(Clone)]
struct FollowerState {
    follower: Arc<Follower>,
    registry: Arc<Mutex<Registry>>,
}

/// `kinetic gateway` (`activator` false) or `kinetic activator`.
pub async fn follower(settings: FollowerSettings, activator: bool) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let role = if activator {
        Role::Activator
    } else {
        Role::Gateway {
            activators: settings.activators.clone(),
        }
    };
    let what = if activator { "activator" } else { "gateway" };
    let mut registry = Registry::default();
    let follower = Follower::new(
        FollowerConfig {
            autoscaler: settings.autoscaler_url.clone(),
            reporter: reporter(settings.name.clone()),
            role,
        },
        kinetic_serving::Gateway::with_domains(
            settings.domain.clone(),
            settings.local_domains.clone(),
        ),
        kinetic_serving::metrics::Metrics::new(&mut registry),
    )
    .map_err(|error| anyhow::anyhow!("--autoscaler-url: {error}"))?;
    let listener = bind(settings.listen).await?;
    let health = tokio::net::TcpListener::bind(settings.health_listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} for health and metrics (is another process using it? choose another with --health-listen)",
                settings.health_listen
            )
        })?;
    let following = tokio::spawn(follower.clone().run(cancel.clone()));
    let state = FollowerState {
        follower: follower.clone(),
        registry: Arc::new(Mutex::new(registry)),
    };
    let health_router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<FollowerState>| async move {
                if state.follower.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no table from the autoscaler yet",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(state): State<FollowerState>| async move { metrics_text(&state.registry) }),
        )
        // Which of the autoscaler's tables this process routes by (`/v1/table`'s `version`).
        .route(
            "/version",
            get(|State(state): State<FollowerState>| async move {
                axum::Json(serde_json::json!({ "tableVersion": state.follower.version() }))
            }),
        )
        .with_state(state);
    let router = if activator {
        kinetic_serving::split::activator_router(follower)
    } else {
        kinetic_serving::split::gateway_router(follower)
    };
    tracing::info!(listen = %listener.local_addr()?, health = %health.local_addr()?, autoscaler = %settings.autoscaler_url, "kinetic {what} is up.");
    let health_task = tokio::spawn(serve(
        health,
        health_router,
        settings.connections.limits(),
        cancel.clone(),
    ));
    let served = serve(
        listener,
        router,
        settings.connections.limits(),
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, following).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), health_task).await;
    served
}
