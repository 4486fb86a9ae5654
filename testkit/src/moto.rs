//! moto's S3/SQS/SNS emulator: one `moto_server` per test or measurement on a free loopback port
//! (so each starts from an empty store), killed by its PID on drop, and AWS SDK clients pointed
//! at it.
//!
//! `scripts/ensure-moto.sh` installs it; it is found at `$KINETIC_MOTO_SERVER`, in the script's
//! virtualenv (`$KINETIC_MOTO_VENV`, default `~/.cache/kinetic-moto`), or on `PATH`.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
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

/// The port in moto's (werkzeug's) start-up line ` * Running on http://127.0.0.1:PORT`.
fn listening_port(line: &str) -> Option<u16> {
    let address = line.trim().strip_prefix("* Running on http://")?;
    address
        .rsplit_once(':')?
        .1
        .trim_end_matches('/')
        .parse()
        .ok()
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

    /// Starts `moto_server` (found by [`server_path`]) on a port it picks itself (port 0, so no
    /// other process can take the port between choosing and binding it), and waits, at most 30 s,
    /// until it says where it listens.
    pub fn launch() -> anyhow::Result<Moto> {
        let path = server_path()
            .context("moto_server is not installed: run `bash scripts/ensure-moto.sh`")?;
        let mut child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // moto says where it listens, then logs every request, on stderr.
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let stderr = child.stderr.take().context("moto_server's stderr")?;
        // Kept by the Moto from here on, so the child is killed whatever happens below.
        let mut moto = Moto {
            child,
            endpoint: String::new(),
        };
        let (found, port) = std::sync::mpsc::channel();
        // Reads the port, then drains stderr until moto exits (a full pipe would stall it).
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line)
                    && let Some(found) = found.take()
                {
                    let _ = found.send(port);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            match port.recv_timeout(Duration::from_millis(200)) {
                Ok(port) => break port,
                Err(error) => {
                    if let Ok(Some(status)) = moto.child.try_wait() {
                        bail!(
                            "moto_server exited at start ({status}); run {} -p 0 to see why",
                            path.display()
                        );
                    }
                    if Instant::now() > deadline {
                        bail!("moto_server did not say where it listens within 30 s");
                    }
                    if error == RecvTimeoutError::Disconnected {
                        // Its stderr closed: it is exiting.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        };
        moto.endpoint = format!("http://127.0.0.1:{port}");
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

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_is_read_from_the_start_up_line_only() {
        assert_eq!(
            listening_port(" * Running on http://127.0.0.1:34895"),
            Some(34895)
        );
        assert_eq!(listening_port("Press CTRL+C to quit"), None);
        assert_eq!(
            listening_port("127.0.0.1 - - [06/Dec/2026] \"GET / HTTP/1.1\" 200 -"),
            None
        );
    }
}
