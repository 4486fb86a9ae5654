//! KafkaSource end to end against a real Kafka-protocol broker (nisshi): records produced with
//! librdkafka become CloudEvents that reach a trigger's subscriber through kinetic's broker, in
//! order per key, across a kill -9; a poison event is dead-lettered and its partition moves on;
//! unreachable brokers show in `kinetic get sources`; mistakes are refused at apply.
//!
//! Tests that need Kafka skip when nisshi is not installed, and fail under `CI=true`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kinetic_kafka::Settings;
use kinetic_testkit::nisshi::TestBroker;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use support::{
    Answer, ClosedPort, Engine, Kinetic, Receiver, TO_DEFAULT_BROKER, TestStore, broker_yaml,
    write_yaml,
};

/// Records of the crash test, over this many partitions and keys.
const RECORDS: usize = 10_000;
const PARTITIONS: i32 = 3;
const KEYS: usize = 30;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Produces `records` (key, value) in order; a key's records keep their order (one partition
/// each, one request in flight at a time).
async fn produce(settings: &Settings, topic: &str, records: &[(String, String)]) {
    let producer: FutureProducer = settings
        .client_config()
        .set("linger.ms", "5")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .expect("producer");
    for chunk in records.chunks(500) {
        let sends = chunk.iter().map(|(key, value)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap_or_else(|(error, _)| panic!("producing to {topic}: {error}"));
        }
    }
}

/// The consumer group's committed offset per partition of `topic`.
fn committed(settings: &Settings, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = settings
        .client_config()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(offset) => offset,
            _ => -1,
        })
        .collect()
}

/// `(key, seq)` of every delivery, in arrival order.
fn deliveries(receiver: &Receiver, path: &str) -> Vec<(String, u64)> {
    receiver
        .received(path)
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("JSON data");
            (
                body["key"].as_str().expect("key").to_owned(),
                body["seq"].as_u64().expect("seq"),
            )
        })
        .collect()
}

fn distinct(deliveries: &[(String, u64)]) -> usize {
    deliveries.iter().collect::<BTreeSet<_>>().len()
}

