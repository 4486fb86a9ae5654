//! Container rows: hello-fn's image (built here from the release binary on `debian:bookworm-slim`)
//! run by kinetic as an image-only Service, against the engine itself running the same image.
//! Cold start: a request at zero → 200, beside `docker run` of the image until it answers.
//! Throughput: `GET /` through the gateway to the container, beside the container's published
//! port reached directly.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::Args;
use crate::http::{Target, closed_loop, get_once};
use crate::procs::{Kinetic, start_bare_proxy};
use crate::split::Stack as _;

const IMAGE: &str = "kinetic-bench/hello-fn:latest";

/// Builds hello-fn's image from `function` (the classic builder: the one bookworm's docker has).
fn build_image(function: &Path) -> anyhow::Result<()> {
    let context = tempfile::tempdir()?;
    std::fs::copy(function, context.path().join("hello-fn"))?;
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM debian:bookworm-slim\nLABEL dev.kinetic.bench=hello-fn\nCOPY hello-fn /usr/local/bin/hello-fn\nENV BIND_ADDRESS=0.0.0.0\nENTRYPOINT [\"/usr/local/bin/hello-fn\"]\n",
    )?;
    let built = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .context("running docker build (bash scripts/ensure-docker.sh starts an engine)")?;
    if !built.status.success() {
        bail!(
            "docker build failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    let _ = Command::new("docker")
        .args([
            "image",
            "prune",
            "-f",
            "--filter",
            "label=dev.kinetic.bench=hello-fn",
        ])
        .output();
    Ok(())
}

/// A container of the image started by the engine directly, published on a loopback port.
struct Direct {
    id: String,
    address: SocketAddr,
}

impl Direct {
    fn run() -> anyhow::Result<Direct> {
        let ran = Command::new("docker")
            .args([
                "run",
                "-d",
                "-p",
                "127.0.0.1::8080",
                "-e",
                "PORT=8080",
                IMAGE,
            ])
            .output()?;
        if !ran.status.success() {
            bail!(
                "docker run failed: {}",
                String::from_utf8_lossy(&ran.stderr)
            );
        }
        let id = String::from_utf8_lossy(&ran.stdout).trim().to_owned();
        // Removed on drop from here on, whatever happens below.
        let mut direct = Direct {
            id,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let port = Command::new("docker")
            .args(["port", &direct.id, "8080/tcp"])
            .output()?;
        let text = String::from_utf8_lossy(&port.stdout);
        let address = text
            .lines()
            .find_map(|line| line.trim().parse::<SocketAddr>().ok())
            .with_context(|| format!("docker port said {text:?}"))?;
        direct.address = address;
        Ok(direct)
    }

    /// Waits (polling every millisecond, at most 20 s) until it answers 200.
    async fn answering(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) =
                get_once(self.address, "127.0.0.1", "/", Duration::from_secs(1)).await
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        bail!("the container did not answer within 20 s")
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

fn image_service(name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(key, value)| format!("        autoscaling.knative.dev/{key}: \"{value}\"\n"))
        .collect();
    format!(
        "---\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n{annotations}    spec:\n      containers:\n        - image: {IMAGE}\n          readinessProbe: {{httpGet: {{path: /}}}}\n"
    )
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    build_image(&args.function)?;
    let cold: Vec<String> = (1..=args.cold_starts)
        .map(|i| format!("ccold-{i}"))
        .collect();
    let mut yaml = image_service("chello", &[("min-scale", "1"), ("max-scale", "1")]);
    for name in &cold {
        yaml += &image_service(name, &[("initial-scale", "0")]);
    }
    let kinetic = Kinetic::up(&args.kinetic, &yaml, Some(crate::stages::ALLOW_ZERO)).await?;
    kinetic
        .wait_revisions(
            &["chello-00001".to_owned()],
            Duration::from_secs(60),
            "ready",
            |s| s["ready"] == 1,
        )
        .await?;

    // Cold starts, interleaved: the engine alone, then kinetic at zero.
    let mut engine_alone = Vec::new();
    let mut through_kinetic = Vec::new();
    for name in &cold {
        let started = Instant::now();
        let direct = Direct::run()?;
        direct.answering().await?;
        engine_alone.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(direct);
        let started = Instant::now();
        let (status, body) = get_once(
            kinetic.gateway,
            &crate::stages::host(name),
            "/",
            Duration::from_secs(60),
        )
        .await?;
        if status != 200 {
            bail!(
                "the cold request to {name} answered {status}: {}\nkinetic's log:\n{}",
                String::from_utf8_lossy(&body),
                kinetic.log_tail(30)
            );
        }
        through_kinetic.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let base = crate::stages::median(&engine_alone);
    println!();
    println!(
        "Containers, cold start: first request to an image-only service at zero ({} services), ms",
        cold.len()
    );
    println!("{:<58} {:>8} {:>8} {:>8}  aim", "", "p50", "min", "max");
    let row = |label: &str, values: &[f64], note: &str| {
        println!(
            "{:<58} {:>8.1} {:>8.1} {:>8.1}  {note}",
            label,
            crate::stages::median(values),
            crate::stages::quantile(values, 0.0),
            crate::stages::quantile(values, 1.0)
        );
    };
    row("docker run → first 200 (baseline)", &engine_alone, "");
    row(
        "kinetic: request at zero → 200 (cold)",
        &through_kinetic,
        "",
    );
    let share: Vec<f64> = through_kinetic.iter().map(|ms| ms - base).collect();
    row(
        "platform share: cold − baseline p50",
        &share,
        &format!(
            "p50 ≤ 50 ms: {}",
            crate::stages::aim(crate::stages::median(&through_kinetic) - base <= 50.0)
        ),
    );

    // Throughput of GET / against the container's own published port.
    let direct = Direct::run()?;
    direct.answering().await?;
    let bare = start_bare_proxy(direct.address).await?;
    let targets = [
        (
            "container, published port",
            Target {
                address: direct.address,
                host: "127.0.0.1".into(),
            },
        ),
        (
            "bare proxy → container",
            Target {
                address: bare.address,
                host: "127.0.0.1".into(),
            },
        ),
        (
            "kinetic → container",
            Target {
                address: kinetic.gateway,
                host: crate::stages::host("chello").into(),
            },
        ),
    ];
    let warmup = Duration::from_secs(args.warmup);
    let seconds = Duration::from_secs(args.duration.max(1));
    let mut runs: Vec<Vec<crate::stages::Run>> = vec![Vec::new(); targets.len()];
    for _ in 0..args.repeats {
        for (slot, (_, target)) in targets.iter().enumerate() {
            let tally = closed_loop(target, "/", args.hello_connections, warmup, seconds).await;
            runs[slot].push(crate::stages::Run::of(tally, seconds.as_secs_f64()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!();
    println!(
        "Containers, throughput: GET /, {} connections, {} s measured; latency in ms",
        args.hello_connections,
        seconds.as_secs()
    );
    println!(
        "{:<28} {:>8} {:>7} {:>7} {:>7} {:>6} {:>8} {:>6}  aim",
        "path", "req/s", "p50", "p95", "p99", "errors", "/direct", "/bare"
    );
    let direct_rps = crate::stages::Run::median(&runs[0]).rps;
    let bare_rps = crate::stages::Run::median(&runs[1]).rps;
    for (slot, (label, _)) in targets.iter().enumerate() {
        let run = crate::stages::Run::median(&runs[slot]);
        let to_bare = run.rps / bare_rps;
        let aim = if slot == 2 {
            format!("/bare ≥ 0.9: {}", crate::stages::aim(to_bare >= 0.9))
        } else {
            String::new()
        };
        println!(
            "{:<28} {:>8.0} {:>7.2} {:>7.2} {:>7.2} {:>6} {:>8.2} {:>6.2}  {aim}",
            label,
            run.rps,
            run.p50,
            run.p95,
            run.p99,
            run.errors,
            run.rps / direct_rps,
            to_bare
        );
    }
    drop(bare);
    drop(direct);
    crate::stages::stop(kinetic);
    Ok(())
}
