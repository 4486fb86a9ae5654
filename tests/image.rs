//! kinetic's own container image, for real: built from the repository's `Dockerfile` (its
//! `prebuilt` stage, with this build's binary) on the Docker Engine `scripts/ensure-docker.sh`
//! starts, then `kinetic up` run in it as its non-root user on a read-only root filesystem, with
//! only its state directory writable. An event sent to its broker reaches a subscriber on the
//! host. The same image runs `kinetic broker`, `kinetic dispatcher` and `kinetic sources` as
//! three containers against PostgreSQL on the host, as on Kubernetes. The containers share the
//! host's network, so everything stays on loopback.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::docker::engine;
use support::{Receiver, TestStore, broker_yaml, documents, send_event, trigger_yaml};

const IMAGE: &str = "kinetic-test/kinetic:latest";

/// Builds the image once for this test binary: its tests run in parallel, and two `docker build`s
/// of one tag at once remove each other's layers.
fn built_image() {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        // The `prebuilt` stage, with this build's binary.
        support::docker::build("Dockerfile", "kinetic", Some("prebuilt"), IMAGE);
        *built = true;
    }
}

/// Removes the container (by its name) when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// `docker run` of the image as it runs on Kubernetes: its non-root user, a read-only root, a
/// tmpfs state directory, the host's network; `args` after the image.
fn run_in_image(name: &str, mounts: &[String], args: &[&str]) -> Command {
    let mut run = Command::new("docker");
    run.args([
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/var/lib/kinetic:uid=65532,gid=65532,mode=0700",
        "-e",
        "KINETIC_LOG=info",
    ]);
    for mount in mounts {
        run.args(["-v", mount]);
    }
    run.arg(IMAGE).args(args);
    run
}

fn inspect(container: &str, format: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_up_runs_in_its_image_as_non_root_on_a_read_only_root() {
    let Some(_engine) = engine().await else {
        return;
    };
    tokio::task::block_in_place(built_image);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_dispatcher_and_sources_run_in_the_image_against_postgres() {
    let Some(_engine) = engine().await else {
        return;
    };
    tokio::task::block_in_place(built_image);
    let store = TestStore::new(support::Engine::Postgres).await;
    let receiver = Receiver::start().await;
    // One admin token for the three, as the Secret kinetic-admin-tokens gives them.
    let made = support::cli(&["admin-token", "create", "--role", "admin", "--name", "test"]);
    assert!(made.status.success(), "{made:?}");
    let made = String::from_utf8_lossy(&made.stdout).into_owned();
    let mut lines = made.lines();
    let token = lines.next().unwrap().to_owned();
    let line = lines.next().unwrap().to_owned();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("tokens"), format!("{line}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            config.path().join("tokens"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let mounts = [format!("{}:/etc/kinetic:ro", config.path().display())];
    let common = [
        "--listen",
        "127.0.0.1:0",
        "--store",
        store.url.as_str(),
        "--admin-tokens",
        "/etc/kinetic/tokens",
        "--egress-allow",
        "loopback",
    ];
    let run = |command: &str, extra: &[&str]| {
        let name = format!("kinetic-test-{command}-{}", uuid::Uuid::new_v4().simple());
        let mut args = vec![command];
        args.extend(common);
        args.extend(extra);
        let container = Container(name.clone());
        let process =
            kinetic_testkit::kinetic::Process::start(run_in_image(&name, &mounts, &args), false)
                .unwrap_or_else(|error| panic!("kinetic {command} starts in its image: {error:#}"));
        assert_eq!(
            inspect(&name, "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}"),
            "65532:65532 true"
        );
        (container, process)
    };
    let (_broker_container, broker) =
        tokio::task::block_in_place(|| run("broker", &["--admin-listen", "127.0.0.1:0"]));
    let ingress = format!("http://{}", broker.address);
    let (_dispatcher_container, dispatcher) =
        tokio::task::block_in_place(|| run("dispatcher", &["--ingress-url", ingress.as_str()]));
    let (_sources_container, sources) =
        tokio::task::block_in_place(|| run("sources", &["--ingress-url", ingress.as_str()]));

    // Resources applied from the host through the broker's admin API, as a user would.
    let resources = tempfile::tempdir().unwrap();
    let file = resources.path().join("resources.yaml");
    std::fs::write(
        &file,
        documents(&[
            broker_yaml("default"),
            trigger_yaml("all", "default", &receiver.url("/all"), ""),
            "apiVersion: sources.kinetic.dev/v1alpha1\nkind: WebhookSource\nmetadata: {name: hook}\nspec:\n  insecure: true\n  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}\n".to_owned(),
        ]),
    )
    .unwrap();
    let admin = broker
        .admin_url
        .clone()
        .expect("the broker's admin listener");
    let applied = Command::new(support::binary())
        .args([
            "apply",
            "-f",
            &file.display().to_string(),
            "--server",
            &admin,
        ])
        .env("KINETIC_TOKEN", &token)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");

    let client = reqwest::Client::new();
    let status = send_event(
        &client,
        &format!("{ingress}/default/default"),
        "scaled-out-1",
        "com.example.image",
        &[],
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 202, "{}", broker.log());
    // A webhook to the sources container becomes an event through the broker too.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hooked = client
            .post(format!("http://{}/webhooks/default/hook", sources.address))
            .header("content-type", "application/json")
            .body(r#"{"hello":"image"}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if hooked == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook source answers {hooked}; its log:\n{}",
            sources.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = receiver.wait_for("/all", 2, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        2,
        "broker:\n{}\ndispatcher:\n{}\nsources:\n{}",
        broker.log(),
        dispatcher.log(),
        sources.log()
    );
    assert!(
        got.iter()
            .any(|r| r.header("ce-id") == Some("scaled-out-1"))
    );
}
