//! Serving a router on a listener (TCP or a Unix socket), in plain HTTP or over TLS
//! (`--tls-cert`/`--tls-key`), within [`Limits`]: header, body and idle timeouts, a connection cap,
//! and a graceful shutdown with a hard deadline.
//!
//! The certificate files are watched: a renewed certificate (e.g. by cert-manager or certbot) is
//! served from the next handshake on, without a restart; files that do not load leave the previous
//! certificate in place, with a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate in force, swapped when the files change.
#[derive(Debug)]
struct Certificate {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    modified: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("--tls-cert {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {}: not PEM certificates", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "--tls-cert {}: holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks, the server's first)",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "--tls-key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
            files.key.display()
        )
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("--tls-key {}: not a usable key", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().with_context(|| {
        format!(
            "--tls-key {} does not belong to the certificate in --tls-cert {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(certified)
}

/// A TLS acceptor whose certificate follows its files. Made (and the files read) before any port
/// is bound, so a mistake fails fast.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<Certificate>,
}

impl Tls {
    pub fn new(files: TlsFiles) -> anyhow::Result<Self> {
        let current = load(&files)?;
        let certificate = Arc::new(Certificate {
            modified: RwLock::new((modified(&files.cert), modified(&files.key))),
            files,
            current: RwLock::new(Arc::new(current)),
        });
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// Checks the files every second until `cancel`, loading them again when either changed.
    pub async fn watch(self, cancel: CancellationToken) {
        let certificate = self.certificate;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
            let now = (
                modified(&certificate.files.cert),
                modified(&certificate.files.key),
            );
            let changed = certificate.modified.read().is_ok_and(|seen| *seen != now);
            if !changed {
                continue;
            }
            match load(&certificate.files) {
                Ok(loaded) => {
                    if let Ok(mut current) = certificate.current.write() {
                        *current = Arc::new(loaded);
                    }
                    if let Ok(mut seen) = certificate.modified.write() {
                        *seen = now;
                    }
                    tracing::info!(cert = %certificate.files.cert.display(), "Serving the renewed TLS certificate.");
                }
                // Perhaps half written: keep the old one and look again next time.
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "The changed TLS files do not load; the previous certificate stays in use.")
                }
            }
        }
    }
}

/// What every listener allows a client, so that slow or idle clients cannot hold connections, file
/// descriptors or shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request's headers, and how long a keep-alive
    /// connection may sit idle waiting for its next request.
    pub header_read: Duration,
    /// How long a client may take to send a request's whole body, from its headers on.
    pub body_read: Duration,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// After the shutdown signal, how long requests in flight may take; then their connections are
    /// closed.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(60),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A request body that fails once its deadline has passed: a client sending a body slowly (or
/// not at all after its headers) is cut off instead of holding its connection.
///
/// The timer is armed only when the body is first not ready: a body that arrives with its headers,
/// or an empty one, costs no timer.
struct Deadline {
    body: hyper::body::Incoming,
    /// When the request started.
    started: tokio::time::Instant,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
}

/// The error a [`Deadline`] body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", kinetic_api::duration::format(*.0))]
pub struct BodyTimedOut(Duration);

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future as _;
        let this = &mut *self;
        if let std::task::Poll::Ready(frame) = std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            return std::task::Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(this.started + this.limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))));
        }
        std::task::Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What a connection is doing, for its watchdog: requests in flight, and since when it has had
/// none (waiting for a request's headers, or idle between requests).
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds since [`Activity::born`] when the last request ended.
    idle_since: std::sync::atomic::AtomicU64,
    born: std::sync::OnceLock<tokio::time::Instant>,
}

impl Activity {
    fn born(&self) -> tokio::time::Instant {
        *self.born.get_or_init(tokio::time::Instant::now)
    }

    /// Whether the connection has waited longer than `limit` for a request's headers.
    fn waited_too_long(&self, limit: Duration) -> bool {
        use std::sync::atomic::Ordering;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let since = self.born() + Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        since.elapsed() > limit
    }
}

/// A request in flight on a connection; when dropped, the connection is waiting again.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let elapsed = u64::try_from(self.0.born().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since.store(elapsed, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a connection until it ends, or until it has waited longer than `header_read` for a
/// request's headers (a slow client, or an idle keep-alive connection): then it is dropped,
/// which closes it. Checked a few times per `header_read`, not per request.
async fn watched<F: std::future::Future>(
    connection: F,
    activity: &Activity,
    header_read: Duration,
) {
    activity.born();
    let every = (header_read / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut connection = std::pin::pin!(connection);
    loop {
        tokio::select! {
            _ = &mut connection => return,
            () = tokio::time::sleep(every) => {
                if activity.waited_too_long(header_read) {
                    tracing::debug!("Closing a connection that sent no complete request in time.");
                    return;
                }
            }
        }
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) within `limits` until `cancel`,
/// then lets requests in flight finish for the grace period and closes what is left.
pub async fn serve<L: axum::serve::Listener>(
    mut listener: L,
    router: axum::Router,
    tls: Option<Tls>,
    limits: Limits,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header and idle time is kept by each connection's watchdog (below): hyper's own header
    // timer arms a timer for every request, which costs a tenth of a trivial request's throughput.
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read))
        .keep_alive_timeout(limits.header_read);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Finished connections leave the set as they go, so it holds only live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.context("the connection slots closed")?,
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            (stream, _peer) = listener.accept() => stream,
        };
        let activity = Arc::new(Activity::default());
        let service = hyper::service::service_fn({
            let router = router.clone();
            let limit = limits.body_read;
            let activity = activity.clone();
            move |request: http::Request<hyper::body::Incoming>| {
                let request = request.map(|body| Deadline {
                    body,
                    started: tokio::time::Instant::now(),
                    sleep: None,
                    limit,
                });
                // In flight until its response's body is dropped (sent, or the connection gone).
                let busy = Busy::start(&activity);
                let response = tower::ServiceExt::oneshot(router.clone(), request);
                async move {
                    let response = response.await?;
                    Ok::<_, std::convert::Infallible>(response.map(move |body| {
                        axum::body::Body::new(http_body_util::BodyExt::map_frame(
                            body,
                            move |frame| {
                                let _ = &busy;
                                frame
                            },
                        ))
                    }))
                }
            }
        });
        let header_read = limits.header_read;
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|tls| tls.acceptor.clone());
        connections.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watched(
                        watcher.watch(connection.into_owned()),
                        &activity,
                        header_read,
                    )
                    .await;
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed.");
                            return;
                        }
                        Err(_) => return,
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watched(
                        watcher.watch(connection.into_owned()),
                        &activity,
                        header_read,
                    )
                    .await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "Requests still in flight after the grace period; closing their connections."
        );
    }
    connections.shutdown().await;
    Ok(())
}
