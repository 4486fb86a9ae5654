//! What kinetic's tests and benchmarks run against, in one place: a scratch PostgreSQL database
//! ([`postgres`]), moto's S3/SQS/SNS emulator ([`moto`]) and nisshi, a Kafka-protocol broker
//! ([`nisshi`]). Each is real: a database created and dropped per test, a process started per
//! test on a loopback port and killed by its PID when dropped. Not part of kinetic itself
//! (`publish = false`); nothing in a production crate depends on it.
//!
//! A service that is not installed fails the test that needs it, saying which script installs it
//! (`scripts/test.sh` installs them all), so a missing service never passes as a green no-op.
//! `KINETIC_TEST_SKIP_MISSING=1` skips those tests instead, each saying so on stderr.

pub mod moto;
pub mod nisshi;
pub mod postgres;

/// Whether a missing service fails the test instead of skipping it: unless
/// `KINETIC_TEST_SKIP_MISSING=1` (never under `CI=true`).
pub fn required() -> bool {
    let skip = std::env::var("KINETIC_TEST_SKIP_MISSING").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    ci || !skip
}
