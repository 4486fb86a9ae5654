//! The API server's resources become kinetic's resource snapshots: kube-runtime's watchers run
//! against kube's mock API server (`tower-test`, as kube-rs tests its own), which answers each
//! kind's list and then its watch. Nothing is published before every kind was listed; an object
//! added through a watch is in the next snapshot; the API server's own metadata is left out.

use http::{Request, Response};
use kinetic_api::eventing::{Broker, Trigger};
use kube::client::Body;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn broker() -> Value {
    json!({
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {
            "name": "default", "namespace": "team", "uid": "u-broker", "generation": 3,
            "resourceVersion": "7", "creationTimestamp": "2026-12-07T00:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
        },
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn trigger() -> Value {
    json!({
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "orders", "namespace": "team", "uid": "u-trigger", "generation": 1, "resourceVersion": "11"},
        "spec": {"broker": "default", "subscriber": {"uri": "http://orders.team.svc/"}}
    })
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, body: String) {
    send.send_response(
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(body.into_bytes()))
            .unwrap(),
    );
}

#[tokio::test]
async fn the_api_servers_resources_become_the_snapshot() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (feed, mut watch) = kinetic_resources::channel();
    let cancel = CancellationToken::new();
    let feeding = tokio::spawn(kinetic_k8s::feed::run(client, feed, cancel.clone()));
    // The WebhookSources' list is held back until the test has seen that nothing was published.
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    let api_server = async move {
        let mut held_list = None;
        let mut held = Vec::new();
        let mut trigger_sent = false;
        loop {
            let Some((request, send)) = handle.next_request().await else {
                return;
            };
            let uri = request.uri().to_string();
            let plural = request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            if uri.contains("watch=true") {
                if plural == "triggers" && !trigger_sent {
                    trigger_sent = true;
                    respond(
                        send,
                        format!("{}\n", json!({"type": "ADDED", "object": trigger()})),
                    );
                } else {
                    // Left open: a watch with nothing to say.
                    held.push(send);
                }
                continue;
            }
            if plural == "webhooksources" && held_list.is_none() {
                held_list = Some(send);
                let send = held_list.take().unwrap();
                released.notified().await;
                respond(
                    send,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "10"}, "items": []})
                        .to_string(),
                );
                continue;
            }
            let items = if plural == "brokers" {
                vec![broker()]
            } else {
                vec![]
            };
            respond(
                send,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "10"}, "items": items})
                    .to_string(),
            );
        }
    };
    let checks = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            watch.latest().is_none(),
            "nothing is published while a kind is still being listed"
        );
        release.notify_one();
        let first = watch.loaded().await.unwrap();
        let (stored, broker) = first
            .get::<Broker>("team", "default")
            .expect("the listed broker, typed");
        assert_eq!((stored.uid.as_str(), stored.generation), ("u-broker", 3));
        assert_eq!(broker.metadata.name, "default");
        assert!(
            stored.body["metadata"].get("managedFields").is_none(),
            "{}",
            stored.body
        );
        assert!(stored.body.get("status").is_none());
        assert!(first.unreadable().is_empty(), "{:?}", first.unreadable());
        // The trigger comes through its kind's watch.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut latest = first;
        loop {
            if let Some((stored, trigger)) = latest.get::<Trigger>("team", "orders") {
                assert_eq!(stored.uid, "u-trigger");
                assert_eq!(trigger.spec.broker, "default");
                assert!(latest.get::<Broker>("team", "default").is_some());
                break;
            }
            latest = tokio::time::timeout_at(deadline, watch.changed())
                .await
                .expect("the watched trigger within 10 s")
                .unwrap();
        }
    };
    tokio::select! {
        () = api_server => panic!("the feed stopped asking"),
        () = checks => {}
    }
    cancel.cancel();
    feeding.await.unwrap();
}
