//! Instructions per event, end to end, counted by callgrind: a number this machine's noise does
//! not move.
//!
//! `kinetic up` (one broker, one trigger to a local subscriber) runs under
//! `valgrind --tool=callgrind` twice, once for a short and once for a long run of events posted
//! with 16 in flight; each run ends when every event reached the subscriber, then kinetic stops on
//! SIGTERM and callgrind writes its totals. The difference of the two totals over the difference of
//! the two run lengths is the cost of one event (ingress, commit, delivery, cursor), start-up and
//! shutdown cancelling out. Batch sizes still depend on timing, so compare runs of one machine.
//!
//!     cargo build --release -p kinetic -p kinetic-bench
//!     target/release/kinetic-instructions-bench [--engine postgres] [--short 1000 --long 3000]
//!         [--batch 100 --triggers 0]
//!
//! Needs valgrind (Debian's `valgrind`); PostgreSQL from `KINETIC_TEST_POSTGRES_URL` for
//! `--engine postgres`. Prints where callgrind's output files are kept, for `callgrind_annotate`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use kinetic_testkit::kinetic::Process;
use kinetic_testkit::postgres::ScratchDatabase;

#[derive(Parser)]
#[command(about = "Instructions per event through kinetic, from two callgrind runs")]
struct Args {
    #[arg(long, default_value = "target/release/kinetic")]
    kinetic: PathBuf,
    /// `sqlite` or `postgres`.
    #[arg(long, default_value = "sqlite")]
    engine: String,
    #[arg(long, default_value_t = 1_000)]
    short: u64,
    #[arg(long, default_value_t = 3_000)]
    long: u64,
    /// Events per POST: 1 sends each in binary mode; more sends CloudEvents batches of this size
    /// (structured JSON, one group-commit entry each).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Triggers on the broker: 1 (to a local subscriber) or 0 (the ingress alone: a run ends when
    /// every POST was answered).
    #[arg(long, default_value_t = 1)]
    triggers: u8,
    #[arg(long, default_value = "valgrind")]
    valgrind: PathBuf,
    /// PostgreSQL admin URL (a database is created and dropped per run).
    #[arg(
        long,
        env = "KINETIC_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Where callgrind's output files go (default: a new directory under the system's temporary
    /// directory, kept).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The data of every event.
const PAYLOAD: &str =
    r#"{"order":12345,"item":"widget","amount":250,"note":"a typical small event payload"}"#;

/// One run of `events` events; callgrind's total instructions.
async fn run(args: &Args, events: u64, out: &Path) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let (subscriber, delivered) = kinetic_testkit::receiver::start_counter().await?;
    let mut database = None;
    let store = match args.engine.as_str() {
        "sqlite" => format!("sqlite://{}", dir.path().join("state.db").display()),
        "postgres" => {
            let scratch = ScratchDatabase::create_on(&args.postgres, "kinetic_callgrind")
                .await
                .context("creating a database on PostgreSQL")?;
            let url = scratch.url.clone();
            database = Some(scratch);
            url
        }
        other => bail!("--engine {other}: use sqlite or postgres"),
    };
    let mut yaml =
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: bench}\n".to_owned();
    if args.triggers > 0 {
        yaml.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t0}}\nspec:\n  broker: bench\n  subscriber: {{uri: 'http://{subscriber}/t0'}}\n"
        ));
    }
    let file = dir.path().join("resources.yaml");
    std::fs::write(&file, yaml)?;
    let output = out.join(format!("callgrind.{}.{events}.out", args.engine));
    let mut command = Command::new(&args.valgrind);
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", output.display()))
        .arg(&args.kinetic)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--gateway-listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .arg("--store")
        .arg(&store)
        .arg("-f")
        .arg(&file)
        .env("KINETIC_LOG", "warn,kinetic::server=info")
        .env("KINETIC_EGRESS_ALLOW", "loopback");
    let mut kinetic = Process::start(command, false).context("starting kinetic under valgrind")?;
    let url = format!("http://{}/default/bench", kinetic.address);
    let client = reqwest::Client::new();
    let failures = AtomicU64::new(0);
    let requests = events.div_ceil(args.batch);
    futures::stream::iter(0..requests)
        .for_each_concurrent(16, |request| {
            let (client, url, failures) = (&client, &url, &failures);
            async move {
                let sent = if args.batch == 1 {
                    client
                        .post(url)
                        .header("ce-specversion", "1.0")
                        .header("ce-id", format!("e-{request}"))
                        .header("ce-source", "/bench")
                        .header("ce-type", "dev.kinetic.bench")
                        .header("content-type", "application/json")
                        .body(PAYLOAD)
                        .send()
                        .await
                } else {
                    let first = request * args.batch;
                    let items: Vec<String> = (first..(first + args.batch).min(events))
                        .map(|n| {
                            format!(
                                r#"{{"specversion":"1.0","id":"e-{n}","source":"/bench","type":"dev.kinetic.bench","datacontenttype":"application/json","data":{PAYLOAD}}}"#
                            )
                        })
                        .collect();
                    client
                        .post(url)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(format!("[{}]", items.join(",")))
                        .send()
                        .await
                };
                if !sent.is_ok_and(|r| r.status().is_success()) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    if failures.load(Ordering::Relaxed) > 0 {
        bail!("{} posts failed", failures.load(Ordering::Relaxed));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while args.triggers > 0 && delivered.load(Ordering::Relaxed) < events {
        if Instant::now() > deadline {
            bail!(
                "{} of {events} delivered in 600 s; kinetic's log:\n{}",
                delivered.load(Ordering::Relaxed),
                kinetic.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(kinetic.pid())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    tokio::task::block_in_place(|| kinetic.wait());
    if let Some(database) = database {
        let _ = database.drop_database().await;
    }
    total_instructions(&output)
}

/// The `summary:` (or `totals:`) line of a callgrind output file: instructions executed.
fn total_instructions(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading callgrind's output {}", path.display()))?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary: ")
                .or_else(|| line.strip_prefix("totals: "))
        })
        .and_then(|numbers| numbers.split_whitespace().next())
        .context("no summary line in callgrind's output")?
        .parse()
        .context("callgrind's summary is not a number")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.long <= args.short {
        bail!("--long must be more than --short");
    }
    if args.batch == 0 || args.triggers > 1 {
        bail!("--batch must be at least 1, --triggers 0 or 1");
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => tempfile::Builder::new()
            .prefix("kinetic-callgrind-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&out)?;
    let short = run(&args, args.short, &out).await?;
    let long = run(&args, args.long, &out).await?;
    let per_event = long.saturating_sub(short) / (args.long - args.short);
    println!(
        "instructions per event, {} ({} trigger(s), {} event(s) per POST, callgrind):",
        args.engine, args.triggers, args.batch
    );
    println!("  {:>6} events: {short:>14} instructions", args.short);
    println!("  {:>6} events: {long:>14} instructions", args.long);
    println!(
        "  per event (difference): {per_event}; start-up and shutdown: {}",
        short.saturating_sub(per_event * args.short)
    );
    println!("  callgrind output: {}", out.display());
    Ok(())
}
