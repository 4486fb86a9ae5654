//! `kinetic webhook`: validating (`/validate`) and defaulting (`/default`) admission for
//! kinetic's kinds over HTTPS ([`kinetic_k8s::webhook`]), with the certificate from files
//! (`--tls-cert`, `--tls-key`) or made and kept on Kubernetes (`--manage-certs`: a Secret shared
//! by the replicas, its CA put in the webhook configurations, renewed a month before it
//! expires). On Kubernetes it also reads the resources (for `config-br-defaults`), and is ready
//! once it has.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use kinetic_k8s::webhook::certs::{self, Names};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConnectionSettings, TlsSettings};
use crate::serve::{Tls, TlsFiles};

/// `kinetic webhook`'s settings.
pub struct WebhookSettings {
    pub listen: SocketAddr,
    pub connections: ConnectionSettings,
    pub tls: TlsSettings,
    /// Make and keep the certificate on Kubernetes, in this namespace's Secret.
    pub manage_certs: Option<Names>,
    /// Where managed certificates are written for the server to read.
    pub state_dir: PathBuf,
}

/// How often a managed certificate is checked for renewal.
const RENEW_CHECK: Duration = Duration::from_secs(6 * 3600);
/// An AdmissionReview carries one object; the API server's own limit is 3 MiB.
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

pub async fn run(settings: WebhookSettings) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    crate::server::cancel_on_signal(cancel.clone());
    let tracker = TaskTracker::new();
    let mut resources = None;
    let files = match (
        &settings.manage_certs,
        &settings.tls.tls_cert,
        &settings.tls.tls_key,
    ) {
        (None, Some(cert), Some(key)) => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        (Some(names), None, None) => {
            let client = kinetic_k8s::client()
                .await
                .context("connecting to the Kubernetes API for the webhook's certificate")?;
            let files = TlsFiles {
                cert: settings.state_dir.join("webhook-tls.crt"),
                key: settings.state_dir.join("webhook-tls.key"),
            };
            keep_certificate(&client, names, &files).await?;
            tracker.spawn(renew(
                client.clone(),
                names.clone(),
                files.clone(),
                cancel.clone(),
            ));
            let (feed, watch) = kinetic_resources::channel();
            tracker.spawn(kinetic_k8s::feed::run(client, feed, cancel.clone()));
            resources = Some(watch);
            files
        }
        (Some(_), _, _) => anyhow::bail!(
            "--manage-certs makes the certificate itself; leave out --tls-cert and --tls-key"
        ),
        _ => anyhow::bail!(
            "the webhook serves HTTPS only: give --tls-cert and --tls-key, or --manage-certs on Kubernetes"
        ),
    };
    let tls = Tls::new(files)?;
    tracker.spawn(tls.clone().watch(cancel.clone()));
    let state = Arc::new(Admission {
        checks: kinetic_k8s::webhook::checks(),
        resources,
    });
    let router = axum::Router::new()
        .route(kinetic_k8s::webhook::PATH, post(validate))
        .route(kinetic_k8s::webhook::DEFAULT_PATH, post(default))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (choose another with --listen)",
                settings.listen
            )
        })?;
    tracing::info!(listen = %listener.local_addr()?, "kinetic webhook is up.");
    let served = crate::serve::serve(
        listener,
        router,
        Some(tls),
        settings.connections.limits(),
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    served
}

/// What admission needs.
struct Admission {
    checks: kinetic_control::ServiceChecks,
    /// The resources, where the webhook reads them (on Kubernetes).
    resources: Option<kinetic_resources::Watch>,
}

async fn validate(
    State(admission): State<Arc<Admission>>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let review = kinetic_k8s::webhook::review(&body, &admission.checks);
    axum::Json(serde_json::to_value(review).unwrap_or_default())
}

async fn default(
    State(admission): State<Arc<Admission>>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let latest = admission
        .resources
        .as_ref()
        .and_then(|watch| watch.latest());
    let review = kinetic_k8s::webhook::default(&body, latest.as_deref());
    axum::Json(serde_json::to_value(review).unwrap_or_default())
}

/// Ready once the resources it reads are listed: a Broker defaulted before would miss its class.
async fn ready(State(admission): State<Arc<Admission>>) -> axum::http::StatusCode {
    match &admission.resources {
        Some(watch) if watch.latest().is_none() => axum::http::StatusCode::SERVICE_UNAVAILABLE,
        _ => axum::http::StatusCode::OK,
    }
}

/// Makes sure the Secret holds a certificate, writes it where the server reads it, and puts its
/// CA in the ValidatingWebhookConfiguration.
async fn keep_certificate(
    client: &kinetic_k8s::Client,
    names: &Names,
    files: &TlsFiles,
) -> anyhow::Result<()> {
    let certificate = certs::ensure(client, names, chrono::Utc::now()).await?;
    write_private(&files.cert, &certificate.cert)?;
    write_private(&files.key, &certificate.key)?;
    certs::publish_ca(client, names, &certificate.ca).await?;
    Ok(())
}

async fn renew(
    client: kinetic_k8s::Client,
    names: Names,
    files: TlsFiles,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RENEW_CHECK) => {}
        }
        if let Err(error) = keep_certificate(&client, &names, &files).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "Renewing the webhook's certificate failed; retrying later."
            );
        }
    }
}

/// Writes `text` to `path` readable by this user only, through a temporary file renamed over it,
/// so the server never reads half a key.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
