//! Serving benchmark of kinetic: requests through the gateway and the in-process queue-proxy (and
//! with the activator forced into the path) against the same function reached directly and through
//! a bare reverse proxy; added latency at a fixed rate; cold starts split into the function's own
//! start-up and the platform's share; a burst from zero; the RSS of `kinetic up`; and the same
//! function as a container image, beside the container engine running it alone; and the cost of
//! traces (off, and exported over OTLP at sampling ratios 0.01 and 1). The throughput,
//! latency, cold-start and burst rows are measured for both shapes: `kinetic up` ("up") and
//! serving split across processes ("split": autoscaler, activator, gateway, a queue-proxy per
//! instance, on PostgreSQL). Every number is printed beside baselines measured in the same run,
//! with the same load generator.
//!
//! Run it with `bash bench/serving.sh` (builds release binaries first). The machine is shared and
//! noisy: read ratios and medians, not single numbers.

// A binary's root finds modules beside itself; these live in `serving/`.
#[path = "serving/bare_proxy.rs"]
mod bare_proxy;
#[path = "serving/containers.rs"]
mod containers;
#[path = "serving/http.rs"]
mod http;
#[path = "serving/procs.rs"]
mod procs;
#[path = "serving/split.rs"]
mod split;
#[path = "serving/stages.rs"]
mod stages;
#[path = "serving/tracing.rs"]
mod tracing;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// What the benchmark measures; `--only` picks some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// Closed-loop throughput and latency per profile.
    Throughput,
    /// Added latency at a fixed rate against the I/O-wait function.
    Latency,
    /// First-request latency from zero.
    Cold,
    /// 0 → N concurrent requests at a service at zero.
    Burst,
    /// RSS of `kinetic up`: idle, services at zero, running instances.
    Rss,
    /// An image-only Service's containers: cold start beside `docker run`, throughput beside the
    /// container's published port (needs a container engine: scripts/ensure-docker.sh).
    Containers,
    /// Throughput through the gateway with traces off and exported over OTLP at sampling ratios
    /// 0.01 and 1.
    Tracing,
}

#[derive(Debug, Parser)]
#[command(
    name = "kinetic-serving-bench",
    about = "Serving benchmark of kinetic: throughput, latency, cold starts, a burst from zero and RSS, each beside baselines measured in the same run."
)]
pub struct Args {
    /// The kinetic binary to measure.
    #[arg(long, default_value = "target/release/kinetic")]
    pub kinetic: PathBuf,
    /// The function (examples/hello-fn).
    #[arg(long, default_value = "target/release/hello-fn")]
    pub function: PathBuf,
    /// What to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,latency,cold,burst,rss,containers,tracing"
    )]
    pub only: Vec<Stage>,
    /// Repetitions of each measurement; medians are printed.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seconds measured per closed-loop run (after the warm-up).
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Seconds of warm-up before every load run, not measured.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Connections of the trivial profile (`GET /`).
    #[arg(long, default_value_t = 32)]
    pub hello_connections: usize,
    /// Connections of the CPU profile.
    #[arg(long, default_value_t = 16)]
    pub cpu_connections: usize,
    /// Connections of the I/O-wait profile.
    #[arg(long, default_value_t = 200)]
    pub io_connections: usize,
    /// CPU burned per request in the CPU profile, µs.
    #[arg(long, default_value_t = 150)]
    pub work_us: u64,
    /// Wait per request in the I/O profile, ms.
    #[arg(long, default_value_t = 100)]
    pub sleep_ms: u64,
    /// Requests per second of the open-loop latency run.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds measured per open-loop run (after the warm-up).
    #[arg(long, default_value_t = 5)]
    pub rate_seconds: u64,
    /// Cold starts measured (one service at zero each), and direct spawns of the baseline.
    #[arg(long, default_value_t = 10)]
    pub cold_starts: usize,
    /// Requests of the burst at a service at zero.
    #[arg(long, default_value_t = 200)]
    pub burst: usize,
    /// containerConcurrency of the burst's service.
    #[arg(long, default_value_t = 10)]
    pub burst_cc: u32,
    /// Services at zero of the RSS measurement.
    #[arg(long, default_value_t = 100)]
    pub rss_at_zero: usize,
    /// Running instances (services with min-scale 1) of the RSS measurement.
    #[arg(long, default_value_t = 50)]
    pub rss_running: usize,
    /// Internal: run as the bare reverse proxy (LISTEN UPSTREAM).
    #[arg(long, num_args = 2, value_names = ["LISTEN", "UPSTREAM"], hide = true)]
    pub bare_proxy: Option<Vec<SocketAddr>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addresses) = &args.bare_proxy {
        return bare_proxy::run(addresses[0], addresses[1]);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(stages::run(args))
}
