//! The CLI as a user runs it: `cesql eval`, `apply` with mistakes, `get`, `delete`, `send`, `up`
//! refusing bad flags before it binds, two `up` on one SQLite file, and `migrate` on both engines.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Engine, Kinetic, Receiver, TestStore, broker_yaml, cli, cli_bounded, documents, trigger_yaml,
    write_yaml,
};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the CLI and requires success; returns stdout.
fn ok(args: &[&str]) -> String {
    let output = cli(args);
    assert!(
        output.status.success(),
        "`kinetic {}` failed: {}",
        args.join(" "),
        stderr(&output)
    );
    stdout(&output)
}

/// `args` against a running kinetic's admin listener, with the local token of its state directory.
fn at<'a>(args: &[&'a str], server: &'a str, state: &'a str) -> Vec<&'a str> {
    [args, &["--server", server, "--state-dir", state]].concat()
}

/// Runs the CLI and requires failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let output = cli(args);
    assert!(
        !output.status.success(),
        "`kinetic {}` must fail; stdout: {}",
        args.join(" "),
        stdout(&output)
    );
    stderr(&output)
}

/// `kinetic cesql eval` prints exactly one JSON object on one line.
fn eval(args: &[&str]) -> Value {
    let mut all = vec!["cesql", "eval"];
    all.extend_from_slice(args);
    let output = ok(&all);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {output:?}");
    let value: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{output}: {e}"));
    assert!(value.is_object(), "{output}");
    value
}

