//! The process runtime with real processes and real HTTP: a small Python function stands in for
//! a user's container. Every test owns its runtime, whose drop kills what it started even when
//! an assertion fails half-way.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use kinetic_serving::runtime::{
    EnvValue, Error, Instance, InstanceSpec, LogLine, LogStream, ProcessConfig, ProcessRuntime,
    Runtime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// A function serving on `$PORT`. Knobs, all optional, through the environment:
/// `DELAY` seconds before listening; `/ready` answers 503 until `READY_AFTER` seconds after
/// listening; `EXIT_AFTER` seconds after listening it exits with 3 (only once if `CRASH_MARKER`
/// names a file: the first instance creates it); `IGNORE_TERM` ignores SIGTERM; `SPAM` lines on
/// stdout and one `LONG`-byte line at start. `/env` answers the pid, working directory and
/// environment as JSON.
const FUNCTION: &str = r#"
import http.server, json, os, signal, sys, threading, time
print(f"pid {os.getpid()}", flush=True)
print("starting up", file=sys.stderr, flush=True)
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def on_term(*_):
        print("got SIGTERM", flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
for i in range(int(os.environ.get("SPAM", "0"))):
    print(f"line {i}", flush=True)
if os.environ.get("LONG"):
    print("x" * int(os.environ["LONG"]), flush=True)
time.sleep(float(os.environ.get("DELAY", "0")))
start = time.monotonic()
ready_after = float(os.environ.get("READY_AFTER", "0"))
marker = os.environ.get("CRASH_MARKER")
if os.environ.get("EXIT_AFTER") and not (marker and os.path.exists(marker)):
    if marker:
        open(marker, "w").close()
    def crash():
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    threading.Timer(float(os.environ["EXIT_AFTER"]), crash).start()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b""
        code = 200
        if self.path == "/ready":
            code = 200 if time.monotonic() - start >= ready_after else 503
        elif self.path == "/env":
            body = json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *_):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

const WAIT: Duration = Duration::from_secs(15);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A spec with names unique to this test run.
fn spec(test: &str, command: Vec<String>, env: &[(&str, &str)]) -> Arc<InstanceSpec> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Arc::new(InstanceSpec {
        namespace: format!("ns-{test}"),
        service: format!("svc-{test}"),
        configuration: format!("cfg-{test}"),
        revision: format!("{test}-{n:05}"),
        command,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), EnvValue::from(*v)))
            .collect(),
        ..InstanceSpec::default()
    })
}

fn python(test: &str, env: &[(&str, &str)]) -> Arc<InstanceSpec> {
    spec(
        test,
        vec!["python3".into(), "-c".into(), FUNCTION.into()],
        env,
    )
}

fn with_path(spec: Arc<InstanceSpec>, path: &str) -> Arc<InstanceSpec> {
    let mut spec = (*spec).clone();
    spec.readiness_path = Some(path.into());
    Arc::new(spec)
}

fn config() -> ProcessConfig {
    ProcessConfig {
        grace_period: Duration::from_secs(5),
        restart_backoff: Duration::from_millis(50),
        restart_backoff_max: Duration::from_secs(1),
        ..ProcessConfig::default()
    }
}

async fn wait_ready(rt: &ProcessRuntime, spec: &InstanceSpec, n: usize) -> Vec<Arc<Instance>> {
    let mut rx = rt.instances(&spec.namespace, &spec.revision);
    let ready = tokio::time::timeout(WAIT, rx.wait_for(|v| v.len() == n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{n} ready instances in time; status {:?}",
                rt.status(&spec.namespace, &spec.revision)
            )
        })
        .expect("the runtime keeps the channel open");
    ready.clone()
}

/// Polls `f` every 10 ms until it returns `Some`, for at most [`WAIT`].
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GET over HTTP/1.0; returns the status code and the body.
async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Alive means present and not a zombie (a zombie has exited; only its reaping is pending).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            state != Some('Z')
        }
        Err(_) => false,
    }
}

