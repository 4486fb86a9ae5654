//! End-to-end benchmark of kinetic's user jobs, each beside a baseline measured in the same run:
//!
//! - **orders** (queue consumer functions, `examples/queue-consumer`): orders produced to a Kafka
//!   topic, read by a KafkaSource, delivered through the broker to `order-fn` (a Service scaling
//!   from zero, ordered per customer) until every `processed` reply reached the receiver; baseline:
//!   a plain rdkafka consumer reading the same topic. Needs nisshi (`scripts/ensure-kafka.sh`).
//!
//! - **signed deliveries** (webhook subscriptions, `examples/webhooks`): events posted to a broker
//!   and delivered to an outside endpoint with Standard Webhooks signatures; baseline: the same
//!   without signing, in the same run.
//!
//! - **thumbnails** (object-upload image processing, `examples/image-pipeline`): photo-like JPEGs
//!   (and a share of PNG screenshots) uploaded under `uploads/` of a moto S3 bucket that notifies
//!   an SQS queue, read by the example's S3Source, filtered by its trigger and thumbnailed by
//!   `examples/thumbnailer` (a Service scaling from zero), until every
//!   `dev.kinetic.thumbnail.created` reply reached the receiver, timed from the first upload;
//!   baseline: the thumbnailer run directly with the Service's environment, sent the same S3
//!   CloudEvents (the bucket's own notification records, objects already uploaded) as many at a
//!   time as the Service may take (containerConcurrency × max-scale). Needs moto
//!   (`scripts/ensure-moto.sh`).
//!
//! Run it with `bash bench/jobs.sh`; `--only thumbnails,signed` picks rows. A row whose broker or
//! emulator is not installed is skipped with a message, unless `--only` names it. The machine is
//! shared and noisy: read ratios and medians. With `JOBS_BENCH_METRICS=1` each run also prints
//! kinetic's delivery counters and attempt times to stderr, to see where the time goes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt as _;

// Shared with kinetic-bench, which uses all of it; this benchmark only reads topics.
#[allow(dead_code)]
#[path = "../kafka.rs"]
mod kafka;
use kinetic_testkit::kinetic::Process;
use kinetic_testkit::moto;
#[path = "jobs/photos.rs"]
mod photos;
#[path = "jobs/thumbnails.rs"]
mod thumbnails;

/// The rows of the table; `--only` picks some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Job {
    /// orders/s through KafkaSource, broker and function (needs nisshi).
    Orders,
    /// Signed webhook deliveries/s beside unsigned ones.
    Signed,
    /// uploads/s through S3, SQS, S3Source, broker and the thumbnailer (needs moto).
    Thumbnails,
}

#[derive(Debug, Parser)]
struct Args {
    /// The kinetic binary to measure.
    #[arg(long, default_value = "target/release/kinetic")]
    kinetic: PathBuf,
    /// Rows to measure, e.g. `--only thumbnails,signed`; default: all, skipping those whose broker
    /// or emulator is not installed.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Option<Vec<Job>>,
    /// The queue-consumer example's function and producer.
    #[arg(long, default_value = "target/release/order-fn")]
    order_fn: PathBuf,
    #[arg(long, default_value = "target/release/orders-produce")]
    orders_produce: PathBuf,
    /// Orders per run. Enough that start-up (the consumer group's join, the function's cold
    /// start) is a small part of the run: at 5,000, medians swung 4× from run to run.
    #[arg(long, default_value_t = 20_000)]
    orders: u64,
    /// Customers (ordered lanes) the orders are spread over.
    #[arg(long, default_value_t = 50)]
    customers: u64,
    /// Events per signed-deliveries run.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// The image-pipeline example's function.
    #[arg(long, default_value = "target/release/thumbnailer")]
    thumbnailer: PathBuf,
    /// Images uploaded per thumbnails run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    images: u64,
    /// One image in this many is a PNG screenshot, the others photo-like JPEGs (0: JPEGs only).
    #[arg(long, default_value_t = 10)]
    png_every: u64,
    /// Uploads in flight at once in a thumbnails run.
    #[arg(long, default_value_t = 8)]
    upload_concurrency: usize,
    /// Repetitions; the median is printed.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

impl Args {
    /// Whether the row is measured.
    fn wants(&self, job: Job) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(&job))
    }

    /// Whether `--only` names the row: then a missing broker or emulator is an error.
    fn insists(&self, job: Job) -> bool {
        self.only.as_ref().is_some_and(|only| only.contains(&job))
    }
}

