//! PingSource: CloudEvents on a cron schedule.
//!
//! # Layout
//! - [`schedule`]: parsing Knative's `schedule` and `timezone` into a [`Schedule`], and [`due`], the
//!   pure rule deciding which tick (if any) to fire now.
//! - [`event`]: the event a tick produces ([`PingEvent`]), with an id that is the same in every
//!   process, so a tick sent twice is deduplicated by the broker.
//! - [`claim`]: [`claim_tick`], the compare-and-set on the source's checkpoint that lets exactly one
//!   of several kinetic processes sharing a store fire each tick.
//!
//! A runner loops: read the checkpoint, ask [`due`], [`claim_tick`] the tick it returns, send the
//! [`PingEvent`], sleep until the next tick.

pub mod claim;
pub mod event;
pub(crate) mod kind;
pub mod schedule;

pub use claim::{TickCheckpoint, claim_tick, last_fired, tick_key};
pub use event::{EVENT_TYPE, PingEvent, PingPayload, event_source, ping_event};
pub use schedule::{DEFAULT_SCHEDULE, Due, Schedule, due};

/// Errors of PingSource. The `Invalid*` variants are the user's mistakes in the resource and carry
/// what to fix; [`Error::Store`] is the store's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spec.schedule `{schedule}` is not a valid cron schedule: {reason}")]
    InvalidSchedule { schedule: String, reason: String },
    #[error("spec.schedule `{schedule}` is not a valid cron schedule")]
    InvalidCron {
        schedule: String,
        #[source]
        source: croner::errors::CronError,
    },
    #[error(
        "time zone `{0}` is unknown: use an IANA time zone name such as `Europe/Madrid` or `UTC`"
    )]
    UnknownTimeZone(String),
    #[error(
        "spec.schedule sets a time zone with `{prefix}` and spec.timezone is set too: keep only one of them"
    )]
    TwoTimeZones { prefix: String },
    #[error("spec.data and spec.dataBase64 are both set: keep only one of them")]
    DataAndDataBase64,
    #[error("spec.dataBase64 is not valid base64")]
    InvalidDataBase64(#[source] base64::DecodeError),
    #[error("checkpoint `{key}` does not hold a PingSource's last tick")]
    CorruptCheckpoint {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store failed")]
    Store(#[from] kinetic_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
