//! What kinetic's tests and benchmarks run against, in one place: a scratch PostgreSQL database
//! ([`postgres`]), moto's S3/SQS/SNS emulator ([`moto`]), nisshi, a Kafka-protocol broker
//! ([`nisshi`]), and an HTTP receiver that records what it gets ([`receiver`]). Each is real: a database created and dropped per test, a process started per
//! test on a loopback port and killed by its PID when dropped. Not part of kinetic itself
//! (`publish = false`); nothing in a production crate depends on it.
//!
//! A service that is not installed fails the test that needs it, saying which script installs it
//! (`scripts/test.sh` installs them all), so a missing service never passes as a green no-op.
//! `KINETIC_TEST_SKIP_MISSING=1` skips those tests instead, each saying so on stderr.

pub mod kinetic;
pub mod moto;
pub mod nisshi;
pub mod postgres;
pub mod receiver;

/// Applies `patch` to `target` as a JSON merge patch (RFC 7386: objects merged key by key, `null`
/// removes a key, anything else replaces): what the tests' fake Kubernetes API servers do with
/// the patches they take.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Where an installed tool is: `$path_var` when set, else `bin/{name}` under `$root_var` (default
/// `~/.cache/{default_root}`, where the project's `scripts/ensure-*.sh` install it) when it
/// exists, else `name` when it runs from `PATH` (`probe` is an argument it answers with success).
pub fn find_tool(
    name: &str,
    path_var: &str,
    root_var: &str,
    default_root: &str,
    probe: &str,
) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Ok(path) = std::env::var(path_var) {
        return Some(PathBuf::from(path));
    }
    let root = std::env::var(root_var).map(PathBuf::from).ok().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|home| PathBuf::from(home).join(".cache").join(default_root))
    });
    if let Some(path) = root.map(|root| root.join("bin").join(name))
        && path.exists()
    {
        return Some(path);
    }
    let on_path = std::process::Command::new(name)
        .arg(probe)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from(name))
}

/// Whether a missing service fails the test instead of skipping it: unless
/// `KINETIC_TEST_SKIP_MISSING=1` (never under `CI=true`).
pub fn required() -> bool {
    let skip = std::env::var("KINETIC_TEST_SKIP_MISSING").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    ci || !skip
}
