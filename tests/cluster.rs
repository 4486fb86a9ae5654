//! kinetic on a real Kubernetes cluster, end to end: install `deploy/overlays/dev` with the image
//! `KINETIC_TEST_IMAGE` (pushed where the cluster can pull it), apply a Broker and a Trigger to a
//! plain event-display Deployment with `kubectl`, see both Ready, send an event through the broker
//! and find it in event-display's log, see the webhook refuse a bad Trigger with kinetic's
//! message, delete the Trigger (its finalizer comes off), and uninstall.
//!
//! A second test deploys Knative's helloworld-go sample as a Knative Service: it becomes Ready,
//! its revision runs as a Deployment with kinetic's queue-proxy sidecar, goes to zero when idle,
//! comes back for one request through the gateway, and goes to zero again.
//!
//! It needs a cluster, which no machine kinetic is tested on has: it runs only when
//! `KINETIC_TEST_KUBECONFIG` names a kubeconfig (`scripts/test.sh` then runs it with
//! `--ignored`), and is reported as ignored, with that reason, in every other run. It installs
//! cluster-wide objects (CRDs, RBAC, a webhook configuration): use a throwaway cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var_os("KINETIC_TEST_KUBECONFIG").expect(
        "KINETIC_TEST_KUBECONFIG names the kubeconfig of a throwaway cluster for this suite",
    ))
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut command = Command::new(std::env::var("KINETIC_KUBECTL").unwrap_or("kubectl".into()));
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("kubectl runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// `kubectl args`, which must succeed; its output.
fn ok(args: &[&str], stdin: Option<&str>) -> String {
    let output = kubectl(args, stdin);
    assert!(
        output.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The dev overlay with `image` in place of `kinetic`.
fn overlay(image: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/dev");
    let built = ok(&["kustomize", &dir.display().to_string()], None);
    built.replace("image: kinetic:latest", &format!("image: {image}"))
}

const NAMESPACE: &str = "kinetic-cluster-test";

fn resources() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: event-display, namespace: {NAMESPACE}}}
spec:
  selector: {{matchLabels: {{app: event-display}}}}
  template:
    metadata: {{labels: {{app: event-display}}}}
    spec:
      containers:
        - name: event-display
          image: gcr.io/knative-releases/knative.dev/eventing/cmd/event_display
---
apiVersion: v1
kind: Service
metadata: {{name: event-display, namespace: {NAMESPACE}}}
spec:
  selector: {{app: event-display}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: {NAMESPACE}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: display, namespace: {NAMESPACE}}}
spec:
  broker: default
  filter: {{attributes: {{type: dev.kinetic.cluster-test}}}}
  subscriber: {{uri: "http://event-display.{NAMESPACE}.svc.cluster.local"}}
"#
    )
}

#[test]
#[ignore = "needs a Kubernetes cluster: set KINETIC_TEST_KUBECONFIG and KINETIC_TEST_IMAGE (scripts/test.sh then runs it)"]
fn kinetic_on_a_real_cluster_delivers_and_cleans_up() {
    let image = std::env::var("KINETIC_TEST_IMAGE")
        .expect("KINETIC_TEST_IMAGE names kinetic's image, pushed where the cluster pulls from");
    let installed = overlay(&image);
    ok(&["apply", "-f", "-"], Some(&installed));
    for component in ["broker", "dispatcher", "sources", "controller", "webhook"] {
        ok(
            &[
                "-n",
                "kinetic-system",
                "rollout",
                "status",
                &format!("deployment/kinetic-{component}"),
                "--timeout=300s",
            ],
            None,
        );
    }
    ok(&["apply", "-f", "-"], Some(&resources()));
    for object in ["broker/default", "trigger/display"] {
        ok(
            &[
                "-n",
                NAMESPACE,
                "wait",
                "--for=condition=Ready",
                object,
                "--timeout=120s",
            ],
            None,
        );
    }
    ok(
        &[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "deployment/event-display",
            "--timeout=300s",
        ],
        None,
    );

    // An event through the broker, sent from inside the cluster.
    let id = format!("cluster-{}", std::process::id());
    ok(
        &[
            "-n",
            NAMESPACE,
            "run",
            "send",
            "--rm",
            "-i",
            "--restart=Never",
            "--image=curlimages/curl",
            "--",
            "-sS",
            "-X",
            "POST",
            &format!("http://kinetic-broker.kinetic-system.svc/{NAMESPACE}/default"),
            "-H",
            "ce-specversion: 1.0",
            "-H",
            &format!("ce-id: {id}"),
            "-H",
            "ce-source: /cluster-test",
            "-H",
            "ce-type: dev.kinetic.cluster-test",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"hello":"cluster"}"#,
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = ok(&["-n", NAMESPACE, "logs", "deployment/event-display"], None);
        if logs.contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "event {id} not displayed within 60 s:\n{logs}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // The webhook refuses what kinetic apply refuses, with the same message.
    let refused = kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: bad, namespace: {NAMESPACE}}}\nspec:\n  broker: default\n  filters: [{{cesql: \"type = = 'x'\"}}]\n  subscriber: {{uri: 'http://event-display.{NAMESPACE}.svc.cluster.local'}}\n"
        )),
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("is not valid CESQL"), "{said}");

    // Deleting the Trigger completes: the controller cleans up, then takes its finalizer off.
    ok(
        &[
            "-n",
            NAMESPACE,
            "delete",
            "trigger/display",
            "--timeout=60s",
        ],
        None,
    );
    ok(&["delete", "namespace", NAMESPACE, "--timeout=180s"], None);
    ok(
        &["delete", "--ignore-not-found", "-f", "-"],
        Some(&installed),
    );
}

