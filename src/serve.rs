//! Serving a router on a TCP listener, in plain HTTP or over TLS (`--tls-cert`/`--tls-key`), with
//! graceful shutdown. The certificate files are watched: a renewed certificate (e.g. by
//! cert-manager or certbot) is served from the next handshake on, without a restart; files that do
//! not load leave the previous certificate in place, with a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

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

/// Serves `router` on `listener` (over TLS when `tls` is given) until `cancel`, then lets requests
/// in flight finish (bounded).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Tls>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted.
                    tracing::warn!(%error, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                tokio::spawn(async move {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor.clone();
                tokio::spawn(async move {
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
                    let _ = watcher.watch(connection.into_owned()).await;
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "Requests still in flight after the grace period; closing their connections."
        );
    }
    Ok(())
}
