//! Shared harness of the end-to-end tests: runs the real `kinetic` binary against a fresh SQLite file
//! or a fresh PostgreSQL database, and real HTTP receivers that record what they get.
//!
//! Everything started here is stopped on drop, by PID; databases are dropped, temp dirs removed.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod crypto;
pub mod docker;
pub mod images;

#[allow(unused_imports)] // Each test binary uses a different part of the harness.
pub use kinetic_testkit::receiver::{Answer, Received, Receiver, Responder};

/// Which store engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    /// SQLite for state, with the test's brokers of the Kafka class: their logs are topics of a
    /// real Kafka-protocol broker started for the test.
    Kafka,
    /// PostgreSQL, with kinetic split in processes as it scales out: `kinetic broker` (ingress and
    /// admin API, resources applied through it) and `kinetic dispatcher`.
    Split,
}

/// Whether Kafka-class tests run here: nisshi is installed, or a missing one fails them (they
/// are skipped only with `KINETIC_TEST_SKIP_MISSING=1`).
pub fn kafka_available() -> bool {
    kinetic_testkit::nisshi::TestBroker::installed()
}

/// A store for one test: a SQLite file in a temp dir, or a PostgreSQL database created for the test
/// and dropped afterwards.
pub struct TestStore {
    pub engine: Engine,
    pub url: String,
    dir: tempfile::TempDir,
    database: Option<kinetic_testkit::postgres::ScratchDatabase>,
    /// The Kafka-protocol broker of [`Engine::Kafka`].
    pub kafka: Option<kinetic_testkit::nisshi::TestBroker>,
}

pub fn postgres_admin_url() -> String {
    kinetic_testkit::postgres::admin_url()
}

