//! The webhook's certificate on Kubernetes against kube's mock API server, every request
//! asserted: made and stored in a new Secret when there is none, reused while valid, renewed
//! (replacing the Secret as read, by its resourceVersion) within a month of expiry, the winner's
//! taken after a 409, and its CA put in every webhook of both configurations once.

use http::{Request, Response};
use kinetic_k8s::webhook::certs::{self, Names};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn names() -> Names {
    Names {
        namespace: "kinetic-system".to_owned(),
        secret: "kinetic-webhook-certs".to_owned(),
        service: "kinetic-webhook".to_owned(),
        configuration: "kinetic-webhook".to_owned(),
    }
}

const SECRET: &str = "/api/v1/namespaces/kinetic-system/secrets/kinetic-webhook-certs";

async fn next(server: &mut ApiServer) -> (String, String, Value, SendResponse<Response<Body>>) {
    let (request, send) =
        tokio::time::timeout(std::time::Duration::from_secs(10), server.next_request())
            .await
            .expect("a request within 10 s")
            .unwrap();
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (
        parts.method.to_string(),
        parts.uri.path().to_owned(),
        body,
        send,
    )
}

fn answer(send: SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap(),
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code})
}

fn pem(data: &Value, key: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data[key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// A stored Secret holding `certificate`, expiring at `not_after`.
fn secret(certificate: &certs::Certificate, not_after: &str, version: &str) -> Value {
    use base64::Engine as _;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "kinetic-webhook-certs", "namespace": "kinetic-system",
                        "resourceVersion": version, "annotations": {certs::NOT_AFTER: not_after}},
           "type": "kubernetes.io/tls",
           "data": {"tls.crt": b64(&certificate.cert), "tls.key": b64(&certificate.key),
                    "ca.crt": b64(&certificate.ca)}})
}

fn mock() -> (kube::Client, ApiServer) {
    let (service, server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), server)
}

#[tokio::test]
async fn a_missing_certificate_is_made_and_stored_in_a_new_secret() {
    let (client, mut server) = mock();
    let now = chrono::Utc::now();
    let task = tokio::spawn(async move { certs::ensure(&client, &names(), now).await });
    let (method, path, _, send) = next(&mut server).await;
    assert_eq!((method.as_str(), path.as_str()), ("GET", SECRET));
    answer(send, 404, &status(404, "NotFound"));
    let (method, path, body, send) = next(&mut server).await;
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/api/v1/namespaces/kinetic-system/secrets")
    );
    assert_eq!(body["type"], "kubernetes.io/tls");
    assert_eq!(body["metadata"]["name"], "kinetic-webhook-certs");
    let not_after = chrono::DateTime::parse_from_rfc3339(
        body["metadata"]["annotations"][certs::NOT_AFTER]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let days = (not_after.with_timezone(&chrono::Utc) - now).num_days();
    assert!((363..=365).contains(&days), "valid for {days} days");
    let cert = pem(&body["data"], "tls.crt");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(pem(&body["data"], "tls.key").contains("PRIVATE KEY"));
    answer(send, 201, &body);
    let made = task.await.unwrap().unwrap();
    assert_eq!(made.cert, cert);
    assert_eq!(made.ca, pem(&body["data"], "ca.crt"));
}

#[tokio::test]
async fn a_valid_certificate_is_reused_and_one_near_expiry_is_renewed_as_read() {
    let now = chrono::Utc::now();
    let (existing, _) = certs::generate(&names(), now).unwrap();

    let (client, mut server) = mock();
    let later = (now + chrono::Duration::days(200)).to_rfc3339();
    let stored = secret(&existing, &later, "41");
    let task = tokio::spawn(async move { certs::ensure(&client, &names(), now).await });
    let (_, path, _, send) = next(&mut server).await;
    assert_eq!(path, SECRET);
    answer(send, 200, &stored);
    assert_eq!(
        task.await.unwrap().unwrap(),
        existing,
        "reused, nothing written"
    );

    let (client, mut server) = mock();
    let soon = (now + chrono::Duration::days(10)).to_rfc3339();
    let stored = secret(&existing, &soon, "42");
    let task = tokio::spawn(async move { certs::ensure(&client, &names(), now).await });
    let (_, _, _, send) = next(&mut server).await;
    answer(send, 200, &stored);
    let (method, path, body, send) = next(&mut server).await;
    assert_eq!((method.as_str(), path.as_str()), ("PUT", SECRET));
    assert_eq!(body["metadata"]["resourceVersion"], "42");
    assert_ne!(
        pem(&body["data"], "tls.crt"),
        existing.cert,
        "a new certificate"
    );
    answer(send, 200, &body);
    let renewed = task.await.unwrap().unwrap();
    assert_eq!(renewed.cert, pem(&body["data"], "tls.crt"));
}

