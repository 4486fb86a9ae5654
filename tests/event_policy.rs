//! Who may send to a broker, end to end on both engines: Knative's EventPolicy with tokens from
//! kinetic's own issuer (`kinetic token create`) and from an outside issuer whose keys the test
//! makes with PyJWT (RS256, ES256, EdDSA); wrong audience, expired, not yet valid, unknown issuer,
//! tampered and missing tokens; a `from.sub` wildcard; a `filters` mismatch; a label selector; and
//! each default authorization mode for a broker no policy names. Only what was accepted is
//! delivered.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::{Engine, Kinetic, Receiver, TestStore, crypto, documents, trigger_yaml, write_yaml};

const OUTSIDE: &str = "https://issuer.test";
const WAIT: Duration = Duration::from_secs(15);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn audience(broker: &str) -> String {
    format!("eventing.knative.dev/broker/default/{broker}")
}

/// Posts one event with `token` (if any); the status, the `WWW-Authenticate` header and the body.
async fn post(
    kinetic: &Kinetic,
    broker: &str,
    id: &str,
    ty: &str,
    token: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new()
        .post(kinetic.url(&format!("/default/{broker}")))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/policy-test")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body("{}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap_or_default())
}

/// The dead letters of trigger `default/{trigger}`, as the API's JSON text.
async fn dead_letters(kinetic: &Kinetic, trigger: &str) -> String {
    kinetic
        .api()
        .get(kinetic.admin(&format!("/api/v1/deadletters?trigger=default/{trigger}")))
        .send()
        .await
        .expect("GET dead letters")
        .text()
        .await
        .expect("dead letters")
}

