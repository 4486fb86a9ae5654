//! The load generator: plain hyper HTTP/1.1 connections, like wrk. Closed loop (C connections,
//! each sending the next request as soon as the previous answer is read) and open loop (requests
//! started at fixed intervals whether or not earlier ones were answered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest one request of a load run may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn get(uri: &str, host: &str) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(Empty::new())
        .unwrap_or_else(|_| Request::new(Empty::new()))
}

async fn connect(address: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One GET on a fresh connection: the status and the body.
pub async fn get_once(
    address: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, Bytes)> {
    let exchange = async {
        let mut sender = connect(address).await?;
        let response = sender.send_request(get(path, host)).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("GET {path} on {address} took longer than {timeout:?}"))?
}

/// Where and what a load run requests.
#[derive(Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub host: Arc<str>,
}

/// What one load run observed within its measured window.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Latencies of the 200 answers, µs.
    pub micros: Vec<u32>,
    /// Non-200 answers, failed or timed-out requests.
    pub errors: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    /// Percentiles (`quantiles` in 0..=1) in milliseconds; NaN without samples.
    pub fn percentiles_ms(&mut self, quantiles: &[f64]) -> Vec<f64> {
        self.micros.sort_unstable();
        quantiles
            .iter()
            .map(|q| {
                if self.micros.is_empty() {
                    f64::NAN
                } else {
                    let index = ((self.micros.len() - 1) as f64 * q).round() as usize;
                    f64::from(self.micros[index]) / 1000.0
                }
            })
            .collect()
    }
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// One connection of the closed loop: requests back to back until `end`; answers that arrive
/// within `[measure_from, end]` are counted.
async fn closed_connection(
    target: Target,
    path: Arc<str>,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    while Instant::now() < end {
        let connection = match sender.as_mut() {
            Some(connection) => connection,
            None => match connect(target.address).await {
                Ok(connection) => sender.insert(connection),
                Err(_) => {
                    if Instant::now() >= measure_from {
                        tally.errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let exchange = async {
            connection.ready().await?;
            let response = connection.send_request(get(&path, &target.host)).await?;
            let status = response.status();
            response.into_body().collect().await?;
            anyhow::Ok(status)
        };
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        let done = Instant::now();
        let counted = done >= measure_from && done <= end;
        match outcome {
            Ok(Ok(StatusCode::OK)) => {
                if counted {
                    tally.micros.push(micros(done - started));
                }
            }
            Ok(Ok(_)) => {
                if counted {
                    tally.errors += 1;
                }
            }
            _ => {
                if counted {
                    tally.errors += 1;
                }
                sender = None;
            }
        }
    }
    tally
}

/// Closed loop: `connections` connections for `warmup` + `seconds`; the last `seconds` counted.
pub async fn closed_loop(
    target: &Target,
    path: &str,
    connections: usize,
    warmup: Duration,
    seconds: Duration,
) -> Tally {
    let path: Arc<str> = path.into();
    let measure_from = Instant::now() + warmup;
    let end = measure_from + seconds;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(closed_connection(
                target.clone(),
                path.clone(),
                measure_from,
                end,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(part) => tally.merge(part),
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

/// Open loop: `rate` requests per second started on schedule for `warmup` + `seconds`, over a
/// pool of connections that grows as needed; requests started after the warm-up are counted, each
/// timed from its own start.
pub async fn open_loop(
    target: &Target,
    path: &str,
    rate: u32,
    warmup: Duration,
    seconds: Duration,
) -> anyhow::Result<Tally> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let uri: Uri = format!("http://{}{path}", target.address).parse()?;
    let period = Duration::from_secs(1) / rate.max(1);
    let skip = (warmup.as_secs_f64() * f64::from(rate)).round() as usize;
    let total = skip + (seconds.as_secs_f64() * f64::from(rate)).round() as usize;
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(total);
    for index in 0..total {
        tokio::time::sleep_until(start + period * u32::try_from(index)?).await;
        let client = client.clone();
        let request = {
            let mut request = get(&uri.to_string(), &target.host);
            *request.uri_mut() = uri.clone();
            request
        };
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let exchange = async {
                let response = client.request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                anyhow::Ok(status)
            };
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
            match outcome {
                Ok(Ok(StatusCode::OK)) => Some(micros(started.elapsed())),
                _ => None,
            }
        }));
    }
    let mut tally = Tally::default();
    for (index, task) in tasks.into_iter().enumerate() {
        let outcome = task.await.ok().flatten();
        if index < skip {
            continue;
        }
        match outcome {
            Some(micros) => tally.micros.push(micros),
            None => tally.errors += 1,
        }
    }
    Ok(tally)
}
