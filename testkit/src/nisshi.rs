//! A real Kafka-protocol broker for tests: nisshi (Apache-2.0, written in Rust), one process per
//! test on a free loopback port with in-memory storage, killed by PID on drop.
//!
//! `scripts/ensure-kafka.sh` installs it; tests find it at `$KINETIC_NISSHI`, in the script's
//! default root (`~/.cache/kinetic-nisshi/bin/nisshi`), or on `PATH`. Without it a test fails,
//! or is skipped with `KINETIC_TEST_SKIP_MISSING=1` (see [`crate::required`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kinetic_kafka::Settings;

pub struct TestBroker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub bootstrap_servers: String,
}

fn binary() -> Option<PathBuf> {
    crate::find_tool(
        "nisshi",
        "KINETIC_NISSHI",
        "KINETIC_NISSHI_ROOT",
        "kinetic-nisshi",
        "--version",
    )
}

impl TestBroker {
    /// Whether tests that need a broker run: nisshi is installed, or a missing one fails them
    /// ([`TestBroker::start`] then panics saying how to install it).
    pub fn installed() -> bool {
        if binary().is_some() {
            return true;
        }
        if crate::required() {
            return true;
        }
        eprintln!(
            "skipped (KINETIC_TEST_SKIP_MISSING=1): nisshi is not installed (run scripts/ensure-kafka.sh)"
        );
        false
    }

    /// Starts a broker, or `None` (the test is skipped, see [`crate::required`]) when nisshi is not
    /// installed.
    pub fn start() -> Option<TestBroker> {
        let Some(path) = binary() else {
            if crate::required() {
                panic!("nisshi is not installed; run scripts/ensure-kafka.sh");
            }
            eprintln!(
                "skipped (KINETIC_TEST_SKIP_MISSING=1): nisshi is not installed (run scripts/ensure-kafka.sh)"
            );
            return None;
        };
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("address").port()
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&path)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://nisshi/",
                // A consumer group forms in ~0.1 s instead of ~5 s.
                "--group-initial-rebalance-delay",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let mut broker = TestBroker {
            child,
            bootstrap_servers: format!("127.0.0.1:{port}"),
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Some(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("nisshi exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nisshi did not listen on {address} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn settings(&self) -> Settings {
        Settings::new(self.bootstrap_servers.clone())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
