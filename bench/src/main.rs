//! End-to-end benchmark of kinetic: events per second from broker ingress to subscriber 2xx (1 and
//! 10 triggers; SQLite, PostgreSQL and the Kafka broker class), and latency from the POST to the
//! subscriber's receipt at a fixed rate. Every number is printed beside a baseline measured in the
//! same run: for the store engines, the same events posted straight to the subscriber with the same
//! load generator; for the Kafka class, a plain rdkafka consumer reading the broker's topic (and a
//! plain producer → consumer pair for latency) on the same Kafka-protocol broker.
//!
//! The `auth` engine measures the ingress (SQLite, 1 trigger) in one run, each as a ratio to the
//! first: open (`allow-all`); behind an EventPolicy with the sender's JWT on every request (verified
//! once, then a cache hit); with a new JWT on every request (a signature check each); over TLS.
//!
//! A third reference, measured first: a relay without a store (in the benchmark's process) that
//! forwards each POST to the subscriber before answering. An event through kinetic costs the same two
//! HTTP exchanges, so the relay's rate is about the ceiling of any end-to-end row on this machine.
//!
//! For the store engines with 0 and 1 trigger, the same events are also posted 100 to a request
//! (CloudEvents batch mode, one group-commit entry each), beside the single-event rate.
//!
//! The `small` engine sends 400 events from 16 senders to a small subscriber (Python's
//! `http.server`: one request at a time, a listen backlog of 5, a connection per request) through
//! kinetic, and prints the seconds until all arrived beside the subscriber's own pace (the events
//! posted straight to it, one at a time).
//!
//! Run it with `bash bench/run.sh` (builds release binaries first). The machine is shared and noisy:
//! read ratios and medians, not single numbers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use futures::StreamExt as _;
use kinetic_testkit::kinetic::Process;
use kinetic_testkit::postgres::ScratchDatabase;

mod kafka;

#[derive(Debug, Parser)]
struct Args {
    /// The kinetic binary to measure.
    #[arg(long, default_value = "target/release/kinetic")]
    kinetic: PathBuf,
    /// Engines to measure: sqlite, postgres, kafka (the Kafka broker class, SQLite for state, on a
    /// nisshi broker started for the run; install it with scripts/ensure-kafka.sh), kafka-source
    /// (a KafkaSource sending straight to the subscriber, ordered and unordered), auth (SQLite, 1
    /// trigger: open, behind an EventPolicy with the sender's JWT or a new one per request, over
    /// TLS), small (SQLite, 1 trigger to a Python `http.server`: one request at a time, a listen
    /// backlog of 5, a connection per request; 400 events from 16 senders), tracing (SQLite, 1
    /// trigger: traces off, and exported over OTLP to a collector of the run at sampling ratios
    /// 0.01 and 1).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sqlite,postgres,kafka,kafka-source,auth,small,tracing"
    )]
    engines: Vec<String>,
    /// The Python with `cryptography` that makes the TLS rows' certificates
    /// (scripts/ensure-pyjwt.sh installs it).
    #[arg(long, env = "KINETIC_PYJWT_PYTHON")]
    crypto_python: Option<PathBuf>,
    /// PostgreSQL admin URL (a database is created and dropped per run).
    #[arg(
        long,
        env = "KINETIC_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Events per throughput run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Concurrent requests of the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per second of the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Trigger counts to measure; 0 measures the ingress alone (202 answers, no delivery).
    #[arg(long, value_delimiter = ',', default_value = "0,1,10")]
    triggers: Vec<usize>,
    /// Repetitions of each throughput measurement; the median is printed.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// The subscriber: counts deliveries and records when each event id first arrived.
#[derive(Default)]
struct Sink {
    count: AtomicU64,
    arrivals: Mutex<HashMap<String, Instant>>,
    record: std::sync::atomic::AtomicBool,
}

