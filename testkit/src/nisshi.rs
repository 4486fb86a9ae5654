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

/// How many times a broker is started before a test gives up.
const ATTEMPTS: usize = 3;

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
        // nisshi advertises the port it listens on, so it cannot pick one itself (port 0): the
        // port is chosen here, and another process may take it before nisshi binds it. Then
        // nisshi exits at start, and is started again on another port.
        for _ in 0..ATTEMPTS {
            if let Some(broker) = TestBroker::launch(&path) {
                return Some(broker);
            }
        }
        panic!(
            "nisshi exited at start {ATTEMPTS} times; run {} broker to see why",
            path.display()
        );
    }

    /// Starts nisshi on a free port and waits, at most 30 s, until it listens; `None` when it
    /// exited at start (its port was taken).
    fn launch(path: &std::path::Path) -> Option<TestBroker> {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("address").port()
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(path)
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
            if let Ok(Some(_)) = broker.child.try_wait() {
                return None;
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Some(broker);
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
