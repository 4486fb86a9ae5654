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

use crate::config::{ConnectionSettings, ResourceSource, ServingSettings};
use crate::server::{
    OpenedStore, SHUTDOWN_GRACE, bind, cancel_on_signal, process_runtime, serve, watch_resources,
};

/// The settings of `kinetic autoscaler`.
pub struct AutoscalerSettings {
    pub listen: SocketAddr,
    /// The gateways' port, for the URLs shown.
    pub gateway_port: u16,
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
    serving: Arc<kinetic_serving::Serving>,
    registry: Arc<Mutex<Registry>>,
}

/// `kinetic autoscaler`: the serving controller and the KPA of every served revision, its
/// instances (local processes, each behind a `kinetic queue-proxy`), and the table the gateways
/// and activators follow.
pub async fn autoscaler(store: OpenedStore, settings: AutoscalerSettings) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let checks = kinetic_control::ServiceChecks {
        autoscaler: settings.serving.autoscaler_defaults()?,
        exec_allow: settings.serving.exec_allow()?,
        containers: false,
    };
    let listener = bind(settings.listen).await?;
    let tracker = TaskTracker::new();
    let resources = watch_resources(&store.store, settings.resources, &tracker, &cancel).await?;
    let runtime = process_runtime(&settings.serving, &checks, None, &settings.state_dir, true);
    let mut registry = Registry::default();
    let hub = Hub::new();
    let serving = kinetic_serving::Serving::remote(
        resources,
        Arc::new(runtime),
        hub.clone(),
        settings
            .serving
            .serving_config(checks, settings.gateway_port),
        kinetic_serving::metrics::Metrics::new(&mut registry),
    );
    let serving_cancel = CancellationToken::new();
    let serving_task = tokio::spawn(serving.clone().run(serving_cancel.clone()));
    tracker.spawn(hub.clone().scrape(cancel.clone()));
    let state = AutoscalerState {
        serving,
        registry: Arc::new(Mutex::new(registry)),
    };
    let router =
        kinetic_serving::split::hub_router(hub).merge(
            axum::Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(|| async { "ready" }))
                .route(
                    "/metrics",
                    get(|State(state): State<AutoscalerState>| async move {
                        metrics_text(&state.registry)
                    }),
                )
                .route(
                    "/v1/revisions",
                    get(|State(state): State<AutoscalerState>| async move {
                        axum::Json(state.serving.revisions())
                    }),
                )
                .route(
                    "/v1/services",
                    get(|State(state): State<AutoscalerState>| async move {
                        axum::Json(state.serving.services())
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
    let lines: Vec<serde_json::Value> = state
        .serving
        .runtime()
        .logs(&namespace, &service, query.limit.unwrap_or(200).min(10_000))
        .into_iter()
        .map(|line| {
            serde_json::json!({
                "revision": &*line.revision,
                "instance": line.instance,
                "stream": line.stream.as_str(),
                "time": chrono::DateTime::<chrono::Utc>::from(line.time).to_rfc3339(),
                "text": line.text,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "lines": lines }))
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
        kinetic_serving::Gateway::new(settings.domain.clone()),
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
