//! The processes the serving benchmark starts (kinetic, hello-fn, the bare proxy), each stopped by
//! its PID when dropped, also on error paths; and what is read about them from `/proc`.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::http::get_once;

/// A free loopback port (bound and released; the race with other programs is accepted).
pub fn free_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?.port())
}

fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// The direct children of `pid` (kinetic's instances).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Waits (bounded) until none of `pids` runs; SIGKILLs and returns those still running then.
pub fn reap(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return left;
        }
        if Instant::now() > deadline {
            for pid in &left {
                signal(*pid, Signal::SIGKILL);
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, SIGKILLed and waited for when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn spawn(command: &mut Command, what: &str) -> anyhow::Result<Proc> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        signal(self.child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The child's stderr, when it was piped and not taken yet.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `GET /` on `address` answers 200.
async fn wait_http(address: SocketAddr, what: &str, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = get_once(address, "127.0.0.1", "/", Duration::from_secs(1)).await {
            return Ok(());
        }
        if proc.exited() {
            bail!("{what} exited before answering on {address}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer on {address} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// hello-fn started by the benchmark itself on its own port: the "direct" baseline.
pub struct Server {
    _proc: Proc,
    pub address: SocketAddr,
}

pub fn spawn_function(binary: &Path, port: u16) -> anyhow::Result<Proc> {
    Proc::spawn(
        Command::new(binary)
            .env("PORT", port.to_string())
            .env("K_REVISION", "direct")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "hello-fn",
    )
}

pub async fn start_function(binary: &Path) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut proc = spawn_function(binary, port)?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    wait_http(address, "hello-fn", &mut proc).await?;
    Ok(Server {
        _proc: proc,
        address,
    })
}

/// The bare reverse proxy: this binary re-executed with `--bare-proxy LISTEN UPSTREAM`.
pub async fn start_bare_proxy(upstream: SocketAddr) -> anyhow::Result<Server> {
    let port = free_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let exe = std::env::current_exe().context("finding the benchmark binary")?;
    let mut proc = Proc::spawn(
        Command::new(exe)
            .arg("--bare-proxy")
            .arg(address.to_string())
            .arg(upstream.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
        "the bare proxy",
    )?;
    wait_http(address, "the bare proxy", &mut proc).await?;
    Ok(Server {
        _proc: proc,
        address,
    })
}

/// A running `kinetic up` with its own temp dir (SQLite store, state dir, files).
pub struct Kinetic {
    proc: Proc,
    pub api: String,
    pub gateway: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// One started kinetic process with the tail of its log.
pub struct Part {
    pub name: &'static str,
    pub proc: Proc,
    pub log: Arc<Mutex<VecDeque<String>>>,
}

/// The last `lines` of `log`.
pub fn tail(log: &Mutex<VecDeque<String>>, lines: usize) -> String {
    let log = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let skip = log.len().saturating_sub(lines);
    log.iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value after `key` on a log line, up to the next space.
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// Starts `kinetic ARGS` (in `dir` when given) and waits for its start-up line (`… is up.`);
/// returns the process and the values of `keys` on that line.
pub async fn launch(
    binary: &Path,
    name: &'static str,
    args: &[String],
    keys: &[&str],
    dir: Option<&Path>,
) -> anyhow::Result<(Part, Vec<String>)> {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("KINETIC_LOG", "info")
        // Any trigger of a benchmark delivers on loopback, which is refused by default.
        .env("KINETIC_EGRESS_ALLOW", "loopback")
        .env_remove("KINETIC_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut proc = Proc::spawn(
        &mut command,
        "kinetic (build it with `cargo build --release`)",
    )?;
    let stderr = proc.take_stderr().context("kinetic's stderr")?;
    let log = Arc::new(Mutex::new(VecDeque::new()));
    let found: Arc<Mutex<Option<Vec<String>>>> = Arc::default();
    {
        let (log, found) = (log.clone(), found.clone());
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let values: Option<Vec<String>> = keys.iter().map(|k| field(&line, k)).collect();
                if let Some(values) = values.filter(|_| line.contains(" is up.")) {
                    found
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert(values);
                }
                let mut log = log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if log.len() >= 200 {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let values = found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(values) = values {
            return Ok((Part { name, proc, log }, values));
        }
        if proc.exited() || Instant::now() > deadline {
            bail!(
                "kinetic {name} did not print its start-up line; its log:\n{}",
                tail(&log, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Kinetic {
    /// `kinetic up` with `yaml` applied at start (if not empty) and `config` as its `--config` file.
    pub async fn up(binary: &Path, yaml: &str, config: Option<&str>) -> anyhow::Result<Kinetic> {
        Self::up_with(binary, yaml, config, &[]).await
    }

    /// [`Kinetic::up`] with `extra` flags.
    pub async fn up_with(
        binary: &Path,
        yaml: &str,
        config: Option<&str>,
        extra: &[String],
    ) -> anyhow::Result<Kinetic> {
        let dir = tempfile::Builder::new()
            .prefix("kinetic-serving-bench")
            .tempdir()?;
        let gateway_port = free_port()?;
        let mut args: Vec<String> = [
            "up",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            &format!("127.0.0.1:{gateway_port}"),
            "--store",
            &format!("sqlite://{}", dir.path().join("state.db").display()),
            "--state-dir",
            &dir.path().display().to_string(),
            "--termination-grace",
            "PT2S",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().cloned());
        if let Some(config) = config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, config)?;
            args.extend(["--config".to_owned(), path.display().to_string()]);
        }
        if !yaml.is_empty() {
            let path: PathBuf = dir.path().join("services.yaml");
            std::fs::write(&path, yaml)?;
            args.extend(["-f".to_owned(), path.display().to_string()]);
        }
        let (part, values) = launch(
            binary,
            "up",
            &args,
            &["admin=http://", "gateway="],
            Some(dir.path()),
        )
        .await?;
        let (api, gateway): (SocketAddr, SocketAddr) = (values[0].parse()?, values[1].parse()?);
        // The admin token kinetic made in its state directory.
        let token = std::fs::read_to_string(dir.path().join("admin-token"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()).parse()?,
        );
        Ok(Kinetic {
            proc: part.proc,
            api: format!("http://{api}"),
            gateway,
            log: part.log,
            _dir: dir,
            client: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// The last lines kinetic logged.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    pub async fn api_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.api))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET {path}: {}", response.status());
        }
        Ok(response.json().await?)
    }

    pub async fn api_delete(&self, path: &str) -> anyhow::Result<()> {
        let response = self
            .client
            .delete(format!("{}{path}", self.api))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("DELETE {path}: {}", response.status());
        }
        Ok(())
    }

    /// `.status` of revision `default/{name}`.
    pub async fn revision(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .api_get(&format!("/api/v1/revisions/default/{name}"))
            .await?["status"]
            .clone())
    }

    /// Every revision's `.status`, by name.
    pub async fn revision_statuses(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, serde_json::Value>> {
        let listed = self.api_get("/api/v1/revisions").await?;
        Ok(listed["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| {
                        Some((
                            item.pointer("/metadata/name")?.as_str()?.to_owned(),
                            item["status"].clone(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// SIGTERM kinetic, wait for it (bounded), and check its instances went with it; instances
    /// still running are killed and reported.
    pub fn stop(mut self) -> Vec<u32> {
        let instances = children(self.pid());
        self.proc.stop(Duration::from_secs(15));
        reap(&instances, Duration::from_secs(5))
    }
}

impl Drop for Kinetic {
    fn drop(&mut self) {
        // An error path: kill kinetic and whatever it started (the instances also get SIGKILL as
        // their parent-death signal).
        if self.proc.exited() {
            return;
        }
        let instances = children(self.pid());
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        reap(&instances, Duration::from_secs(2));
    }
}
