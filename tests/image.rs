//! kinetic's own container image, for real: built from the repository's `Dockerfile` (its
//! `prebuilt` stage, with this build's binary) on the Docker Engine `scripts/ensure-docker.sh`
//! starts, then `kinetic up` run in it as its non-root user on a read-only root filesystem, with
//! only its state directory writable. An event sent to its broker reaches a subscriber on the
//! host. The container shares the host's network, so everything stays on loopback.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::docker::engine;
use support::{Receiver, broker_yaml, documents, send_event, trigger_yaml};

const IMAGE: &str = "kinetic-test/kinetic:latest";

/// Removes the container (by its name) when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn inspect(container: &str, format: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn kinetic_up_runs_in_its_image_as_non_root_on_a_read_only_root() {
    let Some(_engine) = engine().await else {
        return;
    };
    // The `prebuilt` stage, with this build's binary.
    support::docker::build("Dockerfile", "kinetic", Some("prebuilt"), IMAGE);
    let receiver = Receiver::start().await;
    // Readable by the image's user: the test's temp dirs are private to root.
    let resources = tempfile::tempdir().unwrap();
    std::fs::write(
        resources.path().join("resources.yaml"),
        documents(&[
            broker_yaml("default"),
            trigger_yaml("all", "default", &receiver.url("/all"), ""),
        ]),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(resources.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            resources.path().join("resources.yaml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let name = format!("kinetic-test-{}", uuid::Uuid::new_v4().simple());
    let container = Container(name.clone());
    let mut run = Command::new("docker");
    run.args([
        "run",
        "--rm",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
    ])
    .args([
        "--tmpfs",
        "/var/lib/kinetic:uid=65532,gid=65532,mode=0700",
        "-v",
        &format!("{}:/etc/kinetic:ro", resources.path().display()),
        "-e",
        "KINETIC_LOG=info",
        IMAGE,
        "up",
        "-f",
        "/etc/kinetic/resources.yaml",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
        "--egress-allow",
        "loopback",
        "--container-engine",
        "none",
    ]);
    let kinetic = kinetic_testkit::kinetic::Process::start(run, false)
        .expect("kinetic up starts in its image");
    let user = inspect(&name, "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}");
    assert_eq!(user, "65532:65532 true");

    let status = send_event(
        &reqwest::Client::new(),
        &format!("http://{}/default/default", kinetic.address),
        "in-the-image-1",
        "com.example.image",
        &[],
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 202, "{}", kinetic.log());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(received) = receiver.received("/all").first() {
            assert_eq!(received.header("ce-id"), Some("in-the-image-1"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery; kinetic's log:\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its state is in the state directory, the one writable path.
    let listed = Command::new("docker")
        .args(["exec", &name, "ls", "/var/lib/kinetic"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("state.db"), "{listed}");
    drop(kinetic);
    drop(container);
}