#[tokio::test]
async fn a_replica_that_loses_the_race_takes_the_winners_certificate() {
    let now = chrono::Utc::now();
    let (winner, _) = certs::generate(&names(), now).unwrap();
    let (client, mut server) = mock();
    let task = tokio::spawn(async move { certs::ensure(&client, &names(), now).await });
    let (_, _, _, send) = next(&mut server).await;
    answer(send, 404, &status(404, "NotFound"));
    let (method, _, _, send) = next(&mut server).await;
    assert_eq!(method, "POST");
    answer(send, 409, &status(409, "AlreadyExists"));
    let (method, path, _, send) = next(&mut server).await;
    assert_eq!((method.as_str(), path.as_str()), ("GET", SECRET));
    let later = (now + chrono::Duration::days(300)).to_rfc3339();
    answer(send, 200, &secret(&winner, &later, "7"));
    assert_eq!(task.await.unwrap().unwrap(), winner);
}

#[tokio::test]
async fn the_ca_goes_into_every_webhook_once() {
    use base64::Engine as _;
    let configuration = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "kinetic-webhook", "resourceVersion": "5"},
        "webhooks": [
            {"name": "validation.eventing.kinetic.dev", "sideEffects": "None", "admissionReviewVersions": ["v1"],
             "clientConfig": {"service": {"name": "kinetic-webhook", "namespace": "kinetic-system", "path": "/validate"}}},
            {"name": "validation.serving.kinetic.dev", "sideEffects": "None", "admissionReviewVersions": ["v1"],
             "clientConfig": {"service": {"name": "kinetic-webhook", "namespace": "kinetic-system", "path": "/validate"}}}
        ]
    });
    let path =
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/kinetic-webhook";
    let (client, mut server) = mock();
    let task = tokio::spawn(async move { certs::publish_ca(&client, &names(), "CA PEM").await });
    let (method, seen, _, send) = next(&mut server).await;
    assert_eq!((method.as_str(), seen.as_str()), ("GET", path));
    answer(send, 200, &configuration);
    let (method, seen, body, send) = next(&mut server).await;
    assert_eq!((method.as_str(), seen.as_str()), ("PUT", path));
    assert_eq!(body["metadata"]["resourceVersion"], "5");
    let bundle = base64::engine::general_purpose::STANDARD.encode("CA PEM");
    for webhook in body["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["clientConfig"]["caBundle"], bundle.as_str());
    }
    answer(send, 200, &body);
    // The defaulting configuration of the same name gets it too.
    let mutating_path =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/kinetic-webhook";
    let mut mutating = configuration.clone();
    mutating["kind"] = json!("MutatingWebhookConfiguration");
    mutating["webhooks"] = json!([mutating["webhooks"][0].clone()]);
    let (method, seen, _, send) = next(&mut server).await;
    assert_eq!((method.as_str(), seen.as_str()), ("GET", mutating_path));
    answer(send, 200, &mutating);
    let (method, seen, mutated, send) = next(&mut server).await;
    assert_eq!((method.as_str(), seen.as_str()), ("PUT", mutating_path));
    assert_eq!(
        mutated["webhooks"][0]["clientConfig"]["caBundle"],
        bundle.as_str()
    );
    answer(send, 200, &mutated);
    task.await.unwrap().unwrap();

    // Already there: read, nothing written; no defaulting configuration: nothing more.
    let (client, mut server) = mock();
    let task = tokio::spawn(async move { certs::publish_ca(&client, &names(), "CA PEM").await });
    let (_, _, _, send) = next(&mut server).await;
    answer(send, 200, &body);
    let (_, seen, _, send) = next(&mut server).await;
    assert_eq!(seen, mutating_path);
    answer(send, 404, &status(404, "NotFound"));
    task.await.unwrap().unwrap();
}
