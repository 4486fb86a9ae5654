//! Readiness probes: an HTTP GET answered with any 2xx, or a TCP connect when the revision names
//! no path, repeated until one passes.
//!
//! A container's port is reached through the engine's published port, and the engine's port proxy
//! (Docker's `docker-proxy`, Podman's `rootlessport`) accepts a connection before the function
//! listens, then closes it once its own connection to the container is refused. So a TCP probe
//! of a container also waits a moment for that close: a connection still open after
//! [`ProbeConfig::hold`] reached the function.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How often to probe, and how long one probe may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeConfig {
    pub period: Duration,
    pub period_max: Duration,
    pub timeout: Duration,
    /// How long a TCP probe through an engine's port proxy waits for the proxy to close the
    /// connection before it counts as reached.
    pub hold: Duration,
}

/// What one probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check<'a> {
    /// A TCP connect to the function itself.
    Connect,
    /// A TCP connect through a port proxy, which must stay open for [`ProbeConfig::hold`].
    ConnectThroughProxy,
    /// An HTTP GET of the path, answered with any 2xx.
    Get(&'a str),
}

impl<'a> Check<'a> {
    /// The check for a revision's readiness path (`None`: a TCP probe), for an instance behind a
    /// port proxy or not.
    pub(crate) fn new(path: Option<&'a str>, proxied: bool) -> Self {
        match path {
            Some(path) => Check::Get(path),
            None if proxied => Check::ConnectThroughProxy,
            None => Check::Connect,
        }
    }
}

/// The pause before the next probe, `elapsed` after the spawn: `period` at first, then growing by
/// a twentieth of the time already spent, up to `period_max`. So a ready instance is noticed
/// within `period` plus 5 % of its start-up time, and a slow starter is not probed hundreds of
/// times a second.
pub(crate) fn interval(config: &ProbeConfig, elapsed: Duration) -> Duration {
    (config.period + elapsed / 20).min(config.period_max.max(config.period))
}

/// Probes until the instance is ready. Never resolves for an instance that never gets ready: the
/// caller races it against the process exiting. Cancel safe.
pub(crate) async fn until_ready(
    config: &ProbeConfig,
    address: SocketAddr,
    check: Check<'_>,
    started: Instant,
) {
    loop {
        if probe_once(config, address, check).await {
            return;
        }
        tokio::time::sleep(interval(config, started.elapsed())).await;
    }
}

/// One probe, bounded by the probe timeout.
pub(crate) async fn probe_once(
    config: &ProbeConfig,
    address: SocketAddr,
    check: Check<'_>,
) -> bool {
    let probe = async {
        let stream = TcpStream::connect(address).await.ok()?;
        Some(match check {
            Check::Connect => true,
            Check::ConnectThroughProxy => holds(stream, config.hold).await,
            Check::Get(path) => http_get(stream, address, path).await.unwrap_or(false),
        })
    };
    matches!(
        tokio::time::timeout(config.timeout, probe).await,
        Ok(Some(true))
    )
}

/// Whether the peer keeps the connection open for `hold`: neither closes nor resets it. A peer
/// that speaks first has been reached too.
async fn holds(mut stream: TcpStream, hold: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(hold, stream.read(&mut byte)).await {
        Err(_elapsed) => true,
        Ok(Ok(read)) => read > 0,
        Ok(Err(_)) => false,
    }
}

async fn http_get(
    stream: TcpStream,
    address: SocketAddr,
    path: &str,
) -> Result<bool, hyper::Error> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let Ok(request) = Request::get(path)
        .header(header::HOST, address.to_string())
        .header(header::USER_AGENT, "kinetic-probe")
        .body(Empty::<Bytes>::new())
    else {
        // A path that is not a valid URI never passes.
        return Ok(false);
    };
    let response = sender.send_request(request);
    tokio::pin!(connection, response);
    let response = tokio::select! {
        biased;
        response = &mut response => response?,
        // The connection may read the response and the close in one go; the response is then
        // waiting for us.
        ended = &mut connection => {
            ended?;
            response.await?
        }
    };
    Ok(response.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProbeConfig {
        ProbeConfig {
            period: Duration::from_millis(5),
            period_max: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            hold: Duration::from_millis(20),
        }
    }

    #[test]
    fn interval_grows_with_the_wait_and_is_capped() {
        let c = config();
        let ms = |e: u64| interval(&c, Duration::from_millis(e)).as_millis();
        assert_eq!(
            [ms(0), ms(19), ms(100), ms(500), ms(900), ms(60_000)],
            [5, 5, 10, 30, 50, 50]
        );
    }

    #[tokio::test]
    async fn tcp_and_http_probes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // First answer 503, then 200, each on its own connection.
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 1024];
                let n = socket.read(&mut request).await.unwrap();
                assert!(request[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
                let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                socket.write_all(response.as_bytes()).await.unwrap();
            }
        });
        let c = config();
        assert!(!probe_once(&c, address, Check::Get("/healthz")).await);
        assert!(probe_once(&c, address, Check::Get("healthz")).await);
        server.await.unwrap();

        // Nobody listens any more on that port: every kind fails.
        assert!(!probe_once(&c, address, Check::Connect).await);
        assert!(!probe_once(&c, address, Check::ConnectThroughProxy).await);
        assert!(!probe_once(&c, address, Check::Get("/")).await);
    }

    /// A port proxy that accepts and then closes (its backend refused it) fails a probe through
    /// it, though the connect succeeded; one that keeps the connection open passes.
    #[tokio::test]
    async fn a_proxy_that_closes_at_once_is_not_ready() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            for _ in 0..2 {
                let (closed, _) = listener.accept().await.unwrap();
                drop(closed);
            }
            let (held, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(held);
        });
        let c = config();
        assert!(probe_once(&c, address, Check::Connect).await);
        assert!(!probe_once(&c, address, Check::ConnectThroughProxy).await);
        assert!(probe_once(&c, address, Check::ConnectThroughProxy).await);
        proxy.await.unwrap();
    }
}
