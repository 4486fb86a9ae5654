//! kinetic as it runs on Kubernetes, as separate processes on one PostgreSQL store, against an API
//! server (here a fake one on loopback, reached through a kubeconfig, since no real API server
//! runs on this machine; it lists, watches, gets, creates and merge-patches as one does):
//! `kinetic controller` takes its Lease, binds each Trigger's cursor, adds its finalizer and
//! writes Knative's status; `kinetic broker` and `kinetic dispatcher` (`--resources kubernetes`)
//! accept events for the Broker the API holds and deliver them to the Trigger's subscriber, pick
//! up a Trigger added later through the watch, list what the API holds, refuse `kinetic apply`,
//! which belongs to `kubectl` there, and take `config-features` from `kinetic-system` as it changes.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::{Engine, Kinetic, Receiver, TestStore, send_event, write_yaml};
use tokio::sync::broadcast;

/// The objects of each kind's plural (the controller's Lease among them), every write taken, and
/// the watch events sent.
#[derive(Clone)]
struct ApiServer {
    objects: Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    writes: Arc<Mutex<Vec<(String, String, Value)>>>,
    events: broadcast::Sender<(String, Value)>,
    version: Arc<std::sync::atomic::AtomicU64>,
}

impl ApiServer {
    fn add(&self, plural: &str, mut object: Value) {
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        self.objects
            .lock()
            .unwrap()
            .entry(plural.to_owned())
            .or_default()
            .push(object.clone());
        let _ = self.events.send((
            plural.to_owned(),
            json!({"type": "ADDED", "object": object}),
        ));
    }

    fn next_version(&self) -> String {
        (self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1)
        .to_string()
    }

    /// The writes to `path` so far.
    fn writes_to(&self, method: &str, path: &str) -> Vec<Value> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
            .map(|(_, _, body)| body.clone())
            .collect()
    }
}

fn not_found() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "reason": "NotFound", "code": 404}),
        ),
    )
        .into_response()
}

