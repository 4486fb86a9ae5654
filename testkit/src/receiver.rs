//! An HTTP server on a loopback port that records every request it gets and answers as a test
//! scripts it: the subscriber, sink or webhook endpoint of a test.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How a receiver answers: a script per path, consumed in order; when a path's script is empty the
/// default applies.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Computes the answer to a request from the request itself (see [`Receiver::respond_with`]).
pub type Responder = Arc<dyn Fn(&Received) -> Answer + Send + Sync>;

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    scripts: std::collections::HashMap<String, VecDeque<Answer>>,
    defaults: std::collections::HashMap<String, Answer>,
    responders: std::collections::HashMap<String, Responder>,
}

/// An HTTP server on a free loopback port that records every request.
#[derive(Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move { answer(state, uri, headers, body).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            address,
            state,
            _stop: Arc::new(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A receiver that serves HTTPS with the PEM certificate `cert` and key `key` (e.g. from
    /// the tests' `crypto::tls`); its URLs are [`Receiver::https_url`].
    pub async fn start_tls(cert: &Path, key: &Path) -> Self {
        use rustls_pki_types::pem::PemObject as _;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let address = listener.local_addr().expect("address");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move { answer(state, uri, headers, body).await }
        });
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends here.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Self {
            address,
            state,
            _stop: Arc::new(stop),
        }
    }

    /// A URL of a receiver made by [`Receiver::start_tls`].
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    /// Answers the next requests to `path` with `answers`, in order.
    pub fn script(&self, path: &str, answers: Vec<Answer>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Answers requests to `path` with `answer` once its script is used up (default: 200).
    pub fn default_answer(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap()
            .defaults
            .insert(path.to_owned(), answer);
    }

    /// Answers requests to `path` with whatever `responder` makes of each request, once its script
    /// is used up (it takes precedence over [`Self::default_answer`]). It runs outside the receiver's
    /// lock, so it may keep state of its own.
    pub fn respond_with(
        &self,
        path: &str,
        responder: impl Fn(&Received) -> Answer + Send + Sync + 'static,
    ) {
        self.state
            .lock()
            .unwrap()
            .responders
            .insert(path.to_owned(), Arc::new(responder));
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `path` got at least `count` requests (bounded by `timeout`), and returns them.
    pub async fn wait_for(&self, path: &str, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received(path);
            if got.len() >= count || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let received = Received {
        path: path.clone(),
        headers,
        body,
        at: Instant::now(),
    };
    let (scripted, responder, default) = {
        let mut state = state.lock().unwrap();
        state.received.push(received.clone());
        (
            state.scripts.get_mut(&path).and_then(VecDeque::pop_front),
            state.responders.get(&path).cloned(),
            state.defaults.get(&path).cloned(),
        )
    };
    let reply = match (scripted, responder, default) {
        (Some(answer), _, _) => answer,
        (None, Some(responder), _) => responder(&received),
        (None, None, Some(answer)) => answer,
        (None, None, None) => Answer::status(200),
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

/// A subscriber that only counts what reaches it (answering `200`), on a loopback port: for
/// benchmarks, where recording every request would cost more than the request.
pub async fn start_counter() -> std::io::Result<(SocketAddr, Arc<std::sync::atomic::AtomicU64>)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let count = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let counted = count.clone();
    let app = axum::Router::new().fallback(move || {
        let count = counted.clone();
        async move {
            count.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((address, count))
}
