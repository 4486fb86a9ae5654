//! `KafkaSource`: one Kafka consumer per source reads its topics and hands every record to the
//! sink as a CloudEvent; a record's offset is committed only after the sink accepted its event.
//!
//! - [`mapping`]: a record as a CloudEvent (Knative's mapping; CloudEvents pass through).
//! - [`offsets`]: the committable position of a partition whose records finish out of order.
//! - `consumer`: the consumer task, its rebalance and statistics callbacks.
//! - `partition`: one task per assigned partition reading its own queue and delivering its
//!   records, one at a time (ordered) or several at once (unordered).
//!
//! Delivery is at least once. Offsets are stored (librdkafka's `enable.auto.offset.store=false`)
//! only once a record's event was accepted, and committed every second, when partitions are
//! revoked and when the source stops. A crash re-reads from the last commit; the ids of mapped
//! records are stable (`partition:{p}/offset:{o}`), so a broker sink drops the repeats.

use kinetic_api::sources::{
    InitialOffset, KafkaNet, KafkaSource, SaslMechanism, SaslType, SecretRef,
};
use kinetic_kafka::Settings;

use crate::webhook::{self, SetupError};

mod consumer;
pub(crate) mod kind;
pub mod mapping;
pub mod offsets;
mod partition;

/// Kafka's session timeout for KafkaSource consumers: how long a crashed consumer's partitions
/// wait before another member of the group takes them.
pub const SESSION_TIMEOUT_MS: u32 = 10_000;
/// Longest a fetch waits for records on the broker. Kafka answers a waiting fetch as soon as
/// records arrive, so there this only paces an idle consumer's requests; brokers that answer only
/// when the wait is over (nisshi) add up to this much to every record's latency.
pub const FETCH_WAIT_MAX_MS: u32 = 10;
/// Records librdkafka prefetches per partition before it stops fetching it. Each partition has a
/// queue of its own (see `consumer`), so this and [`QUEUED_MAX_KBYTES`] bound every partition
/// alone, on top of what its task holds.
pub const QUEUED_MIN_MESSAGES: u32 = 1_000;
pub const QUEUED_MAX_KBYTES: u32 = 8_192;
/// How soon librdkafka looks again at a partition it stopped fetching because its queue was full.
/// Its default (a second) leaves a partition whose task drained the queue idle that long.
pub const FETCH_QUEUE_BACKOFF_MS: u32 = 10;
/// How often librdkafka reports statistics (the consumer lag).
pub const STATISTICS_INTERVAL_MS: u32 = 5_000;

/// A KafkaSource that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("reading `spec.net.{field}`: {source}")]
    Secret {
        field: &'static str,
        #[source]
        source: SetupError,
    },
    /// The secret's value is not kept: it may be anything the reference pointed at.
    #[error("the secret of `spec.net.sasl.type` is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")]
    SaslType,
    #[error("the Kafka consumer failed: {0}")]
    Client(#[from] kinetic_kafka::rdkafka::error::KafkaError),
    #[error("the task delivering {topic} partition {partition} stopped")]
    PartitionStopped { topic: String, partition: i32 },
}