impl TestStore {
    pub async fn new(engine: Engine) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match engine {
            Engine::Sqlite | Engine::Kafka => {
                let url = format!("sqlite://{}", dir.path().join("state.db").display());
                let kafka = (engine == Engine::Kafka).then(|| {
                    kinetic_testkit::nisshi::TestBroker::start()
                        .expect("nisshi is needed for Kafka-class tests (scripts/ensure-kafka.sh)")
                });
                Self {
                    engine,
                    url,
                    dir,
                    database: None,
                    kafka,
                }
            }
            Engine::Postgres | Engine::Split => {
                let database =
                    kinetic_testkit::postgres::ScratchDatabase::create("kinetic_e2e").await;
                Self {
                    engine,
                    url: database.url.clone(),
                    dir,
                    database: Some(database),
                    kafka: None,
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PostgreSQL database's name (`None` on SQLite).
    pub fn database(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.name.as_str())
    }

    /// A broker named `name` of this store's class: the Kafka class on [`Engine::Kafka`].
    pub fn broker_yaml(&self, name: &str) -> String {
        match self.engine {
            Engine::Kafka => format!(
                "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {name}\n  annotations:\n    eventing.knative.dev/broker.class: Kafka\n"
            ),
            Engine::Sqlite | Engine::Postgres | Engine::Split => broker_yaml(name),
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(database) = self.database.take() {
            database.drop_blocking();
        }
    }
}

/// A running `kinetic` process. Killed (SIGKILL) on drop if still running.
pub struct Kinetic {
    process: kinetic_testkit::kinetic::Process,
    /// The public listener (broker ingress, webhooks, health).
    pub base_url: String,
    pub address: SocketAddr,
    /// The admin listener (`/api/v1`, `/metrics`); the dispatcher's one listener for it.
    pub admin_url: String,
    /// The admin token, read from the state directory's `admin-token` as a user's CLI does
    /// (empty when the process was given `--admin-tokens`).
    pub token: String,
    /// The serving gateway's address (`kinetic up` only).
    pub gateway: Option<SocketAddr>,
    /// The health and metrics listener (`kinetic gateway` and `kinetic activator`).
    pub health: Option<SocketAddr>,
    /// The state directory, when the harness made one.
    _state: Option<tempfile::TempDir>,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kinetic"))
}

impl Kinetic {
    /// `kinetic up` on `store` with the resource `files`, on a free loopback port.
    pub fn up(store: &TestStore, files: &[&Path]) -> Self {
        Self::up_with(store, files, &[])
    }

    /// `kinetic up` like [`Kinetic::up`], with `extra` flags appended.
    pub fn up_with(store: &TestStore, files: &[&Path], extra: &[&str]) -> Self {
        Self::up_with_env(store, files, extra, &[])
    }

    /// `kinetic up` with `extra` flags and environment variables.
    pub fn up_with_env(
        store: &TestStore,
        files: &[&Path],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args: Vec<String> = vec![
            "up".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            store.url.clone(),
        ];
        if !extra.contains(&"--state-dir") {
            args.extend(["--state-dir".into(), store.dir().display().to_string()]);
        }
        if !extra.contains(&"--gateway-listen") {
            args.extend(["--gateway-listen".into(), "127.0.0.1:0".into()]);
        }
        if let Some(kafka) = &store.kafka {
            args.extend([
                "--kafka-bootstrap-servers".into(),
                kafka.bootstrap_servers.clone(),
                // Few partitions keep a test's consumer groups quick to form.
                "--kafka-topic-partitions".into(),
                "3".into(),
            ]);
        }
        for file in files {
            args.push("-f".into());
            args.push(file.display().to_string());
        }
        args.extend(extra.iter().map(|flag| (*flag).to_owned()));
        Self::spawn(&args, env)
    }

    /// Any serving subcommand (`up`, `broker`, `dispatcher`); waits until it listens.
    ///
    /// Every receiver of the tests is on loopback, which the egress guard refuses by default, so
    /// loopback is allowed (`KINETIC_EGRESS_ALLOW=loopback`) unless `env` sets the variable itself.
    ///
    /// `up` and `broker` get a free admin port unless `args` name one; a process without
    /// `--state-dir` gets a temporary one, where it makes its admin token.
    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> Self {
        let mut args = args.to_vec();
        let has = |args: &[String], flag: &str| args.iter().any(|a| a == flag);
        if matches!(args.first().map(String::as_str), Some("up" | "broker"))
            && !has(&args, "--admin-listen")
        {
            args.extend(["--admin-listen".into(), "127.0.0.1:0".into()]);
        }
        let mut own_state = None;
        // The gateway and the activator keep no state.
        let stateless = matches!(
            args.first().map(String::as_str),
            Some("gateway" | "activator")
        );
        if !stateless && !has(&args, "--state-dir") {
            let dir = tempfile::tempdir().expect("state dir");
            args.extend(["--state-dir".into(), dir.path().display().to_string()]);
            own_state = Some(dir);
        }
        let state_dir = args
            .iter()
            .position(|a| a == "--state-dir")
            .map(|i| PathBuf::from(&args[i + 1]))
            .unwrap_or_default();
        let mut command = Command::new(binary());
        command
            .args(&args)
            .env(
                "KINETIC_LOG",
                std::env::var("KINETIC_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("KINETIC_EGRESS_ALLOW", "loopback");
        for (name, value) in env {
            command.env(name, value);
        }
        let process = kinetic_testkit::kinetic::Process::start(
            command,
            std::env::var("KINETIC_TEST_ECHO").is_ok(),
        )
        .unwrap_or_else(|error| panic!("{error:#}"));
        let address = process.address;
        let scheme = if has(&args, "--tls-cert") {
            "https"
        } else {
            "http"
        };
        let base_url = format!("{scheme}://{address}");
        let token = if has(&args, "--admin-tokens") {
            String::new()
        } else {
            std::fs::read_to_string(state_dir.join("admin-token"))
                .map(|text| text.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            admin_url: process
                .admin_url
                .clone()
                .unwrap_or_else(|| base_url.clone()),
            gateway: process.gateway,
            health: process.health,
            process,
            base_url,
            address,
            token,
            _state: own_state,
        }
    }

    /// `kinetic broker` on `store`, on free loopback ports, with `extra` flags.
    pub fn broker(store: &TestStore, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(&Self::scale_out_args("broker", store, None, extra), env)
    }

    /// `kinetic dispatcher` on `store`, delivering Broker destinations to `broker`'s ingress.
    pub fn dispatcher(
        store: &TestStore,
        broker: &Kinetic,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(
            &Self::scale_out_args("dispatcher", store, Some(broker), extra),
            env,
        )
    }

    /// `kinetic sources` on `store`, sending to `broker`'s ingress.
    pub fn sources(
        store: &TestStore,
        broker: &Kinetic,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(
            &Self::scale_out_args("sources", store, Some(broker), extra),
            env,
        )
    }

    /// The arguments of a scale-out subcommand (`broker`, `dispatcher`, `sources`, `controller`)
    /// on `store`, on free loopback ports, with `broker`'s ingress as `--ingress-url`.
    pub fn scale_out_args(
        command: &str,
        store: &TestStore,
        broker: Option<&Kinetic>,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            command.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            store.url.clone(),
        ];
        if let Some(broker) = broker {
            args.extend(["--ingress-url".into(), broker.base_url.clone()]);
        }
        args.extend(extra.iter().map(|flag| (*flag).to_owned()));
        args
    }

    /// A URL of the admin listener.
    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.admin_url)
    }

    /// An HTTP client that sends the admin token with every request.
    pub fn api(&self) -> reqwest::Client {
        self.api_with(&self.token)
    }

    /// An HTTP client that sends `token` with every request.
    pub fn api_with(&self, token: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("token header"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    }

    /// Runs a CLI command against this process's admin listener (`--server`), with its token in
    /// `KINETIC_TOKEN`, as a user's shell would.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(args)
            .args(["--server", &self.admin_url])
            .env("KINETIC_LOG", "warn")
            .env("KINETIC_TOKEN", &self.token)
            .output()
            .expect("run kinetic")
    }

    /// Waits, at most `timeout`, until `kinetic logs SERVICE` shows `needle`; panics with the
    /// function's and kinetic's logs when it does not.
    pub async fn wait_for_logs(&self, service: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.cli(&["logs", service]);
            let text = String::from_utf8_lossy(&logs.stdout).into_owned();
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` never appeared in {service}'s logs:\n{text}\nkinetic:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` of the Service `service` (namespace `default`) through the gateway, routed by
    /// its host `{service}.default.kinetic.localhost`: the status code and the body, as JSON when
    /// it is JSON and as a string otherwise.
    pub async fn gateway_get(&self, service: &str, path: &str) -> (u16, serde_json::Value) {
        let gateway = self.gateway.expect("kinetic up has a gateway");
        let response = reqwest::Client::new()
            .get(format!("http://{gateway}{path}"))
            .header("host", format!("{service}.default.kinetic.localhost"))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// The status of the revision `revision` (namespace `default`), as `kinetic get revisions -o
    /// json` shows it.
    pub async fn revision_status(&self, revision: &str) -> serde_json::Value {
        let answer: serde_json::Value = self
            .api()
            .get(self.admin(&format!("/api/v1/revisions/default/{revision}")))
            .send()
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("a revision as JSON");
        answer["status"].clone()
    }

    /// Waits, at most `timeout`, until the revision's status satisfies `done`; panics with the
    /// last status and kinetic's log when it does not.
    pub async fn wait_for_revision(
        &self,
        revision: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.revision_status(revision).await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "revision {revision} never reached the state; last status {status}\nkinetic log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Kinetic::cli`] from async code (see [`cli_in_place`]).
    pub fn cli_in_place(&self, args: &[&str]) -> std::process::Output {
        tokio::task::block_in_place(|| self.cli(args))
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM, then wait for a graceful exit (bounded).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

/// Runs a CLI command of the binary to completion.
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env("KINETIC_LOG", "warn")
        .output()
        .expect("run kinetic")
}

/// [`cli`] from async code: the blocking wait moves off the runtime's worker, so receivers in the
/// same runtime keep answering while the command runs (needs the multi-threaded runtime).
pub fn cli_in_place(args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| cli(args))
}

/// A loopback port that refuses connections: bound (so no other test gets it) but not listening.
/// Connections are refused for as long as it lives.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub address: SocketAddr,
}

impl ClosedPort {
    pub fn bind() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let address = socket.local_addr().expect("address");
        Self {
            _socket: socket,
            address,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

/// Writes resource YAML into `dir` and returns the file's path.
pub fn write_yaml(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write yaml");
    path
}

/// A broker named `name` in namespace `default`.
pub fn broker_yaml(name: &str) -> String {
    format!("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {name}\n")
}

/// The Broker `default` and a Trigger `trigger` on it that delivers every event to `uri`.
pub fn broker_with_trigger(trigger: &str, uri: &str) -> String {
    format!(
        "{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {trigger}}}\nspec:\n  broker: default\n  subscriber: {{uri: '{uri}'}}\n",
        broker_yaml("default")
    )
}

/// A source's `spec.sink` (indented under `spec:`) to the Broker `default`.
pub const TO_DEFAULT_BROKER: &str =
    "  sink:\n    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}\n";

/// Posts one binary-mode CloudEvent; returns the status.
pub async fn send_event(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    ty: &str,
    extensions: &[(&str, &str)],
    data: &str,
) -> u16 {
    let mut request = client
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/e2e")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body(data.to_owned());
    for (name, value) in extensions {
        request = request.header(format!("ce-{name}"), *value);
    }
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A Trigger named `name` on broker `broker` (namespace `default`) sending to `uri`; `spec_extra` is
/// appended to the spec as YAML lines indented by two spaces (e.g. `"  delivery: {format: json}\n"`).
pub fn trigger_yaml(name: &str, broker: &str, uri: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: {name}\nspec:\n  broker: {broker}\n  subscriber:\n    uri: '{uri}'\n{spec_extra}"
    )
}

/// Joins YAML documents with `---` separators.
pub fn documents(parts: &[String]) -> String {
    parts
        .iter()
        .map(|part| part.trim_end().to_owned() + "\n")
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The text of a process's `/metrics` (on its admin listener, with its token).
pub async fn scrape(kinetic: &Kinetic) -> String {
    let url = kinetic.admin("/metrics");
    let response = kinetic.api().get(&url).send().await.expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    response.text().await.expect("metrics text")
}

/// Sum of the samples of `name` (e.g. `kinetic_broker_events_accepted_total`) whose labels include
/// every `name="value"` pair of `labels`; 0 when none match.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(key, wanted)| label_text.contains(&format!("{key}=\"{wanted}\"")));
            if !all {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Runs one SQL statement on the PostgreSQL server's admin database (for tests that need to break
/// or inspect a test database from outside kinetic).
pub async fn postgres_admin_execute(sql: &str) {
    let admin = postgres_admin_url();
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connect to PostgreSQL at {admin}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs a command of the binary that must exit by itself within `timeout` (e.g. `kinetic up` with a
/// mistake); kills it and panics if it is still running then.
pub fn cli_bounded(args: &[&str], timeout: Duration) -> std::process::Output {
    let mut command = Command::new(binary());
    command.args(args).env("KINETIC_LOG", "warn");
    output_within(&mut command, timeout).unwrap_or_else(|output| {
        panic!(
            "`kinetic {}` still ran after {timeout:?}; stderr:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Runs `command` to its end, its output in files (a pipe nobody reads cannot stall it); past
/// `timeout` it is killed (by its PID) and what it printed so far is the `Err`.
pub fn output_within(
    command: &mut Command,
    timeout: Duration,
) -> Result<std::process::Output, std::process::Output> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start the command");
    let deadline = Instant::now() + timeout;
    let (status, finished) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, true),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break (child.wait().expect("wait"), false);
            }
        }
    };
    let output = std::process::Output {
        status,
        stdout: std::fs::read(&stdout).unwrap_or_default(),
        stderr: std::fs::read(&stderr).unwrap_or_default(),
    };
    if finished { Ok(output) } else { Err(output) }
}

/// The example function (`examples/hello-fn`), built beside the kinetic binary.
pub fn function_binary() -> PathBuf {
    let path = binary()
        .parent()
        .expect("target directory")
        .join("hello-fn");
    assert!(
        path.exists(),
        "{} is missing; build it with `cargo build -p hello-fn` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A Service named `name` running hello-fn that starts with no instance (the autoscaler settings
/// need `allow-zero-initial-scale: true`), with `env` in its container.
pub fn service_at_zero(name: &str, env: &[(&str, &str)]) -> String {
    let env = if env.is_empty() {
        String::new()
    } else {
        let pairs: Vec<String> = env
            .iter()
            .map(|(name, value)| format!("{{name: {name}, value: \"{value}\"}}"))
            .collect();
        format!("          env: [{}]\n", pairs.join(", "))
    };
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  template:\n    metadata:\n      annotations: {{autoscaling.knative.dev/initial-scale: \"0\"}}\n    spec:\n      containers:\n        - command: [\"{}\"]\n{env}          readinessProbe: {{httpGet: {{path: /}}}}\n",
        function_binary().display()
    )
}

/// A Trigger `name` on the broker `default` sending events of `ty` to the Service `service`.
pub fn trigger_to_service(name: &str, ty: &str, service: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: {ty}}}}}\n  subscriber:\n    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: {service}}}\n"
    )
}

/// `kinetic admin-token create`: the token and its `--admin-tokens` line.
pub fn create_token(role: &str) -> (String, String) {
    let output = cli(&["admin-token", "create", "--role", role, "--name", role]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let mut lines = stdout.lines();
    let token = lines.next().expect("token").to_owned();
    let line = lines.next().expect("line").to_owned();
    assert!(token.starts_with("kinetic_"), "{token}");
    assert!(
        line.starts_with(&format!("{role} {role} sha256:")) && !line.contains(&token),
        "the file line holds the hash, never the token: {line}"
    );
    (token, line)
}