/// Lists, watches, gets, creates and merge-patches objects as the API server does (every patch
/// taken as a merge, which is what kinetic's patches amount to here), and takes Events.
async fn api(
    State(api): State<ApiServer>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    Query(query): Query<BTreeMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if method != axum::http::Method::GET {
        api.writes
            .lock()
            .unwrap()
            .push((method.to_string(), path.clone(), body.clone()));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /apis/{group}/{version}/… or, for the core group, /api/{version}/…, then
    // [namespaces/{ns}/]{plural}[/{name}[/status]]
    let base = if parts.first() == Some(&"api") { 2 } else { 3 };
    let (namespace, rest) = match parts.get(base) {
        Some(&"namespaces") => (
            parts.get(base + 1).copied(),
            &parts[(base + 2).min(parts.len())..],
        ),
        _ => (None, &parts[base.min(parts.len())..]),
    };
    let plural = rest.first().copied().unwrap_or_default().to_owned();
    let name = rest.get(1).copied();
    let status = rest.get(2) == Some(&"status");
    if plural == "events" {
        return (axum::http::StatusCode::CREATED, axum::Json(body)).into_response();
    }
    match (method.as_str(), name) {
        ("GET", None) if query.get("watch").map(String::as_str) == Some("true") => {
            // Each change as one line, for as long as the client watches.
            let lines = futures::stream::unfold(api.events.subscribe(), move |mut events| {
                let plural = plural.clone();
                async move {
                    loop {
                        match events.recv().await {
                            Ok((kind, event)) if kind == plural => {
                                return Some((
                                    Ok::<_, std::io::Error>(format!("{event}\n")),
                                    events,
                                ));
                            }
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            });
            (
                [("content-type", "application/json")],
                axum::body::Body::from_stream(lines),
            )
                .into_response()
        }
        ("GET", None) => {
            let items = api
                .objects
                .lock()
                .unwrap()
                .get(&plural)
                .cloned()
                .unwrap_or_default();
            axum::Json(json!({"apiVersion": "v1", "kind": "List",
                              "metadata": {"resourceVersion": "1"}, "items": items}))
            .into_response()
        }
        ("POST", None) => {
            let mut object = body;
            object["metadata"]["namespace"] = json!(namespace);
            api.add(&plural, object.clone());
            (axum::http::StatusCode::CREATED, axum::Json(object)).into_response()
        }
        (method, Some(name)) => {
            let version = api.next_version();
            let mut objects = api.objects.lock().unwrap();
            let Some(object) = objects
                .entry(plural.clone())
                .or_default()
                .iter_mut()
                .find(|o| {
                    o["metadata"]["name"] == name
                        && o["metadata"]["namespace"].as_str() == namespace
                })
            else {
                return not_found();
            };
            if method == "PATCH" {
                let mut patch = body;
                if let Some(metadata) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.remove("resourceVersion");
                }
                if status {
                    patch = json!({"status": patch["status"].clone()});
                }
                kinetic_testkit::merge_patch(object, &patch);
                object["metadata"]["resourceVersion"] = json!(version);
                let _ = api.events.send((
                    plural.clone(),
                    json!({"type": "MODIFIED", "object": object.clone()}),
                ));
            }
            axum::Json(object.clone()).into_response()
        }
        _ => not_found(),
    }
}

async fn fake_api_server() -> (ApiServer, String, tokio::task::JoinHandle<()>) {
    let api_server = ApiServer {
        objects: Arc::default(),
        writes: Arc::default(),
        events: broadcast::channel(256).0,
        version: Arc::default(),
    };
    let router = axum::Router::new()
        .fallback(api)
        .with_state(api_server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (api_server, url, server)
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    write_yaml(
        dir,
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: '{server}'}}\nusers:\n- name: fake\n  user: {{token: fake}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n"
        ),
    )
}

fn trigger(name: &str, uid: &str, subscriber: &str) -> Value {
    json!({
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": name, "namespace": "team", "uid": uid, "generation": 1, "resourceVersion": "2"},
        "spec": {"broker": "default", "subscriber": {"uri": subscriber}},
    })
}

// Several threads: starting a process blocks its caller while the fake API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_dispatcher_read_kubernetes_and_deliver() {
    let store = TestStore::new(Engine::Postgres).await;
    let (api, api_url, server) = fake_api_server().await;
    let receiver = Receiver::start().await;
    api.add(
        "brokers",
        json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
               "metadata": {"name": "default", "namespace": "team", "uid": "u-broker", "generation": 1,
                            "resourceVersion": "1"},
               "spec": {}}),
    );
    api.add(
        "triggers",
        trigger("first", "u-first", &receiver.url("/first")),
    );
    let config = kubeconfig(store.dir(), &api_url);
    let config = config.display().to_string();
    let env = [("KUBECONFIG", config.as_str())];
    let broker = Kinetic::broker(&store, &["--resources", "kubernetes"], &env);
    let dispatcher = Kinetic::dispatcher(&store, &broker, &["--resources", "kubernetes"], &env);
    let controller = Kinetic::spawn(
        &Kinetic::scale_out_args(
            "controller",
            &store,
            Some(&broker),
            &["--identity", "controller-0"],
        ),
        &env,
    );
    // The controller takes the Lease, binds the Trigger's cursor, then adds its finalizer and
    // writes its status.
    let first = "/apis/eventing.knative.dev/v1/namespaces/team/triggers/first";
    ready(&api, first, &controller).await;
    let finalizers = api.writes_to("PATCH", first);
    assert_eq!(
        finalizers[0]["metadata"]["finalizers"],
        json!(["triggers.eventing.knative.dev"])
    );
    let lease = api.writes_to(
        "PATCH",
        "/apis/coordination.k8s.io/v1/namespaces/kinetic-system/leases/kinetic-controller",
    );
    assert_eq!(lease[0]["spec"]["holderIdentity"], "controller-0");
    let broker_status = api.writes_to(
        "PATCH",
        "/apis/eventing.knative.dev/v1/namespaces/team/brokers/default/status",
    );
    assert_eq!(
        broker_status.last().unwrap()["status"]["address"]["url"],
        json!(format!("{}/team/default", broker.base_url)),
    );

    let client = reqwest::Client::new();
    let status = send_event(
        &client,
        &broker.url("/team/default"),
        "e-1",
        "com.example.k8s",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 202, "{}", broker.log());
    let status = send_event(
        &client,
        &broker.url("/team/missing"),
        "e-0",
        "com.example.k8s",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 404, "a Broker the API does not hold");
    let got = receiver
        .wait_for("/first", 1, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 1, "{}", dispatcher.log());
    assert_eq!(got[0].header("ce-id"), Some("e-1"));

    // A Trigger added through the watch gets the events accepted after it is bound.
    api.add(
        "triggers",
        trigger("second", "u-second", &receiver.url("/second")),
    );
    ready(
        &api,
        "/apis/eventing.knative.dev/v1/namespaces/team/triggers/second",
        &controller,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut n = 2;
    loop {
        let id = format!("e-{n}");
        assert_eq!(
            send_event(
                &client,
                &broker.url("/team/default"),
                &id,
                "com.example.k8s",
                &[],
                "{}"
            )
            .await,
            202
        );
        if !receiver
            .wait_for("/second", 1, Duration::from_millis(500))
            .await
            .is_empty()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watched trigger delivers within 30 s: {}",
            dispatcher.log()
        );
        n += 1;
    }

    // Listings show what the API holds; applying is kubectl's.
    let listed: Value = broker
        .api()
        .get(broker.admin("/api/v1/triggers?namespace=team"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second"]);
    let file = write_yaml(
        store.dir(),
        "other.yaml",
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: other}\n",
    );
    let refused = broker.cli(&["apply", "-f", &file.display().to_string()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("resources are not applied here: this kinetic reads them from the Kubernetes API; apply them with `kubectl apply -f`"),
        "{said}"
    );
    // kinetic's configuration is read from the API too, and reloaded: `config-features` with
    // `default-authorization-mode: deny-all` makes the broker ask for a token.
    api.add(
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "config-features", "namespace": "kinetic-system", "uid": "u-features"},
               "data": {"default-authorization-mode": "deny-all"}}),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = send_event(
            &client,
            &broker.url("/team/default"),
            "e-denied",
            "com.example.k8s",
            &[],
            "{}",
        )
        .await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 202);
        assert!(
            tokio::time::Instant::now() < deadline,
            "config-features in force within 30 s: {}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(controller);
    drop(dispatcher);
    drop(broker);
    server.abort();
}

/// Waits (30 s at most) for the controller to write a `Ready: True` status to `path`.
async fn ready(api: &ApiServer, path: &str, controller: &Kinetic) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let written = api.writes_to("PATCH", &format!("{path}/status"));
        let ready = written.iter().any(|status| {
            status["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} ready within 30 s; written: {written:?}\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