const HELLO_NAMESPACE: &str = "kinetic-cluster-hello";

/// Replicas of the helloworld revision's Deployment (`spec.replicas`), if it exists.
fn hello_replicas() -> Option<u64> {
    let output = kubectl(
        &[
            "-n",
            HELLO_NAMESPACE,
            "get",
            "deployment/helloworld-go-00001-deployment",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .flatten()
}

fn wait_replicas(what: &str, timeout: Duration, done: impl Fn(u64) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if hello_replicas().is_some_and(&done) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "helloworld-go never {what}; replicas {:?}",
            hello_replicas()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
#[ignore = "needs a Kubernetes cluster: set KINETIC_TEST_KUBECONFIG and KINETIC_TEST_IMAGE (scripts/test.sh then runs it)"]
fn helloworld_scales_from_zero_with_a_request_and_back_to_zero() {
    let image = std::env::var("KINETIC_TEST_IMAGE")
        .expect("KINETIC_TEST_IMAGE names kinetic's image, pushed where the cluster pulls from");
    let installed = overlay(&image);
    ok(&["apply", "-f", "-"], Some(&installed));
    for component in [
        "controller",
        "webhook",
        "autoscaler",
        "activator",
        "gateway",
    ] {
        ok(
            &[
                "-n",
                "kinetic-system",
                "rollout",
                "status",
                &format!("deployment/kinetic-{component}"),
                "--timeout=300s",
            ],
            None,
        );
    }
    // Knative's helloworld-go sample, unchanged but for its namespace.
    let sample = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {HELLO_NAMESPACE}}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: helloworld-go, namespace: {HELLO_NAMESPACE}}}
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          env:
            - {{name: TARGET, value: "Go Sample v1"}}
"#
    );
    ok(&["apply", "-f", "-"], Some(&sample));
    // Ready as Knative's: its revision served.
    ok(
        &[
            "-n",
            HELLO_NAMESPACE,
            "wait",
            "--for=condition=Ready",
            "services.serving.knative.dev/helloworld-go",
            "--timeout=300s",
        ],
        None,
    );
    // It starts at one instance (Knative's initial scale), then goes to zero once idle for the
    // stable window and the grace period.
    wait_replicas("ran", Duration::from_secs(300), |n| n >= 1);
    wait_replicas("went to zero", Duration::from_secs(300), |n| n == 0);
    // One request through the gateway, from inside the cluster, wakes it.
    let answer = ok(
        &[
            "-n",
            HELLO_NAMESPACE,
            "run",
            "hello",
            "--rm",
            "-i",
            "--restart=Never",
            "--image=curlimages/curl",
            "--",
            "-sS",
            "--max-time",
            "120",
            "-H",
            &format!("Host: helloworld-go.{HELLO_NAMESPACE}.kinetic.example.com"),
            "http://kinetic-gateway.kinetic-system.svc/",
        ],
        None,
    );
    assert!(answer.contains("Hello Go Sample v1!"), "{answer}");
    wait_replicas("scaled from zero", Duration::from_secs(30), |n| n >= 1);
    // And back to zero.
    wait_replicas("went back to zero", Duration::from_secs(300), |n| n == 0);
    ok(
        &["delete", "namespace", HELLO_NAMESPACE, "--timeout=180s"],
        None,
    );
    ok(
        &["delete", "--ignore-not-found", "-f", "-"],
        Some(&installed),
    );
}
