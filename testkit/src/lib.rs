//! What kinetic's tests and benchmarks run against, in one place: a scratch PostgreSQL database
//! ([`postgres`]), moto's S3/SQS/SNS emulator ([`moto`]) and nisshi, a Kafka-protocol broker
//! ([`nisshi`]). Each is real: a database created and dropped per test, a process started per
//! test on a loopback port and killed by its PID when dropped. Not part of kinetic itself
//! (`publish = false`); nothing in a production crate depends on it.
//!
//! A service that is not installed skips the test that needs it, except under `CI=true`, where
//! the test fails: CI installs everything (`scripts/test.sh`).

pub mod moto;
pub mod nisshi;
pub mod postgres;

/// Whether a missing service fails the test (`CI=true`) instead of skipping it.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
