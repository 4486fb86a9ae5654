//! moto's S3/SQS/SNS emulator for the S3Source tests: one `moto_server` per test on a free
//! loopback port, killed by PID on drop, and AWS SDK clients pointed at it.
//!
//! `scripts/ensure-moto.sh` installs it; the tests find it at `$KINETIC_MOTO_SERVER`, in the
//! script's default virtualenv, or on `PATH`. Without it a test is skipped, except under `CI=true`
//! where it fails.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;

/// The static credentials moto accepts (any would do); kinetic reads them from these variables.
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn server_path() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("KINETIC_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let venv = std::env::var("KINETIC_MOTO_VENV")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|home| PathBuf::from(home).join(".cache/kinetic-moto"))
        });
    if let Some(venv) = venv {
        let path = venv.join("bin/moto_server");
        if path.exists() {
            return Some(path);
        }
    }
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from("moto_server"))
}

impl Moto {
    /// Starts moto, or `None` (the test is skipped) when it is not installed outside CI.
    pub fn start() -> Option<Moto> {
        let Some(path) = server_path() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("moto_server is not installed; run scripts/ensure-moto.sh");
            }
            eprintln!("skipped: moto_server is not installed (run scripts/ensure-moto.sh)");
            return None;
        };
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("address").port()
        };
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // moto logs every request; only its exit at start matters here.
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited at start ({status}); run {} -p {port} to see why",
                    path.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {address} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config().await)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