async fn start_sink() -> anyhow::Result<(SocketAddr, Arc<Sink>)> {
    let sink = Arc::new(Sink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let shared = sink.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, _body: Bytes| {
        let sink = shared.clone();
        async move {
            sink.count.fetch_add(1, Ordering::Relaxed);
            if sink.record.load(Ordering::Relaxed)
                && let Some(id) = headers.get("ce-id").and_then(|v| v.to_str().ok())
            {
                sink.arrivals
                    .lock()
                    .unwrap()
                    .entry(id.to_owned())
                    .or_insert_with(Instant::now);
            }
            StatusCode::OK
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((address, sink))
}

/// A relay without a store: it answers each POST once it has forwarded the event to the subscriber.
/// Every event costs it the two HTTP exchanges (client → relay, relay → subscriber) that every
/// event costs kinetic, and nothing else: the most an event router can do on this machine with this
/// load generator, before it stores anything.
async fn start_relay(sink: SocketAddr, client: reqwest::Client) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let target = format!("http://{sink}/relay");
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let (client, target) = (client.clone(), target.clone());
        async move {
            let mut request = client.post(&target).body(body);
            for (name, value) in &headers {
                if name.as_str().starts_with("ce-") || name == axum::http::header::CONTENT_TYPE {
                    request = request.header(name, value);
                }
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => StatusCode::ACCEPTED,
                _ => StatusCode::BAD_GATEWAY,
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(address)
}

fn event_request(client: &reqwest::Client, url: &str, id: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/bench")
        .header("ce-type", "dev.kinetic.bench")
        .header("content-type", "application/json")
        .body(r#"{"order":12345,"item":"widget","amount":250,"note":"a typical small event payload"}"#)
}

/// Posts `ids` with `concurrency` requests in flight; fails on any non-2xx.
async fn blast(
    client: &reqwest::Client,
    url: &str,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    blast_with(client, url, ids, None, concurrency).await
}

/// [`blast`], the i-th request with `Authorization: Bearer tokens[i]` when given.
async fn blast_with(
    client: &reqwest::Client,
    url: &str,
    ids: &[String],
    tokens: Option<&[String]>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let failures = AtomicU64::new(0);
    futures::stream::iter(ids.iter().enumerate())
        .for_each_concurrent(concurrency, |(index, id)| {
            let failures = &failures;
            async move {
                let mut request = event_request(client, url, id);
                if let Some(tokens) = tokens {
                    request = request.bearer_auth(&tokens[index]);
                }
                match request.send().await {
                    Ok(response) if response.status().is_success() => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {} requests to {url} failed", ids.len());
    }
    Ok(())
}

async fn wait_count(sink: &Sink, target: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while sink.count.load(Ordering::Relaxed) < target {
        if Instant::now() > deadline {
            bail!(
                "only {} of {target} deliveries arrived within {timeout:?}",
                sink.count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Events per second through `url` until `per_event` deliveries of each arrived at the sink.
async fn throughput(
    client: &reqwest::Client,
    url: &str,
    sink: &Sink,
    events: usize,
    concurrency: usize,
    per_event: u64,
) -> anyhow::Result<f64> {
    throughput_signed(client, url, sink, events, concurrency, per_event, None).await
}

/// [`throughput`], each request with a token of its own from `sign` (made before the clock starts).
async fn throughput_signed(
    client: &reqwest::Client,
    url: &str,
    sink: &Sink,
    events: usize,
    concurrency: usize,
    per_event: u64,
    sign: Option<&dyn Fn() -> anyhow::Result<String>>,
) -> anyhow::Result<f64> {
    let ids: Vec<String> = (0..events)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let tokens = match sign {
        Some(sign) => Some(
            (0..events)
                .map(|_| sign())
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let before = sink.count.load(Ordering::Relaxed);
    let start = Instant::now();
    blast_with(client, url, &ids, tokens.as_deref(), concurrency).await?;
    wait_count(
        sink,
        before + events as u64 * per_event,
        Duration::from_secs(300),
    )
    .await?;
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

/// Events per second through `url` posted `batch` to a request (CloudEvents batch mode), with
/// `concurrency` requests in flight, until `per_event` deliveries of each arrived at the sink.
async fn throughput_batched(
    client: &reqwest::Client,
    url: &str,
    sink: &Sink,
    (events, batch): (usize, usize),
    concurrency: usize,
    per_event: u64,
) -> anyhow::Result<f64> {
    let bodies: Vec<String> = (0..events.div_ceil(batch))
        .map(|request| {
            let items: Vec<serde_json::Value> = (0..batch.min(events - request * batch))
                .map(|_| {
                    serde_json::json!({
                        "specversion": "1.0",
                        "id": uuid::Uuid::new_v4().to_string(),
                        "source": "/bench",
                        "type": "dev.kinetic.bench",
                        "datacontenttype": "application/json",
                        "data": {"order": 12345, "item": "widget", "amount": 250, "note": "a typical small event payload"},
                    })
                })
                .collect();
            serde_json::Value::Array(items).to_string()
        })
        .collect();
    let before = sink.count.load(Ordering::Relaxed);
    let start = Instant::now();
    let failures = AtomicU64::new(0);
    futures::stream::iter(bodies)
        .for_each_concurrent(concurrency, |body| {
            let failures = &failures;
            async move {
                let sent = client
                    .post(url)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await;
                if !sent.is_ok_and(|response| response.status().is_success()) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} batch requests to {url} failed");
    }
    wait_count(
        sink,
        before + events as u64 * per_event,
        Duration::from_secs(300),
    )
    .await?;
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

/// Latency percentiles at a fixed rate, in milliseconds from the start of each POST.
struct Latency {
    /// To the event's first receipt at the subscriber.
    delivered: (f64, f64),
    /// To the POST's answer (for kinetic: the 202, after the durable commit).
    answered: (f64, f64),
}

fn percentiles(mut millis: Vec<f64>) -> (f64, f64) {
    millis.sort_by(f64::total_cmp);
    let pick = |q: f64| millis[((millis.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.50), pick(0.99))
}

async fn latency(
    client: &reqwest::Client,
    url: &str,
    sink: &Arc<Sink>,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Latency> {
    sink.arrivals.lock().unwrap().clear();
    sink.record.store(true, Ordering::Relaxed);
    let total = rate * seconds;
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(total as usize);
    let mut answers = Vec::with_capacity(total as usize);
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        ticker.tick().await;
        let id = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        sent.push((id.clone(), started));
        let request = event_request(client, url, &id);
        // Each request on its own task, so its progress never waits for this loop's next tick.
        answers.push(tokio::spawn(async move {
            let ok = request
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            ok.then(|| started.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut answered = Vec::with_capacity(answers.len());
    for answer in answers {
        match answer.await {
            Ok(Some(millis)) => answered.push(millis),
            _ => bail!("a request failed during the latency run"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if sink.arrivals.lock().unwrap().len() >= sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink.record.store(false, Ordering::Relaxed);
    let arrivals = sink.arrivals.lock().unwrap().clone();
    let delivered: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|arrived| arrived.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    if delivered.len() < sent.len() {
        bail!(
            "only {} of {} events arrived in the latency run",
            delivered.len(),
            sent.len()
        );
    }
    Ok(Latency {
        delivered: percentiles(delivered),
        answered: percentiles(answered),
    })
}

struct Server {
    /// Stopped (by PID, when dropped) before the directory and the database go.
    _process: Process,
    base: String,
    /// The admin listener.
    admin: String,
    dir: tempfile::TempDir,
    database: Option<ScratchDatabase>,
}

/// How a measured kinetic differs from the plain one.
#[derive(Default)]
struct Variant {
    /// More flags for `kinetic up`.
    flags: Vec<String>,
    /// Serve both listeners over TLS with this certificate and key; clients trust `ca`.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

/// A client that trusts the PEM CA certificates of `ca`, pooled like the load generator's.
fn client_trusting(ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true);
    if let Some(ca) = ca {
        for certificate in reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder.build()?)
}

/// The KafkaSource rows: records produced to a topic and sent by a KafkaSource straight to the
/// subscriber, beside a plain consumer reading the same topic and a plain producer → consumer pair.
async fn kafka_source_rows(
    args: &Args,
    bootstrap: &str,
    sink_address: SocketAddr,
    sink: &Arc<Sink>,
    ordering: &str,
) -> anyhow::Result<()> {
    let topic = format!("bench-source-{}", uuid::Uuid::new_v4().simple());
    let settings = kinetic_kafka::Settings::new(bootstrap);
    kinetic_kafka::ensure_topic(&settings, &topic, 3, 1, Duration::from_secs(10)).await?;
    let yaml = format!(
        "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {{name: bench}}\nspec:\n  bootstrapServers: ['{bootstrap}']\n  topics: ['{topic}']\n  consumerGroup: bench-{topic}\n  initialOffset: earliest\n  ordering: {ordering}\n  sink: {{uri: 'http://{sink_address}/source'}}\n"
    );
    let server = start_kinetic_with(args, "sqlite", &yaml, None).await?;
    let ids: Vec<String> = (0..args.events)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let before = sink.count.load(Ordering::Relaxed);
    let started = Instant::now();
    kafka::produce_events(bootstrap, &topic, &ids, None).await?;
    wait_count(sink, before + ids.len() as u64, Duration::from_secs(600)).await?;
    let rate = ids.len() as f64 / started.elapsed().as_secs_f64();
    let baseline = kafka::consume_rate(bootstrap, &topic, ids.len()).await?;
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        format!("kafka-source {ordering}: events/s → 2xx"),
        format!("{rate:.0}"),
        format!("{baseline:.0}"),
        format!("{:.2}", rate / baseline)
    );
    // Latency at the benchmark's rate: send time to the subscriber's receipt.
    sink.arrivals.lock().unwrap().clear();
    sink.record.store(true, Ordering::Relaxed);
    let ids: Vec<String> = (0..args.rate * args.seconds)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let sent = kafka::produce_events(bootstrap, &topic, &ids, Some(args.rate)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.arrivals.lock().unwrap().len() < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink.record.store(false, Ordering::Relaxed);
    let arrivals = sink.arrivals.lock().unwrap().clone();
    let millis: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|arrived| arrived.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    if millis.len() < ids.len() {
        bail!(
            "only {} of {} KafkaSource records arrived in the latency run",
            millis.len(),
            ids.len()
        );
    }
    let (p50, p99) = percentiles(millis);
    let (base50, base99) =
        kafka::produce_consume_latency(bootstrap, args.rate, args.seconds).await?;
    for (what, value, base) in [("p50", p50, base50), ("p99", p99, base99)] {
        println!(
            "{:<44} {:>14} {:>14} {:>8}",
            format!("kafka-source {ordering}: {what} ms at {}/s", args.rate),
            format!("{value:.2}"),
            format!("{base:.2}"),
            format!("{:.1}", value / base)
        );
    }
    stop(server).await;
    Ok(())
}

async fn start_kinetic(
    args: &Args,
    engine: &str,
    sink: SocketAddr,
    triggers: usize,
    kafka: Option<&str>,
) -> anyhow::Result<Server> {
    let mut yaml = String::from(if engine == "kafka" {
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: bench\n  annotations: {eventing.knative.dev/broker.class: Kafka}\n"
    } else {
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: bench}\n"
    });
    for index in 0..triggers {
        yaml.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t{index}}}\nspec:\n  broker: bench\n  filters: [{{exact: {{type: dev.kinetic.bench}}}}]\n  subscriber: {{uri: 'http://{sink}/t{index}'}}\n"
        ));
    }
    start_kinetic_with(args, engine, &yaml, kafka).await
}

/// `kinetic up` on a fresh store of `engine` with the resources `yaml`.
async fn start_kinetic_with(
    args: &Args,
    engine: &str,
    yaml: &str,
    kafka: Option<&str>,
) -> anyhow::Result<Server> {
    start_variant(args, engine, yaml, kafka, &Variant::default()).await
}

/// [`start_kinetic_with`], changed by `variant`.
async fn start_variant(
    args: &Args,
    engine: &str,
    yaml: &str,
    kafka: Option<&str>,
    variant: &Variant,
) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let mut database = None;
    let store = match engine {
        "sqlite" | "kafka" => format!("sqlite://{}", dir.path().join("state.db").display()),
        "postgres" => {
            let scratch = ScratchDatabase::create_on(&args.postgres, "kinetic_bench")
                .await
                .context("creating a database on PostgreSQL")?;
            let url = scratch.url.clone();
            database = Some(scratch);
            url
        }
        other => bail!("unknown engine `{other}`; use sqlite, postgres or kafka"),
    };
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, yaml)?;
    let mut command = Command::new(&args.kinetic);
    command.args([
        "up",
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--store",
        &store,
        // The subscriber is on loopback, which the egress guard refuses by default.
        "--egress-allow",
        "loopback",
        "-f",
    ]);
    command.arg(&file).arg("--state-dir").arg(dir.path());
    command.args(&variant.flags);
    if let Some((cert, key, _)) = &variant.tls {
        command
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
    }
    if let Some(bootstrap) = kafka {
        command.args([
            "--kafka-bootstrap-servers",
            bootstrap,
            "--kafka-topic-partitions",
            "3",
            // The baseline consumer's setting: nisshi does not answer a waiting fetch when data
            // arrives, so the longest wait is the latency floor of every consumer.
            "--kafka-property",
            "fetch.wait.max.ms=5",
        ]);
    }
    // Warnings, and the line that says where it listens.
    command.env("KINETIC_LOG", "warn,kinetic::server=info");
    let process = Process::start(command, false).with_context(|| {
        format!(
            "starting {} (build it with `cargo build --release`)",
            args.kinetic.display()
        )
    })?;
    let scheme = if variant.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{}", process.address);
    let server = Server {
        admin: process
            .admin_url
            .clone()
            .context("kinetic up did not say where its admin listener is")?,
        _process: process,
        base: base.clone(),
        dir,
        database,
    };
    let client = client_trusting(variant.tls.as_ref().map(|(_, _, ca)| ca.as_path()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("kinetic did not become ready on {base}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the dispatcher claim its cursors (or its Kafka consumers join their groups) first.
    tokio::time::sleep(Duration::from_millis(if kafka.is_some() {
        3000
    } else {
        500
    }))
    .await;
    Ok(server)
}

async fn stop(server: Server) {
    let database = server.database.clone();
    drop(server);
    if let Some(database) = database {
        let _ = database.drop_database().await;
    }
}

/// The ingress (SQLite, 1 trigger) open, behind an EventPolicy with a JWT on every request, and
/// over TLS: three kinetic processes measured in turn, `repeat` rounds, medians, ratios to the open
/// one.
async fn auth_rows(args: &Args, sink_address: SocketAddr, sink: &Arc<Sink>) -> anyhow::Result<()> {
    let trigger = format!(
        "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t0}}\nspec:\n  broker: bench\n  filters: [{{exact: {{type: dev.kinetic.bench}}}}]\n  subscriber: {{uri: 'http://{sink_address}/t0'}}\n"
    );
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: bench}\n";
    let open_yaml = format!("{broker}{trigger}");
    let policy_yaml = format!(
        "{open_yaml}---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {{name: bench}}\nspec:\n  to: [{{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: bench}}}}]\n  from: [{{sub: 'system:serviceaccount:default:bench-*'}}]\n  filters: [{{prefix: {{type: dev.kinetic.}}}}]\n"
    );
    // A test CA and a certificate for 127.0.0.1, made with Python's `cryptography`.
    let certs = tempfile::tempdir()?;
    let python = args.crypto_python.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/kinetic-pyjwt/bin/python")
    });
    let made = Command::new(&python)
        .arg("tests/support/crypto_tool.py")
        .arg("tls")
        .arg(certs.path())
        .arg("server")
        .output()
        .with_context(|| {
            format!(
                "running {} (scripts/ensure-pyjwt.sh installs it)",
                python.display()
            )
        })?;
    if !made.status.success() {
        bail!(
            "making the TLS certificate: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let tls = Variant {
        flags: Vec::new(),
        tls: Some((
            certs.path().join("server.pem"),
            certs.path().join("server.key"),
            certs.path().join("ca.pem"),
        )),
    };
    let open = start_variant(args, "sqlite", &open_yaml, None, &Variant::default()).await?;
    let guarded = start_variant(args, "sqlite", &policy_yaml, None, &Variant::default()).await?;
    let secure = start_variant(args, "sqlite", &open_yaml, None, &tls).await?;
    // The sender's token, from kinetic's own issuer.
    let token = Command::new(&args.kinetic)
        .args([
            "token",
            "create",
            "--sub",
            "system:serviceaccount:default:bench-sender",
        ])
        .args([
            "--audience",
            "eventing.knative.dev/broker/default/bench",
            "--ttl",
            "1h",
        ])
        .args(["--server", &guarded.admin])
        .arg("--state-dir")
        .arg(guarded.dir.path())
        .output()?;
    if !token.status.success() {
        bail!(
            "kinetic token create: {}",
            String::from_utf8_lossy(&token.stderr)
        );
    }
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let plain = client_trusting(None)?;
    let with_token = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .default_headers(headers)
        .build()?;
    let over_tls = client_trusting(tls.tls.as_ref().map(|(_, _, ca)| ca.as_path()))?;
    // Fresh tokens, one per request, signed with the guarded kinetic's own key: every request
    // pays a signature verification (no cache hit).
    let issuer = kinetic_auth::Issuer::load_or_create(guarded.dir.path(), &guarded.base)?;
    let fresh = || -> anyhow::Result<String> {
        Ok(issuer.sign(
            &format!(
                "system:serviceaccount:default:bench-{}",
                uuid::Uuid::new_v4().simple()
            ),
            "eventing.knative.dev/broker/default/bench",
            Duration::from_secs(3600),
        )?)
    };
    let rows = [
        (
            "auth: events/s → 2xx, open (allow-all)",
            &open,
            &plain,
            false,
        ),
        (
            "auth: … EventPolicy, the sender's JWT",
            &guarded,
            &with_token,
            false,
        ),
        (
            "auth: … EventPolicy, a new JWT each request",
            &guarded,
            &plain,
            true,
        ),
        (
            "auth: … over TLS (both listeners)",
            &secure,
            &over_tls,
            false,
        ),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..args.repeat {
        for (index, (_, server, client, new_tokens)) in rows.iter().enumerate() {
            let url = format!("{}/default/bench", server.base);
            let sign: Option<&dyn Fn() -> anyhow::Result<String>> =
                if *new_tokens { Some(&fresh) } else { None };
            runs[index].push(
                throughput_signed(client, &url, sink, args.events, args.concurrency, 1, sign)
                    .await?,
            );
        }
    }
    let medians: Vec<f64> = runs.into_iter().map(median).collect();
    for (index, (what, _, _, _)) in rows.iter().enumerate() {
        println!(
            "{:<44} {:>14} {:>14} {:>8}",
            what,
            format!("{:.0}", medians[index]),
            format!("{:.0}", medians[0]),
            format!("{:.2}", medians[index] / medians[0])
        );
    }
    stop(open).await;
    stop(guarded).await;
    stop(secure).await;
    Ok(())
}

/// An OTLP/HTTP collector that takes every export (200, empty body) and counts requests and bytes.
async fn start_collector() -> anyhow::Result<(SocketAddr, Arc<(AtomicU64, AtomicU64)>)> {
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let seen = counts.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.0.fetch_add(1, Ordering::Relaxed);
                seen.1.fetch_add(body.len() as u64, Ordering::Relaxed);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((address, counts))
}

/// SQLite, 1 trigger, with traces off and exported to a collector of the run at sampling ratios
/// 0.01 and 1: three kinetic processes measured in turn, `repeat` rounds, medians, ratios to the
/// one without traces.
async fn tracing_rows(
    args: &Args,
    sink_address: SocketAddr,
    sink: &Arc<Sink>,
) -> anyhow::Result<()> {
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: bench}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t0}}\nspec:\n  broker: bench\n  filters: [{{exact: {{type: dev.kinetic.bench}}}}]\n  subscriber: {{uri: 'http://{sink_address}/t0'}}\n"
    );
    let (collector, exported) = start_collector().await?;
    let traced = |ratio: &str| Variant {
        flags: vec![
            "--otlp-endpoint".into(),
            format!("http://{collector}/v1/traces"),
            "--trace-sampling-ratio".into(),
            ratio.into(),
        ],
        tls: None,
    };
    let off = start_variant(args, "sqlite", &yaml, None, &Variant::default()).await?;
    let sampled = start_variant(args, "sqlite", &yaml, None, &traced("0.01")).await?;
    let all = start_variant(args, "sqlite", &yaml, None, &traced("1")).await?;
    let client = client_trusting(None)?;
    let rows = [
        ("tracing: events/s → 2xx, traces off", &off),
        ("tracing: … OTLP export, sampling 0.01", &sampled),
        ("tracing: … OTLP export, sampling 1", &all),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..args.repeat {
        for (index, (_, server)) in rows.iter().enumerate() {
            let url = format!("{}/default/bench", server.base);
            runs[index]
                .push(throughput(&client, &url, sink, args.events, args.concurrency, 1).await?);
        }
    }
    let medians: Vec<f64> = runs.into_iter().map(median).collect();
    for (index, (what, _)) in rows.iter().enumerate() {
        println!(
            "{:<44} {:>14} {:>14} {:>8}",
            what,
            format!("{:.0}", medians[index]),
            format!("{:.0}", medians[0]),
            format!("{:.2}", medians[index] / medians[0])
        );
    }
    // What is left is exported within the batch processor's delay (5 s) before the processes stop.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop(off).await;
    stop(sampled).await;
    stop(all).await;
    let events = (args.events * args.repeat) as f64;
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "tracing: OTLP bytes exported per event (both)",
        format!("{:.0}", exported.1.load(Ordering::Relaxed) as f64 / events),
        format!("{} posts", exported.0.load(Ordering::Relaxed)),
        ""
    );
    Ok(())
}

/// `tests/support/small_subscriber.py one-at-a-time`: Python's `http.server` as many webhook
/// receivers are written, stopped (by PID) when dropped.
struct SmallSubscriber {
    child: std::process::Child,
    url: String,
}

impl SmallSubscriber {
    fn start() -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/support/small_subscriber.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("one-at-a-time")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting python3 {}", script.display()))?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("its stdout")?).read_line(&mut line)?;
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            bail!("small_subscriber.py printed {line:?}, not a port");
        };
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn accepted(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        let text = client
            .get(format!("{}/count", self.url))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for SmallSubscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts `count` events to `url` from `senders` concurrent senders, then waits (at most 60 s)
/// until `subscriber` accepted them; the seconds that took and how many arrived.
async fn small_burst(
    client: &reqwest::Client,
    url: &str,
    subscriber: &SmallSubscriber,
    count: usize,
    senders: usize,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let ids: Vec<String> = (0..count).map(|i| format!("small-{i}")).collect();
    futures::stream::iter(ids.iter())
        .map(|id| async move { event_request(client, url, id).send().await })
        .buffer_unordered(senders)
        .for_each(|_| async {})
        .await;
    let deadline = started + Duration::from_secs(60);
    loop {
        let accepted = subscriber.accepted(client).await?;
        if accepted >= count as u64 || Instant::now() >= deadline {
            return Ok((started.elapsed().as_secs_f64(), accepted));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 400 events from 16 senders to a small subscriber (one request at a time, listen backlog 5,
/// HTTP/1.0) through kinetic (SQLite, 1 trigger), beside the same events posted straight to it one
/// at a time (its capacity), `repeat` rounds, medians.
async fn small_subscriber_rows(args: &Args) -> anyhow::Result<()> {
    const EVENTS: usize = 400;
    const SENDERS: usize = 16;
    // A connection per request, as the subscriber speaks HTTP/1.0.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let (mut through, mut direct, mut arrived) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        let subscriber = SmallSubscriber::start()?;
        // Its capacity: the same events posted straight to it, one at a time (16 at once would
        // overflow its accept queue just the same).
        let (seconds, _) = small_burst(
            &client,
            &format!("{}/", subscriber.url),
            &subscriber,
            EVENTS,
            1,
        )
        .await?;
        direct.push(seconds);
        drop(subscriber);
        let subscriber = SmallSubscriber::start()?;
        let yaml = format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: bench}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: small}}\nspec:\n  broker: bench\n  subscriber: {{uri: '{}/'}}\n",
            subscriber.url
        );
        let server = start_kinetic_with(args, "sqlite", &yaml, None).await?;
        let (seconds, count) = small_burst(
            &client,
            &format!("{}/default/bench", server.base),
            &subscriber,
            EVENTS,
            SENDERS,
        )
        .await?;
        through.push(seconds);
        arrived.push(count as f64);
        stop(server).await;
    }
    let (through, direct) = (median(through), median(direct));
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        format!("small subscriber: s for {EVENTS} events, {SENDERS} senders"),
        format!("{through:.2}"),
        format!("{direct:.2}"),
        format!("{:.1}", through / direct)
    );
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "small subscriber: events arrived (median)",
        format!("{:.0}", median(arrived)),
        format!("{EVENTS}"),
        ""
    );
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (sink_address, sink) = start_sink().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    let direct = format!("http://{sink_address}/direct");

    // Warm up the generator and the sink, then the baseline.
    blast(
        &client,
        &direct,
        &(0..2000).map(|i| i.to_string()).collect::<Vec<_>>(),
        args.concurrency,
    )
    .await?;
    let mut baseline = Vec::new();
    for _ in 0..args.repeat {
        baseline.push(throughput(&client, &direct, &sink, args.events, args.concurrency, 1).await?);
    }
    let baseline = median(baseline);
    let base = latency(&client, &direct, &sink, args.rate, args.seconds).await?;
    let relay = format!(
        "http://{}/default/bench",
        start_relay(sink_address, client.clone()).await?
    );
    let mut relayed = Vec::new();
    for _ in 0..args.repeat {
        relayed.push(throughput(&client, &relay, &sink, args.events, args.concurrency, 1).await?);
    }
    let relayed = median(relayed);

    println!(
        "kinetic end-to-end benchmark: {} events per throughput run (median of {}), {} in flight, latency at {} events/s for {} s",
        args.events, args.repeat, args.concurrency, args.rate, args.seconds
    );
    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "measurement", "kinetic", "baseline", "ratio"
    );
    println!("{:<44} {:>14} {:>14} {:>8}", "", "", "(direct post;", "");
    println!("{:<44} {:>14} {:>14} {:>8}", "", "", "kafka: plain", "");
    println!("{:<44} {:>14} {:>14} {:>8}", "", "", "rdkafka)", "");
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "relay without a store: events/s POST → 2xx",
        format!("{relayed:.0}"),
        format!("{baseline:.0}"),
        format!("{:.2}", relayed / baseline)
    );
    // One Kafka-protocol broker for the run, when the Kafka class or KafkaSource is measured.
    let kafka_broker = if args.engines.iter().any(|e| e.starts_with("kafka")) {
        Some(
            kinetic_testkit::nisshi::TestBroker::start()
                .context("the kafka engine needs nisshi: run scripts/ensure-kafka.sh")?,
        )
    } else {
        None
    };
    let bootstrap = kafka_broker.as_ref().map(|b| b.bootstrap_servers.clone());
    for engine in &args.engines {
        if engine == "auth" {
            auth_rows(&args, sink_address, &sink).await?;
            continue;
        }
        if engine == "small" {
            small_subscriber_rows(&args).await?;
            continue;
        }
        if engine == "tracing" {
            tracing_rows(&args, sink_address, &sink).await?;
            continue;
        }
        if engine == "kafka-source" {
            let bootstrap = bootstrap
                .as_deref()
                .context("a Kafka broker for kafka-source")?;
            for ordering in ["ordered", "unordered"] {
                kafka_source_rows(&args, bootstrap, sink_address, &sink, ordering).await?;
            }
            continue;
        }
        let kafka = (engine == "kafka")
            .then_some(bootstrap.as_deref())
            .flatten();
        // Baselines of the Kafka rows: a plain consumer reading the broker's topic (measured after
        // the first throughput runs filled it) and a plain producer → consumer pair.
        let mut kafka_read_rate: Option<f64> = None;
        let kafka_latency = match kafka {
            Some(bootstrap) => Some(
                kafka::produce_consume_latency(bootstrap, args.rate, args.seconds)
                    .await
                    .context("the plain Kafka latency baseline")?,
            ),
            None => None,
        };
        for &triggers in &args.triggers {
            let server = start_kinetic(&args, engine, sink_address, triggers, kafka).await?;
            let url = format!("{}/default/bench", server.base);
            let mut runs = Vec::new();
            for _ in 0..args.repeat {
                runs.push(
                    throughput(
                        &client,
                        &url,
                        &sink,
                        args.events,
                        args.concurrency,
                        triggers as u64,
                    )
                    .await?,
                );
            }
            let value = median(runs);
            if let Some(bootstrap) = kafka
                && kafka_read_rate.is_none()
            {
                let rate = kafka::consume_rate(
                    bootstrap,
                    "knative-broker-default-bench",
                    args.events * args.repeat,
                )
                .await
                .context("the plain Kafka consumer baseline")?;
                kafka_read_rate = Some(rate);
            }
            let baseline = kafka_read_rate.unwrap_or(baseline);
            println!(
                "{:<44} {:>14} {:>14} {:>8}",
                if triggers == 0 {
                    format!("{engine}: events/s ingress 202 only, no trigger")
                } else {
                    format!("{engine}: events/s ingress → 2xx, {triggers} trigger(s)")
                },
                format!("{value:.0}"),
                format!("{baseline:.0}"),
                format!("{:.2}", value / baseline)
            );
            if kafka.is_none() && triggers <= 1 {
                // The same events 100 to a POST: one group-commit entry each.
                let mut runs = Vec::new();
                for _ in 0..args.repeat {
                    runs.push(
                        throughput_batched(
                            &client,
                            &url,
                            &sink,
                            (args.events, 100),
                            args.concurrency.div_ceil(8),
                            triggers as u64,
                        )
                        .await?,
                    );
                }
                let batched = median(runs);
                println!(
                    "{:<44} {:>14} {:>14} {:>8}",
                    format!("{engine}: … in batches of 100 (÷ single events)"),
                    format!("{batched:.0}"),
                    format!("{value:.0}"),
                    format!("{:.2}", batched / value)
                );
            }
            if triggers == 1 {
                let measured = latency(&client, &url, &sink, args.rate, args.seconds).await?;
                // For the Kafka class the baseline is a plain producer → consumer pair; it has no
                // HTTP answer, so the 202 rows keep the direct post.
                let base = match kafka_latency {
                    Some(delivered) => Latency {
                        delivered,
                        answered: base.answered,
                    },
                    None => Latency {
                        delivered: base.delivered,
                        answered: base.answered,
                    },
                };
                let rows = [
                    (
                        "p50 ms POST → subscriber",
                        measured.delivered.0,
                        base.delivered.0,
                    ),
                    (
                        "p99 ms POST → subscriber",
                        measured.delivered.1,
                        base.delivered.1,
                    ),
                    (
                        "p50 ms POST → answer (202)",
                        measured.answered.0,
                        base.answered.0,
                    ),
                    (
                        "p99 ms POST → answer (202)",
                        measured.answered.1,
                        base.answered.1,
                    ),
                ];
                for (what, value, baseline) in rows {
                    println!(
                        "{:<44} {:>14} {:>14} {:>8}",
                        format!("{engine}: {what} at {}/s", args.rate),
                        format!("{value:.2}"),
                        format!("{baseline:.2}"),
                        format!("{:.1}", value / baseline)
                    );
                }
            }
            stop(server).await;
        }
    }
    Ok(())
}