async fn wait_dead(pid: i32) {
    eventually(&format!("pid {pid} to exit"), || {
        (!alive(pid)).then_some(())
    })
    .await;
}

/// The pid an instance printed as `<prefix> <pid>` on stdout.
async fn printed_pid(rt: &ProcessRuntime, spec: &InstanceSpec, instance: u64, prefix: &str) -> i32 {
    eventually(&format!("`{prefix}` from instance {instance}"), || {
        rt.logs(&spec.namespace, &spec.service, 1000)
            .into_iter()
            .filter(|l| l.instance == instance)
            .find_map(|l| l.text.strip_prefix(prefix)?.trim().parse().ok())
    })
    .await
}

fn lines_of(rt: &ProcessRuntime, spec: &InstanceSpec) -> Vec<LogLine> {
    rt.logs(&spec.namespace, &spec.service, 10_000)
}

#[tokio::test]
async fn scale_from_zero_to_two_gives_distinct_ports_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(config());
    let mut spec = (*python("scale", &[("GREETING", "hello"), ("PORT", "1")])).clone();
    spec.working_dir = Some(dir.path().to_owned());
    let spec = Arc::new(spec);
    rt.scale(Arc::clone(&spec), 2);
    let ready = wait_ready(&rt, &spec, 2).await;

    let ports: HashSet<u16> = ready.iter().map(|i| i.address().port()).collect();
    assert_eq!(ports.len(), 2, "distinct ports: {ready:?}");
    let mut pids = HashSet::new();
    for instance in &ready {
        assert!(instance.address().ip().is_loopback());
        let (code, body) = get(instance.address(), "/env").await;
        assert_eq!(code, 200);
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let env: HashMap<String, String> = serde_json::from_value(answer["env"].clone()).unwrap();
        assert_eq!(
            env["PORT"],
            instance.address().port().to_string(),
            "PORT wins over the user's"
        );
        assert_eq!(env["K_SERVICE"], spec.service);
        assert_eq!(env["K_REVISION"], spec.revision);
        assert_eq!(env["K_CONFIGURATION"], spec.configuration);
        assert_eq!(env["GREETING"], "hello");
        assert!(env.contains_key("PATH"), "PATH is passed on");
        assert!(
            !env.contains_key("CARGO_MANIFEST_DIR"),
            "nothing else of the parent's environment is"
        );
        pids.insert(answer["pid"].as_i64().unwrap());
    }
    assert_eq!(pids.len(), 2);

    let status = rt.status(&spec.namespace, &spec.revision);
    assert_eq!((status.desired, status.starting, status.ready), (2, 0, 2));
    assert_eq!(status.startups, 2);
    assert!(status.last_startup.is_some());
    assert_eq!(status.crashes, 0);

    // Idempotent: the same scale again changes nothing.
    rt.scale(Arc::clone(&spec), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = rt
        .instances(&spec.namespace, &spec.revision)
        .borrow()
        .clone();
    assert_eq!(
        again.iter().map(|i| i.id).collect::<Vec<_>>(),
        ready.iter().map(|i| i.id).collect::<Vec<_>>()
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn readiness_waits_for_the_path_to_answer_2xx() {
    let rt = ProcessRuntime::new(config());
    // Listens only after 0.3 s, then answers 503 on /ready for another 0.5 s.
    let spec = with_path(
        python("ready", &[("DELAY", "0.3"), ("READY_AFTER", "0.5")]),
        "/ready",
    );
    let scaled = Instant::now();
    rt.scale(Arc::clone(&spec), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        rt.instances(&spec.namespace, &spec.revision)
            .borrow()
            .is_empty()
    );
    assert_eq!(rt.status(&spec.namespace, &spec.revision).starting, 1);

    let ready = wait_ready(&rt, &spec, 1).await;
    assert!(scaled.elapsed() >= Duration::from_millis(800));
    assert_eq!(get(ready[0].address(), "/ready").await.0, 200);
    let startup = rt
        .status(&spec.namespace, &spec.revision)
        .last_startup
        .unwrap();
    assert!(
        startup >= Duration::from_millis(800) && startup < Duration::from_secs(3),
        "start-up measured from spawn to the first 2xx: {startup:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn draining_waits_for_requests_in_flight_before_sigterm() {
    let rt = ProcessRuntime::new(config());
    let spec = python("drain", &[]);
    rt.scale(Arc::clone(&spec), 1);
    let instance = wait_ready(&rt, &spec, 1).await.remove(0);
    let pid = printed_pid(&rt, &spec, instance.id, "pid ").await;
    let request = instance.begin().expect("a ready instance takes requests");

    rt.scale(Arc::clone(&spec), 0);
    let mut rx = rt.instances(&spec.namespace, &spec.revision);
    tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|v| v.is_empty()))
        .await
        .expect("removed from the ready set at once")
        .unwrap();
    assert!(
        instance.begin().is_none(),
        "no new request on a draining instance"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(alive(pid), "not terminated while a request is in flight");
    assert_eq!(rt.status(&spec.namespace, &spec.revision).draining, 1);
    assert!(!lines_of(&rt, &spec).iter().any(|l| l.text == "got SIGTERM"));
    // The request in flight still gets its answer.
    assert_eq!(get(instance.address(), "/env").await.0, 200);

    let released = SystemTime::now();
    drop(request);
    wait_dead(pid).await;
    let sigterm = eventually("the SIGTERM line", || {
        lines_of(&rt, &spec)
            .into_iter()
            .find(|l| l.text == "got SIGTERM")
    })
    .await;
    assert!(
        sigterm.time >= released,
        "SIGTERM only after the request ended"
    );
    eventually("no instance left", || {
        let s = rt.status(&spec.namespace, &spec.revision);
        (s.draining == 0 && s.ready == 0 && s.starting == 0).then_some(())
    })
    .await;
    assert_eq!(rt.status(&spec.namespace, &spec.revision).crashes, 0);
    rt.shutdown().await;
}

#[tokio::test]
async fn scaling_up_is_not_held_back_by_a_drain() {
    let rt = ProcessRuntime::new(config());
    let spec = python("redrain", &[]);
    rt.scale(Arc::clone(&spec), 1);
    let old = wait_ready(&rt, &spec, 1).await.remove(0);
    let request = old.begin().unwrap();
    rt.scale(Arc::clone(&spec), 0);
    // (Scaling back at once would be no change at all: the latest call wins.)
    eventually("the drain to begin", || {
        (rt.status(&spec.namespace, &spec.revision).draining == 1).then_some(())
    })
    .await;
    rt.scale(Arc::clone(&spec), 1);
    let new = eventually("a new ready instance", || {
        let ready = rt
            .instances(&spec.namespace, &spec.revision)
            .borrow()
            .clone();
        ready.into_iter().find(|i| i.id != old.id)
    })
    .await;
    assert_ne!(new.address(), old.address());
    let status = rt.status(&spec.namespace, &spec.revision);
    assert_eq!((status.ready, status.draining), (1, 1), "{status:?}");
    drop(request);
    eventually("the old instance gone", || {
        (rt.status(&spec.namespace, &spec.revision).draining == 0).then_some(())
    })
    .await;
    assert_eq!(
        rt.instances(&spec.namespace, &spec.revision).borrow().len(),
        1
    );
    rt.shutdown().await;
}

/// A revision whose spec changes under its name (a Service deleted and created again) has its
/// instances replaced: the old one serves until the new one is ready, then drains and is gone.
#[tokio::test]
async fn a_new_spec_under_the_same_revision_replaces_its_instances() {
    let rt = ProcessRuntime::new(config());
    let old_spec = python("respec", &[("GREETING", "old")]);
    rt.scale(Arc::clone(&old_spec), 1);
    let old = wait_ready(&rt, &old_spec, 1).await.remove(0);
    let old_pid = printed_pid(&rt, &old_spec, old.id, "pid").await;
    let request = old.begin().unwrap();

    let mut new_spec = (*old_spec).clone();
    new_spec.env = vec![("GREETING".into(), EnvValue::from("new"))];
    // Ready only 0.3 s after listening: the old one keeps serving meanwhile.
    new_spec
        .env
        .push(("READY_AFTER".into(), EnvValue::from("0.3")));
    let new_spec = with_path(Arc::new(new_spec), "/ready");
    rt.scale(Arc::clone(&new_spec), 1);
    eventually("the new instance to start", || {
        (rt.status(&new_spec.namespace, &new_spec.revision).starting == 1).then_some(())
    })
    .await;
    let serving = rt
        .instances(&new_spec.namespace, &new_spec.revision)
        .borrow()
        .clone();
    assert_eq!(
        serving.iter().map(|i| i.id).collect::<Vec<_>>(),
        [old.id],
        "the old instance serves until the new one is ready"
    );
    let new = eventually("the new instance alone in the ready set", || {
        let ready = rt
            .instances(&new_spec.namespace, &new_spec.revision)
            .borrow()
            .clone();
        (ready.len() == 1 && ready[0].id != old.id).then(|| Arc::clone(&ready[0]))
    })
    .await;
    let (code, body) = get(new.address(), "/env").await;
    assert_eq!(code, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["env"]["GREETING"], "new");
    // The old instance drains: it finishes the request it holds, then goes.
    assert!(old.is_draining());
    assert!(alive(old_pid), "a request is still in flight on it");
    drop(request);
    wait_dead(old_pid).await;
    let status = rt.status(&new_spec.namespace, &new_spec.revision);
    assert_eq!(
        (status.ready, status.draining, status.crashes),
        (1, 0, 0),
        "{status:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn an_instance_ignoring_sigterm_is_killed_after_the_grace_period() {
    let grace = Duration::from_millis(500);
    let rt = ProcessRuntime::new(ProcessConfig {
        grace_period: grace,
        ..config()
    });
    let spec = python("sigkill", &[("IGNORE_TERM", "1")]);
    rt.scale(Arc::clone(&spec), 1);
    let instance = wait_ready(&rt, &spec, 1).await.remove(0);
    let pid = printed_pid(&rt, &spec, instance.id, "pid ").await;

    let stopped = Instant::now();
    rt.scale(Arc::clone(&spec), 0);
    tokio::time::sleep(grace / 2).await;
    assert!(
        alive(pid),
        "SIGTERM is ignored, so it lives until the grace period ends"
    );
    wait_dead(pid).await;
    let took = stopped.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(3),
        "{took:?}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_crashed_instance_is_counted_and_replaced() {
    let marker = tempfile::tempdir().unwrap();
    let marker = marker.path().join("crashed-once");
    let rt = ProcessRuntime::new(config());
    let spec = python(
        "crash",
        &[
            ("EXIT_AFTER", "0.3"),
            ("CRASH_MARKER", marker.to_str().unwrap()),
        ],
    );
    rt.scale(Arc::clone(&spec), 1);
    let first = wait_ready(&rt, &spec, 1).await.remove(0);

    let status = eventually("the crash to be counted", || {
        let s = rt.status(&spec.namespace, &spec.revision);
        (s.crashes == 1).then_some(s)
    })
    .await;
    match status.last_error.as_deref() {
        Some(Error::Exited {
            status,
            ready,
            stderr,
            oom_killed: false,
        }) => {
            assert_eq!(status.code(), Some(3));
            assert!(*ready);
            assert_eq!(stderr.as_deref(), Some("crashing on purpose"));
        }
        other => panic!("last error {other:?}"),
    }
    let message = status.last_error.unwrap().to_string();
    assert!(
        message.contains("exit status: 3") && message.contains("crashing on purpose"),
        "{message}"
    );

    let replacement = eventually("a replacement", || {
        let ready = rt
            .instances(&spec.namespace, &spec.revision)
            .borrow()
            .clone();
        ready.into_iter().find(|i| i.id != first.id)
    })
    .await;
    assert_eq!(get(replacement.address(), "/env").await.0, 200);
    let status = rt.status(&spec.namespace, &spec.revision);
    assert_eq!((status.crashes, status.restarts, status.ready), (1, 1, 1));
    assert!(first.is_draining(), "a dead instance takes no request");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_missing_command_is_reported_and_retried_with_backoff() {
    let rt = ProcessRuntime::new(ProcessConfig {
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_secs(10),
        ..config()
    });
    let spec = spec("missing", vec!["kinetic-test-no-such-command".into()], &[]);
    rt.scale(Arc::clone(&spec), 1);
    let status = eventually("two failed starts", || {
        let s = rt.status(&spec.namespace, &spec.revision);
        (s.crashes >= 2).then_some(s)
    })
    .await;
    match status.last_error.as_deref() {
        Some(Error::Spawn { program, source }) => {
            assert_eq!(program, "kinetic-test-no-such-command");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("last error {other:?}"),
    }
    assert!(
        status
            .last_error
            .unwrap()
            .to_string()
            .starts_with("cannot start `kinetic-test-no-such-command`: ")
    );
    // 100, 200, 400 ms...: within a second, at most 4 attempts.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = rt.status(&spec.namespace, &spec.revision);
    assert!(status.crashes <= 5, "backoff limits attempts: {status:?}");
    assert_eq!((status.ready, status.startups), (0, 0));

    rt.scale(Arc::clone(&spec), 0);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_missing_working_directory_is_reported() {
    let rt = ProcessRuntime::new(config());
    let mut spec = (*python("workdir", &[])).clone();
    spec.working_dir = Some("/nonexistent/kinetic-test".into());
    let spec = Arc::new(spec);
    rt.scale(Arc::clone(&spec), 1);
    let status = eventually("the failed start", || {
        let s = rt.status(&spec.namespace, &spec.revision);
        (s.crashes >= 1).then_some(s)
    })
    .await;
    assert!(matches!(
        status.last_error.as_deref(),
        Some(Error::WorkingDir { path, .. }) if path.to_str() == Some("/nonexistent/kinetic-test")
    ));
    rt.shutdown().await;
}

#[tokio::test]
async fn an_instance_dying_before_ready_says_why() {
    let rt = ProcessRuntime::new(config());
    let spec = spec(
        "early",
        vec![
            "sh".into(),
            "-c".into(),
            "echo 'no such module' >&2; exit 7".into(),
        ],
        &[],
    );
    rt.scale(Arc::clone(&spec), 1);
    let status = eventually("the crash", || {
        let s = rt.status(&spec.namespace, &spec.revision);
        (s.crashes >= 1).then_some(s)
    })
    .await;
    assert_eq!(
        status.last_error.unwrap().to_string(),
        "instance exited before becoming ready with exit status: 7; last stderr line: no such module"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn logs_are_kept_per_instance_bounded_and_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(ProcessConfig {
        log_lines: 100,
        max_log_line_bytes: 100,
        log_dir: Some(dir.path().to_owned()),
        ..config()
    });
    // 43 lines each: pid, "starting up" on stderr, 40 numbered lines, one of 5000 bytes.
    let spec = python("logs", &[("SPAM", "40"), ("LONG", "5000")]);
    rt.scale(Arc::clone(&spec), 2);
    let ready = wait_ready(&rt, &spec, 2).await;
    let lines = eventually("both instances' 43 lines", || {
        let lines = lines_of(&rt, &spec);
        (lines.len() == 86).then_some(lines)
    })
    .await;
    for instance in &ready {
        let own: Vec<&LogLine> = lines.iter().filter(|l| l.instance == instance.id).collect();
        assert_eq!(own.len(), 43);
        let stdout: Vec<&str> = own
            .iter()
            .filter(|l| l.stream == LogStream::Stdout)
            .map(|l| l.text.as_str())
            .collect();
        let numbered: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
        assert_eq!(stdout[1..41], numbered, "in order per instance");
        assert_eq!(*stdout.last().unwrap(), "x".repeat(100), "cut to 100 bytes");
        let last_stdout = own.iter().rev().find(|l| l.stream == LogStream::Stdout);
        assert!(last_stdout.unwrap().truncated);
        assert!(
            own.iter()
                .any(|l| l.stream == LogStream::Stderr && l.text == "starting up")
        );
        assert!(own.iter().all(|l| *l.revision == *spec.revision));
    }
    assert!(
        lines.windows(2).all(|w| w[0].time <= w[1].time),
        "oldest first"
    );

    // A second revision of the same service shares the service's ring, which keeps the last 100.
    let mut other = (*spec).clone();
    other.revision.push_str("-b");
    let other = Arc::new(other);
    rt.scale(Arc::clone(&other), 1);
    let other_ready = wait_ready(&rt, &other, 1).await;
    let lines = eventually("the second revision's long line", || {
        let lines = lines_of(&rt, &spec);
        lines
            .iter()
            .any(|l| l.truncated && l.instance == other_ready[0].id)
            .then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 100);
    assert_eq!(
        lines
            .iter()
            .filter(|l| *l.revision == *other.revision)
            .count(),
        43
    );
    let tail = rt.logs(&spec.namespace, &spec.service, 5);
    assert_eq!(tail[..], lines[95..]);

    // Each instance's stream, in order, in its own file.
    rt.shutdown().await;
    for instance in &ready {
        let path = dir
            .path()
            .join(&spec.namespace)
            .join(&spec.service)
            .join(format!("{}-{}.log", spec.revision, instance.id));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(" stderr starting up\n"), "{text}");
        let spam: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(" stdout line ").map(|(_, n)| n))
            .collect();
        assert_eq!(spam, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(text.contains(&format!(" stdout {}\n", "x".repeat(100))));
        assert!(!text.contains(&"x".repeat(101)));
    }
}

/// A shell that leaves a grandchild behind, then becomes an HTTP server.
fn family(test: &str) -> Arc<InstanceSpec> {
    let script = r#"sh -c 'sleep 1000 & echo "grandchild $!"; wait' &
exec python3 -m http.server --bind 127.0.0.1 "$PORT""#;
    spec(test, vec!["sh".into(), "-c".into(), script.into()], &[])
}

#[tokio::test]
async fn stopping_an_instance_kills_its_whole_process_group() {
    let rt = ProcessRuntime::new(config());
    let spec = family("group");
    rt.scale(Arc::clone(&spec), 1);
    let instance = wait_ready(&rt, &spec, 1).await.remove(0);
    let grandchild = printed_pid(&rt, &spec, instance.id, "grandchild ").await;
    assert!(alive(grandchild));

    rt.scale(Arc::clone(&spec), 0);
    wait_dead(grandchild).await;
    rt.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let rt = ProcessRuntime::new(config());
    let servers = python("shutdown", &[]);
    let families = family("shutdown");
    rt.scale(Arc::clone(&servers), 2);
    rt.scale(Arc::clone(&families), 2);
    let mut pids = Vec::new();
    for instance in wait_ready(&rt, &servers, 2).await {
        pids.push(printed_pid(&rt, &servers, instance.id, "pid ").await);
    }
    for instance in wait_ready(&rt, &families, 2).await {
        pids.push(printed_pid(&rt, &families, instance.id, "grandchild ").await);
    }
    assert!(pids.iter().all(|&pid| alive(pid)));

    tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
        .await
        .expect("shutdown within the grace period");
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} outlived shutdown");
    }
    for spec in [&servers, &families] {
        let status = rt.status(&spec.namespace, &spec.revision);
        assert_eq!((status.starting, status.ready, status.draining), (0, 0, 0));
        assert!(
            rt.instances(&spec.namespace, &spec.revision)
                .borrow()
                .is_empty()
        );
    }

    // Nothing starts after shutdown.
    rt.scale(Arc::clone(&servers), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = rt.status(&servers.namespace, &servers.revision);
    assert_eq!((status.starting, status.ready), (0, 0));
    rt.shutdown().await;
}

#[tokio::test]
async fn dropping_the_runtime_kills_its_instances_at_once() {
    // A long grace period and a function that ignores SIGTERM: only a SIGKILL stops it in time.
    let rt = ProcessRuntime::new(ProcessConfig {
        grace_period: Duration::from_secs(60),
        ..config()
    });
    let spec = python("drop", &[("IGNORE_TERM", "1")]);
    rt.scale(Arc::clone(&spec), 1);
    let instance = wait_ready(&rt, &spec, 1).await.remove(0);
    let pid = printed_pid(&rt, &spec, instance.id, "pid ").await;
    drop(rt);
    wait_dead(pid).await;
}

// The shim. Started as `<this test binary> __exec -- PROGRAM ARGS...`, libtest takes the arguments
// for name filters and runs only the test below, which then does what `kinetic __exec` does.

/// The shim's entry point when this binary is started as one; does nothing in a normal run.
#[test]
fn __exec() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "__exec") || args.get(2).is_none_or(|a| a != "--") {
        return;
    }
    let error = kinetic_serving::runtime::exec_shim(&args[3..]);
    // Straight to the stream: libtest would capture `eprintln!`.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{error}");
    std::process::exit(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    });
}

fn shim_config() -> ProcessConfig {
    ProcessConfig {
        shim: Some(std::env::current_exe().unwrap()),
        ..config()
    }
}

/// The parent pid field of `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_shim_becomes_the_program() {
    let rt = ProcessRuntime::new(shim_config());
    let function = python("shim", &[]);
    rt.scale(Arc::clone(&function), 1);
    let instance = wait_ready(&rt, &function, 1).await.remove(0);
    let (_, body) = get(instance.address(), "/env").await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pid = answer["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        parent_of(pid),
        std::process::id() as i32,
        "exec'd in place: no shim process left between"
    );
    assert!(
        answer["env"].get("KINETIC_PARENT_PID").is_none(),
        "the shim's variable is not passed on"
    );
    assert_eq!(answer["env"]["K_REVISION"], function.revision.as_str());

    let missing = spec(
        "shim-missing",
        vec!["kinetic-test-no-such-command".into()],
        &[],
    );
    rt.scale(Arc::clone(&missing), 1);
    let status = eventually("the failed exec", || {
        let s = rt.status(&missing.namespace, &missing.revision);
        (s.crashes >= 1).then_some(s)
    })
    .await;
    let message = status.last_error.unwrap().to_string();
    assert!(
        message.contains("exit status: 127")
            && message
                .contains("cannot start `kinetic-test-no-such-command`: No such file or directory"),
        "{message}"
    );
    rt.shutdown().await;
}

/// Plays kinetic in a child process: runs one instance through the shim, prints its pid, and waits
/// to be SIGKILLed. Does nothing in a normal run.
#[test]
fn sigkilled_host() {
    if std::env::var_os("KINETIC_TEST_ROLE").is_none_or(|role| role != "host") {
        return;
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let rt = ProcessRuntime::new(shim_config());
        let spec = python("orphan", &[("KINETIC_TEST_ROLE", "instance")]);
        rt.scale(Arc::clone(&spec), 1);
        let instance = wait_ready(&rt, &spec, 1).await.remove(0);
        let pid = printed_pid(&rt, &spec, instance.id, "pid ").await;
        println!("instance pid {pid}");
        // Killed long before this ends; if not, dropping the runtime stops the instance.
        tokio::time::sleep(WAIT).await;
    });
}

#[tokio::test]
async fn instances_die_with_a_sigkilled_kinetic() {
    use tokio::io::AsyncBufReadExt;
    let mut host = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkilled_host",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KINETIC_TEST_ROLE", "host")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(host.stdout.take().unwrap()).lines();
    let pid: i32 = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest starts the line with the test's name.
            if let Some((_, pid)) = line.split_once("instance pid ") {
                return pid.trim().parse().unwrap();
            }
        }
        panic!("the host ended without starting its instance");
    })
    .await
    .expect("the host starts its instance in time");
    assert!(alive(pid));

    host.start_kill().unwrap();
    host.wait().await.unwrap();
    wait_dead(pid).await;
}