#[test]
fn cesql_eval_prints_one_json_object() {
    let values: &[(&str, Value)] = &[
        ("1 = 1", json!({"result": true})),
        ("1 = 2", json!({"result": false})),
        ("1 + 2", json!({"result": 3})),
        ("CONCAT('ab', 'cd')", json!({"result": "abcd"})),
        ("UPPER(type)", json!({"result": "DEV.KINETIC.CESQL.EVAL"})),
        ("id", json!({"result": "1"})),
    ];
    for (expression, expected) in values {
        assert_eq!(
            &eval(&["--expression", expression]),
            expected,
            "{expression}"
        );
    }
    // Errors: the spec's result for the failing expression, the error kind and a message.
    let errors: &[(&str, Value, &str)] = &[
        ("1 = = 1", json!(false), "parse"),
        ("type LIKE", json!(false), "parse"),
        ("1 / 0", json!(0), "math"),
        ("5 % 0", json!(0), "math"),
        ("nosuchattribute = 'x'", json!(false), "missingAttribute"),
        ("NOSUCHFUNCTION(1)", json!(false), "missingFunction"),
    ];
    for (expression, result, kind) in errors {
        let report = eval(&["--expression", expression]);
        assert_eq!(&report["result"], result, "{expression}: {report}");
        assert_eq!(report["error"], *kind, "{expression}: {report}");
        assert!(
            !report["message"].as_str().unwrap_or_default().is_empty(),
            "{expression}: {report}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let event = write_yaml(
        dir.path(),
        "event.json",
        r#"{"specversion":"1.0","id":"e1","source":"/cli","type":"x","subject":"s1","color":"blue","data":{"a":1}}"#,
    );
    let event = event.to_str().unwrap();
    for (expression, expected) in [
        ("type = 'x'", json!({"result": true})),
        ("type = 'y'", json!({"result": false})),
        ("color = 'blue' AND subject = 's1'", json!({"result": true})),
        ("EXISTS color", json!({"result": true})),
    ] {
        assert_eq!(
            eval(&["--expression", expression, "--event", event]),
            expected,
            "{expression}"
        );
    }
    let bad_event = write_yaml(
        dir.path(),
        "bad-event.json",
        r#"{"specversion":"1.0","source":"/cli","type":"x"}"#,
    );
    let message = fails(&[
        "cesql",
        "eval",
        "--expression",
        "true",
        "--event",
        bad_event.to_str().unwrap(),
    ]);
    assert!(
        message.contains("bad-event.json") && message.contains("`id` is required"),
        "{message}"
    );
}

/// A file whose first document is a valid Broker and whose second is a Trigger with `spec`.
fn bad_file(dir: &Path, name: &str, trigger: &str) -> String {
    let text = format!(
        "{}---\n{trigger}",
        broker_yaml(&format!("from-{}", name.trim_end_matches(".yaml")))
    );
    write_yaml(dir, name, &text).display().to_string()
}

const TRIGGER_HEAD: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_mistakes_naming_file_document_path_and_hint() {
    let store = TestStore::new(Engine::Sqlite).await;
    let kinetic = Kinetic::up(&store, &[]);
    let server = kinetic.admin_url.clone();
    // The CLI finds the local token in the state directory, as on a user's machine.
    let state = store.dir().display().to_string();
    let uri = "subscriber: {uri: 'http://127.0.0.1:9/'}";
    let cases = [
        (
            "unknown-field.yaml",
            format!("{TRIGGER_HEAD}spec: {{broker: default, {uri}, deliveryy: {{retry: 1}}}}\n"),
            "spec.deliveryy",
            "unknown field `deliveryy`",
        ),
        (
            "bad-duration.yaml",
            format!(
                "{TRIGGER_HEAD}spec: {{broker: default, {uri}, delivery: {{backoffDelay: 5s}}}}\n"
            ),
            "spec.delivery.backoffDelay",
            "not an ISO-8601 duration",
        ),
        (
            "two-dialects.yaml",
            format!(
                "{TRIGGER_HEAD}spec: {{broker: default, {uri}, filters: [{{exact: {{type: a}}, prefix: {{type: b}}}}]}}\n"
            ),
            "spec.filters[0]",
            "several dialects",
        ),
        (
            "bad-cesql.yaml",
            format!(
                "{TRIGGER_HEAD}spec: {{broker: default, {uri}, filters: [{{cesql: \"type = = 'x'\"}}]}}\n"
            ),
            "spec.filters[0].cesql",
            "is not valid CESQL",
        ),
        (
            "missing-broker.yaml",
            format!("{TRIGGER_HEAD}spec: {{{uri}}}\n"),
            "spec",
            "missing field `broker`",
        ),
        (
            "wrong-api-version.yaml",
            format!(
                "{}spec: {{broker: default, {uri}}}\n",
                TRIGGER_HEAD.replace("eventing.knative.dev/v1", "eventing.knative.dev/v2")
            ),
            "apiVersion",
            "does not serve kind `Trigger`",
        ),
    ];
    let dir = store.dir();
    for (name, trigger, path, message) in &cases {
        let file = bad_file(dir, name, trigger);
        let error = fails(&at(&["apply", "-f", &file], &server, &state));
        for part in [
            file.as_str(),
            "document 2",
            &format!("{path}: "),
            message,
            "(hint: ",
        ] {
            assert!(
                error.contains(part),
                "{name}: {part:?} missing from: {error}"
            );
        }
    }
    // A file with a mistake changes nothing, not even its valid documents.
    let brokers: Value = serde_json::from_str(&ok(&at(
        &["get", "brokers", "-A", "-o", "json"],
        &server,
        &state,
    )))
    .unwrap();
    assert_eq!(brokers, json!([]), "{brokers}");
    // The server checks too, for clients that skip the CLI.
    let response = kinetic
        .api()
        .post(kinetic.admin("/api/v1/apply?file=raw.yaml"))
        .header("content-type", "application/yaml")
        .body(cases[1].1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["file"], "raw.yaml");
    assert_eq!(body["document"], 1);
    assert_eq!(body["path"], "spec.delivery.backoffDelay");
    assert!(body["hint"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_delete_and_send() {
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let kinetic = Kinetic::up(&store, &[]);
    let server = kinetic.admin_url.clone();
    // The CLI finds the local token in the state directory, as on a user's machine.
    let state = store.dir().display().to_string();
    let yaml = documents(&[
        broker_yaml("default"),
        trigger_yaml("orders", "default", &receiver.url("/orders"), ""),
        trigger_yaml(
            "blue",
            "default",
            &receiver.url("/blue"),
            "  filter: {attributes: {color: blue}}\n",
        ),
    ]);
    let file = write_yaml(store.dir(), "resources.yaml", &yaml);
    let file = file.to_str().unwrap();
    let applied = ok(&at(&["apply", "-f", file], &server, &state));
    assert_eq!(
        applied.lines().collect::<Vec<_>>(),
        [
            "broker default/default created",
            "trigger default/orders created",
            "trigger default/blue created"
        ],
        "{applied}"
    );
    let again = ok(&at(&["apply", "-f", file], &server, &state));
    assert_eq!(again.matches("unchanged").count(), 3, "{again}");

    // get, in the three formats.
    let json: Value = serde_json::from_str(&ok(&at(
        &["get", "triggers", "-o", "json"],
        &server,
        &state,
    )))
    .unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blue", "orders"], "{json}");
    assert_eq!(
        json[1]["spec"]["subscriber"]["uri"],
        receiver.url("/orders")
    );
    let yaml_out = ok(&at(&["get", "triggers", "-o", "yaml"], &server, &state));
    let documents: Vec<Value> = serde_saphyr::from_multiple(&yaml_out).unwrap();
    assert_eq!(documents.len(), 2, "{yaml_out}");
    assert_eq!(documents[1]["metadata"]["name"], "orders", "{yaml_out}");
    let table = ok(&at(&["get", "triggers"], &server, &state));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAMESPACE", "NAME", "BROKER", "SUBSCRIBER", "READY"],
        "{table}"
    );
    assert_eq!(
        rows[2],
        [
            "default",
            "orders",
            "default",
            receiver.url("/orders").as_str(),
            "True"
        ],
        "{table}"
    );
    let one: Value = serde_json::from_str(&ok(&at(
        &["get", "trigger", "blue", "-o", "json"],
        &server,
        &state,
    )))
    .unwrap();
    assert_eq!(one["spec"]["filter"]["attributes"]["color"], "blue");
    let error = fails(&at(&["get", "trigger", "nosuch"], &server, &state));
    assert!(error.contains("default/nosuch does not exist"), "{error}");
    let error = fails(&at(&["get", "widgets"], &server, &state));
    assert!(error.contains("unknown resource type `widgets`"), "{error}");

    // send, with an extension and data, reaches the subscribers.
    let sent = ok(&[
        "send",
        "--broker",
        "default/default",
        "--type",
        "com.example.cli",
        "--source",
        "/cli",
        "--id",
        "cli-1",
        "--extension",
        "color=blue",
        "--data",
        r#"{"a":1,"b":"two"}"#,
        "--ingress",
        &kinetic.base_url,
    ]);
    assert!(sent.contains("cli-1"), "{sent}");
    let got = receiver.wait_for("/blue", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "kinetic log:\n{}", kinetic.log());
    assert_eq!(got[0].header("ce-id"), Some("cli-1"));
    assert_eq!(got[0].header("ce-type"), Some("com.example.cli"));
    assert_eq!(got[0].header("ce-source"), Some("/cli"));
    assert_eq!(got[0].header("ce-color"), Some("blue"));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    let data: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(data, json!({"a": 1, "b": "two"}));
    assert_eq!(
        receiver
            .wait_for("/orders", 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );

    // send: mistakes exit non-zero with a message that says what to fix.
    let base = [
        "send",
        "--type",
        "t",
        "--source",
        "/cli",
        "--ingress",
        &kinetic.base_url,
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let error = run(with(&["--broker", "default"]));
    assert!(error.contains("must be NAMESPACE/NAME"), "{error}");
    let error = run(with(&["--broker", "default/nosuch"]));
    assert!(
        error.contains("`default/nosuch` does not exist") && error.contains("404"),
        "{error}"
    );
    let error = run(with(&["--broker", "default/default", "--data", "{nope"]));
    assert!(error.contains("--data is not valid JSON"), "{error}");
    let error = run(with(&[
        "--broker",
        "default/default",
        "--extension",
        "novalue",
    ]));
    assert!(error.contains("must be NAME=VALUE"), "{error}");
    let error = fails(&[
        "send",
        "--broker",
        "default/default",
        "--type",
        "t",
        "--source",
        "/cli",
        "--ingress",
        "http://127.0.0.1:9",
    ]);
    assert!(
        error.contains("cannot reach kinetic at http://127.0.0.1:9"),
        "{error}"
    );

    // delete by kind and name, then by file.
    let deleted = ok(&at(&["delete", "trigger", "blue"], &server, &state));
    assert!(
        deleted.contains("trigger default/blue deleted"),
        "{deleted}"
    );
    let json: Value = serde_json::from_str(&ok(&at(
        &["get", "triggers", "-o", "json"],
        &server,
        &state,
    )))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    let error = fails(&at(&["delete", "trigger", "blue"], &server, &state));
    assert!(error.contains("default/blue does not exist"), "{error}");
    let error = fails(&at(&["delete", "trigger"], &server, &state));
    assert!(error.contains("give KIND and NAME"), "{error}");
    // Re-created, then everything the file names is deleted.
    ok(&at(&["apply", "-f", file], &server, &state));
    let deleted = ok(&at(&["delete", "-f", file], &server, &state));
    assert_eq!(deleted.lines().count(), 3, "{deleted}");
    for kind in ["brokers", "triggers"] {
        let left: Value = serde_json::from_str(&ok(&at(
            &["get", kind, "-A", "-o", "json"],
            &server,
            &state,
        )))
        .unwrap();
        assert_eq!(left, json!([]), "{kind}");
    }
    // Every kind is deleted by file under its own plural (`eventpolicies`, not `eventpolicys`).
    let policy = write_yaml(
        store.dir(),
        "policy.yaml",
        "apiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: senders}\nspec:\n  from:\n    - sub: system:serviceaccount:default:sender\n",
    );
    let policy = policy.to_str().unwrap();
    ok(&at(&["apply", "-f", policy], &server, &state));
    let deleted = ok(&at(&["delete", "-f", policy], &server, &state));
    assert!(
        deleted.contains("eventpolicy default/senders deleted"),
        "{deleted}"
    );
}

/// A loopback port this test holds, so a `kinetic up` that binds before failing shows it (it fails
/// with "listening on ..." instead of the mistake it was given).
fn held_port() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

#[test]
fn up_refuses_bad_flags_and_files_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state").join("state.db");
    let store = format!("sqlite://{}", db.display());
    let (_held, address) = held_port();
    let bad_yaml = write_yaml(
        dir.path(),
        "bad.yaml",
        &format!("{TRIGGER_HEAD}spec: {{broker: default, subscriber: {{uri: '/relative'}}}}\n"),
    );
    let bad_yaml = bad_yaml.to_str().unwrap();
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--listen", "nope"],
            &["invalid value 'nope' for '--listen"],
        ),
        (
            &["--listen", &address, "--dedupe-window", "5s"],
            &["'--dedupe-window", "`5s` is not an ISO-8601 duration"],
        ),
        (
            &["--listen", &address, "--max-body-bytes", "lots"],
            &["--max-body-bytes"],
        ),
        (
            &["--listen", &address, "--delivery-concurrency", "0"],
            &["--delivery-concurrency"],
        ),
        (
            &["--listen", &address, "--store", "mysql://x"],
            &["mysql://x", "is not supported"],
        ),
        (
            &["--listen", &address, "-f", missing],
            &["missing.yaml does not exist"],
        ),
        (
            &["--listen", &address, "--exec-allow", "functions/bin"],
            &[
                "--exec-allow `functions/bin` is not an absolute path",
                "--exec-allow /opt/functions",
            ],
        ),
        (
            &["--listen", &address, "--max-instances", "0"],
            &["--max-instances"],
        ),
        (
            &["--listen", &address, "-f", bad_yaml],
            &["bad.yaml, document 1", "spec.subscriber.uri", "(hint: "],
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["up"];
        if !flags.contains(&"--store") {
            args.extend(["--store", store.as_str()]);
        }
        args.extend_from_slice(flags);
        let output = cli_bounded(&args, Duration::from_secs(20));
        let error = stderr(&output);
        assert!(!output.status.success(), "{flags:?} must fail");
        for part in *expected {
            assert!(
                error.contains(part),
                "{flags:?}: {part:?} missing from: {error}"
            );
        }
        assert!(
            !error.contains("listening on") && !error.contains("kinetic is up"),
            "{flags:?}: bound before refusing: {error}"
        );
    }
}

#[test]
fn flag_mistakes_create_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_dir = state.to_str().unwrap();
    for flags in [
        ["--listen", "nope"],
        ["--dedupe-window", "5s"],
        ["--max-body-bytes", "-1"],
    ] {
        let mut args = vec!["up", "--state-dir", state_dir];
        args.extend_from_slice(&flags);
        let output = cli_bounded(&args, Duration::from_secs(20));
        assert!(!output.status.success(), "{flags:?}");
        assert!(!state.exists(), "{flags:?} created {}", state.display());
    }
}

#[tokio::test]
async fn second_up_on_the_same_sqlite_file_refuses() {
    let store = TestStore::new(Engine::Sqlite).await;
    let first = Kinetic::up(&store, &[]);
    let output = cli_bounded(
        &["up", "--listen", "127.0.0.1:0", "--store", &store.url],
        Duration::from_secs(20),
    );
    assert!(!output.status.success());
    let error = stderr(&output);
    let file = store.url.trim_start_matches("sqlite://");
    assert!(
        error.contains(file) && error.contains("in use by another kinetic process"),
        "{error}"
    );
    // The first one is unharmed.
    let status = reqwest::get(first.url("/readyz")).await.unwrap().status();
    assert_eq!(status.as_u16(), 200);
}

async fn migrate(engine: Engine) {
    let store = TestStore::new(engine).await;
    for _ in 0..2 {
        let out = ok(&["migrate", "--store", &store.url]);
        assert!(out.contains("is migrated"), "{out}");
        assert!(out.contains(match engine {
            Engine::Sqlite | Engine::Kafka => "(sqlite)",
            Engine::Postgres | Engine::Split => "(postgres)",
        }));
    }
    // The schema is there: kinetic up starts on it and serves the API.
    let kinetic = Kinetic::up(&store, &[]);
    let answer: Value = kinetic
        .api()
        .get(kinetic.admin("/api/v1/triggers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"items": []}));
    match engine {
        Engine::Sqlite | Engine::Kafka => {
            assert!(Path::new(store.url.trim_start_matches("sqlite://")).exists());
        }
        Engine::Postgres | Engine::Split => {
            let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&store.url)
                .await
                .unwrap();
            let (tables,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'cursors'",
            )
            .fetch_one(&mut connection)
            .await
            .unwrap();
            assert_eq!(tables, 1);
            // A server that does not answer: the message names the store.
            let error = fails(&["migrate", "--store", "postgres://postgres@127.0.0.1:9/none"]);
            assert!(
                error.contains("opening the store postgres://postgres@127.0.0.1:9/none"),
                "{error}"
            );
        }
    }
}

#[tokio::test]
async fn migrate_sqlite() {
    migrate(Engine::Sqlite).await;
}

#[tokio::test]
async fn migrate_postgres() {
    migrate(Engine::Postgres).await;
}