/// The librdkafka settings of a KafkaSource's consumer: brokers, group, offsets stored only by
/// kinetic, the initial offset, and SASL/TLS with their secrets read through `secret`.
pub fn consumer_settings(
    source: &KafkaSource,
    uid: &str,
    mut secret: impl FnMut(&SecretRef) -> Result<Vec<u8>, SetupError>,
) -> Result<Settings, KafkaSourceError> {
    let mut settings = Settings::new(source.bootstrap_servers());
    let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
    let reset = match source.initial_offset() {
        InitialOffset::Earliest => "earliest",
        InitialOffset::Latest => "latest",
    };
    for (key, value) in [
        ("group.id", source.consumer_group(uid)),
        (
            "client.id",
            format!("kinetic-kafkasource-{namespace}-{name}"),
        ),
        ("auto.offset.reset", reset.to_owned()),
        ("enable.auto.commit", "true".to_owned()),
        ("auto.commit.interval.ms", "1000".to_owned()),
        // Dropping the consumer must not commit records that were fetched but not delivered.
        ("enable.auto.offset.store", "false".to_owned()),
        ("partition.assignment.strategy", "range".to_owned()),
        ("session.timeout.ms", SESSION_TIMEOUT_MS.to_string()),
        (
            "heartbeat.interval.ms",
            (SESSION_TIMEOUT_MS / 4).to_string(),
        ),
        ("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string()),
        ("queued.min.messages", QUEUED_MIN_MESSAGES.to_string()),
        ("queued.max.messages.kbytes", QUEUED_MAX_KBYTES.to_string()),
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string()),
        ("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string()),
        // A topic created after the source is found within this time.
        ("topic.metadata.refresh.interval.ms", "10000".to_owned()),
    ] {
        settings.properties.insert(key.to_owned(), value);
    }
    if let Some(net) = &source.spec.net {
        security(net, &mut settings, &mut secret)?;
    }
    Ok(settings)
}

fn security(
    net: &KafkaNet,
    settings: &mut Settings,
    secret: &mut impl FnMut(&SecretRef) -> Result<Vec<u8>, SetupError>,
) -> Result<(), KafkaSourceError> {
    let mut read = |field: &'static str, reference: &SecretRef| {
        secret(reference)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|source| KafkaSourceError::Secret { field, source })
    };
    let properties = &mut settings.properties;
    let sasl = net.sasl.as_ref().filter(|s| s.enable);
    let tls = net.tls.as_ref().filter(|t| t.enable);
    let protocol = match (sasl.is_some(), tls.is_some()) {
        (true, true) => "SASL_SSL",
        (true, false) => "SASL_PLAINTEXT",
        (false, true) => "SSL",
        (false, false) => "PLAINTEXT",
    };
    properties.insert("security.protocol".into(), protocol.into());
    if let Some(sasl) = sasl {
        let mechanism = match &sasl.mechanism {
            None => SaslMechanism::Plain,
            Some(SaslType::Mechanism(mechanism)) => *mechanism,
            Some(SaslType::Secret(reference)) => {
                let text = read("sasl.type", reference)?;
                SaslMechanism::parse(&text).ok_or(KafkaSourceError::SaslType)?
            }
        };
        properties.insert("sasl.mechanism".into(), mechanism.as_str().into());
        if let Some(user) = &sasl.user {
            properties.insert("sasl.username".into(), read("sasl.user", user)?);
        }
        if let Some(password) = &sasl.password {
            properties.insert("sasl.password".into(), read("sasl.password", password)?);
        }
    }
    if let Some(tls) = tls {
        for (field, property, reference) in [
            ("tls.caCert", "ssl.ca.pem", &tls.ca_cert),
            ("tls.cert", "ssl.certificate.pem", &tls.cert),
            ("tls.key", "ssl.key.pem", &tls.key),
        ] {
            if let Some(reference) = reference {
                properties.insert(property.into(), read(field, reference)?);
            }
        }
    }
    Ok(())
}

/// The secret reader the controller uses: the process environment and files.
pub(crate) fn read_secret(reference: &SecretRef) -> Result<Vec<u8>, SetupError> {
    webhook::read_secret(reference)
}

#[cfg(test)]
mod tests {
    use kinetic_api::resource::{Resource, parse_documents};

    use super::*;

    fn source(spec_extra: &str) -> KafkaSource {
        let text = format!(
            "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {{name: orders}}\nspec:\n  bootstrapServers: ['a:9092', 'b:9092,c:9092']\n  topics: [orders]\n  sink: {{uri: 'http://127.0.0.1:1/'}}\n{spec_extra}"
        );
        let Some(Resource::KafkaSource(source)) = parse_documents("k.yaml", &text).unwrap().pop()
        else {
            panic!()
        };
        source
    }

