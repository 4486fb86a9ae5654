//! What a function is given, end to end: the real `kinetic up` runs the example function
//! (`examples/hello-fn`) as local processes. Its environment holds only what its Service names;
//! its memory limit is enforced (or, where this machine cannot, the revision says so); it runs as
//! `runAsUser`; programs outside `--exec-allow` are refused at apply; and the number of processes
//! and of waiting requests is bounded.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Engine, Kinetic, TestStore, write_yaml};

const DOMAIN: &str = "kinetic.localhost";

/// A Service running hello-fn; `container_extra` goes into its container, `annotations` on its
/// template, `spec_extra` into its template spec.
fn service(name: &str, annotations: &str, spec_extra: &str, container_extra: &str) -> String {
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("    metadata:\n      annotations: {annotations}\n")
    };
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n{annotations}    spec:\n{spec_extra}      containers:\n        - command: [\"{}\"]\n          readinessProbe: {{httpGet: {{path: /}}}}\n{container_extra}",
        support::function_binary().display()
    )
}

fn up(store: &TestStore, files: &[&Path], extra: &[&str], env: &[(&str, &str)]) -> Kinetic {
    let mut flags = vec!["--termination-grace", "PT2S"];
    flags.extend_from_slice(extra);
    Kinetic::up_with_env(store, files, &flags, env)
}

fn gateway(kinetic: &Kinetic) -> String {
    format!("http://{}", kinetic.gateway.expect("gateway address"))
}

