//! moto's S3 and SQS emulator for the benchmarks: one `moto_server` per measurement on a free
//! loopback port, so every run starts from an empty store, killed by its PID when dropped.
//!
//! `scripts/ensure-moto.sh` installs it. It is found at `$KINETIC_MOTO_SERVER`, at
//! `~/.cache/kinetic-moto/bin/moto_server` (the script's default), or on `PATH`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;

/// Credentials moto accepts (any would do), given to every client and process of a run.
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

/// Where `moto_server` is, if it is installed.
pub fn server_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KINETIC_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".cache/kinetic-moto/bin/moto_server");
        if path.exists() {
            return Some(path);
        }
    }
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    on_path.then(|| PathBuf::from("moto_server"))
}

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` (found by [`server_path`]) and waits, at most 30 s, until it listens.
    pub fn start() -> anyhow::Result<Moto> {
        let path = server_path()
            .context("moto_server is not installed: run `bash scripts/ensure-moto.sh`")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // moto logs every request.
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                bail!(
                    "moto_server exited at start ({status}); run {} -p {port} to see why",
                    path.display()
                );
            }
            if Instant::now() > deadline {
                bail!("moto_server did not listen on {address} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "bench",
            ))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    /// An S3 client of this moto (path-style buckets).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An SQS client of this moto.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config().await)
    }

    /// Creates `bucket` and the queue `{bucket}-events`, and has the bucket notify the queue of
    /// every created object, as `examples/image-pipeline/README.md` sets it up; returns the
    /// queue's URL.
    pub async fn bucket_notifying_queue(&self, bucket: &str) -> anyhow::Result<String> {
        use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
        use aws_sdk_sqs::types::QueueAttributeName;
        let (s3, sqs) = (self.s3().await, self.sqs().await);
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .context("creating the bucket")?;
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{bucket}-events"))
            .send()
            .await
            .context("creating the queue")?
            .queue_url
            .context("moto named no queue URL")?;
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .context("reading the queue's ARN")?;
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .context("moto named no queue ARN")?
            .clone();
        let notify = QueueConfiguration::builder()
            .queue_arn(arn)
            .events(Event::from("s3:ObjectCreated:*"))
            .build()?;
        s3.put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(notify)
                    .build(),
            )
            .send()
            .await
            .context("setting the bucket's notifications")?;
        Ok(queue_url)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
