//! Process settings from flags and `KINETIC_*` environment variables, validated before any port is
//! bound.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where state lives.
#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Store URL: `sqlite:///path/state.db` or `postgres://user@host:port/db`. Default: a SQLite file
    /// in the state directory.
    #[arg(long, env = "KINETIC_STORE")]
    pub store: Option<String>,
    /// Directory of the default SQLite store.
    #[arg(long, env = "KINETIC_STATE_DIR", default_value = ".kinetic")]
    pub state_dir: PathBuf,
}

impl StoreSettings {
    pub fn url(&self) -> String {
        match &self.store {
            Some(url) => url.clone(),
            None => {
                let path = self.state_dir.join("state.db");
                let absolute = std::path::absolute(&path).unwrap_or(path);
                format!("sqlite://{}", absolute.display())
            }
        }
    }
}

/// Settings of the broker ingress.
#[derive(Debug, Clone, Args)]
pub struct IngressSettings {
    /// Largest event (or batch) accepted, in bytes.
    #[arg(long, env = "KINETIC_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long an event's (source, id) is remembered to drop duplicates, ISO-8601 (e.g. PT24H).
    #[arg(long, env = "KINETIC_DEDUPE_WINDOW", default_value = "PT24H", value_parser = parse_duration)]
    pub dedupe_window: Duration,
}

/// Settings of the dispatcher.
#[derive(Debug, Clone, Args)]
pub struct DispatcherSettings {
    /// Deliveries in flight per trigger.
    #[arg(long, env = "KINETIC_DELIVERY_CONCURRENCY", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub delivery_concurrency: u32,
    /// Events read from the log per batch.
    #[arg(long, env = "KINETIC_DELIVERY_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub delivery_batch: u32,
    /// How often a trigger's log is read when no append signal arrives, ISO-8601. New events are
    /// normally signalled at once (in-process, or by PostgreSQL NOTIFY); this is the fallback.
    #[arg(long, env = "KINETIC_POLL_INTERVAL", default_value = "PT1S", value_parser = parse_duration)]
    pub poll_interval: Duration,
}

/// Parses an ISO-8601 duration flag.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    kinetic_api::duration::parse(text)
}
