//! The Kafka broker class beyond the shared delivery suite (which runs every behaviour on it too,
//! see `tests/delivery.rs`): its topic holds the events with `partitionkey` as the record key, a
//! crash loses nothing, and a Kafka-class broker without a cluster answers 503 and says why.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use support::{Engine, Kinetic, Receiver, TestStore, documents, send_event, write_yaml};

const WAIT: Duration = Duration::from_secs(30);

fn trigger_yaml(name: &str, uri: &str, annotations: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: {name}\n{annotations}spec:\n  broker: default\n  subscriber: {{uri: '{uri}'}}\n  delivery: {{retry: 10, backoffPolicy: linear, backoffDelay: PT0.2S}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_holds_the_events_keyed_by_partitionkey() {
    if !support::kafka_available() {
        return;
    }
    let store = TestStore::new(Engine::Kafka).await;
    let receiver = Receiver::start().await;
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            store.broker_yaml("default"),
            trigger_yaml("all", &receiver.url("/all"), ""),
        ]),
    );
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let client = reqwest::Client::new();
    for (id, key) in [
        ("k1", Some("order-1")),
        ("k2", Some("order-2")),
        ("k3", None),
    ] {
        let extensions: Vec<(&str, &str)> = key.map(|k| ("partitionkey", k)).into_iter().collect();
        let status = send_event(
            &client,
            &kinetic.url("/default/default"),
            id,
            "com.example.kafka",
            &extensions,
            "{}",
        )
        .await;
        assert_eq!(status, 202, "{}", kinetic.log());
    }
    let got = receiver.wait_for("/all", 3, WAIT).await;
    assert_eq!(got.len(), 3, "{}", kinetic.log());

    // Read the broker's topic directly, as any Kafka consumer would.
    let bootstrap = &store.kafka.as_ref().unwrap().bootstrap_servers;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .set("partition.assignment.strategy", "range")
        .create()
        .unwrap();
    consumer
        .subscribe(&["knative-broker-default-default"])
        .unwrap();
    let mut keys: HashMap<String, Option<String>> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while keys.len() < 3 && Instant::now() < deadline {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
        else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let key = message
            .key()
            .map(|k| String::from_utf8(k.to_vec()).unwrap());
        keys.insert(event["id"].as_str().unwrap().to_owned(), key);
        // The stored event is the accepted one, arrival time and TTL included.
        assert!(event["knativearrivaltime"].is_string(), "{event}");
    }
    assert_eq!(keys.get("k1"), Some(&Some("order-1".to_owned())));
    assert_eq!(keys.get("k2"), Some(&Some("order-2".to_owned())));
    assert_eq!(keys.get("k3"), Some(&None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_nothing_and_redelivers_only_what_was_in_flight() {
    if !support::kafka_available() {
        return;
    }
    let store = TestStore::new(Engine::Kafka).await;
    let receiver = Receiver::start().await;
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            store.broker_yaml("default"),
            trigger_yaml("all", &receiver.url("/all"), ""),
        ]),
    );
    let mut kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let client = reqwest::Client::new();
    const TOTAL: usize = 2_000;
    let url = kinetic.url("/default/default");
    for index in 0..TOTAL / 2 {
        let id = format!("e{index}");
        let status = send_event(&client, &url, &id, "com.example.crash", &[], "{}").await;
        assert_eq!(status, 202, "{}", kinetic.log());
    }
    // Midway, with deliveries in flight: kill -9, then carry on against a new process.
    receiver.wait_for("/all", TOTAL / 4, WAIT).await;
    kinetic.kill9();
    kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let url = kinetic.url("/default/default");
    for index in TOTAL / 2..TOTAL {
        let id = format!("e{index}");
        let status = send_event(&client, &url, &id, "com.example.crash", &[], "{}").await;
        assert_eq!(status, 202, "{}", kinetic.log());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let distinct = loop {
        let got: HashSet<String> = receiver
            .received("/all")
            .iter()
            .filter_map(|r| r.header("ce-id").map(str::to_owned))
            .collect();
        if got.len() >= TOTAL || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let missing: Vec<String> = (0..TOTAL)
        .map(|i| format!("e{i}"))
        .filter(|id| !distinct.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        kinetic.log()
    );
    // Re-deliveries are bounded by what was read but not committed when the process died: a few
    // batches, never the whole topic.
    let total = receiver.received("/all").len();
    assert!(
        total - TOTAL <= 1_000,
        "{} re-deliveries for {TOTAL} events",
        total - TOTAL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_class_broker_without_a_cluster_answers_503_and_says_why() {
    // No Kafka needed: the point is what happens without one.
    let store = TestStore::new(Engine::Sqlite).await;
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n  annotations:\n    eventing.knative.dev/broker.class: Kafka\n";
    let file = write_yaml(store.dir(), "resources.yaml", broker);
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let client = reqwest::Client::new();
    let response = client
        .post(kinetic.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-source", "/s")
        .header("ce-type", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("--kafka-bootstrap-servers"),
        "the answer says how to fix it: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_moved_onto_a_kafka_broker_skips_its_backlog_even_after_a_restart() {
    if !support::kafka_available() {
        return;
    }
    let store = TestStore::new(Engine::Kafka).await;
    let receiver = Receiver::start().await;
    let mover = |broker: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: mover\nspec:\n  broker: {broker}\n  subscriber: {{uri: '{}'}}\n",
            receiver.url("/mover")
        )
    };
    // `default` is of the Kafka class, `plain` of the store's.
    let file = write_yaml(
        store.dir(),
        "resources.yaml",
        &documents(&[
            store.broker_yaml("default"),
            support::broker_yaml("plain"),
            mover("plain"),
        ]),
    );
    let mut kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let client = reqwest::Client::new();
    let send = |kinetic: &Kinetic, broker: &str, id: &str| {
        let url = kinetic.url(&format!("/default/{broker}"));
        let client = client.clone();
        let id = id.to_owned();
        async move { send_event(&client, &url, &id, "t", &[], "{}").await }
    };
    for id in ["backlog-1", "backlog-2"] {
        assert_eq!(send(&kinetic, "default", id).await, 202);
    }
    assert_eq!(send(&kinetic, "plain", "on-plain").await, 202);
    assert_eq!(receiver.wait_for("/mover", 1, WAIT).await.len(), 1);

    // Move it onto the Kafka-class broker, then probe until it delivers from there.
    let moved: serde_json::Value = serde_saphyr::from_str(&mover("default")).unwrap();
    let answer = kinetic
        .api()
        .post(kinetic.admin("/api/v1/apply?file=moved.json"))
        .json(&moved)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let deadline = Instant::now() + WAIT;
    let mut probe = 0;
    loop {
        probe += 1;
        let id = format!("probe-{probe}");
        assert_eq!(send(&kinetic, "default", &id).await, 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if ids(&receiver.received("/mover")).contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the move never took effect; log:\n{}",
            kinetic.log()
        );
    }
    // A restart re-reads the topic from the start for the trigger's group only if nothing was
    // committed; either way the backlog stays skipped.
    kinetic.terminate();
    kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[]));
    assert_eq!(send(&kinetic, "default", "after-restart").await, 202);
    let deadline = Instant::now() + WAIT;
    while !ids(&receiver.received("/mover")).contains(&"after-restart".to_owned()) {
        assert!(Instant::now() < deadline, "{}", kinetic.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = ids(&receiver.received("/mover"));
    assert!(
        !got.iter().any(|id| id.starts_with("backlog-")),
        "the Kafka broker's backlog from before the move was delivered: {got:?}"
    );
    assert!(got.contains(&"on-plain".to_owned()));
}

fn ids(received: &[support::Received]) -> Vec<String> {
    received
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knatives_kafka_broker_config_map_names_the_cluster() {
    if !support::kafka_available() {
        return;
    }
    let kafka = kinetic_testkit::nisshi::TestBroker::start().expect("nisshi");
    // Knative's own YAML: the ConfigMap in knative-eventing, referenced by the Broker. kinetic
    // runs without --kafka-bootstrap-servers.
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kafka-broker-config\n  namespace: knative-eventing\ndata:\n  default.topic.partitions: \"2\"\n  default.topic.replication.factor: \"1\"\n  bootstrap.servers: \"{}\"\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n  annotations:\n    eventing.knative.dev/broker.class: Kafka\nspec:\n  config:\n    apiVersion: v1\n    kind: ConfigMap\n    name: kafka-broker-config\n    namespace: knative-eventing\n---\n{}",
        kafka.bootstrap_servers,
        trigger_yaml("all", &receiver.url("/all"), "")
    );
    let file = write_yaml(store.dir(), "resources.yaml", &yaml);
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let client = reqwest::Client::new();
    let status = send_event(
        &client,
        &kinetic.url("/default/default"),
        "via-config-map",
        "t",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 202, "{}", kinetic.log());
    let got = receiver.wait_for("/all", 1, WAIT).await;
    assert_eq!(ids(&got), ["via-config-map"], "{}", kinetic.log());
    // The topic was created with the ConfigMap's partition count.
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .create()
        .unwrap();
    let metadata = tokio::task::block_in_place(|| {
        consumer.fetch_metadata(
            Some("knative-broker-default-default"),
            Duration::from_secs(10),
        )
    })
    .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 2);

    // A ConfigMap that says something wrong: the ingress answers 503 naming the key.
    let broken = yaml.replace(
        "default.topic.partitions: \"2\"",
        "default.topic.partitions: \"two\"",
    );
    let broken = broken.replace("name: default\n", "name: second\n");
    let response = kinetic
        .api()
        .post(kinetic.admin("/api/v1/apply?file=second.yaml"))
        .header("content-type", "application/yaml")
        .body(
            broken
                .split("---\n")
                .take(2)
                .collect::<Vec<_>>()
                .join("---\n"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // The new Broker can be served (read from the store on its own) a moment before the process's
    // snapshot of resources holds the changed ConfigMap: until then events go to the cluster the
    // ConfigMap named before.
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        let response = client
            .post(kinetic.url("/default/second"))
            .header("ce-specversion", "1.0")
            .header("ce-id", "x")
            .header("ce-source", "/s")
            .header("ce-type", "t")
            .send()
            .await
            .unwrap();
        if response.status().as_u16() != 202 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.status().as_u16(), 503, "{}", kinetic.log());
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("default.topic.partitions") && message.contains("two"),
        "{message}"
    );
}

/// As in Knative, `config-br-defaults` names the ConfigMap of Kafka-class Brokers that name
/// none: a Broker without `spec.config` reaches the cluster that ConfigMap names, and kinetic runs
/// without --kafka-bootstrap-servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_br_defaults_names_the_cluster_of_brokers_that_name_none() {
    if !support::kafka_available() {
        return;
    }
    let kafka = kinetic_testkit::nisshi::TestBroker::start().expect("nisshi");
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = documents(&[
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-kafka-broker, namespace: kinetic-system}}\ndata:\n  default.topic.partitions: \"3\"\n  bootstrap.servers: \"{}\"\n",
            kafka.bootstrap_servers
        ),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-br-defaults, namespace: kinetic-system}\ndata:\n  default-br-config: |\n    clusterDefault:\n      brokerClass: Kafka\n      apiVersion: v1\n      kind: ConfigMap\n      name: config-kafka-broker\n      namespace: kinetic-system\n".to_owned(),
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n  annotations:\n    eventing.knative.dev/broker.class: Kafka\n".to_owned(),
        trigger_yaml("all", &receiver.url("/all"), ""),
    ]);
    let file = write_yaml(store.dir(), "resources.yaml", &yaml);
    let kinetic = tokio::task::block_in_place(|| Kinetic::up(&store, &[&file]));
    let status = send_event(
        &reqwest::Client::new(),
        &kinetic.url("/default/default"),
        "via-defaults",
        "t",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 202, "{}", kinetic.log());
    let got = receiver.wait_for("/all", 1, WAIT).await;
    assert_eq!(ids(&got), ["via-defaults"], "{}", kinetic.log());
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .create()
        .unwrap();
    let metadata = tokio::task::block_in_place(|| {
        consumer.fetch_metadata(
            Some("knative-broker-default-default"),
            Duration::from_secs(10),
        )
    })
    .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 3);
}
