//! Webhook subscriptions: triggers whose subscriber is an outside URL. Deliveries are signed the
//! Standard Webhooks way (checked with the reference library for Python, which shares no code with
//! kinetic), the egress guard keeps deliveries off internal addresses, and a subscriber answering
//! `410 Gone` disables its trigger until the trigger is applied again.
//!
//! The reference library comes from `scripts/ensure-standardwebhooks.sh`; without it the signature
//! test is skipped, except under `CI=true` where it fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::Value;

use crate::support::{Answer, Engine, Received, Receiver, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World, ids, sorted};

engines!(
    signed_deliveries_verify_with_the_reference_library,
    an_unreadable_signing_secret_holds_the_trigger_until_it_can_be_read,
    the_egress_guard_refuses_internal_addresses_and_sends_nothing,
    gone_disables_the_trigger_until_it_is_applied_again,
);

/// A fresh Standard Webhooks secret, `whsec_<base64 of 24 random bytes>`.
fn secret() -> String {
    let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
    key.extend_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    format!("whsec_{}", BASE64_STANDARD.encode(key))
}

/// The Python of the virtualenv holding the `standardwebhooks` package.
fn reference_python() -> Option<PathBuf> {
    let python = std::env::var("KINETIC_STANDARDWEBHOOKS_PYTHON")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            let venv = std::env::var("KINETIC_STANDARDWEBHOOKS_VENV")
                .map(PathBuf::from)
                .ok()
                .or_else(|| {
                    std::env::var("HOME")
                        .ok()
                        .map(|home| PathBuf::from(home).join(".cache/kinetic-standardwebhooks"))
                })?;
            Some(venv.join("bin/python"))
        })
        .filter(|python| python.exists());
    if python.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "the standardwebhooks package is not installed; run scripts/ensure-standardwebhooks.sh"
            );
        }
        eprintln!(
            "skipped: the standardwebhooks package is not installed (run scripts/ensure-standardwebhooks.sh)"
        );
    }
    python
}

