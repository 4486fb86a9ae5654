//! `kinetic queue-proxy`: the queue-proxy stack as its own process in front of one instance, with an
//! admin listener for readiness and the per-second stats the autoscaler reads.

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
}

#[derive(Clone)]
struct Admin {
    drain: Arc<Drain>,
    last: Arc<Mutex<Sample>>,
}

/// Serves until `cancel`, then drains: refuses new requests, finishes those in flight, returns.
pub async fn serve(config: SidecarConfig, cancel: CancellationToken) -> std::io::Result<()> {
    let stats = Stats::new(Instant::now());
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
    let proxy = Router::new().fallback(move |request: Request<Body>| {
        let stack = stack.clone();
        async move {
            match stack.oneshot(request).await {
                Ok(response) => response,
                Err(error) => error_response(&error),
            }
        }
    });
    let last = Arc::new(Mutex::new(Sample::default()));
    let admin = Router::new()
        .route("/ready", get(ready))
        .route("/stats", get(stats_now))
        .with_state(Admin {
            drain: drain.clone(),
            last: last.clone(),
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
                let sample = stats.sample(Instant::now());
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
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn stats_now(State(admin): State<Admin>) -> impl IntoResponse {
    let sample = *admin
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    axum::Json(serde_json::json!({
        "averageConcurrency": sample.average_concurrency,
        "requestCount": sample.requests,
        "inFlight": sample.in_flight,
    }))
}