    fn secrets(reference: &SecretRef) -> Result<Vec<u8>, SetupError> {
        match reference {
            SecretRef::Env(name) if name == "MISSING" => Err(SetupError::MissingEnv(name.clone())),
            SecretRef::Env(name) | SecretRef::File(name) => {
                Ok(format!("value-of-{name}").into_bytes())
            }
            SecretRef::SecretKeyRef(selector) => {
                Ok(format!("value-of-{}", selector.relative_path()).into_bytes())
            }
        }
    }

    #[test]
    fn a_plain_source_reads_from_its_group_with_offsets_stored_by_kinetic() {
        let settings = consumer_settings(&source(""), "u-1", secrets).unwrap();
        assert_eq!(settings.bootstrap_servers, "a:9092,b:9092,c:9092");
        let p = &settings.properties;
        assert_eq!(p["group.id"], "kinetic-kafkasource-default-orders-u-1");
        assert_eq!(p["auto.offset.reset"], "latest");
        assert_eq!(p["enable.auto.offset.store"], "false");
        assert_eq!(p["partition.assignment.strategy"], "range");
        // Bounded prefetch per partition, looked at again soon once its task drained it.
        assert_eq!(p["queued.min.messages"], "1000");
        assert_eq!(p["fetch.queue.backoff.ms"], "10");
        assert!(!p.contains_key("security.protocol"));
        let earliest =
            consumer_settings(&source("  initialOffset: earliest\n"), "u", secrets).unwrap();
        assert_eq!(earliest.properties["auto.offset.reset"], "earliest");
    }

    #[test]
    fn sasl_and_tls_become_librdkafka_properties() {
        let net = "  net:\n    sasl: {enable: true, user: {env: U}, password: {file: /p}, type: {env: T}}\n    tls: {enable: true, caCert: {file: /ca}, cert: {file: /c}, key: {file: /k}}\n";
        let mut secrets_with_type = |reference: &SecretRef| match reference {
            SecretRef::Env(name) if name == "T" => Ok(b" scram-sha-256\n".to_vec()),
            other => secrets(other),
        };
        let settings = consumer_settings(&source(net), "u", &mut secrets_with_type).unwrap();
        let p = &settings.properties;
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-256");
        assert_eq!(p["sasl.username"], "value-of-U");
        assert_eq!(p["sasl.password"], "value-of-/p");
        assert_eq!(p["ssl.ca.pem"], "value-of-/ca");
        assert_eq!(p["ssl.certificate.pem"], "value-of-/c");
        assert_eq!(p["ssl.key.pem"], "value-of-/k");

        let only_tls =
            consumer_settings(&source("  net: {tls: {enable: true}}\n"), "u", secrets).unwrap();
        assert_eq!(only_tls.properties["security.protocol"], "SSL");
        let sasl = "  net: {sasl: {enable: true, user: {env: U}, password: {env: P}}}\n";
        let plain = consumer_settings(&source(sasl), "u", secrets).unwrap();
        assert_eq!(plain.properties["security.protocol"], "SASL_PLAINTEXT");
        assert_eq!(plain.properties["sasl.mechanism"], "PLAIN");
    }

    #[test]
    fn a_missing_or_wrong_secret_says_which_field() {
        let sasl = "  net: {sasl: {enable: true, user: {env: MISSING}, password: {env: P}}}\n";
        let error = consumer_settings(&source(sasl), "u", secrets).unwrap_err();
        assert_eq!(
            error.to_string(),
            "reading `spec.net.sasl.user`: environment variable `MISSING` is not set or not UTF-8"
        );
        let sasl =
            "  net: {sasl: {enable: true, user: {env: U}, password: {env: P}, type: {env: T}}}\n";
        let error = consumer_settings(&source(sasl), "u", secrets).unwrap_err();
        // The value read is not repeated: it could be any secret the reference pointed at.
        assert!(!error.to_string().contains("value-of-T"), "{error}");
        assert!(error.to_string().contains("spec.net.sasl.type"), "{error}");
    }
}
