//! Baselines for the Kafka rows: what a plain rdkafka client does on the same broker in the same
//! run. Reading throughput: a fresh consumer group reads a topic from the start. Latency: a plain
//! producer → plain consumer pair at the benchmark's rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn consumer(bootstrap: &str) -> anyhow::Result<StreamConsumer> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("bench-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "range")
        .set("fetch.wait.max.ms", "5")
        .create()
        .context("creating a Kafka consumer")
}

/// Records per second a plain consumer reads `topic` from its start, until `expected` arrived.
pub async fn consume_rate(bootstrap: &str, topic: &str, expected: usize) -> anyhow::Result<f64> {
    let consumer = consumer(bootstrap)?;
    consumer.subscribe(&[topic])?;
    // The clock starts at the first record, after the group formed: only reading is measured.
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .context("no record within 30 s")??;
    drop(first);
    let started = Instant::now();
    let mut read = 1;
    while read < expected {
        tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .with_context(|| format!("only {read} of {expected} records read"))??;
        read += 1;
    }
    Ok(read as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 milliseconds from a plain producer's send to a plain consumer's receipt, at `rate`
/// records per second for `seconds`, on a fresh topic.
pub async fn produce_consume_latency(
    bootstrap: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let topic = format!("bench-latency-{}", uuid::Uuid::new_v4().simple());
    let settings = kinetic_kafka::Settings::new(bootstrap);
    kinetic_kafka::ensure_topic(&settings, &topic, 3, 1, Duration::from_secs(10)).await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    let consumer = consumer(bootstrap)?;
    consumer.subscribe(&[&topic])?;
    // Wait for the group to form: send probes until one comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = FutureRecord::<str, str>::to(&topic).payload("probe");
        producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)?;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            break;
        }
        if Instant::now() > deadline {
            bail!("the baseline consumer group did not form");
        }
    }
    let total = rate * seconds;
    let reader = tokio::spawn(async move {
        let mut arrivals: HashMap<String, Instant> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(seconds + 60);
        while (arrivals.len() as u64) < total && Instant::now() < deadline {
            if let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
                && let Some(Ok(id)) = message.payload_view::<str>()
                && id != "probe"
            {
                arrivals.entry(id.to_owned()).or_insert_with(Instant::now);
            }
        }
        arrivals
    });
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(total as usize);
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut acks = Vec::with_capacity(total as usize);
    for index in 0..total {
        ticker.tick().await;
        let id = index.to_string();
        sent.push((id.clone(), Instant::now()));
        let producer = producer.clone();
        let topic = topic.clone();
        acks.push(tokio::spawn(async move {
            let record = FutureRecord::<str, str>::to(&topic).payload(&id);
            producer.send(record, Duration::from_secs(10)).await.is_ok()
        }));
    }
    for ack in acks {
        if !ack.await.unwrap_or(false) {
            bail!("a baseline produce failed");
        }
    }
    let arrivals = reader.await?;
    let mut millis: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|arrived| arrived.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    if millis.len() < sent.len() {
        bail!(
            "only {} of {} baseline records arrived",
            millis.len(),
            sent.len()
        );
    }
    millis.sort_by(f64::total_cmp);
    let pick = |q: f64| millis[((millis.len() as f64 - 1.0) * q).round() as usize];
    Ok((pick(0.50), pick(0.99)))
}

/// Produces `ids` to `topic` as binary-mode CloudEvents (so a KafkaSource passes them through with
/// their ids), `rate` per second when given, else as fast as the producer takes them. Returns when
/// each was sent, by id.
pub async fn produce_events(
    bootstrap: &str,
    topic: &str,
    ids: &[String],
    rate: Option<u64>,
) -> anyhow::Result<HashMap<String, Instant>> {
    use rdkafka::message::{Header, OwnedHeaders};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    // A new producer's first delivery waits for its producer id (~0.5–1 s): warm it up outside
    // the measurement with one acknowledged record (not a CloudEvent's id the sink counts).
    producer
        .send(
            FutureRecord::<str, str>::to(topic).payload("warm-up"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let mut ticker = rate.map(|rate| {
        let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticker
    });
    let mut sent = HashMap::with_capacity(ids.len());
    let mut acks = Vec::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        sent.insert(id.clone(), Instant::now());
        let producer = producer.clone();
        let topic = topic.to_owned();
        let id = id.clone();
        let key = format!("key-{}", index % 64);
        acks.push(tokio::spawn(async move {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "ce_specversion",
                    value: Some("1.0"),
                })
                .insert(Header {
                    key: "ce_id",
                    value: Some(id.as_str()),
                })
                .insert(Header {
                    key: "ce_source",
                    value: Some("/bench"),
                })
                .insert(Header {
                    key: "ce_type",
                    value: Some("dev.kinetic.bench"),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
            let record = FutureRecord::<str, str>::to(&topic)
                .key(&key)
                .headers(headers)
                .payload(r#"{"order":12345,"item":"widget","amount":250,"note":"a typical small event payload"}"#);
            producer.send(record, Duration::from_secs(10)).await.is_ok()
        }));
    }
    for ack in acks {
        if !ack.await.unwrap_or(false) {
            bail!("a produce to {topic} failed");
        }
    }
    Ok(sent)
}
