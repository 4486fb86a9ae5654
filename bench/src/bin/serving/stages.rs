//! The measurements and their tables.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::http::{Tally, Target, closed_loop, get_once, open_loop};
use crate::procs::{
    Kinetic, children, free_port, rss_kib, spawn_function, start_bare_proxy, start_function,
};
use crate::split::{Split, Stack};
use crate::{Args, Stage};

const DOMAIN: &str = "kinetic.localhost";
pub(crate) const ALLOW_ZERO: &str = "autoscaler:\n  allow-zero-initial-scale: true\n";

pub(crate) fn host(service: &str) -> String {
    format!("{service}.default.{DOMAIN}")
}

/// A Service running the function, like the serving tests write them.
pub(crate) fn service_yaml(
    name: &str,
    function: &Path,
    annotations: &[(&str, String)],
    container_concurrency: Option<u32>,
    env: &[(&str, String)],
) -> String {
    let mut yaml = format!(
        "---\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("    metadata:\n      annotations:\n");
        for (key, value) in annotations {
            yaml.push_str(&format!(
                "        autoscaling.knative.dev/{key}: \"{value}\"\n"
            ));
        }
    }
    yaml.push_str("    spec:\n");
    if let Some(cc) = container_concurrency {
        yaml.push_str(&format!("      containerConcurrency: {cc}\n"));
    }
    let command = serde_json::to_string(&function.display().to_string()).unwrap_or_default();
    yaml.push_str(&format!(
        "      containers:\n        - command: [{command}]\n"
    ));
    if !env.is_empty() {
        let env: Vec<String> = env
            .iter()
            .map(|(name, value)| format!("{{name: {name}, value: \"{value}\"}}"))
            .collect();
        yaml.push_str(&format!("          env: [{}]\n", env.join(", ")));
    }
    yaml.push_str("          readinessProbe: {httpGet: {path: /}}\n");
    yaml
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[((values.len() - 1) as f64 * q).round() as usize]
}

pub(crate) fn aim(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// One load run, summarized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub rps: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub errors: u64,
}

impl Run {
    pub(crate) fn of(mut tally: Tally, seconds: f64) -> Run {
        let p = tally.percentiles_ms(&[0.50, 0.95, 0.99]);
        Run {
            rps: tally.micros.len() as f64 / seconds,
            p50: p[0],
            p95: p[1],
            p99: p[2],
            errors: tally.errors,
        }
    }

    /// The median of each field over `runs` (errors: the sum).
    pub(crate) fn median(runs: &[Run]) -> Run {
        let of = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Run {
            rps: of(|r| r.rps),
            p50: of(|r| r.p50),
            p95: of(|r| r.p95),
            p99: of(|r| r.p99),
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }
}

pub async fn run(mut args: Args) -> anyhow::Result<()> {
    for (path, what) in [
        (&mut args.kinetic, "kinetic"),
        (&mut args.function, "hello-fn"),
    ] {
        *path = std::fs::canonicalize(&*path).with_context(|| {
            format!(
                "{what} binary {} is missing; build it with `cargo build --release -p kinetic -p hello-fn`",
                path.display()
            )
        })?;
    }
    args.repeats = args.repeats.max(1);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "kinetic serving benchmark ({cores} cores; medians of {} runs, errors summed; ratios against baselines measured in this run)",
        args.repeats
    );
    let wants = |stage| args.only.contains(&stage);
    if wants(Stage::Throughput) || wants(Stage::Latency) {
        data_path(&args).await?;
    }
    if wants(Stage::Cold) || wants(Stage::Burst) {
        from_zero(&args).await?;
    }
    if wants(Stage::Rss) {
        memory(&args).await?;
    }
    if wants(Stage::Containers) {
        crate::containers::run(&args).await?;
    }
    if wants(Stage::Tracing) {
        crate::tracing::run(&args).await?;
    }
    Ok(())
}

/// Warns about instances that outlived kinetic (they were killed).
pub(crate) fn stop(kinetic: Kinetic) {
    let left = kinetic.stop();
    if !left.is_empty() {
        println!(
            "  ! {} instance(s) still ran after kinetic stopped (killed): {left:?}",
            left.len()
        );
    }
}

