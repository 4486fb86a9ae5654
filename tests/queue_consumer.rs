//! The queue-consumer job end to end, from the example's own YAML
//! (`examples/queue-consumer/orders.yaml`): orders produced to a Kafka topic by the example's
//! producer, read by a KafkaSource, processed by the example function (`examples/order-fn`) scaling
//! from zero, in order per customer; an order the function refuses is dead-lettered at once, the
//! function is redeployed with the fix, and `kinetic dlq replay` processes it. On SQLite and on
//! PostgreSQL, against a real Kafka-protocol broker.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Engine, Kinetic, Receiver, TestStore, write_yaml};

const ORDERS: u64 = 300;
const CUSTOMERS: u64 = 12;
const WAIT: Duration = Duration::from_secs(60);

fn example_binary(name: &str) -> PathBuf {
    let path = support::binary()
        .parent()
        .expect("target directory")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing; build it with `cargo build -p order-fn` (scripts/test.sh does)",
        path.display()
    );
    path
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or(Value::Null)
}

async fn orders_are_processed_in_order_and_the_refused_one_replayed(engine: Engine) {
    let kafka = kinetic_testkit::nisshi::TestBroker::start().expect("nisshi");
    kinetic_kafka::ensure_topic(&kafka.settings(), "orders", 3, 1, Duration::from_secs(10))
        .await
        .expect("create the orders topic");
    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let function = example_binary("order-fn");
    let example = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/queue-consumer/orders.yaml"),
    )
    .expect("the example's YAML");
    let yaml = example
        .replace("127.0.0.1:9092", &kafka.bootstrap_servers)
        .replace("target/release/order-fn", &function.display().to_string())
        .replace("http://127.0.0.1:9090/", &receiver.url("/processed"));
    let file = write_yaml(store.dir(), "orders.yaml", &yaml);
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));

    let produced = std::process::Command::new(example_binary("orders-produce"))
        .args([
            "--bootstrap",
            &kafka.bootstrap_servers,
            "--topic",
            "orders",
            "--count",
            &ORDERS.to_string(),
            "--customers",
            &CUSTOMERS.to_string(),
            "--discontinued",
            "1",
        ])
        .output()
        .expect("run orders-produce");
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    // Every order but the refused one is processed; per customer, in sequence.
    let got = receiver
        .wait_for("/processed", ORDERS as usize - 1, WAIT)
        .await;
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut orders: Vec<String> = Vec::new();
    for received in &got {
        let body: Value = serde_json::from_slice(&received.body).expect("JSON reply");
        let order = body["order"].as_str().unwrap_or_default().to_owned();
        // At-least-once: a repeat is allowed, never a step back.
        if orders.contains(&order) {
            continue;
        }
        orders.push(order);
        seen.entry(body["customer"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(body["seq"].as_u64().unwrap_or_default());
    }
    assert_eq!(
        orders.len(),
        ORDERS as usize - 1,
        "processed orders; log:\n{}",
        kinetic.log()
    );
    for (customer, seqs) in &seen {
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "{customer}'s orders out of order: {seqs:?}"
        );
    }
    assert_eq!(seen.len(), CUSTOMERS as usize);

    // The refused order is a dead letter after one attempt, with the function's reason.
    let letters_url = kinetic.admin("/api/v1/deadletters?trigger=default/process-orders");
    let deadline = Instant::now() + WAIT;
    let letters = loop {
        let letters = get(&kinetic.api(), &letters_url).await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !letters.is_empty() || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["attempts"], 1, "{:?}", letters[0]);
    assert_eq!(letters[0]["lastStatus"], 422, "{:?}", letters[0]);
    let error = letters[0].to_string();
    assert!(error.contains("discontinued"), "{error}");

    // The fix: the function redeployed to accept the SKU. Wait until it serves the new revision.
    let fixed = yaml.replace(
        "            - {name: PROCESS_MS, value: \"5\"}",
        "            - {name: PROCESS_MS, value: \"5\"}\n            - {name: ACCEPT_DISCONTINUED, value: \"true\"}",
    );
    assert_ne!(
        fixed, yaml,
        "the example's env list changed; update this test"
    );
    let service = fixed
        .split("---\n")
        .find(|doc| doc.contains("\nkind: Service\n"))
        .expect("the Service document")
        .to_owned();
    let applied = kinetic
        .api()
        .post(kinetic.admin("/api/v1/apply?file=fix.yaml"))
        .header("content-type", "application/yaml")
        .body(service)
        .send()
        .await
        .expect("apply the fix");
    assert_eq!(applied.status().as_u16(), 200);
    let answer: Value = applied.json().await.unwrap_or(Value::Null);
    assert!(
        answer.to_string().contains("order-fn-00002"),
        "the fix made no new revision: {answer}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let service = get(
            &kinetic.api(),
            &kinetic.admin("/api/v1/services/default/order-fn"),
        )
        .await;
        let latest = service["status"]["latestRevision"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if latest.ends_with("-00002") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fixed revision never became ready: {service}; log:\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replay = tokio::task::block_in_place(|| {
        kinetic.cli(&[
            "dlq",
            "replay",
            "--trigger",
            "default/process-orders",
            "--all",
        ])
    });
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let replayed = receiver.received("/processed").iter().any(|r| {
            serde_json::from_slice::<Value>(&r.body)
                .is_ok_and(|b| b["order"] == format!("o-{}", ORDERS - 1))
        });
        if replayed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed order was not processed; log:\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    if support::kafka_available() {
        orders_are_processed_in_order_and_the_refused_one_replayed(Engine::Sqlite).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    if support::kafka_available() {
        orders_are_processed_in_order_and_the_refused_one_replayed(Engine::Postgres).await;
    }
}
