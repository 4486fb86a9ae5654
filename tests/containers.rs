//! The container engine image-based functions run on: a real Docker Engine (started by
//! `scripts/ensure-docker.sh`) and the example functions (`examples/hello-fn`, `examples/order-fn`)
//! in images built here from their Dockerfiles. An instance's container runs from its plan, answers on the
//! loopback port the engine published with the environment and user it was given, is found by its
//! owner's label, stops on SIGTERM and is removed; one over its memory limit is reported as
//! OOM-killed. And end to end: `kinetic up` runs a Service that names only an `image` as
//! containers, scaled from zero and back through the gateway, leaves no container behind when it
//! is killed (its reaper removes them), says why a missing image cannot run, and without an engine refuses such a Service at
//! apply, saying how to get one.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use kinetic_serving::runtime::container::{
    ContainerRequest, Engine, OWNER_LABEL, Owner, Running, STATE_LABEL, Security, plan,
};
use support::docker::engine;
use support::{Kinetic, TestStore, broker_yaml, send_event, write_yaml};

/// hello-fn's image, built once per run from `examples/hello-fn/Dockerfile` and this build's
/// binary.
fn hello_image() -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| build_example_image("hello-fn"))
        .clone()
}

/// `examples/{function}/Dockerfile` built with this build's binary, tagged
/// `kinetic-test/{function}:latest`.
fn build_example_image(function: &str) -> String {
    let image = format!("kinetic-test/{function}:latest");
    support::docker::build(
        &format!("examples/{function}/Dockerfile"),
        function,
        None,
        &image,
    );
    image
}

fn owner() -> Owner {
    Owner {
        id: uuid::Uuid::new_v4().to_string(),
        state: std::env::temp_dir().display().to_string(),
    }
}

fn request(image: &str, instance: u64) -> ContainerRequest {
    ContainerRequest {
        namespace: "default".into(),
        revision: "hello-00001".into(),
        instance,
        image: image.to_owned(),
        command: vec![],
        args: vec![],
        env: vec![
            ("PORT".into(), "8080".into()),
            ("K_REVISION".into(), "hello-00001".into()),
            ("TARGET".into(), "containers".into()),
        ],
        working_dir: None,
        container_port: 8080,
        host_port: None,
        memory_bytes: None,
        cpu_millis: None,
        security: Security::default(),
    }
}