/// Stops the split stack; warns about instances that outlived it.
async fn stop_split(split: Split) {
    let left = split.stop().await;
    if !left.is_empty() {
        println!(
            "  ! {} instance(s) still ran after the autoscaler stopped (killed): {left:?}",
            left.len()
        );
    }
}

pub(crate) async fn expect_ok(kinetic: &impl Stack, service: &str) -> anyhow::Result<()> {
    match get_once(
        kinetic.gateway(),
        &host(service),
        "/",
        Duration::from_secs(30),
    )
    .await
    {
        Ok((200, _)) => Ok(()),
        Ok((status, body)) => bail!(
            "GET / on {service} answered {status}: {}\nkinetic's log:\n{}",
            String::from_utf8_lossy(&body),
            kinetic.log_tail(30)
        ),
        Err(error) => bail!(
            "GET / on {service}: {error:#}\nkinetic's log:\n{}",
            kinetic.log_tail(30)
        ),
    }
}

/// Throughput and latency: direct, bare proxy, kinetic (TBC 0 and TBC -1), interleaved per repeat
/// so that noise hits all of them alike.
async fn data_path(args: &Args) -> anyhow::Result<()> {
    let direct = start_function(&args.function).await?;
    let bare = start_bare_proxy(direct.address).await?;
    let one = |tbc: &str| {
        vec![
            ("min-scale", "1".to_owned()),
            ("max-scale", "1".to_owned()),
            ("target-burst-capacity", tbc.to_owned()),
        ]
    };
    let yaml = service_yaml("qp", &args.function, &one("0"), None, &[])
        + &service_yaml("act", &args.function, &one("-1"), None, &[]);
    let kinetic = Kinetic::up(&args.kinetic, &yaml, None).await?;
    let split = Split::start(&args.kinetic, &yaml, None).await?;
    let revisions = ["qp-00001".to_owned(), "act-00001".to_owned()];
    kinetic
        .wait_revisions(&revisions, Duration::from_secs(60), "ready", |s| {
            s["ready"] == 1
        })
        .await?;
    Stack::wait_revisions(&split, &revisions, Duration::from_secs(60), "ready", |s| {
        s["ready"] == 1
    })
    .await?;
    expect_ok(&kinetic, "qp").await?;
    expect_ok(&kinetic, "act").await?;
    expect_ok(&split, "qp").await?;
    expect_ok(&split, "act").await?;
    let target = |address: SocketAddr, host: &str| Target {
        address,
        host: host.into(),
    };
    let targets = [
        ("direct (hello-fn)", target(direct.address, "127.0.0.1")),
        ("bare proxy", target(bare.address, "127.0.0.1")),
        ("up, TBC 0", target(kinetic.gateway, &host("qp"))),
        (
            "up, TBC -1 (activator)",
            target(kinetic.gateway, &host("act")),
        ),
        ("split, TBC 0", target(split.gateway, &host("qp"))),
        (
            "split, TBC -1 (activator)",
            target(split.gateway, &host("act")),
        ),
    ];
    let warmup = Duration::from_secs(args.warmup);
    let rss_before = kinetic.rss_kib()?;

    if args.only.contains(&Stage::Throughput) {
        let seconds = Duration::from_secs(args.duration.max(1));
        println!();
        println!(
            "Throughput, closed loop: C connections sending back to back, {} s measured after {} s warm-up; latency in ms",
            seconds.as_secs(),
            args.warmup
        );
        println!(
            "{:<24} {:<28} {:>8} {:>7} {:>7} {:>7} {:>6} {:>7} {:>6} {:>6}  aim",
            "profile", "path", "req/s", "p50", "p95", "p99", "errors", "/direct", "/bare", "/up"
        );
        let profiles = [
            (
                "hello: GET /".to_owned(),
                "/".to_owned(),
                args.hello_connections,
            ),
            (
                format!("cpu: {} µs/request", args.work_us),
                format!("/?work_us={}", args.work_us),
                args.cpu_connections,
            ),
            (
                format!("io: sleeps {} ms", args.sleep_ms),
                format!("/?sleep_ms={}", args.sleep_ms),
                args.io_connections,
            ),
        ];
        for (index, (name, path, connections)) in profiles.iter().enumerate() {
            let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
            for _ in 0..args.repeats {
                for (slot, (_, target)) in targets.iter().enumerate() {
                    let tally = closed_loop(target, path, *connections, warmup, seconds).await;
                    runs[slot].push(Run::of(tally, seconds.as_secs_f64()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let runs: Vec<Run> = runs.iter().map(|r| Run::median(r)).collect();
            let (direct_rps, bare_rps) = (runs[0].rps, runs[1].rps);
            for (slot, ((label, _), run)) in targets.iter().zip(&runs).enumerate() {
                let profile = match slot {
                    0 => name.clone(),
                    1 => format!("  C={connections}"),
                    _ => String::new(),
                };
                let mut aims = Vec::new();
                // The same path in `kinetic up`, for the split rows.
                let up = (slot >= 4).then(|| runs[slot - 2].rps);
                if (2..4).contains(&slot) {
                    let bare = run.rps / bare_rps;
                    aims.push(format!("≥ 0.90 × bare: {}", aim(bare >= 0.90)));
                    if index == 2 {
                        let direct = run.rps / direct_rps;
                        aims.push(format!("≥ 0.95 × direct: {}", aim(direct >= 0.95)));
                    }
                }
                if let Some(up) = up {
                    aims.push(format!("≥ 0.80 × up: {}", aim(run.rps / up >= 0.80)));
                }
                println!(
                    "{:<24} {:<28} {:>8.0} {:>7.2} {:>7.2} {:>7.2} {:>6} {:>7.2} {:>6.2} {:>6}  {}",
                    profile,
                    label,
                    run.rps,
                    run.p50,
                    run.p95,
                    run.p99,
                    run.errors,
                    run.rps / direct_rps,
                    run.rps / bare_rps,
                    up.map(|up| format!("{:.2}", run.rps / up))
                        .unwrap_or_default(),
                    aims.join(", ")
                );
            }
        }
    }

    if args.only.contains(&Stage::Latency) {
        let seconds = Duration::from_secs(args.rate_seconds.max(1));
        let path = format!("/?sleep_ms={}", args.sleep_ms);
        println!();
        println!(
            "Latency at a fixed {} requests/s, open loop, GET {path}: {} s measured after {} s warm-up; ms",
            args.rate,
            seconds.as_secs(),
            args.warmup
        );
        println!(
            "{:<28} {:>8} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10}  aim",
            "path", "p50", "p95", "p99", "errors", "added p50", "added p95", "added p99"
        );
        let chosen = [0, 2, 3, 4, 5];
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); chosen.len()];
        for _ in 0..args.repeats {
            for (slot, &index) in chosen.iter().enumerate() {
                let tally = open_loop(&targets[index].1, &path, args.rate, warmup, seconds).await?;
                runs[slot].push(Run::of(tally, seconds.as_secs_f64()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let runs: Vec<Run> = runs.iter().map(|r| Run::median(r)).collect();
        let base = runs[0];
        for (slot, &index) in chosen.iter().enumerate() {
            let run = runs[slot];
            let added = if slot == 0 {
                ("".to_owned(), "".to_owned(), "".to_owned(), String::new())
            } else {
                (
                    format!("{:+.2}", run.p50 - base.p50),
                    format!("{:+.2}", run.p95 - base.p95),
                    format!("{:+.2}", run.p99 - base.p99),
                    if index >= 4 {
                        format!("added p95 ≤ 3 ms: {}", aim(run.p95 - base.p95 <= 3.0))
                    } else {
                        format!("added p95 ≤ 2 ms: {}", aim(run.p95 - base.p95 <= 2.0))
                    },
                )
            };
            println!(
                "{:<28} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>10} {:>10} {:>10}  {}",
                targets[index].0,
                run.p50,
                run.p95,
                run.p99,
                run.errors,
                added.0,
                added.1,
                added.2,
                added.3
            );
        }
    }

    let mut after = Vec::new();
    for revision in &revisions {
        let status = kinetic.revision(revision).await?;
        let split_status = Stack::revision(&split, revision).await?;
        after.push(format!(
            "{revision}: ready {} crashes {} (split: ready {} crashes {})",
            status["ready"], status["crashes"], split_status["ready"], split_status["crashes"]
        ));
    }
    println!(
        "  kinetic up RSS {:.1} MiB before the load runs, {:.1} MiB after; split's autoscaler, activator and gateway {:.1} MiB; {}",
        rss_before as f64 / 1024.0,
        kinetic.rss_kib()? as f64 / 1024.0,
        split.rss_kib()? as f64 / 1024.0,
        after.join("; ")
    );
    stop(kinetic);
    stop_split(split).await;
    drop(bare);
    drop(direct);
    Ok(())
}

/// Cold starts (the function's own start-up measured beside them) and a burst at zero.
async fn from_zero(args: &Args) -> anyhow::Result<()> {
    let cold: Vec<String> = (1..=args.cold_starts)
        .map(|i| format!("cold-{i}"))
        .collect();
    let bursts: Vec<String> = (1..=args.repeats).map(|i| format!("burst-{i}")).collect();
    let mut yaml = String::new();
    let mut all = Vec::new();
    if args.only.contains(&Stage::Cold) {
        for name in &cold {
            yaml += &service_yaml(
                name,
                &args.function,
                &[("initial-scale", "0".into())],
                None,
                &[],
            );
            all.push(format!("{name}-00001"));
        }
    }
    if args.only.contains(&Stage::Burst) {
        for name in &bursts {
            yaml += &service_yaml(
                name,
                &args.function,
                &[("initial-scale", "0".into())],
                Some(args.burst_cc),
                &[("MAX_CONCURRENCY", args.burst_cc.to_string())],
            );
            all.push(format!("{name}-00001"));
        }
    }
    for shape in ["up", "split"] {
        if shape == "up" {
            let kinetic = Kinetic::up(&args.kinetic, &yaml, Some(ALLOW_ZERO)).await?;
            zero_rows(args, &kinetic, shape, &all, &cold, &bursts).await?;
            stop(kinetic);
        } else {
            let split = Split::start(&args.kinetic, &yaml, Some(ALLOW_ZERO)).await?;
            zero_rows(args, &split, shape, &all, &cold, &bursts).await?;
            stop_split(split).await;
        }
    }
    Ok(())
}

/// The cold-start and burst rows of one shape.
async fn zero_rows(
    args: &Args,
    kinetic: &impl Stack,
    shape: &str,
    all: &[String],
    cold: &[String],
    bursts: &[String],
) -> anyhow::Result<()> {
    kinetic
        .wait_revisions(all, Duration::from_secs(60), "created at zero", |s| {
            s["service"].is_string() && s["ready"] == 0
        })
        .await?;
    // Let the autoscaler settle its first decisions for the new revisions.
    tokio::time::sleep(Duration::from_secs(1)).await;

    if args.only.contains(&Stage::Cold) {
        let mut spawned = Vec::new();
        let mut first = Vec::new();
        let mut startups = Vec::new();
        for name in cold {
            spawned.push(spawn_to_first_answer(&args.function).await?);
            let started = Instant::now();
            let (status, body) =
                get_once(kinetic.gateway(), &host(name), "/", Duration::from_secs(60)).await?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if status != 200 {
                bail!(
                    "the cold request to {name} answered {status}: {}\nkinetic's log:\n{}",
                    String::from_utf8_lossy(&body),
                    kinetic.log_tail(30)
                );
            }
            first.push(elapsed);
            // Split, the activator's count reaches the autoscaler with its next report.
            let counted = kinetic
                .wait_revisions(
                    &[format!("{name}-00001")],
                    Duration::from_secs(3),
                    "counted",
                    |s| s["coldStarts"] == 1,
                )
                .await;
            let revision = kinetic.revision(&format!("{name}-00001")).await?;
            if counted.is_err() {
                println!(
                    "  ! {name}: coldStarts is {} after one cold request",
                    revision["coldStarts"]
                );
            }
            if let Some(ms) = revision["lastStartupMs"].as_f64() {
                startups.push(ms);
            }
        }
        let base = median(&spawned);
        let cold_p50 = median(&first);
        println!();
        println!(
            "Cold start, {shape}: first request to a service at zero ({} services, one request each), ms",
            cold.len()
        );
        println!("{:<58} {:>8} {:>8} {:>8}  aim", "", "p50", "min", "max");
        let row = |label: &str, values: &[f64], note: &str| {
            println!(
                "{:<58} {:>8.1} {:>8.1} {:>8.1}  {note}",
                label,
                median(values),
                quantile(values, 0.0),
                quantile(values, 1.0)
            );
        };
        row(
            "hello-fn spawned directly → first 200 (baseline)",
            &spawned,
            "",
        );
        row(
            &format!("kinetic {shape}: request at zero → 200 (cold)"),
            &first,
            "",
        );
        let share: Vec<f64> = first.iter().map(|ms| ms - base).collect();
        row(
            "platform share: cold − baseline p50",
            &share,
            &format!("p50 ≤ 20 ms: {}", aim(cold_p50 - base <= 20.0)),
        );
        row(
            "kinetic: revision lastStartupMs (spawn → ready probe)",
            &startups,
            "",
        );
    }

    if args.only.contains(&Stage::Burst) {
        let path = format!("/?sleep_ms={}", args.sleep_ms);
        // What the KPA asks for at this load: ceil(burst / (containerConcurrency × 70 %)).
        let wanted = (args.burst as f64 / (f64::from(args.burst_cc.max(1)) * 0.7)).ceil();
        println!();
        println!(
            "Burst from zero, {shape}: {} requests at once at a service at zero (containerConcurrency {}, {} ms function; the KPA's target for this load is {wanted} instances); ms",
            args.burst, args.burst_cc, args.sleep_ms
        );
        println!(
            "{:<24} {:>14} {:>8} {:>8} {:>10} {:>8} {:>8}  aim",
            "", "all answered", "p50", "p95", "instances", "desired", "non-200"
        );
        let mut rows: Vec<[f64; 6]> = Vec::new();
        let mut statuses = std::collections::BTreeMap::<String, usize>::new();
        for name in bursts {
            let host: Arc<str> = host(name).into();
            let started = Instant::now();
            let requests: Vec<_> = (0..args.burst)
                .map(|_| {
                    let host = host.clone();
                    let path = path.clone();
                    let gateway = kinetic.gateway();
                    tokio::spawn(async move {
                        let outcome =
                            get_once(gateway, &host, &path, Duration::from_secs(120)).await;
                        (outcome, started.elapsed())
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            let mut pids = HashSet::new();
            let mut failures = 0usize;
            for request in requests {
                let (outcome, elapsed) = request.await?;
                latencies.push(elapsed.as_secs_f64() * 1000.0);
                match outcome {
                    Ok((200, body)) => {
                        let body: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        if let Some(pid) = body["pid"].as_u64() {
                            pids.insert(pid);
                        }
                    }
                    Ok((status, _)) => {
                        failures += 1;
                        *statuses.entry(status.to_string()).or_default() += 1;
                    }
                    Err(error) => {
                        failures += 1;
                        *statuses.entry(format!("{error:#}")).or_default() += 1;
                    }
                }
            }
            let status = kinetic.revision(&format!("{name}-00001")).await?;
            let row = [
                quantile(&latencies, 1.0),
                median(&latencies),
                quantile(&latencies, 0.95),
                pids.len() as f64,
                status["desired"].as_f64().unwrap_or(f64::NAN),
                failures as f64,
            ];
            print_burst_row(name, &row, "");
            rows.push(row);
            // Stop this service's instances before the next burst.
            kinetic.delete_service(name).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let column = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<_>>();
        let failures: f64 = column(5).iter().sum();
        let medians = [
            median(&column(0)),
            median(&column(1)),
            median(&column(2)),
            median(&column(3)),
            median(&column(4)),
            failures,
        ];
        print_burst_row(
            "median (non-200: sum)",
            &medians,
            &format!("0 errors: {}", aim(failures == 0.0)),
        );
        if !statuses.is_empty() {
            println!("  ! failures: {statuses:?}");
        }
    }
    Ok(())
}

fn print_burst_row(label: &str, row: &[f64; 6], note: &str) {
    println!(
        "{:<24} {:>14.0} {:>8.0} {:>8.0} {:>10.0} {:>8.0} {:>8.0}  {note}",
        label, row[0], row[1], row[2], row[3], row[4], row[5]
    );
}

/// Spawn → first 200 of hello-fn started directly, ms (polled every millisecond).
async fn spawn_to_first_answer(function: &Path) -> anyhow::Result<f64> {
    let port = free_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut proc = spawn_function(function, port)?;
    let deadline = started + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = get_once(address, "127.0.0.1", "/", Duration::from_secs(1)).await {
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            proc.stop(Duration::from_secs(2));
            return Ok(elapsed);
        }
        if proc.exited() || Instant::now() > deadline {
            bail!("hello-fn on port {port} did not answer within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// VmRSS of kinetic, the median of a few samples, KiB.
async fn settled_rss(kinetic: &Kinetic) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(kinetic.rss_kib()? as f64);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(median(&samples) as u64)
}

/// RSS of the kinetic process: idle, with services at zero, with running instances.
async fn memory(args: &Args) -> anyhow::Result<()> {
    let idle = {
        let kinetic = Kinetic::up(&args.kinetic, "", None).await?;
        let rss = settled_rss(&kinetic).await?;
        stop(kinetic);
        rss
    };
    let at_zero = {
        let names: Vec<String> = (1..=args.rss_at_zero)
            .map(|i| format!("zero-{i}"))
            .collect();
        let yaml: String = names
            .iter()
            .map(|name| {
                service_yaml(
                    name,
                    &args.function,
                    &[("initial-scale", "0".into())],
                    None,
                    &[],
                )
            })
            .collect();
        let kinetic = Kinetic::up(&args.kinetic, &yaml, Some(ALLOW_ZERO)).await?;
        let revisions: Vec<String> = names.iter().map(|n| format!("{n}-00001")).collect();
        kinetic
            .wait_revisions(&revisions, Duration::from_secs(120), "created", |s| {
                s["service"].is_string()
            })
            .await?;
        let rss = settled_rss(&kinetic).await?;
        stop(kinetic);
        rss
    };
    let (running, instances_rss) = {
        let names: Vec<String> = (1..=args.rss_running)
            .map(|i| format!("warm-{i}"))
            .collect();
        let yaml: String = names
            .iter()
            .map(|name| {
                service_yaml(
                    name,
                    &args.function,
                    &[("min-scale", "1".into())],
                    None,
                    &[],
                )
            })
            .collect();
        let kinetic = Kinetic::up(&args.kinetic, &yaml, None).await?;
        let revisions: Vec<String> = names.iter().map(|n| format!("{n}-00001")).collect();
        kinetic
            .wait_revisions(&revisions, Duration::from_secs(180), "ready", |s| {
                s["ready"] == 1
            })
            .await?;
        let rss = settled_rss(&kinetic).await?;
        let instances: u64 = children(kinetic.pid())
            .into_iter()
            .filter_map(|pid| rss_kib(pid).ok())
            .sum();
        stop(kinetic);
        (rss, instances)
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let per = |kib: u64, n: usize| (kib as f64 - idle as f64) / n.max(1) as f64;
    println!();
    println!("Memory: VmRSS of the kinetic process alone (its instances not included)");
    println!("{:<40} {:>10} {:>22}", "", "MiB", "above idle, per unit");
    println!(
        "{:<40} {:>10.1} {:>22}",
        "idle, no services (baseline)",
        mib(idle),
        ""
    );
    println!(
        "{:<40} {:>10.1} {:>18.0} KiB  ({:.2}× idle)",
        format!("{} services at zero", args.rss_at_zero),
        mib(at_zero),
        per(at_zero, args.rss_at_zero),
        at_zero as f64 / idle as f64
    );
    println!(
        "{:<40} {:>10.1} {:>18.0} KiB  ({:.2}× idle; the {} hello-fn instances: {:.1} MiB more)",
        format!("{} running instances (min-scale 1)", args.rss_running),
        mib(running),
        per(running, args.rss_running),
        running as f64 / idle as f64,
        args.rss_running,
        mib(instances_rss)
    );
    Ok(())
}
