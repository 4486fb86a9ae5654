//! Both listeners over HTTPS with a test CA (made with Python's `cryptography`), a certificate
//! renewed while kinetic runs and served without a restart, and the CLI trusting the CA.

mod support;

use std::time::{Duration, Instant};

use support::{
    Engine, Kinetic, Receiver, TestStore, broker_yaml, crypto, documents, trigger_yaml, write_yaml,
};

fn client(ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    for certificate in reqwest::Certificate::from_pem_bundle(&pem).unwrap() {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().unwrap()
}

/// Posts event `tls-{n}` over HTTPS and waits until it is the `n`th the receiver got.
async fn send_and_receive(
    https: &reqwest::Client,
    kinetic: &Kinetic,
    receiver: &Receiver,
    n: usize,
) {
    let url = kinetic.url("/default/default");
    let status = support::send_event(https, &url, &format!("tls-{n}"), "t", &[], "{}").await;
    assert_eq!(status, 202);
    let got = receiver.wait_for("/all", n, Duration::from_secs(15)).await;
    assert_eq!(got.len(), n, "log:\n{}", kinetic.log());
}

fn address_of(url: &str) -> std::net::SocketAddr {
    url.rsplit("//").next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_serve_https_and_pick_up_a_renewed_certificate() {
    let store = TestStore::new(Engine::Sqlite).await;
    let certs = tempfile::tempdir().unwrap();
    let first = crypto::tls(certs.path(), "server");
    let ca = certs.path().join("ca.pem");
    let cert = certs.path().join("server.pem");
    let key = certs.path().join("server.key");
    let receiver = Receiver::start().await;
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            broker_yaml("default"),
            trigger_yaml("all", "default", &receiver.url("/all"), ""),
        ]),
    );
    let kinetic = tokio::task::block_in_place(|| {
        Kinetic::up_with(
            &store,
            &[&file],
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
        )
    });
    assert!(
        kinetic.base_url.starts_with("https://"),
        "{}",
        kinetic.base_url
    );
    assert!(
        kinetic.admin_url.starts_with("https://"),
        "{}",
        kinetic.admin_url
    );
    let https = client(&ca);

    // The public listener: an event in over HTTPS, delivered.
    send_and_receive(&https, &kinetic, &receiver, 1).await;
    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(kinetic.url("/healthz").replace("https://", "http://"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // The admin listener: the API with the token, and the same-origin check knows it is https.
    let origin = kinetic.admin_url.clone();
    let listed = https
        .get(kinetic.admin("/api/v1/brokers"))
        .bearer_auth(&kinetic.token)
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    let cross = https
        .get(kinetic.admin("/api/v1/brokers"))
        .bearer_auth(&kinetic.token)
        .header("origin", origin.replace("https://", "http://"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
    // The CLI, trusting the CA.
    let output = tokio::task::block_in_place(|| {
        kinetic.cli(&["get", "brokers", "--ca-file", ca.to_str().unwrap()])
    });
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("default"));
    let output = tokio::task::block_in_place(|| kinetic.cli(&["get", "brokers"]));
    assert!(
        !output.status.success(),
        "without the CA the certificate is not trusted"
    );

    // Renewed on disk: served by both listeners without a restart.
    let public = address_of(&kinetic.base_url);
    let admin = address_of(&kinetic.admin_url);
    assert_eq!(crypto::served_serial(public, &ca), first);
    let second = crypto::tls(certs.path(), "server");
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = (
            crypto::served_serial(public, &ca),
            crypto::served_serial(admin, &ca),
        );
        if now == (second.clone(), second.clone()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still serving {now:?}, not {second}; log:\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send_and_receive(&https, &kinetic, &receiver, 2).await;
}

#[tokio::test]
async fn tls_mistakes_are_refused_before_listening() {
    let certs = tempfile::tempdir().unwrap();
    crypto::tls(certs.path(), "server");
    crypto::tls(certs.path(), "other");
    let state = tempfile::tempdir().unwrap();
    let run = |cert: &str, key: &str| {
        let output = support::cli_bounded(
            &[
                "up",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--gateway-listen",
                "127.0.0.1:0",
                "--state-dir",
                state.path().to_str().unwrap(),
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            Duration::from_secs(20),
        );
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let path = |name: &str| certs.path().join(name).display().to_string();
    let error = run(&path("server.pem"), &path("other.key"));
    assert!(
        error.contains("does not belong to the certificate"),
        "{error}"
    );
    let error = run(&path("server.key"), &path("server.key"));
    assert!(error.contains("holds no certificate"), "{error}");
    let error = run(&path("missing.pem"), &path("server.key"));
    assert!(
        error.contains("--tls-cert") && error.contains("missing.pem"),
        "{error}"
    );
}
