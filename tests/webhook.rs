//! `kinetic webhook` over real HTTPS: a certificate made the way `--manage-certs` makes it (a CA
//! and a serving certificate for the webhook's Service names), an AdmissionReview posted as the
//! API server posts it, trusting only that CA, and kinetic's answer: a Trigger kinetic accepts is
//! allowed; one it refuses is denied with the message `kinetic apply` gives.

mod support;

use std::time::Duration;

use kinetic_k8s::webhook::certs::{Names, generate};
use serde_json::{Value, json};
use support::Kinetic;

fn review(cesql: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b7f0a8a4-1c1e-4c5e-9d55-3a8f4a1f2c10",
            "kind": {"group": "eventing.knative.dev", "version": "v1", "kind": "Trigger"},
            "resource": {"group": "eventing.knative.dev", "version": "v1", "resource": "triggers"},
            "name": "orders",
            "namespace": "team",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {
                "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                "metadata": {"name": "orders", "namespace": "team"},
                "spec": {"broker": "default",
                         "subscriber": {"uri": "http://display.team.svc.cluster.local/"},
                         "filters": [{"cesql": cesql}]}
            },
            "dryRun": false
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_reviews_are_answered_over_https_with_kinetics_messages() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names {
        namespace: "kinetic-system".to_owned(),
        secret: "kinetic-webhook-certs".to_owned(),
        service: "kinetic-webhook".to_owned(),
        configuration: "kinetic-webhook".to_owned(),
    };
    let (certificate, _) = generate(&names, chrono::Utc::now()).unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &certificate.cert).unwrap();
    std::fs::write(&key, &certificate.key).unwrap();
    let webhook = Kinetic::spawn(
        &[
            "webhook".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        &[],
    );
    // As the API server calls it: by the Service's name, trusting the CA of the caBundle.
    let host = "kinetic-webhook.kinetic-system.svc";
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certificate.ca.as_bytes()).unwrap())
        .resolve(host, webhook.address)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://{host}:{}/validate", webhook.address.port());

    let allowed: Value = client
        .post(&url)
        .json(&review("type LIKE 'com.example.%'"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(allowed["kind"], "AdmissionReview");
    assert_eq!(
        allowed["response"]["uid"],
        "b7f0a8a4-1c1e-4c5e-9d55-3a8f4a1f2c10"
    );
    assert_eq!(allowed["response"]["allowed"], true, "{allowed}");

    let denied: Value = client
        .post(&url)
        .json(&review("type = = 'x'"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(denied["response"]["allowed"], false, "{denied}");
    let message = denied["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Trigger team/orders: spec.filters[0].cesql: is not valid CESQL"),
        "{message}"
    );

    // Defaulting answers too; without the cluster's resources it changes nothing.
    let defaulted: Value = client
        .post(format!("https://{host}:{}/default", webhook.address.port()))
        .json(&review("true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(defaulted["response"]["allowed"], true, "{defaulted}");
    assert!(defaulted["response"].get("patch").is_none(), "{defaulted}");

    // Not HTTPS, not served.
    let plain = reqwest::Client::new()
        .post(format!("http://{}/validate", webhook.address))
        .json(&review("true"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP must not be answered"
    );
}