/// Waits (at most 20 s) until the container answers `path`; the answer's body.
async fn until_answers(running: &Running, path: &str) -> String {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client
            .get(format!("http://{}{path}", running.address))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            && response.status().is_success()
        {
            return response.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the container never answered on {}",
            running.address
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes the containers left when a test fails half-way.
struct Cleanup {
    engine: Engine,
    owner: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (engine, owner) = (self.engine.clone(), self.owner.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                for (id, _) in engine
                    .labelled(OWNER_LABEL, &owner)
                    .await
                    .unwrap_or_default()
                {
                    engine.remove(&id).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn an_instance_container_answers_with_its_environment_and_is_removed() {
    let Some(engine) = engine().await else { return };
    let image = hello_image();
    let owner = owner();
    let _cleanup = Cleanup {
        engine: engine.clone(),
        owner: owner.id.clone(),
    };
    let running = engine
        .run(&plan(&request(&image, 1), &owner))
        .await
        .unwrap();
    assert!(running.address.ip().is_loopback(), "{running:?}");
    let answer = until_answers(&running, "/env").await;
    let environment: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(environment["env"]["TARGET"], "containers", "{environment}");
    assert_eq!(environment["env"]["PORT"], "8080", "{environment}");
    let names: Vec<&String> = environment["env"].as_object().unwrap().keys().collect();
    assert!(
        names.iter().all(|name| !name.starts_with("KINETIC_")),
        "kinetic's own variables leaked: {names:?}"
    );

    let found = engine.labelled(OWNER_LABEL, &owner.id).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, running.id);

    // SIGTERM: hello-fn finishes and exits 0.
    let waiting = tokio::spawn({
        let (engine, id) = (engine.clone(), running.id.clone());
        async move { engine.wait(&id).await }
    });
    engine
        .stop(&running.id, Duration::from_secs(10))
        .await
        .unwrap();
    let exit = waiting.await.unwrap().unwrap();
    assert_eq!((exit.code, exit.oom_killed), (0, false));
    engine.remove(&running.id).await;
    assert!(
        engine
            .labelled(OWNER_LABEL, &owner.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The queue-consumer example's function from its own Dockerfile: it listens on the published
/// port as a user other than root and answers an order with its reply event.
#[tokio::test]
async fn the_order_function_image_answers_an_order() {
    let Some(engine) = engine().await else { return };
    let image = build_example_image("order-fn");
    let owner = owner();
    let _cleanup = Cleanup {
        engine: engine.clone(),
        owner: owner.id.clone(),
    };
    assert!(!engine.image_runs_as_root(&image).await.unwrap());
    assert!(
        engine
            .image_runs_as_root("debian:bookworm-slim")
            .await
            .unwrap()
    );
    let running = engine
        .run(&plan(&request(&image, 3), &owner))
        .await
        .unwrap();
    until_answers(&running, "/").await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/", running.address))
        .header("ce-specversion", "1.0")
        .header("ce-id", "order-1")
        .header("ce-type", "dev.kinetic.order")
        .header("ce-source", "/tests")
        .header("ce-partitionkey", "c-1")
        .header("content-type", "application/json")
        .body(r#"{"order":"o-1","customer":"c-1","seq":1,"sku":"widget","amount":3}"#)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ce-type"], "dev.kinetic.order.processed");
    assert_eq!(response.headers()["ce-partitionkey"], "c-1");
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["order"], "o-1", "{reply}");
    engine
        .stop(&running.id, Duration::from_secs(5))
        .await
        .unwrap();
    engine.remove(&running.id).await;
}

#[tokio::test]
async fn a_container_runs_as_its_user_and_one_over_its_memory_limit_is_oom_killed() {
    let Some(engine) = engine().await else { return };
    let image = hello_image();
    let owner = owner();
    let _cleanup = Cleanup {
        engine: engine.clone(),
        owner: owner.id.clone(),
    };
    let mut limited = request(&image, 2);
    limited.memory_bytes = Some(48 * 1024 * 1024);
    limited.security = Security {
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        read_only_root: true,
        capabilities_add: vec![],
        capabilities_drop: vec!["ALL".into()],
        no_new_privileges: true,
    };
    let running = engine.run(&plan(&limited, &owner)).await.unwrap();
    let environment: serde_json::Value =
        serde_json::from_str(&until_answers(&running, "/env").await).unwrap();
    assert_eq!(environment["uid"], 65532, "{environment}");
    assert_eq!(environment["gid"], 65532, "{environment}");

    let waiting = tokio::spawn({
        let (engine, id) = (engine.clone(), running.id.clone());
        async move { engine.wait(&id).await }
    });
    // 200 MiB touched against a 48 MiB limit: the kernel kills it.
    let _ = reqwest::Client::new()
        .get(format!("http://{}/?alloc_mb=200", running.address))
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    let exit = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the container did not end")
        .unwrap()
        .unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    engine.remove(&running.id).await;
}

#[tokio::test]
async fn an_image_that_is_not_there_says_so() {
    let Some(engine) = engine().await else { return };
    let owner = owner();
    let missing = format!("kinetic-test/missing-{}:1", uuid::Uuid::new_v4().simple());
    assert!(!engine.has_image(&missing).await.unwrap());
    let error = engine
        .run(&plan(&request(&missing, 3), &owner))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&missing) && message.contains("not on this machine"),
        "{message}"
    );
}

/// A Knative helloworld-style Service: only an image, an env var, and scale-from-zero.
fn image_service(name: &str, image: &str) -> String {
    image_service_with(name, image, "", "", "")
}

/// [`image_service`] with more annotation lines, template spec lines and container lines (each
/// indented as they go).
fn image_service_with(
    name: &str,
    image: &str,
    annotations: &str,
    spec: &str,
    container: &str,
) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/initial-scale: \"0\"\n{annotations}    spec:\n{spec}      containers:\n        - image: {image}\n          env: [{{name: TARGET, value: containers}}]\n{container}"
    )
}

/// `kinetic up` with short autoscaler windows, so scale-to-zero happens within a test.
fn up(store: &TestStore, files: &[&std::path::Path], extra: &[&str]) -> Kinetic {
    let config = write_yaml(
        store.dir(),
        "config.yaml",
        "autoscaler:\n  stable-window: 6s\n  scale-to-zero-grace-period: 2s\n  allow-zero-initial-scale: true\n",
    );
    let mut args = vec![
        "--termination-grace",
        "PT2S",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Kinetic::up_with(store, files, &args)
}

/// The containers of the kinetic whose state directory is `store`'s.
async fn containers_of(engine: &Engine, store: &TestStore) -> Vec<String> {
    let state = std::fs::canonicalize(store.dir()).unwrap();
    engine
        .labelled(STATE_LABEL, &state.display().to_string())
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// How many `kinetic __container-reaper` children `kinetic` has (a child is listed under the
/// thread that spawned it).
fn reapers_of(kinetic: &Kinetic) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", kinetic.pid())).expect("kinetic runs");
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == b"__container-reaper")
            })
        })
        .count()
}