/// Verifies a received delivery with the reference library's `Webhook(secret).verify(body,
/// headers)`; `Err` carries what it said.
fn verify(python: &PathBuf, secret: &str, received: &Received) -> Result<(), String> {
    const SCRIPT: &str = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        Webhook(sys.argv[1]).verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]), json_parse=False)\n";
    let headers = serde_json::json!({
        "webhook-id": received.header("webhook-id").unwrap_or_default(),
        "webhook-timestamp": received.header("webhook-timestamp").unwrap_or_default(),
        "webhook-signature": received.header("webhook-signature").unwrap_or_default(),
    });
    let output = tokio::task::block_in_place(|| {
        let mut child = Command::new(python)
            .args(["-c", SCRIPT, secret, &headers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the reference library");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&received.body)
            .expect("write the body");
        child.wait_with_output().expect("reference library output")
    });
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn signing(secrets: &str) -> String {
    format!("signing: {{standardWebhooks: {{secrets: [{secrets}]}}}}")
}

async fn signed_deliveries_verify_with_the_reference_library(engine: Engine) {
    let Some(python) = reference_python() else {
        return;
    };
    let receiver = Receiver::start().await;
    // Rotation: the new secret from an environment variable, the old one from a file.
    let (new, old, json_secret, sink_secret) = (secret(), secret(), secret(), secret());
    let dir = tempfile::tempdir().expect("temp dir");
    let old_file = dir.path().join("old-secret");
    let secrets = dir.path().display().to_string();
    std::fs::write(&old_file, format!("{old}\n")).expect("write the old secret");
    // The structured-mode subscriber fails once: the retry is signed again, with the same id.
    receiver.script("/json", vec![Answer::status(503)]);
    receiver.default_answer("/refuses", Answer::status(400));
    let docs = [
        trigger_yaml(
            "rotating",
            "default",
            &receiver.url("/binary"),
            &format!(
                "  delivery: {{{}}}\n",
                signing(&format!(
                    "{{env: WEBHOOK_SECRET}}, {{file: '{}'}}",
                    old_file.display()
                ))
            ),
        ),
        trigger_yaml(
            "structured",
            "default",
            &receiver.url("/json"),
            &format!(
                "  delivery: {{format: json, retry: 2, backoffPolicy: linear, backoffDelay: PT0.1S, {}}}\n",
                signing("{env: WEBHOOK_SECRET_JSON}")
            ),
        ),
        trigger_yaml(
            "refused",
            "default",
            &receiver.url("/refuses"),
            &format!(
                "  delivery: {{deadLetterSink: {{uri: '{}'}}, {}}}\n",
                receiver.url("/dls"),
                signing("{env: WEBHOOK_SECRET_SINK}")
            ),
        ),
        trigger_yaml("unsigned", "default", &receiver.url("/unsigned"), ""),
    ];
    let world = World::start_with_env(
        engine,
        &docs,
        &[
            ("WEBHOOK_SECRET", &new),
            ("WEBHOOK_SECRET_JSON", &json_secret),
            ("WEBHOOK_SECRET_SINK", &sink_secret),
            ("KINETIC_SECRET_ENV", "WEBHOOK_SECRET*"),
            ("KINETIC_SECRETS_DIR", &secrets),
        ],
    )
    .await;
    world
        .send(
            "default",
            &[Ce::new("order-1", "com.example.order")
                .data("application/json", r#"{"order": 1, "note": "é"}"#)],
        )
        .await;

    let binary = receiver.wait_for("/binary", 1, WAIT).await;
    assert_eq!(ids(&binary), ["order-1"], "log:\n{}", world.log());
    let delivery = &binary[0];
    assert_eq!(delivery.header("webhook-id"), Some("order-1"));
    assert_eq!(
        delivery.body.as_ref(),
        r#"{"order": 1, "note": "é"}"#.as_bytes()
    );
    let signatures: Vec<&str> = delivery
        .header("webhook-signature")
        .expect("webhook-signature")
        .split(' ')
        .collect();
    assert_eq!(
        signatures.len(),
        2,
        "one signature per secret: {signatures:?}"
    );
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    // Each secret verifies on its own: subscribers can switch at their pace.
    verify(&python, &new, delivery).expect("the new secret verifies");
    verify(&python, &old, delivery).expect("the old secret verifies");
    let stranger = verify(&python, &secret(), delivery).expect_err("another secret must not");
    assert!(stranger.contains("No matching signature"), "{stranger}");
    let mut tampered = delivery.clone();
    tampered.body = r#"{"order": 2, "note": "é"}"#.as_bytes().to_vec().into();
    verify(&python, &new, &tampered).expect_err("a changed body must not verify");

    let structured = receiver.wait_for("/json", 2, WAIT).await;
    assert_eq!(structured.len(), 2, "a failed attempt and its retry");
    for attempt in &structured {
        let event: Value = serde_json::from_slice(&attempt.body).expect("structured JSON");
        assert_eq!(event["id"], "order-1");
        assert_eq!(attempt.header("webhook-id"), Some("order-1"));
        assert_eq!(
            attempt
                .header("webhook-signature")
                .map(|s| s.split(' ').count()),
            Some(1)
        );
        verify(&python, &json_secret, attempt).expect("structured mode verifies");
        verify(&python, &new, attempt).expect_err("another trigger's secret must not");
    }

    // The dead-letter sink's delivery is signed too.
    let sunk = receiver.wait_for("/dls", 1, WAIT).await;
    assert_eq!(ids(&sunk), ["order-1"], "log:\n{}", world.log());
    verify(&python, &sink_secret, &sunk[0]).expect("the dead-letter sink's delivery verifies");
    assert_eq!(
        receiver.received("/refuses")[0].header("webhook-id"),
        Some("order-1")
    );

    let unsigned = receiver.wait_for("/unsigned", 1, WAIT).await;
    assert_eq!(ids(&unsigned), ["order-1"]);
    assert!(unsigned[0].header("webhook-signature").is_none());
    assert!(unsigned[0].header("webhook-id").is_none());
}

async fn an_unreadable_signing_secret_holds_the_trigger_until_it_can_be_read(engine: Engine) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secret");
    let docs = [trigger_yaml(
        "held",
        "default",
        &receiver.url("/held"),
        &format!(
            "  delivery: {{{}}}\n",
            signing(&format!("{{file: '{}'}}", file.display()))
        ),
    )];
    let secrets = dir.path().display().to_string();
    let world = World::start_with_env(engine, &docs, &[("KINETIC_SECRETS_DIR", &secrets)]).await;
    let trigger = world
        .wait_trigger("held", |t| t["status"]["ready"] == false)
        .await;
    let problem = trigger["status"]["problem"].as_str().unwrap_or_default();
    assert!(
        problem.starts_with(&format!(
            "delivery.signing: signing secret 0: the file `{}` cannot be read: ",
            file.display()
        )),
        "{trigger}"
    );
    world
        .send("default", &[Ce::new("held-1", "com.example.held")])
        .await;
    tokio::time::sleep(QUIET).await;
    assert!(receiver.received("/held").is_empty(), "the event waits");
    assert!(world.dead_letters("held").await.is_empty());

    // Secrets are read again at every plan refresh: once the file is there, the event goes, signed.
    let key = secret();
    std::fs::write(&file, &key).expect("write the secret");
    let got = receiver.wait_for("/held", 1, WAIT).await;
    assert_eq!(ids(&got), ["held-1"], "log:\n{}", world.log());
    let signature = got[0].header("webhook-signature").expect("signed");
    let expected = kinetic_outbound::signing::Signer::from_secrets(&[key.as_str()])
        .expect("a valid secret")
        .signature(
            "held-1",
            got[0]
                .header("webhook-timestamp")
                .and_then(|t| t.parse().ok())
                .expect("a timestamp"),
            &got[0].body,
        );
    assert_eq!(signature, expected);
    let trigger = world
        .wait_trigger("held", |t| t["status"]["ready"] == true)
        .await;
    assert_eq!(trigger["status"]["ready"], true, "{trigger}");
}

async fn the_egress_guard_refuses_internal_addresses_and_sends_nothing(engine: Engine) {
    // Every receiver of the test is on loopback, and this kinetic allows no internal address: a
    // delivery that got through would show up there.
    let receiver = Receiver::start().await;
    let port = receiver.address.port();
    let broker = |name: &str| match engine {
        Engine::Kafka => format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {name}\n  annotations:\n    eventing.knative.dev/broker.class: Kafka\n"
        ),
        Engine::Sqlite | Engine::Postgres | Engine::Split => crate::support::broker_yaml(name),
    };
    let docs = [
        // A name that resolves to loopback: refused, and dead-lettered to a Broker, which as
        // kinetic's own ingress is always reachable.
        trigger_yaml(
            "by-name",
            "default",
            &format!("http://localhost:{port}/by-name"),
            "  delivery:\n    retry: 3\n    deadLetterSink:\n      ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: sunk}\n",
        ),
        broker("sunk"),
        // An IP literal, reached through the dead-letter broker.
        trigger_yaml(
            "by-literal",
            "sunk",
            &format!("http://127.0.0.1:{port}/by-literal"),
            "  delivery: {retry: 3}\n",
        ),
        // Loopback written as an IPv4-mapped IPv6 address.
        trigger_yaml(
            "mapped",
            "default",
            &format!("http://[::ffff:127.0.0.1]:{port}/mapped"),
            "  delivery: {retry: 3}\n",
        ),
    ];
    let world = World::start_with_env(engine, &docs, &[("KINETIC_EGRESS_ALLOW", "none")]).await;
    world
        .send("default", &[Ce::new("ssrf-1", "com.example.probe")])
        .await;

    let by_name = world
        .wait_dead_letters("by-name", 1, |l| l["deadLetterSink"] == "delivered")
        .await;
    assert_eq!(by_name.len(), 1, "log:\n{}", world.log());
    assert_eq!(by_name[0]["attempts"], 1, "not retried: {}", by_name[0]);
    assert_eq!(by_name[0]["lastStatus"], Value::Null);
    let error = by_name[0]["lastError"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("refused: localhost resolves to ")
            && error.ends_with(", a loopback address; allow it with --egress-allow loopback"),
        "{error}"
    );
    let by_literal = world.wait_dead_letters("by-literal", 1, |_| true).await;
    assert_eq!(by_literal.len(), 1, "log:\n{}", world.log());
    assert_eq!(by_literal[0]["event"]["id"], "ssrf-1");
    assert_eq!(by_literal[0]["attempts"], 1);
    assert_eq!(
        by_literal[0]["lastError"],
        "refused: 127.0.0.1 is a loopback address; allow it with --egress-allow loopback"
    );
    let mapped = world.wait_dead_letters("mapped", 1, |_| true).await;
    assert_eq!(mapped.len(), 1, "log:\n{}", world.log());
    assert_eq!(
        mapped[0]["lastError"],
        "refused: ::ffff:127.0.0.1 is a loopback address; allow it with --egress-allow loopback",
        "the mapped form is classed as the IPv4 address it carries"
    );
    tokio::time::sleep(QUIET).await;
    assert!(
        receiver.all().is_empty(),
        "nothing may reach loopback: {:?}",
        receiver.all().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

async fn gone_disables_the_trigger_until_it_is_applied_again(engine: Engine) {
    let receiver = Receiver::start().await;
    receiver.script("/hooks", vec![Answer::status(410).body("endpoint deleted")]);
    let hooks = |retry: u32| {
        trigger_yaml(
            "hooks",
            "default",
            &receiver.url("/hooks"),
            &format!(
                "  delivery: {{retry: {retry}, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}\n",
                receiver.url("/dls")
            ),
        )
    };
    let other = trigger_yaml("other", "default", &receiver.url("/other"), "");
    let mut world = World::start(engine, &[hooks(2), other.clone()]).await;
    world
        .send("default", &[Ce::new("g-1", "com.example.g")])
        .await;

    // Dead-lettered at once, and still sent to the dead-letter sink while disabled.
    let letters = world
        .wait_dead_letters("hooks", 1, |l| l["deadLetterSink"] == "delivered")
        .await;
    assert_eq!(letters.len(), 1, "log:\n{}", world.log());
    assert_eq!(letters[0]["attempts"], 1, "not retried: {}", letters[0]);
    assert_eq!(letters[0]["lastStatus"], 410);
    assert!(
        letters[0]["lastError"]
            .as_str()
            .is_some_and(|e| e.starts_with("HTTP 410 Gone")),
        "{}",
        letters[0]
    );
    assert_eq!(ids(&receiver.wait_for("/dls", 1, WAIT).await), ["g-1"]);

    // The trigger shows why, in the API and in `kinetic get triggers`.
    let trigger = world
        .wait_trigger("hooks", |t| !t["status"]["disabled"].is_null())
        .await;
    let disabled = &trigger["status"]["disabled"];
    assert_eq!(disabled["status"], 410, "{trigger}");
    assert_eq!(disabled["url"], receiver.url("/hooks"));
    assert_eq!(disabled["eventId"], "g-1");
    assert!(disabled["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    assert_eq!(trigger["status"]["ready"], false);
    assert!(
        trigger["status"]["problem"].as_str().is_some_and(
            |p| p.contains("answered 410 Gone") && p.contains("apply the trigger again")
        ),
        "{trigger}"
    );
    let output = world.kinetic.cli_in_place(&["get", "triggers"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains(&format!(
            "default/hooks is not ready: delivery is disabled: {} answered 410 Gone at ",
            receiver.url("/hooks")
        )),
        "{table}"
    );
    let (_, other_status) = world.get("/api/v1/triggers/default/other").await;
    assert_eq!(other_status["status"]["ready"], true, "{other_status}");

    // While disabled, events wait: the other trigger gets them, this one does not.
    world
        .send(
            "default",
            &[
                Ce::new("g-2", "com.example.g"),
                Ce::new("g-3", "com.example.g"),
            ],
        )
        .await;
    receiver.wait_for("/other", 3, WAIT).await;
    tokio::time::sleep(QUIET * 2).await;
    assert_eq!(ids(&receiver.received("/hooks")), ["g-1"]);
    assert_eq!(world.dead_letters("hooks").await.len(), 1);

    // Applied again with a change: enabled, and the waiting events arrive.
    world.rewrite(&[hooks(3), other]);
    let trigger = world
        .wait_trigger("hooks", |t| t["status"]["ready"] == true)
        .await;
    assert_eq!(trigger["metadata"]["generation"], 2, "{trigger}");
    assert!(trigger["status"]["disabled"].is_null(), "{trigger}");
    let got = receiver.wait_for("/hooks", 3, WAIT).await;
    assert_eq!(
        sorted(ids(&got)),
        ["g-1", "g-2", "g-3"],
        "log:\n{}",
        world.log()
    );
    world
        .send("default", &[Ce::new("g-4", "com.example.g")])
        .await;
    let got = receiver.wait_for("/hooks", 4, WAIT).await;
    assert_eq!(ids(&got).last().map(String::as_str), Some("g-4"));
    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.received("/hooks").len(), 4, "nothing twice");
    assert_eq!(world.dead_letters("hooks").await.len(), 1);
}

#[test]
fn egress_allow_mistakes_stop_kinetic_before_it_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/state.db", dir.path().display());
    for command in ["up", "dispatcher"] {
        let output = crate::support::cli_bounded(
            &[
                command,
                "--listen",
                "127.0.0.1:0",
                "--store",
                &store,
                "--egress-allow",
                "loopback,privat",
            ],
            std::time::Duration::from_secs(20),
        );
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {error}");
        assert!(
            error.contains(
                "`privat` is not an address class; use one or more of loopback, private,"
            ),
            "{command}: {error}"
        );
        assert!(
            !dir.path().join("state.db").exists(),
            "{command}: nothing was created"
        );
    }
}
