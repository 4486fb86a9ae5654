//! Kafka plumbing shared by the Kafka broker class and KafkaSource: how a client is configured
//! ([`Settings`]) and topics created ([`ensure_topic`]). The Kafka-protocol broker tests run
//! against is in `kinetic-testkit`.
//!
//! Everything talks to Kafka through librdkafka (`rdkafka`, vendored and linked statically).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

pub use rdkafka;

/// How to reach a Kafka cluster: bootstrap servers plus librdkafka properties (security settings
/// such as `security.protocol`, `sasl.mechanism`, `ssl.ca.pem`, or tuning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    pub properties: BTreeMap<String, String>,
}

impl Settings {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// A librdkafka configuration with these settings; callers add their role's properties.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_with(&[])
    }

    /// A librdkafka configuration with a role's `defaults`, which the settings' own properties
    /// override (so an operator can tune any of them).
    pub fn client_config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        // librdkafka logs through `log`; its own errors also reach the callers as results.
        config.set("log_level", "3");
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic `{topic}` failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Creates `topic` with `partitions` and `replication` unless it exists already.
pub async fn ensure_topic(
    settings: &Settings,
    topic: &str,
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    for outcome in admin.create_topics([&new], &options).await? {
        match outcome {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Deletes `topic`; a topic that does not exist is not an error.
pub async fn delete_topic(
    settings: &Settings,
    topic: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    for outcome in admin.delete_topics(&[topic], &options).await? {
        match outcome {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