async fn wait_for_distinct(receiver: &Receiver, path: &str, count: usize, kinetic: &Kinetic) {
    // Bounded by progress, not by a fixed time: a loaded machine delivers slower, but a stall of
    // `STALL` with nothing new fails at once, and `CAP` bounds the whole wait.
    const STALL: Duration = Duration::from_secs(60);
    const CAP: Duration = Duration::from_secs(600);
    let started = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let got = distinct(&deliveries(receiver, path));
        if got >= count {
            return;
        }
        if got > last.0 {
            last = (got, Instant::now());
        }
        assert!(
            last.1.elapsed() < STALL && started.elapsed() < CAP,
            "{got} of {count} records reached {path} (none new for {:?}); kinetic's log:\n{}",
            last.1.elapsed(),
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records `from..to` of the crash test: key `k{i % KEYS}`, and per key a sequence number.
fn records(from: usize, to: usize) -> Vec<(String, String)> {
    (from..to)
        .map(|i| {
            let key = format!("k{}", i % KEYS);
            let seq = i / KEYS;
            let value = serde_json::json!({ "key": key, "seq": seq }).to_string();
            (key, value)
        })
        .collect()
}

fn sources(kinetic: &Kinetic) -> Vec<Value> {
    let output = kinetic.cli_in_place(&["get", "sources", "-o", "json"]);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ordered_records_reach_a_trigger_in_order_across_a_crash() {
    ordered_records_reach_a_trigger_in_order_across_a_crash(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ordered_records_reach_a_trigger_in_order_across_a_crash() {
    ordered_records_reach_a_trigger_in_order_across_a_crash(Engine::Postgres).await;
}

async fn ordered_records_reach_a_trigger_in_order_across_a_crash(engine: Engine) {
    let Some(kafka) = TestBroker::start() else {
        return;
    };
    let started = Instant::now();
    let settings = kafka.settings();
    let topic = unique("orders");
    let group = unique("readers");
    kinetic_kafka::ensure_topic(&settings, &topic, PARTITIONS, 1, Duration::from_secs(10))
        .await
        .expect("topic");
    let half = RECORDS / 2;
    produce(&settings, &topic, &records(0, half)).await;

    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
  annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  broker: default
  subscriber: {{uri: '{subscriber}'}}
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: orders}}
spec:
  bootstrapServers: ['{servers}']
  topics: ['{topic}']
  consumerGroup: {group}
  initialOffset: earliest
  ordering: key
{TO_DEFAULT_BROKER}  ceOverrides: {{extensions: {{team: orders}}}}
",
        broker_yaml("default"),
        subscriber = receiver.url("/orders"),
        servers = kafka.bootstrap_servers,
    );
    let file = write_yaml(store.dir(), "kafka.yaml", &yaml);
    let produced = started.elapsed();
    let mut kinetic = Kinetic::up(&store, &[&file]);

    // Midway through the first half: a crash, and the second half produced while kinetic is down.
    wait_for_distinct(&receiver, "/orders", half / 2, &kinetic).await;
    let first_run = started.elapsed() - produced;
    kinetic.kill9();
    let before_crash = receiver.received("/orders").len();
    produce(&settings, &topic, &records(half, RECORDS)).await;
    let restarted = Instant::now();
    // Debug logs show the partitions paused while 7,500 records wait for the ordered sends.
    let debug = [("KINETIC_LOG", "info,kinetic_sources::kafka=debug")];
    let kinetic = Kinetic::up_with_env(&store, &[&file], &[], &debug);
    wait_for_distinct(&receiver, "/orders", RECORDS, &kinetic).await;
    eprintln!(
        "DEBUG paused {}",
        kinetic.log().matches("Paused a partition").count()
    );
    let second_run = restarted.elapsed();
    let elapsed = started.elapsed();
    // Reading ran ahead of delivering: partitions were paused and resumed, and lost nothing.
    let pauses = kinetic.log().matches("Paused a partition").count();
    assert!(pauses > 0, "no partition was paused");

    let got = deliveries(&receiver, "/orders");
    // Every record at least once.
    assert_eq!(distinct(&got), RECORDS);
    // Per key, in order: a delivery is either the next record of its key or a repeat (the
    // trigger's uncommitted work delivered again after the crash).
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, seq) in &got {
        let next = highest.get(key.as_str()).map_or(0, |h| h + 1);
        assert!(
            *seq <= next,
            "{key}: record {seq} arrived before record {next}"
        );
        if *seq == next {
            highest.insert(key, *seq);
        }
    }
    // Repeats are bounded by what the trigger had in flight at the kill: at most its batch
    // (500) and the batches waiting for their commit (4) behind it. The source's own repeats
    // (records accepted but not yet committed to Kafka) keep their ids, so the broker drops them.
    let repeats = got.len() - RECORDS;
    assert!(
        repeats <= 2_500,
        "{repeats} repeats ({before_crash} deliveries before the crash)"
    );

    let first = &receiver.received("/orders")[0];
    assert_eq!(first.header("ce-type"), Some("dev.knative.kafka.event"));
    assert_eq!(
        first.header("ce-source"),
        Some(format!("/apis/v1/namespaces/default/kafkasources/orders#{topic}").as_str())
    );
    assert!(
        first
            .header("ce-id")
            .is_some_and(|id| id.starts_with("partition:") && id.contains("/offset:")),
        "{:?}",
        first.headers
    );
    assert_eq!(first.header("ce-team"), Some("orders"));
    assert_eq!(first.header("ce-partitionkey"), first.header("ce-key"));

    // Offsets are committed up to the end of every partition once everything was delivered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut offsets = Vec::new();
    while Instant::now() < deadline {
        offsets = committed(&settings, &group, &topic, PARTITIONS);
        if offsets.iter().sum::<i64>() == RECORDS as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        offsets.iter().sum::<i64>(),
        RECORDS as i64,
        "committed {offsets:?}"
    );

    let listed = sources(&kinetic);
    let source = listed
        .iter()
        .find(|s| s["kind"] == "KafkaSource")
        .expect("KafkaSource listed");
    assert_eq!(source["name"], "orders", "{listed:?}");
    assert_eq!(source["ready"], true, "{listed:?}");
    assert!(source["events"].as_u64().unwrap() > 0, "{listed:?}");
    assert!(
        source["sink"]
            .as_str()
            .unwrap()
            .ends_with("/default/default"),
        "{listed:?}"
    );
    eprintln!(
        "{engine:?}: {RECORDS} records over {PARTITIONS} partitions in {elapsed:?} across a kill -9 \
         (first {half} produced in {produced:?}; {} delivered in {first_run:?}; the rest, after the \
         restart, in {second_run:?}, {pauses} partition pauses); {repeats} repeats at the subscriber",
        half / 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_its_partition_moves_on() {
    let Some(kafka) = TestBroker::start() else {
        return;
    };
    let settings = kafka.settings();
    let topic = unique("poison");
    let group = unique("poison-readers");
    kinetic_kafka::ensure_topic(&settings, &topic, 1, 1, Duration::from_secs(10))
        .await
        .expect("topic");
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.respond_with("/sink", |request| {
        let poison = String::from_utf8_lossy(&request.body).contains("poison");
        Answer::status(if poison { 500 } else { 200 })
    });
    let yaml = format!(
        "{}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: sink
  annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  broker: default
  subscriber: {{uri: '{sink}'}}
  delivery:
    retry: 2
    backoffPolicy: linear
    backoffDelay: PT0.1S
    deadLetterSink: {{uri: '{dead}'}}
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: poison}}
spec:
  bootstrapServers: ['{servers}']
  topics: ['{topic}']
  consumerGroup: {group}
  initialOffset: earliest
  ordering: unordered
{TO_DEFAULT_BROKER}",
        broker_yaml("default"),
        sink = receiver.url("/sink"),
        dead = receiver.url("/dead"),
        servers = kafka.bootstrap_servers,
    );
    let file = write_yaml(store.dir(), "kafka.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    // One key: the trigger's ordered lane holds the records after the poison until it is given up.
    let values: Vec<(String, String)> = (0..20)
        .map(|i| {
            let value = if i == 10 {
                "poison".to_owned()
            } else {
                format!("record-{i}")
            };
            ("one".to_owned(), value)
        })
        .collect();
    produce(&settings, &topic, &values).await;

    let dead = receiver.wait_for("/dead", 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "{}", kinetic.log());
    assert_eq!(&dead[0].body[..], b"poison");
    assert_eq!(dead[0].header("ce-knativeerrorcode"), Some("500"));
    assert_eq!(dead[0].header("ce-id"), Some("partition:0/offset:10"));
    // Every other record arrives, those after the poison too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let delivered: BTreeSet<String> = receiver
            .received("/sink")
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .filter(|body| body != "poison")
            .collect();
        if delivered.len() == 19 || Instant::now() >= deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expected: BTreeSet<String> = (0..20)
        .filter(|i| *i != 10)
        .map(|i| format!("record-{i}"))
        .collect();
    assert_eq!(delivered, expected, "{}", kinetic.log());
    let poison_attempts = receiver
        .received("/sink")
        .iter()
        .filter(|r| &r.body[..] == b"poison")
        .count();
    assert_eq!(poison_attempts, 3, "the first attempt and 2 retries");
    // The partition's lag reaches 0 in the metrics and in `kinetic get sources`.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = support::scrape(&kinetic).await;
        let labels = [
            ("name", "poison"),
            ("topic", topic.as_str()),
            ("partition", "0"),
        ];
        let series = metrics
            .lines()
            .any(|l| l.starts_with("kinetic_source_kafka_consumer_lag{") && l.contains(&topic));
        let lag = support::metric_sum(&metrics, "kinetic_source_kafka_consumer_lag", &labels);
        let listed = sources(&kinetic);
        if series && lag == 0.0 && listed[0]["backlog"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag {lag}, {listed:?}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The source committed past every record, the poison included (the sink, the broker,
    // accepted it).
    let deadline = Instant::now() + Duration::from_secs(15);
    while committed(&settings, &group, &topic, 1) != [20] {
        assert!(
            Instant::now() < deadline,
            "committed {:?}",
            committed(&settings, &group, &topic, 1)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_show_in_the_status_and_kinetic_keeps_running() {
    let closed = ClosedPort::bind();
    let store = TestStore::new(Engine::Sqlite).await;
    let yaml = format!(
        "{}---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: nowhere}}
spec:
  bootstrapServers: ['{server}']
  topics: [orders]
{TO_DEFAULT_BROKER}",
        broker_yaml("default"),
        server = closed.address,
    );
    let file = write_yaml(store.dir(), "kafka.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let source = loop {
        let listed = sources(&kinetic);
        let source = listed
            .into_iter()
            .find(|s| s["kind"] == "KafkaSource")
            .expect("KafkaSource listed");
        let down = source["ready"] == false
            && source["lastError"]
                .as_str()
                .is_some_and(|e| e.starts_with("Kafka at "));
        if down || Instant::now() >= deadline {
            break source;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = source["lastError"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!("Kafka at {}: ", closed.address)) && error.contains("refused"),
        "{source}\n{}",
        kinetic.log()
    );
    assert_eq!(source["ready"], false, "{source}");
    // Still running and serving.
    let health = reqwest::get(kinetic.url("/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let table = kinetic.cli_in_place(&["get", "sources"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("KafkaSource") && table.contains("nowhere"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_bad_kafka_source_naming_file_path_and_hint() {
    let store = TestStore::new(Engine::Sqlite).await;
    let kinetic = Kinetic::up(&store, &[]);
    let good = "apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: orders}
spec:
  bootstrapServers: ['127.0.0.1:9092']
  topics: [orders]
  sink: {uri: 'http://127.0.0.1:9/'}
";
    let cases = [
        (
            "no-topics.yaml",
            "topics: [orders]",
            "topics: []",
            "spec.topics",
            "is empty",
        ),
        (
            "bad-offset.yaml",
            "topics: [orders]",
            "topics: [orders]\n  initialOffset: oldest",
            "spec.initialOffset",
            "unknown variant `oldest`",
        ),
        (
            "typo.yaml",
            "topics: [orders]",
            "topics: [orders]\n  consumergroup: g",
            "spec.consumergroup",
            "unknown field `consumergroup`",
        ),
        (
            "servers-type.yaml",
            "bootstrapServers: ['127.0.0.1:9092']",
            "bootstrapServers: 9092",
            "spec.bootstrapServers",
            "invalid type",
        ),
        (
            "inline-secret.yaml",
            "topics: [orders]",
            "topics: [orders]\n  net: {sasl: {enable: true, user: alice, password: {env: P}}}",
            "spec.net.sasl.user",
            "inline secret",
        ),
    ];
    for (name, from, to, path, message) in cases {
        let text = format!("{}---\n{}", broker_yaml("default"), good.replace(from, to));
        let file = write_yaml(store.dir(), name, &text);
        let file = file.display().to_string();
        let output = kinetic.cli_in_place(&["apply", "-f", &file]);
        assert!(!output.status.success(), "{name} was applied");
        let error = String::from_utf8_lossy(&output.stderr);
        for part in [
            file.as_str(),
            "document 2",
            "KafkaSource default/orders",
            &format!("{path}: "),
            message,
            "(hint: ",
        ] {
            assert!(
                error.contains(part),
                "{name}: {part:?} missing from: {error}"
            );
        }
    }
    let output = kinetic.cli_in_place(&["get", "kafkasources", "-o", "json"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
}

/// Two kinetic processes on one PostgreSQL share a KafkaSource's partitions through its consumer
/// group: the second joining takes partitions from the first (which commits what it delivered
/// before giving them up), and the first stopping hands them all to the second. Nothing is lost
/// and every key stays in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_processes_without_losing_records() {
    let Some(kafka) = TestBroker::start() else {
        return;
    };
    const TOTAL: usize = 3_000;
    let settings = kafka.settings();
    let topic = unique("shared");
    let group = unique("shared-readers");
    kinetic_kafka::ensure_topic(&settings, &topic, 4, 1, Duration::from_secs(10))
        .await
        .expect("topic");
    produce(&settings, &topic, &records(0, 1_000)).await;
    let store = TestStore::new(Engine::Postgres).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: shared
  annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  broker: default
  subscriber: {{uri: '{subscriber}'}}
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: shared}}
spec:
  bootstrapServers: ['{servers}']
  topics: ['{topic}']
  consumerGroup: {group}
  initialOffset: earliest
{TO_DEFAULT_BROKER}",
        broker_yaml("default"),
        subscriber = receiver.url("/shared"),
        servers = kafka.bootstrap_servers,
    );
    let file = write_yaml(store.dir(), "kafka.yaml", &yaml);
    let mut first = Kinetic::up(&store, &[&file]);
    wait_for_distinct(&receiver, "/shared", 300, &first).await;

    let second = Kinetic::up(&store, &[&file]);
    produce(&settings, &topic, &records(1_000, 2_000)).await;
    // The second got partitions of the topic (an empty assignment logs no topic).
    wait_until_logged(&second, "Partitions assigned.").await;
    let assigned = second
        .log()
        .lines()
        .any(|l| l.contains("Partitions assigned.") && l.contains(&topic));
    assert!(assigned, "{}", second.log());
    wait_for_distinct(&receiver, "/shared", 1_500, &second).await;
    assert!(
        first.log().contains("Partitions revoked."),
        "{}",
        first.log()
    );

    // The first stops: its partitions go to the second at once (no session timeout to wait).
    first.terminate();
    produce(&settings, &topic, &records(2_000, TOTAL)).await;
    wait_for_distinct(&receiver, "/shared", TOTAL, &second).await;

    let got = deliveries(&receiver, "/shared");
    assert_eq!(distinct(&got), TOTAL);
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, seq) in &got {
        let next = highest.get(key.as_str()).map_or(0, |h| h + 1);
        assert!(*seq <= next, "{key}: record {seq} arrived before {next}");
        if *seq == next {
            highest.insert(key, *seq);
        }
    }
    let repeats = got.len() - TOTAL;
    assert!(repeats <= 2_500, "{repeats} repeats");
    eprintln!("{TOTAL} records across two rebalances; {repeats} repeats at the subscriber");
}

async fn wait_until_logged(kinetic: &Kinetic, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kinetic.log().contains(line) {
        assert!(
            Instant::now() < deadline,
            "kinetic never logged {line:?}:\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Straight to a URL sink: a record the sink answers 503 is sent again until accepted, one it
/// refuses for good (400) is counted and passed over, and the partition goes on in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_retries_its_sink_and_passes_over_a_refused_record() {
    let Some(kafka) = TestBroker::start() else {
        return;
    };
    let settings = kafka.settings();
    let topic = unique("refused");
    let group = unique("refused-readers");
    kinetic_kafka::ensure_topic(&settings, &topic, 1, 1, Duration::from_secs(10))
        .await
        .expect("topic");
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let busy_once = std::sync::atomic::AtomicBool::new(true);
    receiver.respond_with("/sink", move |request| {
        let body = String::from_utf8_lossy(&request.body);
        if body == "refused" {
            Answer::status(400)
        } else if body == "record-3" && busy_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Answer::status(503)
        } else {
            Answer::status(202)
        }
    });
    let yaml = format!(
        "apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: direct}}
spec:
  bootstrapServers: ['{servers}']
  topics: ['{topic}']
  consumerGroup: {group}
  initialOffset: earliest
  sink: {{uri: '{sink}'}}
",
        servers = kafka.bootstrap_servers,
        sink = receiver.url("/sink"),
    );
    let file = write_yaml(store.dir(), "kafka.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    let values: Vec<(String, String)> = (0..12)
        .map(|i| {
            let value = if i == 8 {
                "refused".to_owned()
            } else {
                format!("record-{i}")
            };
            (format!("k{i}"), value)
        })
        .collect();
    produce(&settings, &topic, &values).await;
    // 12 records, record-3 twice.
    let got = receiver
        .wait_for("/sink", 13, Duration::from_secs(30))
        .await;
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let mut expected: Vec<String> = (0..12)
        .map(|i| {
            if i == 8 {
                "refused".to_owned()
            } else {
                format!("record-{i}")
            }
        })
        .collect();
    expected.insert(3, "record-3".to_owned());
    assert_eq!(bodies, expected, "{}", kinetic.log());
    assert_eq!(got[0].header("ce-key"), Some("k0"));

    let deadline = Instant::now() + Duration::from_secs(15);
    while committed(&settings, &group, &topic, 1) != [12] {
        assert!(Instant::now() < deadline, "offsets not committed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let listed = sources(&kinetic);
    assert_eq!(listed[0]["events"], 11, "{listed:?}");
    assert_eq!(listed[0]["failures"], 2, "{listed:?}");
    let error = listed[0]["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{topic} partition 0 offset 8")) && error.contains("400"),
        "{listed:?}"
    );
}

/// `ordering: key` to a plain sink: one partition, a slow key's records first, then other keys'.
/// The other keys do not wait behind the slow one (with `ordered` they would: one record at a time
/// per partition), and each key's records arrive in order, never two of one key at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ordering_keeps_each_key_in_order_and_lets_other_keys_pass() {
    let Some(kafka) = TestBroker::start() else {
        return;
    };
    const SLOW: Duration = Duration::from_millis(300);
    let settings = kafka.settings();
    let topic = unique("keyed");
    kinetic_kafka::ensure_topic(&settings, &topic, 1, 1, Duration::from_secs(10))
        .await
        .expect("topic");
    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.respond_with("/sink", |request| {
        if request.header("ce-key") == Some("slow") {
            Answer::status(202).delay(SLOW)
        } else {
            Answer::status(202)
        }
    });
    let yaml = format!(
        "apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: keyed}}
spec:
  bootstrapServers: ['{servers}']
  topics: ['{topic}']
  consumerGroup: {group}
  initialOffset: earliest
  ordering: key
  sink: {{uri: '{sink}'}}
",
        servers = kafka.bootstrap_servers,
        group = unique("keyed-readers"),
        sink = receiver.url("/sink"),
    );
    let file = write_yaml(store.dir(), "kafka.yaml", &yaml);
    let kinetic = Kinetic::up(&store, &[&file]);
    let value = |key: &str, seq: usize| serde_json::json!({ "key": key, "seq": seq }).to_string();
    let mut records: Vec<(String, String)> = (0..4)
        .map(|seq| ("slow".to_owned(), value("slow", seq)))
        .collect();
    for seq in 0..10 {
        for key in ["a", "b", "c"] {
            records.push((key.to_owned(), value(key, seq)));
        }
    }
    produce(&settings, &topic, &records).await;
    wait_for_distinct(&receiver, "/sink", records.len(), &kinetic).await;

    let got = receiver.received("/sink");
    let arrivals: Vec<(String, u64, Instant)> = got
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("JSON data");
            (
                body["key"].as_str().expect("key").to_owned(),
                body["seq"].as_u64().expect("seq"),
                r.at,
            )
        })
        .collect();
    assert_eq!(arrivals.len(), records.len(), "each record once");
    let mut by_key: BTreeMap<&str, Vec<(u64, Instant)>> = BTreeMap::new();
    for (key, seq, at) in &arrivals {
        by_key.entry(key).or_default().push((*seq, *at));
    }
    for (key, list) in &by_key {
        let seqs: Vec<u64> = list.iter().map(|(seq, _)| *seq).collect();
        let count = if *key == "slow" { 4 } else { 10 };
        assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "key {key} in order");
    }
    // A slow record is sent only after the one before it was answered (SLOW later).
    for pair in by_key["slow"].windows(2) {
        assert!(
            pair[1].1.duration_since(pair[0].1) >= SLOW,
            "two records of one key were in flight at once"
        );
    }
    // Every other key's last record arrived before the slow key's last one.
    let slow_last = by_key["slow"].last().expect("slow records").1;
    for key in ["a", "b", "c"] {
        let last = by_key[key].last().expect("records").1;
        assert!(
            last < slow_last,
            "key {key} waited behind the slow key\n{}",
            kinetic.log()
        );
    }
}
