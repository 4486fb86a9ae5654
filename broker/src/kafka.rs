//! The Kafka broker class: each broker's log is a topic (`knative-broker-{namespace}-{name}`, as
//! Knative's Kafka broker names it), written with `acks=all` and idempotence; the event's
//! `partitionkey` is the record key, so events of one key keep their order in one partition.
//!
//! The dedupe window stays in the store ([`kinetic_store::EventLog::remember`]): keys are stamped
//! before the produce, and un-stamped when the produce fails, so a retried event is new again; an
//! event Kafka acknowledged stays stamped, so its retry is a duplicate and is not produced twice.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use kinetic_kafka::Settings;
use kinetic_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use kinetic_store::{Appended, Millis, NewEvent, Store};

use crate::log::{Log, LogError};

/// Topic settings for new broker topics.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    pub partitions: i32,
    pub replication_factor: i32,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 10,
            replication_factor: 1,
        }
    }
}

/// The topic of broker `namespace/name`.
pub fn topic_of(broker: &str) -> String {
    let (namespace, name) = broker.split_once('/').unwrap_or(("default", broker));
    format!("knative-broker-{namespace}-{name}")
}

/// How long a produce may wait for the cluster's acknowledgement before the ingress answers 503.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long creating a topic may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends to Kafka-class brokers' topics.
pub struct KafkaLog {
    settings: Settings,
    topics: TopicSettings,
    producer: FutureProducer,
    store: Arc<dyn Store>,
    /// Topics known to exist.
    created: Mutex<HashSet<String>>,
}

impl KafkaLog {
    pub fn new(
        settings: Settings,
        topics: TopicSettings,
        store: Arc<dyn Store>,
    ) -> Result<Self, kinetic_kafka::Error> {
        let producer: FutureProducer = settings
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        Ok(Self {
            settings,
            topics,
            producer,
            store,
            created: Mutex::new(HashSet::new()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Creates the topic of `broker` unless it is known to exist.
    pub async fn ensure_topic(&self, broker: &str) -> Result<String, LogError> {
        let topic = topic_of(broker);
        if self.created.lock().is_ok_and(|set| set.contains(&topic)) {
            return Ok(topic);
        }
        kinetic_kafka::ensure_topic(
            &self.settings,
            &topic,
            self.topics.partitions,
            self.topics.replication_factor,
            ADMIN_TIMEOUT,
        )
        .await
        .map_err(|error| LogError::Kafka(error.to_string()))?;
        if let Ok(mut set) = self.created.lock() {
            set.insert(topic.clone());
        }
        Ok(topic)
    }

    async fn produce(&self, event: &NewEvent) -> Result<(), LogError> {
        let topic = self.ensure_topic(&event.broker).await?;
        let key = partition_key(&event.payload);
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&topic).payload(event.payload.as_slice());
        if let Some(key) = key.as_deref() {
            record = record.key(key);
        }
        self.producer
            .send(record, PRODUCE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| LogError::Kafka(error.to_string()))
    }
}

#[async_trait]
impl Log for KafkaLog {
    async fn append(
        &self,
        events: &[NewEvent],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<Appended>, LogError> {
        let fresh = self.store.remember(events, now, dedupe_since).await?;
        let produced = join_all(
            events
                .iter()
                .zip(&fresh)
                .filter(|(_, fresh)| **fresh)
                .map(|(event, _)| async move { (event, self.produce(event).await) }),
        )
        .await;
        let mut failed: Vec<NewEvent> = Vec::new();
        let mut first_error = None;
        for (event, outcome) in produced {
            if let Err(error) = outcome {
                failed.push(event.clone());
                first_error.get_or_insert(error);
            }
        }
        if let Some(error) = first_error {
            // Produced events stay stamped: when the client retries the whole request they are
            // duplicates, and only the failed ones are produced again.
            if let Err(forget) = self.store.forget(&failed, now).await {
                tracing::warn!(error = %forget, "Un-stamping events Kafka refused failed; a retry within the dedupe window is taken for a duplicate.");
            }
            return Err(error);
        }
        // A seq has no meaning outside the store's log; the ingress only counts outcomes.
        Ok(fresh
            .into_iter()
            .map(|fresh| {
                if fresh {
                    Appended::Accepted(0)
                } else {
                    Appended::Duplicate
                }
            })
            .collect())
    }
}

/// The `partitionkey` extension of a structured event, read without decoding the rest.
fn partition_key(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        #[serde(borrow, default)]
        partitionkey: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<Key<'_>>(payload)
        .ok()?
        .partitionkey
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_named_as_knative_names_them() {
        assert_eq!(topic_of("orders/main"), "knative-broker-orders-main");
    }

    #[test]
    fn the_partition_key_is_read_from_the_structured_event() {
        let with = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","partitionkey":"order-7","data":{"x":[1,2]}}"#;
        assert_eq!(partition_key(with).as_deref(), Some("order-7"));
        let without = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        assert_eq!(partition_key(without), None);
        // A partitionkey that is not text is no key.
        assert_eq!(partition_key(br#"{"partitionkey":7}"#), None);
    }
}
