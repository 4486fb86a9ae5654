//! Scale-out on PostgreSQL: one `kinetic broker` and two `kinetic dispatcher` processes share a
//! database. Resources go in with `kinetic apply --server`. Every event reaches every trigger exactly
//! once, both dispatchers deliver (the work is shared), and when one dispatcher is killed the other
//! takes its triggers over within the cursor lease.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use support::{
    Engine, Kinetic, Receiver, TestStore, broker_yaml, documents, metric_sum, scrape, send_event,
    trigger_yaml, write_yaml,
};

const TRIGGERS: usize = 6;
const EVENTS: usize = 2000;
const SENDERS: usize = 16;
/// The dispatcher's cursor lease and claim interval (`kinetic_triggers::Config::new`).
const CURSOR_LEASE: Duration = Duration::from_secs(10);
const CLAIM_INTERVAL: Duration = Duration::from_secs(2);

/// `kinetic broker` on `store`: the ingress and the admin API.
fn broker(store: &TestStore) -> Kinetic {
    Kinetic::broker(store, &[], &[])
}

fn dispatcher(store: &TestStore, broker: &Kinetic) -> Kinetic {
    Kinetic::dispatcher(store, broker, &[], &[])
}

/// Sends events `prefix-0 .. prefix-(count-1)` from `SENDERS` concurrent tasks; all must get 202.
async fn send_all(url: &str, prefix: &str, count: usize) {
    let tasks: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let url = url.to_owned();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for n in (sender..count).step_by(SENDERS) {
                    let id = format!("{prefix}-{n}");
                    let status =
                        send_event(&client, &url, &id, "com.example.scale", &[], r#"{"n":1}"#)
                            .await;
                    assert_eq!(status, 202, "{id}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
}

/// For each trigger path, how often each id with `prefix` arrived.
fn arrivals(receiver: &Receiver, prefix: &str) -> Vec<HashMap<String, usize>> {
    (0..TRIGGERS)
        .map(|t| {
            let mut counts = HashMap::new();
            for received in receiver.received(&format!("/t{t}")) {
                if let Some(id) = received.header("ce-id").filter(|id| id.starts_with(prefix)) {
                    *counts.entry(id.to_owned()).or_insert(0) += 1;
                }
            }
            counts
        })
        .collect()
}

/// Waits (bounded) until every trigger got `count` distinct ids with `prefix`; returns how long it took.
async fn wait_all(
    receiver: &Receiver,
    prefix: &str,
    count: usize,
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if arrivals(receiver, prefix).iter().all(|c| c.len() >= count) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Deliveries by trigger label, from a dispatcher's metrics.
fn delivered_by_trigger(metrics: &str) -> BTreeMap<String, f64> {
    (0..TRIGGERS)
        .map(|t| {
            let trigger = format!("default/t{t}");
            let count = metric_sum(
                metrics,
                "kinetic_dispatcher_deliveries_total",
                &[("trigger", &trigger), ("outcome", "delivered")],
            );
            (trigger, count)
        })
        .filter(|(_, count)| *count > 0.0)
        .collect()
}

fn logs(cluster: &Cluster) -> String {
    format!(
        "broker log:\n{}\ndispatcher 0 log:\n{}\ndispatcher 1 log:\n{}",
        cluster.broker.log(),
        cluster.dispatchers[0].log(),
        cluster.dispatchers[1].log()
    )
}

/// A broker process, two dispatcher processes and `TRIGGERS` triggers applied with the CLI.
struct Cluster {
    // Field order is drop order: processes stop before their database is dropped.
    broker: Kinetic,
    dispatchers: [Kinetic; 2],
    receiver: Receiver,
    _store: TestStore,
}

impl Cluster {
    async fn start() -> Self {
        let store = TestStore::new(Engine::Postgres).await;
        let receiver = Receiver::start().await;
        let broker = broker(&store);
        let dispatchers = [dispatcher(&store, &broker), dispatcher(&store, &broker)];
        let mut resources = vec![broker_yaml("default")];
        for t in 0..TRIGGERS {
            resources.push(trigger_yaml(
                &format!("t{t}"),
                "default",
                &receiver.url(&format!("/t{t}")),
                "",
            ));
        }
        let file = write_yaml(store.dir(), "resources.yaml", &documents(&resources));
        let output = broker.cli(&["apply", "-f", file.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "kinetic apply: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let applied = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            applied.matches(" created").count(),
            TRIGGERS + 1,
            "{applied}"
        );
        Self {
            broker,
            dispatchers,
            receiver,
            _store: store,
        }
    }

    fn ingress(&self) -> String {
        self.broker.url("/default/default")
    }

    /// Deliveries by trigger, per dispatcher.
    async fn shares(&self) -> Vec<BTreeMap<String, f64>> {
        let mut shares = Vec::new();
        for dispatcher in &self.dispatchers {
            shares.push(delivered_by_trigger(&scrape(dispatcher).await));
        }
        shares
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_every_trigger_once_and_both_dispatchers_deliver() {
    let started = Instant::now();
    let cluster = Cluster::start().await;
    send_all(&cluster.ingress(), "e", EVENTS).await;
    let took = wait_all(&cluster.receiver, "e-", EVENTS, Duration::from_secs(60)).await;
    // Concurrent deliveries of one read batch may land a moment apart: let stragglers show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (t, counts) in arrivals(&cluster.receiver, "e-").iter().enumerate() {
        let duplicates: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            counts.len() == EVENTS && duplicates.is_empty(),
            "trigger t{t}: {} of {EVENTS} events, duplicates (first 10): {:?}; {}",
            counts.len(),
            &duplicates[..duplicates.len().min(10)],
            logs(&cluster)
        );
    }
    println!(
        "{EVENTS} events x {TRIGGERS} triggers delivered exactly once in {:?}",
        took.unwrap()
    );
    let broker_metrics = scrape(&cluster.broker).await;
    assert_eq!(
        metric_sum(
            &broker_metrics,
            "kinetic_broker_events_accepted_total",
            &[("broker", "default/default")]
        ),
        EVENTS as f64
    );
    let shares = cluster.shares().await;
    let total: f64 = shares.iter().flat_map(|s| s.values()).sum();
    assert_eq!(total, (EVENTS * TRIGGERS) as f64, "{shares:?}");
    println!(
        "deliveries by dispatcher and trigger: {shares:?}; wall time {:?}",
        started.elapsed()
    );
    assert!(
        shares.iter().all(|share| !share.is_empty()),
        "the work was not shared: one dispatcher delivered for every trigger, the other for none ({shares:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_dispatchers_triggers_are_taken_over_within_the_lease() {
    let started = Instant::now();
    let mut cluster = Cluster::start().await;
    send_all(&cluster.ingress(), "before", 300).await;
    assert!(
        wait_all(&cluster.receiver, "before-", 300, Duration::from_secs(30))
            .await
            .is_some(),
        "{}",
        logs(&cluster)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shares = cluster.shares().await;
    // Kill the dispatcher that delivered the most: it holds trigger leases.
    let busiest = if shares[0].values().sum::<f64>() >= shares[1].values().sum::<f64>() {
        0
    } else {
        1
    };
    let survivor = 1 - busiest;
    let orphaned: Vec<&String> = shares[busiest].keys().collect();
    cluster.dispatchers[busiest].kill9();
    let killed_at = Instant::now();
    send_all(&cluster.ingress(), "after", 200).await;
    let takeover = wait_all(
        &cluster.receiver,
        "after-",
        200,
        CURSOR_LEASE + CLAIM_INTERVAL + Duration::from_secs(20),
    )
    .await;
    let took_over_in = killed_at.elapsed();
    assert!(
        takeover.is_some(),
        "dispatcher {survivor} did not take over {orphaned:?} within {took_over_in:?}; {}",
        logs(&cluster)
    );
    let bound = CURSOR_LEASE + CLAIM_INTERVAL + Duration::from_secs(3);
    assert!(
        took_over_in <= bound,
        "take-over took {took_over_in:?}, more than lease + claim interval ({bound:?})"
    );
    let duplicates: usize = arrivals(&cluster.receiver, "after-")
        .iter()
        .map(|c| c.values().filter(|n| **n > 1).count())
        .sum();
    let survivor_share = delivered_by_trigger(&scrape(&cluster.dispatchers[survivor]).await);
    assert_eq!(
        survivor_share.len(),
        TRIGGERS,
        "the survivor delivers for every trigger: {survivor_share:?}"
    );
    println!(
        "dispatcher {busiest} held {orphaned:?}; dispatcher {survivor} took over in {took_over_in:?} ({duplicates} duplicates); wall time {:?}",
        started.elapsed()
    );
}

/// A dispatcher in its own process learns of new events from PostgreSQL's NOTIFY, not by polling:
/// with polling set to an hour, events still arrive within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_separate_dispatcher_is_woken_by_the_database() {
    let store = TestStore::new(Engine::Postgres).await;
    let receiver = Receiver::start().await;
    let broker = broker(&store);
    let resources = documents(&[
        broker_yaml("default"),
        trigger_yaml("woken", "default", &receiver.url("/woken"), ""),
    ]);
    let file = write_yaml(store.dir(), "resources.yaml", &resources);
    let output = broker.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "kinetic apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dispatcher = Kinetic::spawn(
        &[
            "dispatcher".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            store.url.clone(),
            "--ingress-url".into(),
            broker.base_url.clone(),
            "--poll-interval".into(),
            "PT1H".into(),
        ],
        &[],
    );
    let client = reqwest::Client::new();
    let url = broker.url("/default/default");
    // Give the dispatcher time to claim the cursor and go idle, so only a signal can wake it.
    tokio::time::sleep(CLAIM_INTERVAL + Duration::from_secs(1)).await;
    for n in 0..3 {
        let id = format!("woken-{n}");
        assert_eq!(
            send_event(&client, &url, &id, "com.example.scale", &[], "{}").await,
            202
        );
        let got = receiver
            .wait_for("/woken", n + 1, Duration::from_secs(10))
            .await;
        assert_eq!(
            got.len(),
            n + 1,
            "event {id} was not delivered without polling;\nbroker log:\n{}\ndispatcher log:\n{}",
            broker.log(),
            dispatcher.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `kinetic sources` on its own, beside a broker and a dispatcher on the same PostgreSQL: a
/// WebhookSource applied through the broker's admin API is served by the sources process at once
/// (it reads the store again on a request for a source it has not seen), and its events go through
/// the broker's ingress to a trigger's subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_run_in_a_process_of_their_own() {
    let store = TestStore::new(Engine::Postgres).await;
    let receiver = Receiver::start().await;
    let broker = broker(&store);
    let sources = Kinetic::sources(&store, &broker, &[], &[]);
    let _dispatcher = dispatcher(&store, &broker);
    let health = reqwest::get(sources.url("/readyz")).await.unwrap();
    assert_eq!(health.status(), 200);

    let hook = "apiVersion: sources.kinetic.dev/v1alpha1\nkind: WebhookSource\nmetadata: {name: hook}\nspec:\n  insecure: true\n  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}\n";
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            broker_yaml("default"),
            trigger_yaml("all", "default", &receiver.url("/all"), ""),
            hook.to_owned(),
        ]),
    );
    let output = broker.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "kinetic apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // At once: the sources process has not read the resources since the apply.
    let answer = reqwest::Client::new()
        .post(sources.url("/webhooks/default/hook"))
        .header("content-type", "application/json")
        .body(r#"{"order":"o-1"}"#)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    assert_eq!(
        status,
        202,
        "{}\nsources log:\n{}",
        answer.text().await.unwrap_or_default(),
        sources.log()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        if let Some(received) = receiver.received("/all").into_iter().next() {
            break received;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery; sources log:\n{}\nbroker log:\n{}",
            sources.log(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivered.header("ce-type"), Some("dev.kinetic.webhook"));
    assert_eq!(
        delivered.header("ce-source"),
        Some("/apis/v1/namespaces/default/webhooksources/hook")
    );
    // A source that does not exist is refused by name, as in `kinetic up`.
    let missing = reqwest::Client::new()
        .post(sources.url("/webhooks/default/nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
