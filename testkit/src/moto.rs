//! moto's S3/SQS/SNS emulator: one `moto_server` per test or measurement on a free loopback port
//! (so each starts from an empty store), killed by its PID on drop, and AWS SDK clients pointed
//! at it.
//!
//! `scripts/ensure-moto.sh` installs it; it is found at `$KINETIC_MOTO_SERVER`, in the script's
//! virtualenv (`$KINETIC_MOTO_VENV`, default `~/.cache/kinetic-moto`), or on `PATH`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;

/// The static credentials moto accepts (any would do); kinetic reads them from these variables.
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// Where `moto_server` is, if it is installed.
pub fn server_path() -> Option<PathBuf> {
    crate::find_tool(
        "moto_server",
        "KINETIC_MOTO_SERVER",
        "KINETIC_MOTO_VENV",
        "kinetic-moto",
        "--help",
    )
}

impl Moto {
    /// Starts moto for a test, or `None` (the test is skipped, see [`crate::required`]) when it is
    /// not installed.
    pub fn start() -> Option<Moto> {
        if server_path().is_none() && !crate::required() {
            eprintln!(
                "skipped (KINETIC_TEST_SKIP_MISSING=1): moto_server is not installed (run scripts/ensure-moto.sh)"
            );
            return None;
        }
        Some(Moto::launch().unwrap_or_else(|error| panic!("{error:#}")))
    }

    /// Starts `moto_server` (found by [`server_path`]) and waits, at most 30 s, until it listens.
    pub fn launch() -> anyhow::Result<Moto> {
        let path = server_path()
            .context("moto_server is not installed: run `bash scripts/ensure-moto.sh`")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // moto logs every request; only its exit at start matters here.
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
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
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