/// Waits (bounded by [`WAIT`]) until trigger `trigger`'s dead letters, as JSON text, contain one
/// of `needles`; panics with the last answer and kinetic's log otherwise. A delivery that fails
/// is dead-lettered after the other events of its batch may already have arrived.
async fn wait_dead_letter(kinetic: &Kinetic, trigger: &str, needles: &[&str]) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let letters = dead_letters(kinetic, trigger).await;
        if needles.iter().any(|n| letters.contains(n)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter of {trigger} mentions {needles:?}: {letters}\nlog:\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kinetic token create` against `kinetic`.
fn own_token(kinetic: &Kinetic, sub: &str, audience: &str) -> String {
    let output = kinetic.cli(&[
        "token",
        "create",
        "--sub",
        sub,
        "--audience",
        audience,
        "--ttl",
        "10m",
    ]);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn resources(dir: &Path, receiver: &Receiver) -> std::path::PathBuf {
    let policy = |name: &str, spec: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        )
    };
    write_yaml(
        dir,
        "resources.yaml",
        &documents(&[
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: guarded, labels: {team: shop}}\n".to_owned(),
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: open}\n".to_owned(),
            policy(
                "checkout",
                "  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: guarded}}]\n  from: [{sub: 'system:serviceaccount:default:checkout-*'}]\n  filters: [{prefix: {type: com.shop.}}]\n",
            ),
            policy(
                "partners",
                "  to: [{selector: {apiVersion: eventing.knative.dev/v1, kind: Broker, matchLabels: {team: shop}}}]\n  from: [{sub: partner}]\n",
            ),
            trigger_yaml("to-guarded", "guarded", &receiver.url("/guarded"), ""),
            trigger_yaml("to-open", "open", &receiver.url("/open"), ""),
        ]),
    )
}

async fn policies_decide_who_may_send(engine: Engine) {
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let keys = tempfile::tempdir().unwrap();
    crypto::jwt_keys(keys.path());
    let jwks = keys.path().join("jwks.json");
    let file = resources(store.dir(), &receiver);
    let issuer_flag = format!("{OUTSIDE}={}", jwks.display());
    let kinetic = tokio::task::block_in_place(|| {
        Kinetic::up_with(&store, &[&file], &["--oidc-issuer", &issuer_flag])
    });
    let guarded = audience("guarded");
    let mut accepted = Vec::new();

    // kinetic's own issuer: a wildcard subject, events that match the policy's filters.
    let checkout = tokio::task::block_in_place(|| {
        own_token(
            &kinetic,
            "system:serviceaccount:default:checkout-7",
            &guarded,
        )
    });
    let (status, _, body) = post(
        &kinetic,
        "guarded",
        "own-1",
        "com.shop.order",
        Some(&checkout),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    accepted.push("own-1");
    let (status, _, body) = post(&kinetic, "guarded", "own-2", "com.other", Some(&checkout)).await;
    assert_eq!(status, 403, "filters: {body}");
    assert!(body.contains("does not match the filters"), "{body}");
    let intruder = tokio::task::block_in_place(|| {
        own_token(&kinetic, "system:serviceaccount:default:intruder", &guarded)
    });
    let (status, _, body) = post(
        &kinetic,
        "guarded",
        "own-3",
        "com.shop.order",
        Some(&intruder),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("allows `system:serviceaccount:default:intruder`"),
        "{body}"
    );

    // An outside issuer, each algorithm; the selector policy allows `partner` with no filters.
    for alg in ["RS256", "ES256", "EdDSA"] {
        let token = crypto::jwt_sign(
            keys.path(),
            alg,
            &json!({"iss": OUTSIDE, "sub": "partner", "aud": guarded, "exp": now() + 600}),
        );
        let id = format!("partner-{alg}");
        let (status, _, body) = post(&kinetic, "guarded", &id, "anything", Some(&token)).await;
        assert_eq!(status, 202, "{alg}: {body}");
        accepted.push(Box::leak(id.into_boxed_str()));
    }

    // Tokens that are not good: 401 with a challenge and a reason.
    let claims = |extra: serde_json::Value| {
        let mut claims =
            json!({"iss": OUTSIDE, "sub": "partner", "aud": guarded, "exp": now() + 600});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };
    let valid = crypto::jwt_sign(keys.path(), "ES256", &claims(json!({})));
    let tampered = {
        let (head, signature) = valid.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{head}.{flipped}{}", &signature[1..])
    };
    let bad = [
        (
            "wrong audience",
            crypto::jwt_sign(
                keys.path(),
                "RS256",
                &claims(json!({"aud": audience("open")})),
            ),
            "audience is not this broker's",
        ),
        (
            "expired",
            crypto::jwt_sign(keys.path(), "RS256", &claims(json!({"exp": now() - 120}))),
            "expired",
        ),
        (
            "not yet valid",
            crypto::jwt_sign(keys.path(), "EdDSA", &claims(json!({"nbf": now() + 600}))),
            "not valid yet",
        ),
        (
            "unknown issuer",
            crypto::jwt_sign(
                keys.path(),
                "ES256",
                &claims(json!({"iss": "https://elsewhere.test"})),
            ),
            "is not trusted",
        ),
        ("tampered", tampered, "signature"),
        ("not a JWT", "opaque-token".to_owned(), "not a JWT"),
    ];
    for (case, token, reason) in &bad {
        let (status, challenge, body) = post(
            &kinetic,
            "guarded",
            &format!("bad-{case}"),
            "anything",
            Some(token),
        )
        .await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer error=\"invalid_token\""),
            "{case}"
        );
        assert!(body.contains(reason), "{case}: {body}");
    }
    // The outside issuer rotates its keys: a token under a key id kinetic has not seen makes it
    // read the key set again (at most every few seconds), and then it verifies.
    crypto::jwt_rotate(keys.path(), "next-");
    let rotated = crypto::jwt_sign(keys.path(), "ES256", &claims(json!({})));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, _, body) = post(&kinetic, "guarded", "rotated", "x", Some(&rotated)).await;
        if status == 202 {
            accepted.push("rotated");
            break;
        }
        assert!(
            status == 401 && body.contains("kid `next-ec`"),
            "{status} {body}"
        );
        assert!(std::time::Instant::now() < deadline, "never read again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, challenge, body) = post(&kinetic, "guarded", "none", "anything", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert!(
        body.contains(&guarded),
        "the answer names the audience: {body}"
    );

    // The webhook validation handshake (OPTIONS) of a guarded broker needs a token too.
    let options = |token: Option<String>| {
        let mut request = reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, kinetic.url("/default/guarded"))
            .header("webhook-request-origin", "sender.example");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(options(None).await, 401);
    assert_eq!(options(Some(checkout.clone())).await, 200);

    // A broker no policy names, under the default allow-all: no token needed.
    let (status, _, body) = post(&kinetic, "open", "open-1", "anything", None).await;
    assert_eq!(status, 202, "{body}");

    // The broker shows its audience and policies.
    let listed = kinetic.cli(&["get", "brokers"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains(&guarded) && table.contains("checkout,partners"),
        "{table}"
    );

    // Exactly what was accepted is delivered.
    let got = receiver.wait_for("/guarded", accepted.len(), WAIT).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.header("ce-id").unwrap().to_owned())
        .collect();
    ids.sort();
    accepted.sort();
    assert_eq!(ids, accepted, "log:\n{}", kinetic.log());
    assert_eq!(receiver.wait_for("/open", 1, WAIT).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("/guarded").len(), accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_decide_who_may_send_sqlite() {
    policies_decide_who_may_send(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_decide_who_may_send_postgres() {
    policies_decide_who_may_send(Engine::Postgres).await;
}

/// Each default mode for a broker that no policy names.
async fn default_modes(engine: Engine) {
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: plain}\n"
                .to_owned(),
            trigger_yaml("to-plain", "plain", &receiver.url("/plain"), ""),
        ]),
    );
    let plain = audience("plain");
    let mut delivered = 0;
    for mode in ["deny-all", "allow-same-namespace", "allow-all"] {
        let mut kinetic = tokio::task::block_in_place(|| {
            Kinetic::up_with(&store, &[&file], &["--default-authorization-mode", mode])
        });
        let same = tokio::task::block_in_place(|| {
            own_token(&kinetic, "system:serviceaccount:default:app", &plain)
        });
        let ghost_token = tokio::task::block_in_place(|| {
            own_token(
                &kinetic,
                "system:serviceaccount:default:app",
                &audience("ghost"),
            )
        });
        let other = tokio::task::block_in_place(|| {
            own_token(&kinetic, "system:serviceaccount:elsewhere:app", &plain)
        });
        let none = post(&kinetic, "plain", &format!("{mode}-none"), "t", None)
            .await
            .0;
        let same = post(&kinetic, "plain", &format!("{mode}-same"), "t", Some(&same))
            .await
            .0;
        let other = post(
            &kinetic,
            "plain",
            &format!("{mode}-other"),
            "t",
            Some(&other),
        )
        .await
        .0;
        let expected = match mode {
            "deny-all" => (401, 403, 403),
            "allow-same-namespace" => (401, 202, 403),
            _ => (202, 202, 202),
        };
        assert_eq!((none, same, other), expected, "{mode}");
        // An unknown broker answers a caller without a token as a guarded one would: whether a
        // broker exists is for authenticated callers only (unless everything is open).
        let ghost_none = post(&kinetic, "ghost", &format!("{mode}-ghost"), "t", None)
            .await
            .0;
        let ghost_same = post(
            &kinetic,
            "ghost",
            &format!("{mode}-ghost"),
            "t",
            Some(&ghost_token),
        )
        .await
        .0;
        let expected = match mode {
            "deny-all" => (401, 403),
            "allow-same-namespace" => (401, 404),
            _ => (404, 404),
        };
        assert_eq!((ghost_none, ghost_same), expected, "{mode}: unknown broker");
        delivered += [none, same, other].iter().filter(|s| **s == 202).count();
        let got = receiver.wait_for("/plain", delivered, WAIT).await;
        assert_eq!(got.len(), delivered, "{mode}: log:\n{}", kinetic.log());
        // Stopped gracefully: its cursor leases are released for the next process at once.
        tokio::task::block_in_place(|| kinetic.terminate());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_modes_sqlite() {
    default_modes(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_modes_postgres() {
    default_modes(Engine::Postgres).await;
}

#[tokio::test]
async fn an_exposed_listener_with_an_implicit_allow_all_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let output = support::cli_bounded(
        &[
            "up",
            "--listen",
            "0.0.0.0:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--state-dir",
            state,
        ],
        Duration::from_secs(20),
    );
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("--default-authorization-mode deny-all")
            && error.contains("reachable from other machines"),
        "{error}"
    );
}

/// What kinetic itself sends carries its resource identity: a WebhookSource's events reach a
/// guarded broker when a policy names the source by `ref`, a Trigger's deliveries to a Broker when
/// a policy names the Trigger; a destination's `audience` gets a token any OIDC library verifies
/// through kinetic's discovery document; `CACerts` makes a private CA's HTTPS subscriber reachable.
async fn kinetic_senders_carry_their_identity(engine: Engine) {
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let certs = tempfile::tempdir().unwrap();
    crypto::tls(certs.path(), "subscriber");
    let secure = Receiver::start_tls(
        &certs.path().join("subscriber.pem"),
        &certs.path().join("subscriber.key"),
    )
    .await;
    let ca = std::fs::read_to_string(certs.path().join("ca.pem")).unwrap();
    let indented_ca: String = ca.lines().map(|l| format!("        {l}\n")).collect();
    let typed = |name: &str, ty: &str, subscriber: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec:\n  broker: entry\n  filter: {{attributes: {{type: {ty}}}}}\n  subscriber:\n{subscriber}  delivery: {{retry: 0}}\n"
        )
    };
    let to_guarded =
        "    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: guarded}\n";
    let hook = |name: &str| {
        format!(
            "apiVersion: sources.kinetic.dev/v1alpha1\nkind: WebhookSource\nmetadata: {{name: {name}}}\nspec:\n  insecure: true\n  type: com.example.hook\n  sink:\n    ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: guarded}}\n"
        )
    };
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: guarded}\n".to_owned(),
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: entry}\n".to_owned(),
            "apiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: insiders}\nspec:\n  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: guarded}}]\n  from:\n    - ref: {apiVersion: sources.kinetic.dev/v1alpha1, kind: WebhookSource, name: allowed}\n    - ref: {apiVersion: eventing.knative.dev/v1, kind: Trigger, name: forward}\n".to_owned(),
            hook("allowed"),
            hook("stranger"),
            trigger_yaml("to-guarded", "guarded", &receiver.url("/guarded"), ""),
            typed("forward", "fwd", to_guarded),
            typed("unlisted", "unl", to_guarded),
            typed(
                "audience",
                "aud",
                &format!("    uri: '{}'\n    audience: https://receiver.example\n", receiver.url("/aud")),
            ),
            typed(
                "secure",
                "sec",
                &format!("    uri: '{}'\n    CACerts: |\n{indented_ca}", secure.https_url("/secure")),
            ),
            typed("insecure", "sec", &format!("    uri: '{}'\n", secure.https_url("/insecure"))),
        ]),
    );
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let client = reqwest::Client::new();

    // Sources: the one a policy names by ref gets in, the other is refused (403 back to its sender).
    let sent = client
        .post(kinetic.url("/webhooks/default/allowed"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sent.status().as_u16(),
        202,
        "{}",
        sent.text().await.unwrap()
    );
    let refused = client
        .post(kinetic.url("/webhooks/default/stranger"))
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap();
    let status = refused.status().as_u16();
    let body = refused.text().await.unwrap();
    assert!(
        status >= 400 && body.contains("HTTP 403"),
        "{status} {body}"
    );
    // Why, in the source's status, not to the webhook's sender.
    assert!(!body.contains("stranger-oidc"), "{body}");
    let sources = kinetic
        .api()
        .get(kinetic.admin("/api/v1/sources"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sources.contains("stranger-oidc-sources.kinetic.dev-webhooksource"),
        "{sources}"
    );
    let got = receiver.wait_for("/guarded", 1, WAIT).await;
    assert_eq!(got.len(), 1, "log:\n{}", kinetic.log());
    assert_eq!(got[0].header("ce-type"), Some("com.example.hook"));

    // Triggers: `forward` may deliver to the guarded broker, `unlisted` may not (dead-lettered).
    for (id, ty) in [
        ("fwd-1", "fwd"),
        ("unl-1", "unl"),
        ("aud-1", "aud"),
        ("sec-1", "sec"),
    ] {
        assert_eq!(post(&kinetic, "entry", id, ty, None).await.0, 202);
    }
    let got = receiver.wait_for("/guarded", 2, WAIT).await;
    let ids: Vec<&str> = got.iter().filter_map(|r| r.header("ce-id")).collect();
    assert!(ids.contains(&"fwd-1") && !ids.contains(&"unl-1"), "{ids:?}");
    wait_dead_letter(&kinetic, "unlisted", &["403"]).await;

    // A destination's audience: a token kinetic signed for the trigger, verified by PyJWT from
    // kinetic's discovery document and JWKS.
    let got = receiver.wait_for("/aud", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let token = got[0]
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("a bearer token")
        .to_owned();
    let issuer = kinetic.base_url.clone();
    let claims = tokio::task::block_in_place(|| {
        crypto::jwt_verify(&issuer, "https://receiver.example", &token)
    });
    assert_eq!(
        claims["sub"],
        "system:serviceaccount:default:audience-oidc-eventing.knative.dev-trigger"
    );

    // CACerts: the private CA is trusted for `secure`; `insecure` fails its certificate check.
    assert_eq!(secure.wait_for("/secure", 1, WAIT).await.len(), 1);
    assert!(secure.received("/insecure").is_empty());
    wait_dead_letter(&kinetic, "insecure", &["certificate", "Certificate"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_senders_carry_their_identity_sqlite() {
    kinetic_senders_carry_their_identity(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_senders_carry_their_identity_postgres() {
    kinetic_senders_carry_their_identity(Engine::Postgres).await;
}
