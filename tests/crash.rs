//! Crash safety of `kinetic up` on both engines: while several senders stream uniquely-id'd events
//! and the dispatcher is delivering them, the process is killed with SIGKILL, restarted on the same
//! store with the same resources, and killed again at another instant. Every event that got a 202 must
//! reach every trigger's subscriber at least once; duplicates are allowed (at-least-once) and printed.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{
    Answer, Engine, Kinetic, Receiver, TestStore, broker_yaml, documents, send_event, trigger_yaml,
    write_yaml,
};

/// Concurrent senders per round.
const SENDERS: usize = 8;
/// How long after the stream starts each round's kill lands: different instants of the stream.
const KILL_AFTER: [Duration; 2] = [Duration::from_millis(1000), Duration::from_millis(1700)];
/// Trigger paths: one subscriber answers at once, the other takes 5 ms.
const PATHS: [&str; 2] = ["/fast", "/slow"];

/// Ids `path` received, with how often.
fn counts(receiver: &Receiver, path: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for received in receiver.received(path) {
        if let Some(id) = received.header("ce-id") {
            *counts.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits (bounded) until every id in `ids` reached every path; returns the ids still missing per path.
async fn wait_delivered(
    receiver: &Receiver,
    ids: &BTreeSet<String>,
    timeout: Duration,
) -> BTreeMap<&'static str, Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = BTreeMap::new();
        for path in PATHS {
            let got = counts(receiver, path);
            let lost: Vec<String> = ids
                .iter()
                .filter(|id| !got.contains_key(*id))
                .cloned()
                .collect();
            if !lost.is_empty() {
                missing.insert(path, lost);
            }
        }
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one probe event and waits until both subscribers got it: the restarted process accepts and
/// its dispatcher delivers (on PostgreSQL it first waits out the killed process's cursor leases).
async fn probe(
    client: &reqwest::Client,
    kinetic: &Kinetic,
    receiver: &Receiver,
    id: &str,
    acknowledged: &Mutex<BTreeSet<String>>,
) {
    let status = send_event(
        client,
        &kinetic.url("/default/default"),
        id,
        "com.example.crash",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 202, "probe {id}; kinetic log:\n{}", kinetic.log());
    acknowledged.lock().unwrap().insert(id.to_owned());
    let ids = BTreeSet::from([id.to_owned()]);
    let missing = wait_delivered(receiver, &ids, Duration::from_secs(30)).await;
    assert!(
        missing.is_empty(),
        "probe {id} not delivered to {missing:?}; kinetic log:\n{}",
        kinetic.log()
    );
}

/// Streams events from `SENDERS` tasks until `stop`; each id that got 202 goes into `acknowledged`.
fn start_senders(
    url: String,
    round: usize,
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..SENDERS)
        .map(|sender| {
            let url = url.clone();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("r{round}-s{sender}-{sent}");
                    sent += 1;
                    let status =
                        send_event(&client, &url, &id, "com.example.crash", &[], r#"{"n":1}"#)
                            .await;
                    match status {
                        202 => {
                            acknowledged.lock().unwrap().insert(id);
                        }
                        // The process is gone (connection refused or cut): not acknowledged.
                        0 => tokio::time::sleep(Duration::from_millis(5)).await,
                        other => panic!("{id}: unexpected status {other}"),
                    }
                }
                sent
            })
        })
        .collect()
}

async fn crash_and_recover(engine: Engine) {
    let started = Instant::now();
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    receiver.default_answer("/slow", Answer::status(200).delay(Duration::from_millis(5)));
    let yaml = documents(&[
        broker_yaml("default"),
        trigger_yaml("fast", "default", &receiver.url("/fast"), ""),
        trigger_yaml("slow", "default", &receiver.url("/slow"), ""),
    ]);
    let file = write_yaml(store.dir(), "resources.yaml", &yaml);
    let client = reqwest::Client::new();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));

    let mut kinetic = Kinetic::up(&store, &[&file]);
    for (round, kill_after) in KILL_AFTER.iter().enumerate() {
        probe(
            &client,
            &kinetic,
            &receiver,
            &format!("probe-{round}"),
            &acknowledged,
        )
        .await;
        let before = acknowledged.lock().unwrap().len();
        let stop = Arc::new(AtomicBool::new(false));
        let senders = start_senders(
            kinetic.url("/default/default"),
            round,
            acknowledged.clone(),
            stop.clone(),
        );
        tokio::time::sleep(*kill_after).await;
        kinetic.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for sender in senders {
            sent += sender.await.expect("sender task");
        }
        let delivered = PATHS.map(|path| receiver.received(path).len());
        println!(
            "round {round}: killed after {kill_after:?}; {sent} sent, {} acknowledged; deliveries so far {delivered:?}",
            acknowledged.lock().unwrap().len() - before
        );
        kinetic = Kinetic::up(&store, &[&file]);
    }
    probe(&client, &kinetic, &receiver, "probe-final", &acknowledged).await;

    let acknowledged = acknowledged.lock().unwrap().clone();
    let missing = wait_delivered(&receiver, &acknowledged, Duration::from_secs(60)).await;
    assert!(
        missing.is_empty(),
        "acknowledged events lost after crashes ({} acknowledged): {}; kinetic log:\n{}",
        acknowledged.len(),
        missing
            .iter()
            .map(|(path, ids)| format!(
                "{path}: {} missing, e.g. {:?}",
                ids.len(),
                &ids[..ids.len().min(10)]
            ))
            .collect::<Vec<_>>()
            .join("; "),
        kinetic.log()
    );
    for path in PATHS {
        let got = counts(&receiver, path);
        let duplicates = got.values().filter(|n| **n > 1).count();
        let unacknowledged = got.keys().filter(|id| !acknowledged.contains(*id)).count();
        println!(
            "{engine:?} {path}: {} acknowledged, all delivered; {duplicates} delivered more than once; {unacknowledged} delivered without a 202 (in flight at the kill)",
            acknowledged.len()
        );
    }
    println!("{engine:?}: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_kill9_loses_no_acknowledged_event() {
    crash_and_recover(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_kill9_loses_no_acknowledged_event() {
    crash_and_recover(Engine::Postgres).await;
}
