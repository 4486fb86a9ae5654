//! `kinetic queue-proxy`: the queue-proxy stack as its own process in front of one instance, with an
//! admin listener for readiness and the per-second stats the autoscaler scrapes.
//!
//! `/ready` answers 200 only while the queue-proxy takes requests and the instance passes its
//! readiness check (the revision's `readinessProbe.httpGet.path`, else a TCP connect), as
//! Knative's queue-proxy probes its user container. Requests an activator forwarded
//! (`K-Proxy-Request: activator`) are counted apart in `/stats`: the activator reported them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Request, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt};

use super::breaker::{Breaker, BreakerLayer};
use super::drain::{Drain, DrainLayer};
use super::stats::{Sample, Stats, StatsLayer};
use super::{Forward, Upstream};
use crate::refusal::error_response;

/// Settings of one sidecar.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Where requests arrive.
    pub listen: SocketAddr,
    /// Readiness (`/ready`) and stats (`/stats`).
    pub admin_listen: SocketAddr,
    /// The instance's own address.
    pub upstream: SocketAddr,
    pub container_concurrency: usize,
    pub timeout: Duration,
    /// The instance's readiness path; `None` checks with a TCP connect.
    pub readiness_path: Option<String>,
}

#[derive(Clone)]
struct Admin {
    drain: Arc<Drain>,
    /// The last period's numbers: all requests, and those an activator forwarded.
    last: Arc<Mutex<(Sample, Sample)>>,
    upstream: SocketAddr,
    readiness_path: Option<String>,
}

/// How long one readiness check of the instance may take.
const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves until `cancel`, then drains: refuses new requests, finishes those in flight, returns.
pub async fn serve(config: SidecarConfig, cancel: CancellationToken) -> std::io::Result<()> {
    let stats = Stats::new(Instant::now());
    let proxied = Stats::new(Instant::now());
    let drain = Drain::new();
    let breaker = Arc::new(Breaker::new(config.container_concurrency));
    let stack = ServiceBuilder::new()
        .layer(DrainLayer::new(drain.clone()))
        .layer(StatsLayer::new(stats.clone()))
        .layer(BreakerLayer::new(breaker))
        .timeout(config.timeout)
        .service(Upstream {
            forward: Forward::new(),
            authority: super::authority(config.upstream),
        });
    let proxy = Router::new().fallback({
        let proxied = proxied.clone();
        move |mut request: Request<Body>| {
            let stack = stack.clone();
            let forwarded = request
                .headers_mut()
                .remove(crate::activator::PROXIED_HEADER)
                .is_some()
                .then(|| proxied.begin());
            async move {
                let response = match stack.oneshot(request).await {
                    Ok(response) => response,
                    Err(error) => error_response(&error),
                };
                drop(forwarded);
                response
            }
        }
    });
    let last = Arc::new(Mutex::new((Sample::default(), Sample::default())));
    let admin = Router::new()
        .route("/ready", get(ready))
        .route("/stats", get(stats_now))
        .with_state(Admin {
            drain: drain.clone(),
            last: last.clone(),
            upstream: config.upstream,
            readiness_path: config.readiness_path.clone(),
        });
    let sampler = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                let sample = (stats.sample(now), proxied.sample(now));
                *last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = sample;
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
    tracing::info!(listen = %listener.local_addr()?, admin = %admin_listener.local_addr()?, upstream = %config.upstream, "Queue-proxy is up.");
    let admin_task = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            axum::serve(admin_listener, admin)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        }
    });
    let draining = {
        let drain = drain.clone();
        let cancel = cancel.clone();
        async move {
            cancel.cancelled().await;
            drain.drained().await;
        }
    };
    let served = axum::serve(listener, proxy)
        .with_graceful_shutdown(draining)
        .await;
    sampler.abort();
    let _ = admin_task.await;
    served
}

async fn ready(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.drain.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let config = crate::runtime::probe::ProbeConfig {
        period: Duration::ZERO,
        period_max: Duration::ZERO,
        timeout: READINESS_TIMEOUT,
        hold: Duration::ZERO,
    };
    let check = crate::runtime::probe::Check::new(admin.readiness_path.as_deref(), false);
    if crate::runtime::probe::probe_once(&config, admin.upstream, check).await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the instance is not ready")
    }
}

async fn stats_now(State(admin): State<Admin>) -> impl IntoResponse {
    let (all, proxied) = *admin
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    axum::Json(crate::split::QueueProxyStats {
        average_concurrency: all.average_concurrency,
        request_count: all.requests,
        in_flight: all.in_flight,
        average_proxied_concurrency: proxied.average_concurrency,
        proxied_request_count: proxied.requests,
    })
}
