//! The cost of traces on the data path: the hello profile (`GET /`) through the gateway of three
//! `kinetic up` processes, with traces off and exported over OTLP/HTTP to a collector of this run
//! at sampling ratios 0.01 and 1, measured in turn; medians, ratios to the one without traces.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Args;
use crate::http::{Target, closed_loop};
use crate::procs::Kinetic;
use crate::split::Stack as _;
use crate::stages::{Run, expect_ok, host, service_yaml, stop};

/// An OTLP/HTTP collector that takes every export and counts the bytes.
async fn start_collector() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let bytes = Arc::new(AtomicU64::new(0));
    let seen = bytes.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(body.len() as u64, Ordering::Relaxed);
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
    Ok((address, bytes))
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (collector, exported) = start_collector().await?;
    let yaml = service_yaml(
        "qp",
        &args.function,
        &[
            ("min-scale", "1".to_owned()),
            ("max-scale", "1".to_owned()),
            ("target-burst-capacity", "0".to_owned()),
        ],
        None,
        &[],
    );
    let traced = |ratio: &str| {
        vec![
            "--otlp-endpoint".to_owned(),
            format!("http://{collector}/v1/traces"),
            "--trace-sampling-ratio".to_owned(),
            ratio.to_owned(),
        ]
    };
    let variants = [
        ("traces off", Vec::new()),
        ("OTLP export, sampling 0.01", traced("0.01")),
        ("OTLP export, sampling 1", traced("1")),
    ];
    let mut stacks = Vec::new();
    for (_, flags) in &variants {
        let kinetic = Kinetic::up_with(&args.kinetic, &yaml, None, flags).await?;
        kinetic
            .wait_revisions(
                &["qp-00001".to_owned()],
                Duration::from_secs(60),
                "ready",
                |s| s["ready"] == 1,
            )
            .await?;
        expect_ok(&kinetic, "qp").await?;
        stacks.push(kinetic);
    }
    let seconds = Duration::from_secs(args.duration.max(1));
    let warmup = Duration::from_secs(args.warmup);
    println!();
    println!(
        "Traces, hello: GET / through the gateway (up, TBC 0), C={}, {} s measured after {} s warm-up; latency in ms",
        args.hello_connections,
        seconds.as_secs(),
        args.warmup
    );
    println!(
        "{:<28} {:>8} {:>7} {:>7} {:>6} {:>9}",
        "traces", "req/s", "p50", "p99", "errors", "/off"
    );
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
    for _ in 0..args.repeats {
        for (slot, kinetic) in stacks.iter().enumerate() {
            let target = Target {
                address: kinetic.gateway,
                host: host("qp").into(),
            };
            let tally = closed_loop(&target, "/", args.hello_connections, warmup, seconds).await;
            runs[slot].push(Run::of(tally, seconds.as_secs_f64()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let runs: Vec<Run> = runs.iter().map(|r| Run::median(r)).collect();
    for ((label, _), run) in variants.iter().zip(&runs) {
        println!(
            "{:<28} {:>8.0} {:>7.2} {:>7.2} {:>6} {:>9.2}",
            label,
            run.rps,
            run.p50,
            run.p99,
            run.errors,
            run.rps / runs[0].rps
        );
    }
    // What is left is exported within the batch processor's delay (5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    for kinetic in stacks {
        stop(kinetic);
    }
    println!(
        "OTLP bytes exported in all: {} (both traced processes)",
        exported.load(Ordering::Relaxed)
    );
    Ok(())
}
