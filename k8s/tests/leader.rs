//! The controller's leader election against a fake Lease API (kube's mock service answering as the
//! API server does for one `coordination.k8s.io/v1` Lease: get, create, and merge of patches):
//! the replica that takes the Lease leads, renews it before it expires and releases it when it
//! stops; a replica waits while another holds an unexpired Lease and takes over once it expires.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kinetic_k8s::controller::leader::{self, Election};
use kube::client::Body;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kinetic-system/leases/kinetic-controller";

/// The Lease as the fake API server holds it, and every write it took.
#[derive(Default)]
struct Leases {
    lease: Option<Value>,
    writes: Vec<(String, Value)>,
}

fn fake_api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    leases: Arc<Mutex<Leases>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut version = 1;
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.unwrap();
            let body: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).unwrap()
            };
            let mut leases = leases.lock().unwrap();
            let (status, answer) = match (parts.method.as_str(), parts.uri.path()) {
                ("GET", PATH) => match &leases.lease {
                    Some(lease) => (200, lease.clone()),
                    None => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                },
                ("POST", "/apis/coordination.k8s.io/v1/namespaces/kinetic-system/leases") => {
                    let mut lease = body.clone();
                    lease["metadata"]["namespace"] = json!("kinetic-system");
                    leases.writes.push(("create".to_owned(), body));
                    leases.lease = Some(lease.clone());
                    (201, lease)
                }
                ("PATCH", PATH) => {
                    let mut lease = leases.lease.clone().unwrap();
                    kinetic_testkit::merge_patch(
                        &mut lease,
                        &json!({"spec": body["spec"].clone()}),
                    );
                    version += 1;
                    lease["metadata"]["resourceVersion"] = json!(version.to_string());
                    leases.writes.push(("patch".to_owned(), body));
                    leases.lease = Some(lease.clone());
                    (200, lease)
                }
                (method, path) => panic!("an unexpected request: {method} {path}"),
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(answer.to_string().into_bytes()))
                    .unwrap(),
            );
        }
    })
}

fn election(identity: &str, duration: u64, grace: u64) -> Election {
    Election {
        lease: kinetic_k8s::controller::leader::LEASE.to_owned(),
        namespace: "kinetic-system".to_owned(),
        identity: identity.to_owned(),
        duration,
        grace,
    }
}

fn holder(leases: &Arc<Mutex<Leases>>) -> Option<String> {
    leases.lock().unwrap().lease.as_ref()?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_replica_holding_the_lease_leads_renews_it_and_releases_it_when_it_stops() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let leases = Arc::new(Mutex::new(Leases::default()));
    let server = fake_api_server(handle, leases.clone());
    let cancel = CancellationToken::new();
    let terms: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
    let recorded = terms.clone();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            leader::run(client, &election("a", 2, 1), cancel, move |term| {
                recorded.lock().unwrap().push(term.clone());
                async move { term.cancelled().await }
            })
            .await
        }
    });
    until("leading", Duration::from_secs(10), || {
        !terms.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(holder(&leases).as_deref(), Some("a"));
    {
        let leases = leases.lock().unwrap();
        assert_eq!(leases.writes[0].0, "create", "the Lease did not exist");
        let taken = &leases.writes[1].1["spec"];
        assert_eq!(taken["holderIdentity"], "a");
        assert_eq!(taken["leaseDurationSeconds"], 2);
    }
    // Renewed before the 2 s run out.
    let renewed = |leases: &Leases| {
        leases
            .writes
            .iter()
            .filter(|(_, body)| {
                body["spec"].get("renewTime").is_some()
                    && body["spec"].get("holderIdentity").is_none()
            })
            .count()
    };
    until("a renewal", Duration::from_secs(3), || {
        renewed(&leases.lock().unwrap()) >= 1
    })
    .await;
    assert_eq!(holder(&leases).as_deref(), Some("a"));
    assert!(!terms.lock().unwrap()[0].is_cancelled());

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within 10 s")
        .unwrap()
        .unwrap();
    assert!(terms.lock().unwrap()[0].is_cancelled());
    assert_eq!(terms.lock().unwrap().len(), 1);
    assert_eq!(holder(&leases), None, "released for a successor");
    server.abort();
}

#[tokio::test]
async fn a_replica_waits_while_another_holds_the_lease_and_takes_over_once_it_expires() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let renewed = chrono::Utc::now() - chrono::Duration::seconds(1);
    let leases = Arc::new(Mutex::new(Leases {
        lease: Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kinetic-controller", "namespace": "kinetic-system", "resourceVersion": "1"},
            "spec": {"holderIdentity": "b", "leaseDurationSeconds": 3,
                     "acquireTime": renewed.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                     "renewTime": renewed.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
        })),
        writes: Vec::new(),
    }));
    let server = fake_api_server(handle, leases.clone());
    let cancel = CancellationToken::new();
    let led = Arc::new(Mutex::new(None));
    let recorded = led.clone();
    let started = tokio::time::Instant::now();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            leader::run(client, &election("a", 3, 1), cancel, move |term| {
                recorded
                    .lock()
                    .unwrap()
                    .get_or_insert(tokio::time::Instant::now());
                async move { term.cancelled().await }
            })
            .await
        }
    });
    until("taking over", Duration::from_secs(15), || {
        led.lock().unwrap().is_some()
    })
    .await;
    let waited = led.lock().unwrap().unwrap() - started;
    // b's Lease had 2 s left: a waited for it to expire, never leading beside b.
    assert!(
        waited >= Duration::from_millis(1500),
        "led after {waited:?}"
    );
    assert_eq!(holder(&leases).as_deref(), Some("a"));
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.abort();
}
