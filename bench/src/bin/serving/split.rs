//! Serving split across processes, for the "split" rows: `kinetic broker` (admin API) and
//! `kinetic autoscaler` (functions behind queue-proxies) on a scratch PostgreSQL database, one
//! `kinetic activator` and one `kinetic gateway`. Every process is stopped by its PID, and the
//! database dropped, when the stack is stopped or dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kinetic_testkit::postgres::ScratchDatabase;

use crate::procs::{Kinetic, Part, children, launch, reap, rss_kib, tail};

/// What the stages need of a running serving stack, whatever its shape.
pub(crate) trait Stack {
    /// Where requests for Services go.
    fn gateway(&self) -> SocketAddr;
    /// Every revision's status (ready, desired, coldStarts, lastStartupMs, …), by name.
    async fn revisions(&self) -> anyhow::Result<HashMap<String, serde_json::Value>>;
    /// Deletes Service `default/{name}`.
    async fn delete_service(&self, name: &str) -> anyhow::Result<()>;
    /// The last lines logged.
    fn log_tail(&self, lines: usize) -> String;

    /// The status of revision `default/{name}` (null when it is not there).
    async fn revision(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.revisions().await?.remove(name).unwrap_or_default())
    }

    /// Waits (bounded) until every revision in `names` has a status `done` accepts.
    async fn wait_revisions(
        &self,
        names: &[String],
        timeout: Duration,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.revisions().await.unwrap_or_default();
            let missing = names
                .iter()
                .filter(|name| !statuses.get(name.as_str()).is_some_and(&done))
                .count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{missing} of {} revisions not {what} after {timeout:?}; the log:\n{}",
                    names.len(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Stack for Kinetic {
    fn gateway(&self) -> SocketAddr {
        self.gateway
    }

    async fn revisions(&self) -> anyhow::Result<HashMap<String, serde_json::Value>> {
        self.revision_statuses().await
    }

    async fn delete_service(&self, name: &str) -> anyhow::Result<()> {
        self.api_delete(&format!("/api/v1/services/default/{name}"))
            .await
    }

    fn log_tail(&self, lines: usize) -> String {
        Kinetic::log_tail(self, lines)
    }
}

/// The split stack. See the module documentation.
pub(crate) struct Split {
    pub gateway: SocketAddr,
    /// In start order: broker, autoscaler, activator, gateway.
    parts: Vec<Part>,
    admin: String,
    autoscaler: String,
    client: reqwest::Client,
    database: ScratchDatabase,
    _dir: tempfile::TempDir,
}

impl Split {
    /// The stack with `yaml` applied and `config` as the autoscaler's `--config`.
    pub async fn start(binary: &Path, yaml: &str, config: Option<&str>) -> anyhow::Result<Split> {
        let database = ScratchDatabase::create_on(
            &kinetic_testkit::postgres::admin_url(),
            "kinetic_bench",
        )
        .await
        .context(
            "the split rows need PostgreSQL (scripts/ensure-postgres.sh, or KINETIC_TEST_POSTGRES_URL)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("kinetic-serving-bench-split")
            .tempdir()?;
        let state = |name: &str| dir.path().join(name).display().to_string();
        let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let (broker, values) = launch(
            binary,
            "broker",
            &owned(&[
                "broker",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--store",
                &database.url,
                "--state-dir",
                &state("broker"),
            ]),
            &["admin="],
            None,
        )
        .await?;
        let admin = values[0].clone();
        let mut autoscaler_args = owned(&[
            "autoscaler",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &database.url,
            "--state-dir",
            &state("autoscaler"),
            "--termination-grace",
            "PT2S",
        ]);
        if let Some(config) = config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, config)?;
            autoscaler_args.extend(["--config".to_owned(), path.display().to_string()]);
        }
        let (autoscaler, values) =
            launch(binary, "autoscaler", &autoscaler_args, &["listen="], None).await?;
        let autoscaler_url = format!("http://{}", values[0]);
        let follower = |role: &str, extra: &[String]| {
            let mut args = owned(&[
                role,
                "--listen",
                "127.0.0.1:0",
                "--health-listen",
                "127.0.0.1:0",
                "--autoscaler-url",
                &autoscaler_url,
            ]);
            args.extend_from_slice(extra);
            args
        };
        let (activator, values) = launch(
            binary,
            "activator",
            &follower("activator", &[]),
            &["listen="],
            None,
        )
        .await?;
        let via = ["--activator".to_owned(), values[0].clone()];
        let (gateway_part, values) = launch(
            binary,
            "gateway",
            &follower("gateway", &via),
            &["listen="],
            None,
        )
        .await?;
        let gateway: SocketAddr = values[0].parse()?;
        let token = std::fs::read_to_string(dir.path().join("broker").join("admin-token"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()).parse()?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()?;
        let split = Split {
            gateway,
            parts: vec![broker, autoscaler, activator, gateway_part],
            admin,
            autoscaler: autoscaler_url,
            client,
            database,
            _dir: dir,
        };
        if !yaml.is_empty() {
            let answer = split
                .client
                .post(format!("{}/api/v1/apply", split.admin))
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(yaml.to_owned())
                .send()
                .await?;
            if !answer.status().is_success() {
                bail!("applying the services: {}", answer.text().await?);
            }
        }
        Ok(split)
    }

    /// RSS of the serving processes (autoscaler, activator, gateway), KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.parts
            .iter()
            .filter(|p| p.name != "broker")
            .map(|p| rss_kib(p.proc.pid()))
            .sum()
    }

    /// Stops every process (the gateway first, the broker last), checks the instances went with
    /// the autoscaler, and drops the database; returns instances that had to be killed.
    pub async fn stop(mut self) -> Vec<u32> {
        let instances = self
            .parts
            .iter()
            .find(|p| p.name == "autoscaler")
            .map(|p| children(p.proc.pid()))
            .unwrap_or_default();
        for part in self.parts.iter_mut().rev() {
            part.proc.stop(Duration::from_secs(15));
        }
        let left = reap(&instances, Duration::from_secs(5));
        let _ = self.database.drop_database().await;
        left
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        // Stopped already, or an error path: the processes go with their `Proc`s; the database
        // is dropped here.
        self.database.drop_blocking();
    }
}

impl Stack for Split {
    fn gateway(&self) -> SocketAddr {
        self.gateway
    }

    async fn revisions(&self) -> anyhow::Result<HashMap<String, serde_json::Value>> {
        let all: serde_json::Value = self
            .client
            .get(format!("{}/v1/revisions", self.autoscaler))
            .send()
            .await?
            .json()
            .await?;
        Ok(all
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Some((r["name"].as_str()?.to_owned(), r.clone())))
            .collect())
    }

    async fn delete_service(&self, name: &str) -> anyhow::Result<()> {
        let answer = self
            .client
            .delete(format!("{}/api/v1/services/default/{name}", self.admin))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("DELETE service {name}: {}", answer.status());
        }
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        self.parts
            .iter()
            .map(|p| format!("== {}\n{}", p.name, tail(&p.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