struct Kinetic {
    process: Process,
    /// The public listener.
    base: String,
    /// The admin listener, and a client that sends its token.
    admin: String,
    api: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Kinetic {
    /// The last `lines` lines kinetic wrote to stderr.
    fn log_tail(&self, lines: usize) -> String {
        let log = self.process.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

async fn start_kinetic(args: &Args, yaml: &str) -> anyhow::Result<Kinetic> {
    start_kinetic_with(args, yaml, None, &[]).await
}

/// `kinetic up -f` the resources `yaml` on a fresh SQLite store, with the process configuration
/// file `config` (`--config`) when given and the environment variables `env`; waits (at most 30 s)
/// until it is ready.
async fn start_kinetic_with(
    args: &Args,
    yaml: &str,
    config: Option<&str>,
    env: &[(&str, &str)],
) -> anyhow::Result<Kinetic> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, yaml)?;
    let mut command = Command::new(&args.kinetic);
    command
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--gateway-listen", "127.0.0.1:0", "--store"])
        .arg(format!(
            "sqlite://{}",
            dir.path().join("state.db").display()
        ))
        .arg("-f")
        .arg(&file);
    if let Some(config) = config {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config)?;
        command.arg("--config").arg(path);
    }
    command
        .envs(env.iter().copied())
        // Warnings, and the line that says where it listens.
        .env("KINETIC_LOG", "warn,kinetic::server=info")
        .env("KINETIC_EGRESS_ALLOW", "loopback")
        .env(
            "BENCH_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .env("KINETIC_SECRET_ENV", "BENCH_WEBHOOK_SECRET,AWS_*");
    let process = Process::start(command, false)
        .with_context(|| format!("starting {}", args.kinetic.display()))?;
    let base = format!("http://{}", process.address);
    let mut kinetic = Kinetic {
        admin: process
            .admin_url
            .clone()
            .context("kinetic up did not say where its admin listener is")?,
        process,
        base: base.clone(),
        api: reqwest::Client::new(),
        dir,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            // The admin token kinetic made in its state directory.
            let token = std::fs::read_to_string(kinetic.dir.path().join("admin-token"))?;
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()).parse()?,
            );
            kinetic.api = reqwest::Client::builder()
                .default_headers(headers)
                .build()?;
            return Ok(kinetic);
        }
        if Instant::now() > deadline {
            bail!(
                "kinetic did not become ready; its log:\n{}",
                kinetic.log_tail(200)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_count(count: &AtomicU64, target: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while count.load(Ordering::Relaxed) < target {
        if Instant::now() > deadline {
            bail!(
                "only {} of {target} arrived within {timeout:?}",
                count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One orders run on a fresh topic and kinetic: orders/s through kinetic, and a plain consumer's
/// read rate of the same topic.
async fn orders_run(args: &Args, bootstrap: &str) -> anyhow::Result<(f64, f64)> {
    let topic = format!("orders-{}", uuid::Uuid::new_v4().simple());
    kinetic_kafka::ensure_topic(
        &kinetic_kafka::Settings::new(bootstrap),
        &topic,
        3,
        1,
        Duration::from_secs(10),
    )
    .await?;
    let (receiver, processed) = kinetic_testkit::receiver::start_counter().await?;
    let example = include_str!("../../../examples/queue-consumer/orders.yaml");
    let yaml = example
        .replace("127.0.0.1:9092", bootstrap)
        .replace("topics: [orders]", &format!("topics: [{topic}]"))
        // A group of its own per run: a group an earlier run's kinetic (killed, not closed) is
        // still a member of would make this one wait for that member's session to time out.
        .replace(
            "consumerGroup: kinetic-orders",
            &format!("consumerGroup: {topic}"),
        )
        .replace(
            "target/release/order-fn",
            &args.order_fn.display().to_string(),
        )
        .replace("value: \"5\"", "value: \"0\"")
        .replace("http://127.0.0.1:9090/", &format!("http://{receiver}/"));
    let kinetic = start_kinetic(args, &yaml).await?;
    let started = Instant::now();
    let produced = Command::new(&args.orders_produce)
        .args(["--bootstrap", bootstrap, "--topic", &topic])
        .args(["--count", &args.orders.to_string()])
        .args(["--customers", &args.customers.to_string()])
        .output()
        .with_context(|| format!("running {}", args.orders_produce.display()))?;
    if !produced.status.success() {
        bail!(
            "orders-produce failed: {}",
            String::from_utf8_lossy(&produced.stderr)
        );
    }
    // With JOBS_BENCH_METRICS set, how far each stage is every half second (on stderr).
    let sampler = std::env::var("JOBS_BENCH_METRICS").is_ok().then(|| {
        let (api, admin) = (kinetic.api.clone(), kinetic.admin.clone());
        tokio::spawn(async move {
            for _ in 0..1_200 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Ok(response) = api.get(format!("{admin}/metrics")).send().await else {
                    continue;
                };
                let text = response.text().await.unwrap_or_default();
                let counts: Vec<String> = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("kinetic_broker_events_accepted_total")
                            || (l.starts_with("kinetic_dispatcher_deliveries_total")
                                && l.contains("delivered"))
                    })
                    .map(|l| l.rsplit(' ').next().unwrap_or("?").to_owned())
                    .collect();
                eprintln!(
                    "{:>6.1} s {}",
                    started.elapsed().as_secs_f64(),
                    counts.join(" ")
                );
            }
        })
    });
    wait_count(&processed, args.orders, Duration::from_secs(600)).await?;
    let rate = args.orders as f64 / started.elapsed().as_secs_f64();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    if std::env::var("JOBS_BENCH_METRICS").is_ok() {
        let metrics = kinetic
            .api
            .get(format!("{}/metrics", kinetic.admin))
            .send()
            .await?
            .text()
            .await?;
        for line in metrics.lines().filter(|l| {
            l.starts_with("kinetic_dispatcher_deliveries_total")
                || l.contains("attempt_duration_seconds_sum")
                || l.contains("attempt_duration_seconds_count")
                || l.contains("serving_request_duration_seconds_sum")
        }) {
            eprintln!("{line}");
        }
    }
    drop(kinetic);
    let baseline = kafka::consume_rate(bootstrap, &topic, args.orders as usize).await?;
    Ok((rate, baseline))
}

/// Deliveries per second from `events` POSTs to a broker until all reached the receiver, with or
/// without Standard Webhooks signing.
async fn deliveries_run(args: &Args, signed: bool) -> anyhow::Result<f64> {
    let (receiver, delivered) = kinetic_testkit::receiver::start_counter().await?;
    let signing = if signed {
        "spec:\n  delivery:\n    signing:\n      standardWebhooks:\n        secrets: [{env: BENCH_WEBHOOK_SECRET}]\n"
    } else {
        ""
    };
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n{signing}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: endpoint}}\nspec:\n  broker: default\n  subscriber: {{uri: 'http://{receiver}/hook'}}\n"
    );
    let kinetic = start_kinetic(args, &yaml).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{}/default/default", kinetic.base);
    let body =
        r#"{"order":12345,"item":"widget","amount":250,"note":"a typical small event payload"}"#;
    let started = Instant::now();
    let failures = AtomicU64::new(0);
    futures::stream::iter(0..args.events)
        .for_each_concurrent(64, |index| {
            let request = client
                .post(&url)
                .header("ce-specversion", "1.0")
                .header("ce-id", format!("e-{index}"))
                .header("ce-source", "/bench")
                .header("ce-type", "dev.kinetic.bench")
                .header("content-type", "application/json")
                .body(body);
            let failures = &failures;
            async move {
                if !request.send().await.is_ok_and(|r| r.status().is_success()) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    if failures.load(Ordering::Relaxed) > 0 {
        bail!("{} posts failed", failures.load(Ordering::Relaxed));
    }
    wait_count(&delivered, args.events, Duration::from_secs(300)).await?;
    Ok(args.events as f64 / started.elapsed().as_secs_f64())
}

/// One table row: the label and the baseline's description take one or more lines.
fn row(label: &str, kinetic: String, baseline: String, ratio: String, notes: &[&str]) {
    println!("{label:<52} {kinetic:>12} {baseline:>14} {ratio:>8}");
    for note in notes {
        println!("{:<52} {:>12} {note:>14} {:>8}", "", "", "");
    }
}

/// A row that could not be measured, and why.
fn skipped(label: &str, why: &str) {
    println!("{label:<52} skipped: {why}");
}

const ORDERS: &str = "orders/s Kafka → KafkaSource → broker → function";
const SIGNED: &str = "signed deliveries/s POST → broker → endpoint";
const THUMBNAILS: &str = "uploads/s S3 → S3Source → broker → thumbnailer";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut sizes = Vec::new();
    if args.wants(Job::Orders) {
        sizes.push(format!(
            "{} orders over {} customers",
            args.orders, args.customers
        ));
    }
    if args.wants(Job::Signed) {
        sizes.push(format!("{} webhook events", args.events));
    }
    // Made before anything is timed; the same images in every run.
    let images = if args.wants(Job::Thumbnails) {
        let images = photos::uploads(args.images, args.png_every);
        sizes.push(photos::describe(&images));
        images
    } else {
        Vec::new()
    };
    println!(
        "kinetic jobs benchmark: {} per run (median of {})",
        sizes.join(", "),
        args.repeat
    );
    println!();
    println!(
        "{:<52} {:>12} {:>14} {:>8}",
        "measurement", "kinetic", "baseline", "ratio"
    );
    if args.wants(Job::Orders) {
        // Without nisshi, TestBroker::start says so on stderr and gives None.
        match kinetic_testkit::nisshi::TestBroker::start() {
            Some(broker) => {
                for binary in [&args.order_fn, &args.orders_produce] {
                    if !binary.exists() {
                        bail!(
                            "{} is missing; build it with `cargo build --release -p order-fn`",
                            binary.display()
                        );
                    }
                }
                let mut rates = Vec::new();
                let mut baselines = Vec::new();
                for _ in 0..args.repeat {
                    let (rate, baseline) = orders_run(&args, &broker.bootstrap_servers).await?;
                    rates.push(rate);
                    baselines.push(baseline);
                }
                let (rate, baseline) = (median(rates), median(baselines));
                row(
                    ORDERS,
                    format!("{rate:.0}"),
                    format!("{baseline:.0}"),
                    format!("{:.3}", rate / baseline),
                    &["(plain rdkafka", "consumer)"],
                );
            }
            None if args.insists(Job::Orders) => {
                bail!("the orders job needs nisshi: run `bash scripts/ensure-kafka.sh`")
            }
            None => skipped(
                ORDERS,
                "nisshi is not installed (bash scripts/ensure-kafka.sh)",
            ),
        }
    }
    if args.wants(Job::Signed) {
        let mut signed = Vec::new();
        let mut unsigned = Vec::new();
        for _ in 0..args.repeat {
            unsigned.push(deliveries_run(&args, false).await?);
            signed.push(deliveries_run(&args, true).await?);
        }
        let (signed, unsigned) = (median(signed), median(unsigned));
        row(
            SIGNED,
            format!("{signed:.0}"),
            format!("{unsigned:.0}"),
            format!("{:.2}", signed / unsigned),
            &["(unsigned)"],
        );
    }
    if args.wants(Job::Thumbnails) {
        if moto::server_path().is_some() {
            let mut rates = Vec::new();
            let mut baselines = Vec::new();
            let mut concurrency = 0;
            for _ in 0..args.repeat {
                let run = thumbnails::run(&args, &images).await?;
                rates.push(run.pipeline);
                baselines.push(run.baseline);
                concurrency = run.concurrency;
            }
            let (rate, baseline) = (median(rates), median(baselines));
            let at_once = format!("{concurrency} at a time)");
            row(
                THUMBNAILS,
                format!("{rate:.1}"),
                format!("{baseline:.1}"),
                format!("{:.2}", rate / baseline),
                &["(thumbnailer", "called directly,", &at_once],
            );
        } else if args.insists(Job::Thumbnails) {
            bail!("the thumbnails job needs moto: run `bash scripts/ensure-moto.sh`");
        } else {
            eprintln!("skipped: moto_server is not installed (run scripts/ensure-moto.sh)");
            skipped(
                THUMBNAILS,
                "moto is not installed (bash scripts/ensure-moto.sh)",
            );
        }
    }
    Ok(())
}