/// A request through the gateway; a 404 (the Service's route appears with the serving
/// controller's first pass after start) is tried again for up to 10 s.
async fn get_when_routed(kinetic: &Kinetic, service: &str, path: &str) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = kinetic.gateway_get(service, path).await;
        if code != 404 || Instant::now() > deadline {
            return (code, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until `check` holds for the containers of `store`'s kinetic.
async fn until_containers(
    engine: &Engine,
    store: &TestStore,
    timeout: Duration,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = containers_of(engine, store).await;
        if check(&found) || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_image_only_service_scales_from_zero_as_a_container_and_back() {
    let Some(engine) = engine().await else { return };
    let image = hello_image();
    let store = TestStore::new(support::Engine::Sqlite).await;
    let file = write_yaml(store.dir(), "hello.yaml", &image_service("hello", &image));
    let kinetic = up(&store, &[&file], &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        containers_of(&engine, &store).await.is_empty(),
        "nothing runs before a request"
    );
    assert_eq!(reapers_of(&kinetic), 0, "no reaper before a container");

    let (code, body) = get_when_routed(&kinetic, "hello", "/env").await;
    assert_eq!(code, 200, "{body}\n{}", kinetic.log());
    assert_eq!(
        reapers_of(&kinetic),
        1,
        "the first container starts the reaper"
    );
    let env = body["env"].as_object().expect("hello-fn's environment");
    assert_eq!(env["TARGET"], "containers", "{body}");
    assert_eq!(env["K_REVISION"], "hello-00001", "{body}");
    assert_eq!(env["PORT"], "8080", "{body}");
    assert!(
        env.keys().all(|name| !name.starts_with("KINETIC_")),
        "kinetic's own variables reached the container: {body}"
    );
    assert_eq!(containers_of(&engine, &store).await.len(), 1);
    let revisions = kinetic.cli(&["get", "revisions"]);
    let table = String::from_utf8_lossy(&revisions.stdout);
    assert!(
        table.contains("RUNTIME") && table.contains("container"),
        "{table}"
    );
    // Its output reaches `kinetic logs`, as a process's does.
    kinetic
        .wait_for_logs(
            "hello",
            "hello-fn listening on 0.0.0.0:8080",
            Duration::from_secs(10),
        )
        .await;

    // Idle: back to zero, and the container is gone.
    let left = until_containers(
        &engine,
        &store,
        Duration::from_secs(40),
        <[String]>::is_empty,
    )
    .await;
    assert!(
        left.is_empty(),
        "containers left at zero: {left:?}\n{}",
        kinetic.log()
    );
    // And from zero again.
    let (code, body) = get_when_routed(&kinetic, "hello", "/").await;
    assert_eq!(
        (code, body["revision"].as_str()),
        (200, Some("hello-00001")),
        "{body}"
    );
    drop(kinetic);
}

#[tokio::test]
async fn a_killed_kinetic_leaves_no_container_behind() {
    let Some(engine) = engine().await else { return };
    let image = hello_image();
    let store = TestStore::new(support::Engine::Sqlite).await;
    let file = write_yaml(store.dir(), "hello.yaml", &image_service("hello", &image));
    let mut kinetic = up(&store, &[&file], &[]);
    let (code, body) = get_when_routed(&kinetic, "hello", "/").await;
    assert_eq!(code, 200, "{body}");
    let before = containers_of(&engine, &store).await;
    assert_eq!(before.len(), 1, "{before:?}");
    kinetic.kill9();
    // Its reaper removes the container of a kinetic killed with SIGKILL.
    let left = until_containers(
        &engine,
        &store,
        Duration::from_secs(10),
        <[String]>::is_empty,
    )
    .await;
    assert!(left.is_empty(), "a killed kinetic left {left:?}");
    // A kinetic stopped by its harness (SIGKILL as well) while serving leaves nothing either.
    let kinetic = up(&store, &[&file], &[]);
    let (code, body) = get_when_routed(&kinetic, "hello", "/").await;
    assert_eq!(code, 200, "{body}");
    let serving = containers_of(&engine, &store).await;
    assert_eq!(serving.len(), 1, "{serving:?}");
    assert!(serving.iter().all(|id| !before.contains(id)));
    drop(kinetic);
    let left = until_containers(
        &engine,
        &store,
        Duration::from_secs(10),
        <[String]>::is_empty,
    )
    .await;
    assert!(left.is_empty(), "a stopped kinetic left {left:?}");
}

#[tokio::test]
async fn an_image_that_is_not_on_the_machine_makes_its_revision_say_so() {
    let Some(engine) = engine().await else { return };
    let store = TestStore::new(support::Engine::Sqlite).await;
    let missing = format!("kinetic-test/missing-{}:1", uuid::Uuid::new_v4().simple());
    let file = write_yaml(
        store.dir(),
        "missing.yaml",
        &image_service("missing", &missing),
    );
    let kinetic = up(&store, &[&file], &[]);
    // Refused with the reason as soon as the start it asked for failed, not at the activation
    // timeout (60 s).
    let asked = Instant::now();
    let (code, body) = get_when_routed(&kinetic, "missing", "/").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    let error = body["error"].as_str().unwrap_or_default();
    // IfNotPresent: a pull was tried, and failed (no registry answers here).
    assert!(
        error.contains("not on this machine") && error.contains("pulling it failed"),
        "{body}"
    );
    let status: serde_json::Value = kinetic
        .api()
        .get(kinetic.admin("/api/v1/revisions/default/missing-00001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status = status["status"].to_string();
    assert!(
        status.contains(&missing) && status.contains("not on this machine"),
        "{status}"
    );
    assert!(containers_of(&engine, &store).await.is_empty());
}

#[tokio::test]
async fn without_an_engine_an_image_only_service_is_refused_at_apply() {
    let store = TestStore::new(support::Engine::Sqlite).await;
    let kinetic = up(&store, &[], &["--container-engine", "none"]);
    let file = write_yaml(
        store.dir(),
        "hello.yaml",
        &image_service("hello", "example/hello:1"),
    );
    let applied = kinetic.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!applied.status.success(), "{applied:?}");
    let error = String::from_utf8_lossy(&applied.stderr);
    assert!(
        error.contains("containers[0].image")
            && error.contains("has none")
            && error.contains("--container-engine"),
        "{error}"
    );
}

#[tokio::test]
async fn an_image_only_service_runs_with_its_security_context_and_run_as_non_root_refuses_root() {
    let Some(engine) = engine().await else { return };
    let image = hello_image();
    let store = TestStore::new(support::Engine::Sqlite).await;
    let restricted = image_service("restricted", &image).replace(
        "          env: [{name: TARGET, value: containers}]\n",
        "          env: [{name: TARGET, value: containers}]\n          securityContext: {runAsUser: 65532, runAsGroup: 65532, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n",
    );
    // The base image runs as root (the example's sets a user of its own).
    let rooted = image_service("rooted", "debian:bookworm-slim").replace(
        "          env: [{name: TARGET, value: containers}]\n",
        "          env: [{name: TARGET, value: containers}]\n          securityContext: {runAsNonRoot: true}\n",
    );
    let file = write_yaml(
        store.dir(),
        "security.yaml",
        &[restricted, rooted].join("---\n"),
    );
    let kinetic = up(&store, &[&file], &["--activation-timeout", "PT3S"]);
    let (code, body) = get_when_routed(&kinetic, "restricted", "/env").await;
    assert_eq!(code, 200, "{body}\n{}", kinetic.log());
    assert_eq!(
        (&body["uid"], &body["gid"]),
        (&65532.into(), &65532.into()),
        "{body}"
    );
    let status = kinetic.revision_status("restricted-00001").await;
    let unenforced = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "SecurityContextEnforced");
    assert!(
        unenforced.is_none(),
        "a container enforces all of it: {status}"
    );
    let id = containers_of(&engine, &store).await;
    assert_eq!(id.len(), 1, "{id:?}");
    let inspected = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}",
            &id[0],
        ])
        .output()
        .unwrap();
    let inspected = String::from_utf8_lossy(&inspected.stdout);
    assert_eq!(inspected.trim(), "true [ALL] [no-new-privileges]");

    // An image that runs as root: runAsNonRoot refuses to start it.
    let (code, body) = get_when_routed(&kinetic, "rooted", "/").await;
    assert_eq!(code, 503, "{body}");
    let status = kinetic.revision_status("rooted-00001").await;
    assert_eq!(status["lastTerminationReason"], "RunAsNonRoot", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_zero_is_served_entirely_by_containers_at_concurrency_one() {
    let Some(engine) = engine().await else { return };
    let image = hello_image();
    let store = TestStore::new(support::Engine::Sqlite).await;
    let yaml = image_service_with(
        "cc1",
        &image,
        "        autoscaling.knative.dev/max-scale: \"10\"\n",
        "      containerConcurrency: 1\n",
        "          readinessProbe: {httpGet: {path: /}}\n",
    )
    .replace(
        "env: [{name: TARGET, value: containers}]",
        "env: [{name: TARGET, value: containers}, {name: MAX_CONCURRENCY, value: \"1\"}]",
    );
    let file = write_yaml(store.dir(), "cc1.yaml", &yaml);
    let kinetic = up(&store, &[&file], &[]);
    // The route first, so the burst is all at zero.
    let (code, body) = get_when_routed(&kinetic, "cc1", "/").await;
    assert_eq!(code, 200, "{body}");
    let idle = until_containers(
        &engine,
        &store,
        Duration::from_secs(40),
        <[String]>::is_empty,
    )
    .await;
    assert!(idle.is_empty(), "{idle:?}");

    let kinetic = std::sync::Arc::new(kinetic);
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let kinetic = kinetic.clone();
            tokio::spawn(async move { kinetic.gateway_get("cc1", "/?sleep_ms=20").await })
        })
        .collect();
    let mut failures = Vec::new();
    for request in requests {
        let (code, body) = request.await.unwrap();
        if code != 200 {
            failures.push((code, body));
        } else {
            assert!(body["mostInFlight"].as_u64().unwrap() <= 1, "{body}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let serving = containers_of(&engine, &store).await;
    assert!(
        serving.len() > 1,
        "a burst of 200 at CC=1 scales out: {serving:?}"
    );
    let logs = kinetic.cli(&["logs", "cc1", "--tail", "10000"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(!text.contains("concurrency exceeded"), "{text}");
}

async fn a_trigger_wakes_an_image_function_at_zero(store_engine: support::Engine) {
    let Some(engine) = engine().await else { return };
    let image = hello_image();
    let store = TestStore::new(store_engine).await;
    let yaml = format!(
        "{}---\n{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: to-fn}}\nspec:\n  broker: default\n  subscriber:\n    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: eventfn}}\n",
        broker_yaml("default"),
        image_service("eventfn", &image)
    );
    let file = write_yaml(store.dir(), "events.yaml", &yaml);
    let kinetic = up(&store, &[&file], &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(containers_of(&engine, &store).await.is_empty());
    let status = send_event(
        &reqwest::Client::new(),
        &kinetic.url("/default/default"),
        "wake-1",
        "com.example.wake",
        &[],
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 202);
    kinetic
        .wait_for_logs(
            "eventfn",
            "event wake-1 of type com.example.wake",
            Duration::from_secs(30),
        )
        .await;
    let status = kinetic.revision_status("eventfn-00001").await;
    assert_eq!(status["coldStarts"], 1, "{status}");
    assert_eq!(status["runtime"], "container", "{status}");
}

/// `examples/containers/hello.yaml` as shipped (only its image named as this run built it): the
/// function answers through the gateway as the image's user, under its security context, and the
/// example's trigger brings it the broker's events.
#[tokio::test]
async fn the_container_example_runs_as_shipped() {
    let Some(_engine) = engine().await else {
        return;
    };
    let image = hello_image();
    let store = TestStore::new(support::Engine::Sqlite).await;
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/containers/hello.yaml"),
    )
    .unwrap();
    assert!(example.contains("image: kinetic-examples/hello-fn\n"));
    let yaml = example.replace(
        "image: kinetic-examples/hello-fn\n",
        &format!("image: {image}\n"),
    );
    let file = write_yaml(store.dir(), "hello.yaml", &yaml);
    let kinetic = Kinetic::up_with(&store, &[&file], &[]);
    let (code, body) = get_when_routed(&kinetic, "hello", "/env").await;
    assert_eq!(code, 200, "{body}\n{}", kinetic.log());
    assert_eq!((&body["uid"], &body["gid"]), (&65532.into(), &65532.into()));
    let status = kinetic.revision_status("hello-00001").await;
    assert_eq!(status["runtime"], "container", "{status}");
    let status = send_event(
        &reqwest::Client::new(),
        &kinetic.url("/default/default"),
        "example-1",
        "com.example.hello",
        &[],
        r#"{"hi":1}"#,
    )
    .await;
    assert_eq!(status, 202);
    kinetic
        .wait_for_logs(
            "hello",
            "event example-1 of type com.example.hello",
            Duration::from_secs(30),
        )
        .await;
    let table = kinetic.cli(&["get", "revisions"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().any(|l| l.split_whitespace().take(4).eq([
            "default",
            "hello-00001",
            "hello",
            "container"
        ])),
        "{table}"
    );
}

#[tokio::test]
async fn sqlite_trigger_wakes_an_image_function_at_zero() {
    a_trigger_wakes_an_image_function_at_zero(support::Engine::Sqlite).await;
}

#[tokio::test]
async fn postgres_trigger_wakes_an_image_function_at_zero() {
    a_trigger_wakes_an_image_function_at_zero(support::Engine::Postgres).await;
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed_reported_and_replaced() {
    let Some(_engine) = engine().await else {
        return;
    };
    let image = hello_image();
    let store = TestStore::new(support::Engine::Sqlite).await;
    let yaml = image_service_with(
        "hungry",
        &image,
        "        autoscaling.knative.dev/min-scale: \"1\"\n",
        "",
        "          resources: {limits: {memory: 48Mi}}\n",
    );
    let file = write_yaml(store.dir(), "hungry.yaml", &yaml);
    let kinetic = up(&store, &[&file], &[]);
    let (code, body) = get_when_routed(&kinetic, "hungry", "/").await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = kinetic.gateway_get("hungry", "/?alloc_mb=200").await;
    assert_ne!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = kinetic.revision_status("hungry-00001").await;
        if status["lastTerminationReason"] == "OOMKilled" && status["ready"] == 1 {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}\n{}", kinetic.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status["crashes"].as_u64() >= Some(1), "{status}");
    let problem = status["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("OOMKilled"), "{problem}");
    let (code, body) = get_when_routed(&kinetic, "hungry", "/").await;
    assert_eq!(code, 200, "replaced: {body}");
}
