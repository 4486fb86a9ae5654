//! A running `kinetic` process, for the end-to-end tests and the benchmarks. Its listeners are
//! given port 0 (`--listen 127.0.0.1:0`, `--admin-listen 127.0.0.1:0`, `--gateway-listen
//! 127.0.0.1:0`), so no other process can take a port between choosing and binding it, and the
//! ports are read from the line kinetic logs once it listens (`kinetic is up. listen=…
//! admin=… gateway=…`). Its log is kept for a failing test to show. Killed by its PID on drop.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Longest a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A started `kinetic` process and where it listens.
pub struct Process {
    child: Child,
    /// The public listener (broker ingress, webhooks, health).
    pub address: SocketAddr,
    /// The admin listener's URL (`http://…`), for subcommands that have one.
    pub admin_url: Option<String>,
    /// The serving gateway (`kinetic up`).
    pub gateway: Option<SocketAddr>,
    /// The listener of /healthz, /readyz and /metrics, for subcommands that have one apart
    /// (`kinetic gateway`, `kinetic activator`).
    pub health: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` (a kinetic subcommand whose listeners are on port 0, logging at least
    /// `kinetic::server=info`) with its stderr read here, and waits until it says where it
    /// listens. Each log line is echoed to this process's stderr when `echo` is set.
    pub fn start(mut command: Command, echo: bool) -> anyhow::Result<Process> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        let stderr = child.stderr.take().context("kinetic's stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, listening) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            // Reads the start-up line, then keeps every line until the process exits.
            std::thread::spawn(move || {
                let mut found = Some(found);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(address) = listen_address(&line, "listen=")
                        && let Some(sender) = found.take()
                    {
                        let _ = sender.send((
                            address,
                            listen_address(&line, "gateway="),
                            field(&line, "admin=").map(str::to_owned),
                            listen_address(&line, "health="),
                        ));
                    }
                    if echo {
                        eprintln!("[kinetic] {line}");
                    }
                    lock(&log).push(line);
                }
            });
        }
        let mut process = Process {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_url: None,
            gateway: None,
            health: None,
            log,
        };
        match listening.recv_timeout(START_TIMEOUT) {
            Ok((address, gateway, admin, health)) => {
                process.address = address;
                process.gateway = gateway;
                process.admin_url = admin;
                process.health = health;
                Ok(process)
            }
            Err(_) => {
                let _ = process.child.kill();
                let _ = process.child.wait();
                bail!(
                    "kinetic did not start listening within {} s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    process.log()
                )
            }
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        lock(&self.log).join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and waits for the exit (a crash, as far as the process can tell).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The address after `key` (e.g. `listen=`) in a log line.
fn listen_address(line: &str, key: &str) -> Option<SocketAddr> {
    field(line, key)?.parse().ok()
}

/// The value of `key` (e.g. `admin=`) in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_line_names_every_listener() {
        let line = "2026-12-06T22:44:30.691178Z  INFO kinetic::server: kinetic is up. listen=127.0.0.1:37907 admin=http://127.0.0.1:45561 gateway=127.0.0.1:44493 store=sqlite:///tmp/state.db";
        assert_eq!(
            listen_address(line, "listen="),
            Some("127.0.0.1:37907".parse().unwrap())
        );
        assert_eq!(field(line, "admin="), Some("http://127.0.0.1:45561"));
        assert_eq!(
            listen_address(line, "gateway="),
            Some("127.0.0.1:44493".parse().unwrap())
        );
        assert_eq!(listen_address("kinetic is up", "listen="), None);
    }
}