/// Waits until the gateway routes to `service` (the controller publishes routes within a second
/// of an apply; the service's status turns ready after its route is in the gateway).
async fn wait_for_route(kinetic: &Kinetic, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body: Value = kinetic
            .api()
            .get(kinetic.admin(&format!("/api/v1/services/default/{service}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["status"]["ready"] == true {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "service {service} never became routable: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_reads_its_secrets_and_kinetic_never_shows_them() {
    const VALUE: &str = "s3cr3t-marker-7f1d";
    let store = TestStore::new(Engine::Sqlite).await;
    // A Kubernetes-style secret `db` with the key `password`, in the default secrets directory.
    let secrets = store.dir().join("secrets");
    std::fs::create_dir_all(secrets.join("db")).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(secrets.join("db/password"), format!("{VALUE}\n")).unwrap();
    let file = write_yaml(
        store.dir(),
        "secrets.yaml",
        &[
            service(
                "secretfn",
                "",
                "",
                "          env:\n            - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}\n            - {name: API_TOKEN, valueFrom: {secretKeyRef: {name: api, key: token, optional: true}}}\n",
            ),
            service(
                "missingfn",
                "",
                "",
                "          env: [{name: API_TOKEN, valueFrom: {secretKeyRef: {name: api, key: token}}}]\n",
            ),
        ]
        .join("---\n"),
    );
    let kinetic = up(&store, &[&file], &[], &[]);
    wait_for_route(&kinetic, "secretfn").await;
    let (code, body) = kinetic.gateway_get("secretfn", "/env").await;
    assert_eq!(code, 200, "{body}\n{}", kinetic.log());
    assert_eq!(
        body["env"]["DB_PASSWORD"], VALUE,
        "the file's value, newline trimmed"
    );
    assert!(
        body["env"].get("API_TOKEN").is_none(),
        "a missing optional secret leaves the variable unset: {body}"
    );

    // A required secret that is missing keeps the revision from starting, saying which.
    let status = kinetic
        .wait_for_revision("missingfn-00001", Duration::from_secs(30), |s| {
            s["lastTerminationReason"] == "CreateContainerConfigError"
        })
        .await;
    assert_eq!(status["ready"], 0, "{status}");
    let problem = status["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("env `API_TOKEN` reads secret api key token")
            && problem.contains("optional: true"),
        "{problem}"
    );

    // The value is in no answer of the API or the CLI, and in no line kinetic logged.
    for path in [
        "/api/v1/services",
        "/api/v1/services/default/secretfn",
        "/api/v1/revisions",
        "/api/v1/revisions/default/secretfn-00001",
    ] {
        let text = kinetic
            .api()
            .get(kinetic.admin(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("secretKeyRef") || !path.contains("services"),
            "{path}: {text}"
        );
        assert!(!text.contains(VALUE), "{path} shows the secret: {text}");
    }
    for args in [
        &["get", "services", "-o", "yaml"][..],
        &["get", "revisions", "-o", "json"],
        &["get", "revisions"],
    ] {
        let out = kinetic.cli_in_place(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(VALUE), "{args:?} shows the secret: {text}");
    }
    assert!(!kinetic.log().contains(VALUE), "kinetic logged the secret");
}

/// This test process's effective uid (the owner of its `/proc/self`).
fn euid() -> u32 {
    std::fs::metadata("/proc/self").expect("/proc").uid()
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_gets_only_the_environment_its_service_names() {
    let store = TestStore::new(Engine::Sqlite).await;
    let file = write_yaml(
        store.dir(),
        "env.yaml",
        &service(
            "envfn",
            "",
            "",
            "          env: [{name: GREETING, value: hi}, {name: LANG, value: C.UTF-8}]\n",
        ),
    );
    // Secrets kinetic holds in its environment must not reach the function.
    let kinetic = up(
        &store,
        &[&file],
        &[],
        &[
            ("AWS_SECRET_ACCESS_KEY", "kinetic-secret-marker"),
            (
                "KINETIC_STORE",
                "postgres://user:kinetic-secret-marker@127.0.0.1/db",
            ),
            ("KINETIC_GITHUB_SECRET", "kinetic-secret-marker"),
            ("TZ", "Etc/UTC"),
        ],
    );
    wait_for_route(&kinetic, "envfn").await;
    let (code, body) = kinetic.gateway_get("envfn", "/env").await;
    assert_eq!(code, 200, "{body}\n{}", kinetic.log());
    let env = body["env"].as_object().expect("an environment").clone();
    let names: Vec<&String> = env.keys().collect();
    for (name, value) in &env {
        assert!(
            !name.starts_with("KINETIC_") && !name.starts_with("AWS_"),
            "kinetic's variable {name} reached the function: {names:?}"
        );
        assert!(
            !value
                .as_str()
                .unwrap_or("")
                .contains("kinetic-secret-marker"),
            "{name} carries a secret"
        );
    }
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["LANG"], "C.UTF-8", "the Service's value wins");
    assert_eq!(env["TZ"], "Etc/UTC", "TZ passes through");
    assert_eq!(env["K_SERVICE"], "envfn");
    assert_eq!(env["K_REVISION"], "envfn-00001");
    assert_eq!(env["K_CONFIGURATION"], "envfn");
    assert!(env["PORT"].as_str().unwrap().parse::<u16>().is_ok());
    assert!(!env["PATH"].as_str().unwrap().is_empty());
    assert!(env.contains_key("HOME"));
    let mut allowed = vec![
        "GREETING",
        "LANG",
        "TZ",
        "K_SERVICE",
        "K_REVISION",
        "K_CONFIGURATION",
        "PORT",
        "PATH",
        "HOME",
    ];
    allowed.sort();
    let mut seen: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    seen.sort();
    assert_eq!(seen, allowed, "exactly these, nothing inherited");

    // Its output is kept in files only kinetic's user can read.
    let logs = store.dir().join("logs/default/envfn");
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let found = std::fs::read_dir(&logs)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(Result::ok)
            .map(|e| e.path());
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no log file in {}",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    assert_eq!(mode(&logs), 0o700);
}

/// Whether this machine lets kinetic (run by this test, as the same user) limit memory with a
/// cgroup: a v2 hierarchy with the memory controller, or a v1 memory hierarchy, writable.
fn cgroup_memory_writable() -> bool {
    let v2 = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .any(|dir| {
            std::fs::read_to_string(format!("{dir}/cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
                && euid() == 0
        });
    let v1 = Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() && euid() == 0;
    v2 || v1
}

/// The memory limit (bytes) and CPU quota (µs per 100 ms) of the cgroups process `pid` is in, as
/// `memory=N` / `cpu=N`, read from v2 (`memory.max`, `cpu.max`) or v1 files.
fn cgroup_limits(pid: u64) -> Vec<String> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut found = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let read = |dir: &str, file: &str| {
            std::fs::read_to_string(format!("/sys/fs/cgroup{dir}{path}/{file}"))
                .ok()
                .map(|t| t.split_whitespace().next().unwrap_or("").to_owned())
        };
        let candidates: &[(&str, &str, &str)] = match controllers {
            "" => &[
                ("", "memory.max", "memory"),
                ("/unified", "memory.max", "memory"),
                ("", "cpu.max", "cpu"),
                ("/unified", "cpu.max", "cpu"),
            ],
            c if c.split(',').any(|c| c == "memory") => {
                &[("/memory", "memory.limit_in_bytes", "memory")]
            }
            c if c.split(',').any(|c| c == "cpu") => &[
                ("/cpu", "cpu.cfs_quota_us", "cpu"),
                ("/cpu,cpuacct", "cpu.cfs_quota_us", "cpu"),
            ],
            _ => &[],
        };
        for (dir, file, name) in candidates {
            if let Some(value) = read(dir, file)
                && value != "max"
                && value != "-1"
            {
                found.push(format!("{name}={value}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_over_its_memory_limit_is_killed_and_restarted_with_the_reason() {
    let store = TestStore::new(Engine::Sqlite).await;
    let file = write_yaml(
        store.dir(),
        "memory.yaml",
        &service(
            "memfn",
            "{autoscaling.knative.dev/min-scale: \"1\"}",
            "",
            "          resources: {limits: {memory: 64Mi, cpu: 500m}}\n",
        ),
    );
    let kinetic = up(&store, &[&file], &[], &[]);
    let status = kinetic
        .wait_for_revision("memfn-00001", Duration::from_secs(30), |s| s["ready"] == 1)
        .await;
    if !cgroup_memory_writable() {
        // Nothing can enforce the limit here: the revision must say so rather than ignore it.
        println!("skipping the OOM kill: no writable memory cgroup here; checking the warning");
        let warning = condition(&status, "ResourcesEnforced").expect("a warning condition");
        assert_eq!(warning["status"], "False");
        assert!(
            warning["message"]
                .as_str()
                .unwrap()
                .contains("resources.limits.memory"),
            "{warning}"
        );
        return;
    }
    assert!(
        condition(&status, "ResourcesEnforced").is_none(),
        "the limits are enforced here: {status}"
    );
    // The function's own process is in groups with both limits.
    let (_, hello) = kinetic.gateway_get("memfn", "/").await;
    let pid = hello["pid"].as_u64().expect("a pid");
    let limits = cgroup_limits(pid);
    assert!(limits.contains(&"memory=67108864".to_owned()), "{limits:?}");
    assert!(limits.contains(&"cpu=50000".to_owned()), "{limits:?}");

    let (code, body) = kinetic.gateway_get("memfn", "/?alloc_mb=256").await;
    assert_eq!(code, 502, "the instance died mid-request: {body}");
    let status = kinetic
        .wait_for_revision("memfn-00001", Duration::from_secs(30), |s| {
            s["lastTerminationReason"] == "OOMKilled" && s["ready"] == 1
        })
        .await;
    assert!(status["crashes"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        status["problem"].as_str().unwrap().starts_with("OOMKilled"),
        "{status}"
    );
    let listed = kinetic.cli_in_place(&["get", "revisions"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("OOMKilled"), "{text}");
    // The replacement serves within its limit.
    let (code, body) = kinetic.gateway_get("memfn", "/?alloc_mb=8").await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_runs_as_its_user_and_run_as_non_root_refuses_root() {
    if euid() != 0 {
        println!("skipping: runAsUser needs kinetic to run as root, and these tests do not");
        return;
    }
    let store = TestStore::new(Engine::Sqlite).await;
    let file = write_yaml(
        store.dir(),
        "users.yaml",
        &[
            service(
                "nobodyfn",
                "",
                "",
                "          securityContext: {runAsUser: 65534, runAsNonRoot: true}\n",
            ),
            service(
                "rootfn",
                "",
                "",
                "          securityContext: {runAsNonRoot: true}\n",
            ),
        ]
        .join("---\n"),
    );
    let mut kinetic = up(&store, &[&file], &[], &[]);
    wait_for_route(&kinetic, "nobodyfn").await;
    let (code, body) = kinetic.gateway_get("nobodyfn", "/env").await;
    assert_eq!(code, 200, "{body}\n{}", kinetic.log());
    assert_eq!(body["uid"], 65534, "{body}");
    assert_ne!(body["gid"], 0, "never root's group: {body}");
    assert_ne!(body["env"]["HOME"], "/root", "{body}");

    let status = kinetic
        .wait_for_revision("rootfn-00001", Duration::from_secs(30), |s| {
            s["lastTerminationReason"] == "RunAsNonRoot"
        })
        .await;
    assert_eq!(status["ready"], 0, "{status}");
    let problem = status["problem"].as_str().unwrap();
    assert!(
        problem.contains("runAsNonRoot is true but the instance would run as uid 0")
            && problem.contains("set securityContext.runAsUser"),
        "{problem}"
    );

    // Switching users must not cost the parent-death signal: the function dies with kinetic.
    let (_, body) = kinetic.gateway_get("nobodyfn", "/").await;
    let pid = body["pid"].as_u64().expect("a pid");
    kinetic.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the function {pid} outlived a SIGKILLed kinetic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn programs_outside_exec_allow_are_refused_at_apply() {
    let store = TestStore::new(Engine::Sqlite).await;
    let allowed = support::function_binary()
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap();
    let kinetic = up(
        &store,
        &[],
        &["--exec-allow", allowed.to_str().unwrap()],
        &[],
    );
    let refused = write_yaml(
        store.dir(),
        "shell.yaml",
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: shell\nspec:\n  template:\n    spec:\n      containers:\n        - command: [/bin/sh, -c, \"echo hi\"]\n",
    );
    let output = kinetic.cli_in_place(&["apply", "-f", refused.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let expected = format!(
        "program `/bin/sh` is `{}`, which is outside the directories kinetic may run programs from (`{}`)",
        sh.display(),
        allowed.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("spec.template.spec.containers[0].command[0]"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "start kinetic with `--exec-allow {}`",
            sh.parent().unwrap().display()
        )),
        "{stderr}"
    );
    let listed = kinetic.cli_in_place(&["get", "revisions"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("shell-00001"),
        "nothing was stored"
    );
    // A program under the prefix applies and runs.
    let ok = write_yaml(store.dir(), "ok.yaml", &service("okfn", "", "", ""));
    let output = kinetic.cli_in_place(&["apply", "-f", ok.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_for_route(&kinetic, "okfn").await;
    let (code, body) = kinetic.gateway_get("okfn", "/").await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revision_gets_at_most_ten_instances_unless_configured() {
    let store = TestStore::new(Engine::Sqlite).await;
    let file = write_yaml(
        store.dir(),
        "burst.yaml",
        &service(
            "burstfn",
            "{autoscaling.knative.dev/initial-scale: \"0\"}",
            "      containerConcurrency: 1\n",
            "",
        ),
    );
    let config = write_yaml(
        store.dir(),
        "config.yaml",
        "autoscaler:\n  allow-zero-initial-scale: true\n",
    );
    let kinetic = up(
        &store,
        &[&file],
        &["--config", config.to_str().unwrap()],
        &[],
    );
    wait_for_route(&kinetic, "burstfn").await;
    let gateway = gateway(&kinetic);
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..40)
        .map(|_| {
            let request = client
                .get(format!("{gateway}/?sleep_ms=1500"))
                .header("host", format!("burstfn.default.{DOMAIN}"))
                .timeout(Duration::from_secs(60))
                .send();
            tokio::spawn(async move { request.await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut most_desired = 0;
    let mut most_ready = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while requests.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
        let status = kinetic.revision_status("burstfn-00001").await;
        most_desired = most_desired.max(status["desired"].as_u64().unwrap_or(0));
        most_ready = most_ready.max(status["ready"].as_u64().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    assert_eq!(
        most_desired, 10,
        "40 requests at containerConcurrency 1 want more than the default max-scale"
    );
    assert!(most_ready <= 10, "{most_ready} instances ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_capped_across_revisions_and_the_cap_is_visible() {
    let store = TestStore::new(Engine::Sqlite).await;
    let file = write_yaml(
        store.dir(),
        "pair.yaml",
        &[
            service("capa", "{autoscaling.knative.dev/min-scale: \"2\"}", "", ""),
            service("capb", "{autoscaling.knative.dev/min-scale: \"2\"}", "", ""),
        ]
        .join("---\n"),
    );
    let kinetic = up(&store, &[&file], &["--max-instances", "3"], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a, b) = loop {
        let a = kinetic.revision_status("capa-00001").await;
        let b = kinetic.revision_status("capb-00001").await;
        let ready = a["ready"].as_u64().unwrap_or(0) + b["ready"].as_u64().unwrap_or(0);
        let capped = [&a, &b]
            .iter()
            .any(|s| condition(s, "ResourcesAvailable").is_some());
        if ready == 3 && capped {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "never 3 ready with one revision capped: {a}\n{b}\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let capped = condition(&a, "ResourcesAvailable")
        .or_else(|| condition(&b, "ResourcesAvailable"))
        .unwrap();
    assert_eq!(capped["reason"], "InstanceLimit");
    assert!(
        capped["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 instances at once (--max-instances)"),
        "{capped}"
    );
    // It stays at the cap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = kinetic.revision_status("capa-00001").await;
    let b = kinetic.revision_status("capb-00001").await;
    let running = a["ready"].as_u64().unwrap() + b["ready"].as_u64().unwrap();
    assert_eq!(running, 3, "{a}\n{b}");
    let listed = kinetic.cli_in_place(&["get", "revisions"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("ResourcesAvailable=False(InstanceLimit)"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_activator_queue_answers_503_saying_what_to_change() {
    let store = TestStore::new(Engine::Sqlite).await;
    let file = write_yaml(
        store.dir(),
        "slow.yaml",
        &service(
            "slowfn",
            "{autoscaling.knative.dev/initial-scale: \"0\"}",
            "      containerConcurrency: 1\n",
            "          env: [{name: STARTUP_DELAY_MS, value: \"3000\"}]\n",
        ),
    );
    let config = write_yaml(
        store.dir(),
        "config.yaml",
        "autoscaler:\n  allow-zero-initial-scale: true\n  max-scale: 1\n",
    );
    let kinetic = up(
        &store,
        &[&file],
        &[
            "--activator-capacity",
            "3",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    wait_for_route(&kinetic, "slowfn").await;
    let gateway = gateway(&kinetic);
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let request = client
                .get(format!("{gateway}/"))
                .header("host", format!("slowfn.default.{DOMAIN}"))
                .timeout(Duration::from_secs(60))
                .send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                let code = response.status().as_u16();
                let retry = response.headers().contains_key("retry-after");
                assert_eq!(code == 503, retry, "a refusal says when to retry");
                (code, response.text().await.unwrap_or_default())
            })
        })
        .collect();
    let mut served = 0;
    let mut refused = Vec::new();
    for request in requests {
        let (code, body) = request.await.unwrap();
        match code {
            200 => served += 1,
            503 => refused.push(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(served, 3, "the activator holds 3 while the instance starts");
    assert_eq!(refused.len(), 5);
    let body: Value = serde_json::from_str(&refused[0]).unwrap();
    assert_eq!(body["reason"], "overloaded");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("already holds 3 requests waiting for an instance")
            && message.contains("raise --activator-capacity"),
        "{message}"
    );
}

/// Whether this machine gives kinetic a cgroup v2 hierarchy it can create groups in (it then kills
/// an instance's whole cgroup).
fn cgroup_v2_writable() -> bool {
    euid() == 0
        && ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .any(|dir| {
                Path::new(&format!("{dir}/cgroup.kill")).exists() || {
                    std::fs::read_to_string("/proc/self/mountinfo")
                        .is_ok_and(|m| m.contains(&format!(" {dir} ")) && m.contains("cgroup2"))
                }
            })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_left_the_group_goes_with_its_instance() {
    if !cgroup_v2_writable() {
        println!(
            "skipping: no writable cgroup v2 here; a process that calls setsid() outlives its instance"
        );
        return;
    }
    let store = TestStore::new(Engine::Sqlite).await;
    let pid_file = store.dir().join("escaped.pid");
    let yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: escape\nspec:\n  template:\n    metadata:\n      annotations: {{autoscaling.knative.dev/min-scale: \"1\"}}\n    spec:\n      containers:\n        - command: [/bin/sh, -c, 'setsid sleep 3000 & echo $! > {}; exec \"$0\"', \"{}\"]\n          readinessProbe: {{httpGet: {{path: /}}}}\n",
        pid_file.display(),
        support::function_binary().display()
    );
    let file = write_yaml(store.dir(), "escape.yaml", &yaml);
    let mut kinetic = up(&store, &[&file], &[], &[]);
    kinetic
        .wait_for_revision("escape-00001", Duration::from_secs(30), |s| s["ready"] == 1)
        .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the function wrote its child's pid")
        .trim()
        .parse()
        .unwrap();
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z ") && stat.contains("(sleep)"))
    };
    assert!(alive(pid), "the escaped child runs");
    assert!(kinetic.terminate().is_some(), "kinetic stops gracefully");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} left its process group with setsid() and outlived its instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
