//! The dispatcher in process: stored brokers and triggers in an in-memory SQLite store, events
//! appended to the store's log, and a subscriber on a loopback port. It checks the dispatcher's
//! decisions: which triggers it runs and delivers for, and why the others wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use kinetic_outbound::destination::Resolver;
use kinetic_outbound::egress::{AddressClass, Allow, Egress};
use kinetic_store::{NewEvent, Store, TriggerRef};
use kinetic_triggers::{Config, Dispatcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A subscriber that keeps the `ce-id` of every request.
async fn subscriber() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = Router::new().route(
        "/",
        post(move |headers: HeaderMap| {
            let kept = kept.clone();
            async move {
                if let Some(id) = headers.get("ce-id").and_then(|v| v.to_str().ok()) {
                    kept.lock().unwrap().push(id.to_owned());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn apply(store: &Arc<dyn Store>, yaml: &str) {
    for resource in kinetic_api::parse_documents("resources.yaml", yaml).unwrap() {
        let key = resource.key();
        let (_, stored) = store
            .apply_resource(
                key.kind.as_str(),
                &key.namespace,
                &key.name,
                &resource.to_json(),
                0,
            )
            .await
            .unwrap();
        if let kinetic_api::Resource::Trigger(trigger) = &resource {
            // As applying a trigger does: its cursor starts at the broker's head.
            let reference = TriggerRef {
                uid: stored.uid.clone(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                broker: format!("{}/{}", key.namespace, trigger.spec.broker),
            };
            kinetic_triggers::lifecycle::bound(store.as_ref(), &reference, false, 0)
                .await
                .unwrap();
        }
    }
}

fn trigger(name: &str, broker: &str, subscriber: &str, filter: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec:\n  broker: {broker}\n  subscriber: {subscriber}\n{filter}"
    )
}

fn event(id: &str, kind: &str) -> NewEvent {
    NewEvent {
        broker: "default/default".into(),
        source: "/test".into(),
        id: id.into(),
        payload: format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"{kind}","knativearrivaltime":"{}"}}"#,
            kinetic_api::event::arrival_time(chrono::Utc::now())
        )
        .into_bytes()
        .into(),
    }
}

/// A dispatcher of `store` that reaches loopback subscribers, polling quickly.
fn dispatcher(store: &Arc<dyn Store>) -> Dispatcher {
    dispatcher_with_metrics(store, &mut Default::default())
}

/// [`dispatcher`], its metrics in `registry`.
fn dispatcher_with_metrics(
    store: &Arc<dyn Store>,
    registry: &mut prometheus_client::registry::Registry,
) -> Dispatcher {
    let mut config = Config::new(
        "test-dispatcher".into(),
        Resolver {
            ingress_url: "http://127.0.0.1:9".into(),
            gateway: None,
        },
    );
    config.egress = Egress::new(&[Allow::Class(AddressClass::Loopback)]);
    config.poll_interval = Duration::from_millis(50);
    config.claim_interval = Duration::from_millis(100);
    config.plan_interval = Duration::from_millis(100);
    // The resources as `kinetic up` reads them, read every 100 ms; the poll ends with the test's
    // runtime.
    let (feed, resources) = kinetic_resources::channel();
    tokio::spawn(kinetic_resources::poll(
        store.clone(),
        feed,
        Duration::from_millis(100),
        tokio_util::sync::CancellationToken::new(),
    ));
    Dispatcher::new(
        store.clone(),
        resources,
        config,
        kinetic_triggers::metrics::Metrics::new(registry),
        watch::channel(0).0,
        None,
        None,
    )
}

/// Waits (at most 20 s) until `seen` holds `count` ids.
async fn until_seen(seen: &Arc<Mutex<Vec<String>>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "seen: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn append(store: &Arc<dyn Store>, id: &str) {
    let now = chrono::Utc::now().timestamp_millis();
    store
        .append(&[event(id, "order.created")], now, now - 60_000)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_trigger_stops_and_one_applied_while_running_starts() {
    let store = kinetic_store::open("sqlite::memory:").await.unwrap();
    let (first_url, first_seen) = subscriber().await;
    let (second_url, second_seen) = subscriber().await;
    apply(
        &store,
        &[
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n"
                .to_owned(),
            trigger("first", "default", &format!("{{uri: '{first_url}'}}"), ""),
        ]
        .join("---\n"),
    )
    .await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(dispatcher(&store).run(cancel.clone()));
    append(&store, "1").await;
    until_seen(&first_seen, 1).await;

    // `first` is deleted as the control plane deletes it, and `second` applied.
    let stored = store
        .get_resource("Trigger", "default", "first")
        .await
        .unwrap()
        .unwrap();
    store
        .delete_resource("Trigger", "default", "first")
        .await
        .unwrap();
    kinetic_triggers::lifecycle::deleted(store.as_ref(), &stored.uid, "default", "first")
        .await
        .unwrap();
    apply(
        &store,
        &trigger("second", "default", &format!("{{uri: '{second_url}'}}"), ""),
    )
    .await;
    // The new trigger's cursor starts at the broker's head: event 1 is not its.
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&store, "2").await;
    until_seen(&second_seen, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*second_seen.lock().unwrap(), ["2"]);
    assert_eq!(
        *first_seen.lock().unwrap(),
        ["1"],
        "a deleted trigger delivered"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the dispatcher stops when cancelled")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_delivers_for_ready_triggers_and_says_why_the_others_wait() {
    let store = kinetic_store::open("sqlite::memory:").await.unwrap();
    let (url, seen) = subscriber().await;
    let (other_url, other_seen) = subscriber().await;
    apply(
        &store,
        &[
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n"
                .to_owned(),
            trigger("all", "default", &format!("{{uri: '{url}'}}"), ""),
            trigger(
                "orders",
                "default",
                &format!("{{uri: '{other_url}'}}"),
                "  filter: {attributes: {type: order.created}}\n",
            ),
            trigger("lost", "nosuch", &format!("{{uri: '{url}'}}"), ""),
            trigger(
                "function",
                "default",
                "{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: fn}}",
                "",
            ),
        ]
        .join("---\n"),
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    store
        .append(
            &[event("1", "order.created"), event("2", "order.paid")],
            now,
            now - 60_000,
        )
        .await
        .unwrap();

    let mut registry = prometheus_client::registry::Registry::default();
    let dispatcher = dispatcher_with_metrics(&store, &mut registry);
    let problems = dispatcher.problems();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(dispatcher.run(cancel.clone()));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = seen.lock().unwrap().len();
        let orders = other_seen.lock().unwrap().len();
        if all >= 2 && orders >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries: all {:?}, orders {:?}",
            seen.lock().unwrap(),
            other_seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The filter let only the order.created event through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*other_seen.lock().unwrap(), ["1"]);
    let mut all = seen.lock().unwrap().clone();
    all.sort();
    assert_eq!(all, ["1", "2"], "`lost` must not deliver to the same URL");

    let lost = problems.get("default/lost").expect("`lost` is not ready");
    assert!(lost.contains("nosuch"), "{lost}");
    let function = problems
        .get("default/function")
        .expect("`function` is not ready");
    assert!(function.contains("gateway"), "{function}");
    assert_eq!(problems.get("default/all"), None);

    // Each delivery observed the time since the event's arrival.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert_eq!(
        value("kinetic_dispatcher_delivery_latency_seconds_count"),
        3.0
    );
    let sum = value("kinetic_dispatcher_delivery_latency_seconds_sum");
    assert!(sum > 0.0 && sum < 60.0, "{sum}");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the dispatcher stops when cancelled")
        .unwrap();
}
