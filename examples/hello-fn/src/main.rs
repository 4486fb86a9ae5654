//! hello-fn: the function kinetic's serving tests and benchmarks run.
//!
//! `GET|POST /` answers JSON with the revision, pid, start time (Unix ms) and the most requests seen
//! at once. Query parameters: `sleep_ms=N` waits N ms (an I/O-bound function), `work_us=N` burns N µs
//! of CPU, `status=N` answers with that status. `POST /crash` exits the process with status 3.
//! With `MAX_CONCURRENCY=N` set, a request that finds more than N requests in flight answers 500 and
//! prints `concurrency exceeded` on stderr. A CloudEvent (binary mode) is logged as
//! `hello-fn: event ID of type TYPE` on stdout and answered without a body (no reply event), or,
//! with `REPLY_TYPE=T` set and an event of another type, with a reply event of type `T` (binary
//! mode, id `reply-ID`, source `/hello-fn`).
//! `STARTUP_DELAY_MS` delays listening (a slow cold start). `GET /env` answers the process's whole
//! environment and its uid and gid, to check what a function is given. `alloc_mb=N` allocates and
//! touches N MiB and holds it for the request (a function over its memory limit). It listens on
//! loopback, or on `BIND_ADDRESS` when set (`0.0.0.0` in its container image, where requests come
//! through the engine's published port).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

struct Function {
    revision: String,
    started_ms: u128,
    limit: Option<usize>,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    served: AtomicUsize,
    reply_type: Option<String>,
}

#[tokio::main]
async fn main() {
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let env = |name: &str| std::env::var(name).ok();
    let port: u16 = env("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
    if let Some(delay) = env("STARTUP_DELAY_MS").and_then(|d| d.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let function = Arc::new(Function {
        revision: env("K_REVISION").unwrap_or_else(|| "local".to_owned()),
        started_ms,
        limit: env("MAX_CONCURRENCY").and_then(|c| c.parse().ok()),
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        served: AtomicUsize::new(0),
        reply_type: env("REPLY_TYPE").filter(|t| !t.is_empty()),
    });
    let app = Router::new()
        .route("/crash", post(crash))
        .route("/env", get(environment))
        .route("/", any(hello))
        .fallback(hello)
        .with_state(function);
    let host = env("BIND_ADDRESS").unwrap_or_else(|| "127.0.0.1".to_owned());
    let listener = match tokio::net::TcpListener::bind((host.as_str(), port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("hello-fn: cannot listen on {host}:{port}: {error}");
            std::process::exit(1);
        }
    };
    println!("hello-fn listening on {host}:{port}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        term.recv().await;
        println!("hello-fn: SIGTERM, finishing requests in flight");
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("hello-fn: {error}");
        std::process::exit(1);
    }
}

async fn environment() -> String {
    let env: serde_json::Map<String, serde_json::Value> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned().into(),
            )
        })
        .collect();
    // `Uid:` and `Gid:` of /proc/self/status: real, effective, saved, filesystem.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let id = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let body = serde_json::json!({ "env": env, "uid": id("Uid:"), "gid": id("Gid:") });
    format!("{body}\n")
}

async fn crash() -> StatusCode {
    eprintln!("hello-fn: crashing on request");
    std::process::exit(3);
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn hello(
    State(function): State<Arc<Function>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let event = headers.get("ce-id").and_then(|v| v.to_str().ok());
    let mut reply = None;
    if let Some(id) = event {
        let kind = headers
            .get("ce-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        println!("hello-fn: event {id} of type {kind}");
        reply = function
            .reply_type
            .as_ref()
            .filter(|reply| *reply != kind)
            .map(|reply| (format!("reply-{id}"), reply.clone()));
    }
    let now = function.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let _leave = Leave(&function.in_flight);
    function.most.fetch_max(now, Ordering::AcqRel);
    let served = function.served.fetch_add(1, Ordering::AcqRel) + 1;
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok());
    if let Some(limit) = function.limit
        && now > limit
    {
        eprintln!("hello-fn: concurrency exceeded: {now} requests at once, limit {limit}");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("concurrency exceeded: {now} > {limit}\n"),
        )
            .into_response();
    }
    if let Some(ms) = number("sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut held = Vec::new();
    if let Some(mb) = number("alloc_mb") {
        let size = usize::try_from(mb)
            .unwrap_or(usize::MAX / 2)
            .saturating_mul(1 << 20);
        // Touched page by page so the memory is really used, not only reserved.
        held = vec![0u8; size];
        for page in held.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&held);
    }
    if let Some(us) = number("work_us") {
        let until = Instant::now() + Duration::from_micros(us);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    let status = number("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    drop(held);
    if let Some((id, kind)) = reply {
        let headers = [
            ("ce-specversion", "1.0".to_owned()),
            ("ce-id", id),
            ("ce-type", kind),
            ("ce-source", "/hello-fn".to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        let body = serde_json::json!({ "revision": function.revision });
        return (status, headers, format!("{body}\n")).into_response();
    }
    if event.is_some() {
        return (status, String::new()).into_response();
    }
    let body = serde_json::json!({
        "revision": function.revision,
        "pid": std::process::id(),
        "startedAtMs": function.started_ms,
        "mostInFlight": function.most.load(Ordering::Acquire),
        "served": served,
    });
    (status, format!("{body}\n")).into_response()
}
