//! The Kafka broker class: each broker's log is a topic (`knative-broker-{namespace}-{name}`, as
//! Knative's Kafka broker names it), written with `acks=all` and idempotence; the event's
//! `partitionkey` is the record key, so events of one key keep their order in one partition. The
//! cluster is kinetic's process setting, or the one named by the ConfigMap the Broker's
//! `spec.config` references (Knative's `kafka-broker-config`), or for a Broker without one, the
//! ConfigMap `config-br-defaults` references for its namespace, as in Knative.
//!
//! The dedupe window stays in the store ([`kinetic_store::EventLog::remember`]): keys are stamped
//! before the produce, and un-stamped when the produce fails, so a retried event is new again; an
//! event Kafka acknowledged stays stamped, so its retry is a duplicate and is not produced twice.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use kinetic_kafka::Settings;
use kinetic_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use kinetic_store::{Appended, Millis, NewEvent, Store, StoredResource};

use crate::{Log, LogError};

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
/// How long a broker's resolved cluster is reused before its resources are read again.
const RESOLVE_TTL: Duration = Duration::from_secs(2);

/// Keys of Knative's `kafka-broker-config` ConfigMap that kinetic reads.
const BOOTSTRAP_SERVERS_KEY: &str = "bootstrap.servers";
const PARTITIONS_KEY: &str = "default.topic.partitions";
const REPLICATION_KEY: &str = "default.topic.replication.factor";

/// Checks a host a ConfigMap names before kinetic connects to it: the process's egress rules, so
/// that whoever may apply a ConfigMap cannot point kinetic's Kafka clients at a host those rules
/// refuse (an internal address, the cloud metadata service).
pub type ServerCheck =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One Kafka cluster: its settings, a producer, and the topics known to exist there.
pub struct Cluster {
    pub settings: Settings,
    producer: FutureProducer,
    created: Mutex<HashSet<String>>,
}

/// Where a Kafka-class broker's events go.
#[derive(Clone)]
pub struct Target {
    pub cluster: Arc<Cluster>,
    pub topic: String,
    topics: TopicSettings,
}

/// Appends to Kafka-class brokers' topics. A broker's cluster comes from the ConfigMap its
/// `spec.config` references (Knative's `kafka-broker-config` keys `bootstrap.servers`,
/// `default.topic.partitions`, `default.topic.replication.factor`), else from kinetic's process
/// settings.
pub struct KafkaLog {
    store: Arc<dyn Store>,
    /// The resources as this process reads them (from the store, or on Kubernetes from the API);
    /// a broker not there yet (applied a moment ago) is read from the store.
    resources: Option<kinetic_resources::Watch>,
    /// The process-wide cluster and topic settings.
    defaults: Option<Settings>,
    topics: TopicSettings,
    clusters: Mutex<HashMap<Settings, Arc<Cluster>>>,
    resolved: Mutex<HashMap<String, (Instant, Target)>>,
    /// Checks the servers a ConfigMap names (not the process's own).
    server_check: Option<ServerCheck>,
}

impl KafkaLog {
    pub fn new(defaults: Option<Settings>, topics: TopicSettings, store: Arc<dyn Store>) -> Self {
        Self {
            store,
            resources: None,
            defaults,
            topics,
            clusters: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            server_check: None,
        }
    }

    /// Reads brokers and ConfigMaps from `resources` first.
    pub fn with_resources(mut self, resources: kinetic_resources::Watch) -> Self {
        self.resources = Some(resources);
        self
    }

    /// The stored resource `namespace/name` of `kind`: from the resource watch, else the store.
    async fn lookup(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, LogError> {
        let watched = self.resources.as_ref().and_then(|watch| {
            let kind = kinetic_api::Kind::of(kind)?;
            watch.latest()?.find(kind, namespace, name).cloned()
        });
        match watched {
            Some(found) => Ok(Some(found)),
            None => Ok(self.store.get_resource(kind, namespace, name).await?),
        }
    }

    /// The ConfigMap `config-br-defaults` names for brokers of `namespace` (Knative's
    /// `clusterDefault` / `namespaceDefaults` reference), for a broker without `spec.config`.
    async fn default_reference(
        &self,
        namespace: &str,
    ) -> Result<Option<serde_json::Value>, LogError> {
        use kinetic_api::config::{BR_DEFAULTS, BrokerDefaults, SYSTEM_NAMESPACE};
        let Some(stored) = self
            .lookup("ConfigMap", SYSTEM_NAMESPACE, BR_DEFAULTS)
            .await?
        else {
            return Ok(None);
        };
        let Ok(config) = serde_json::from_value::<kinetic_api::core::ConfigMap>(stored.body) else {
            return Ok(None);
        };
        // One that does not read is reported by the dispatchers; it names nothing here.
        let Ok(defaults) = BrokerDefaults::from_config_map(&config) else {
            return Ok(None);
        };
        Ok(defaults.for_namespace(namespace).and_then(|entry| {
            (entry.kind.as_deref() == Some("ConfigMap")).then(|| {
                serde_json::json!({
                    "kind": "ConfigMap",
                    "name": entry.name.clone().unwrap_or_default(),
                    "namespace": entry.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
                })
            })
        }))
    }

    /// Servers a broker's ConfigMap names are checked by `check` before any client connects.
    pub fn with_server_check(mut self, check: ServerCheck) -> Self {
        self.server_check = Some(check);
        self
    }

    /// The cluster and topic of `broker` (`namespace/name`), its topic created if missing.
    pub async fn target(&self, broker: &str) -> Result<Target, LogError> {
        let cached = self.resolved.lock().ok().and_then(|map| {
            map.get(broker)
                .filter(|(at, _)| at.elapsed() < RESOLVE_TTL)
                .map(|(_, target)| target.clone())
        });
        let target = match cached {
            Some(target) => target,
            None => {
                let target = self.resolve(broker).await?;
                if let Ok(mut map) = self.resolved.lock() {
                    map.insert(broker.to_owned(), (Instant::now(), target.clone()));
                }
                target
            }
        };
        let known = target
            .cluster
            .created
            .lock()
            .is_ok_and(|set| set.contains(&target.topic));
        if !known {
            kinetic_kafka::ensure_topic(
                &target.cluster.settings,
                &target.topic,
                target.topics.partitions,
                target.topics.replication_factor,
                ADMIN_TIMEOUT,
            )
            .await
            .map_err(|error| LogError::Kafka(error.to_string()))?;
            if let Ok(mut set) = target.cluster.created.lock() {
                set.insert(target.topic.clone());
            }
        }
        Ok(target)
    }

    async fn resolve(&self, broker: &str) -> Result<Target, LogError> {
        let (namespace, name) = broker.split_once('/').unwrap_or(("default", broker));
        let mut settings = self.defaults.clone();
        let mut topics = self.topics.clone();
        let stored = self.lookup("Broker", namespace, name).await?;
        let own = stored
            .as_ref()
            .and_then(|b| b.body.pointer("/spec/config"))
            .filter(|r| r.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap"))
            .cloned();
        let reference = match own {
            Some(own) => Some(own),
            None => self.default_reference(namespace).await?,
        };
        if let Some(reference) = &reference {
            let config_name = reference["name"].as_str().unwrap_or_default();
            let config_namespace = reference["namespace"].as_str().unwrap_or(namespace);
            let Some(config) = self
                .lookup("ConfigMap", config_namespace, config_name)
                .await?
            else {
                return Err(LogError::KafkaConfig(format!(
                    "broker `{broker}` references ConfigMap `{config_namespace}/{config_name}` in spec.config, which does not exist; apply it (with `{BOOTSTRAP_SERVERS_KEY}`) or remove spec.config"
                )));
            };
            let data = |key: &str| {
                config
                    .body
                    .pointer(&format!(
                        "/data/{}",
                        key.replace('~', "~0").replace('/', "~1")
                    ))
                    .and_then(|v| v.as_str())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
            };
            if let Some(servers) = data(BOOTSTRAP_SERVERS_KEY) {
                let mut from_config = Settings::new(servers);
                // The process's own properties (its credentials) go only to its own cluster, never
                // to servers a ConfigMap names.
                if let Some(process) = &self.defaults
                    && same_servers(&process.bootstrap_servers, servers)
                {
                    from_config.properties = process.properties.clone();
                } else if let Some(check) = &self.server_check {
                    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        check(host_of(server).to_owned()).await.map_err(|why| {
                            LogError::KafkaConfig(format!(
                                "ConfigMap `{config_namespace}/{config_name}`: `{BOOTSTRAP_SERVERS_KEY}` names `{server}`, which kinetic may not connect to ({why})"
                            ))
                        })?;
                    }
                }
                settings = Some(from_config);
            }
            let number = |key: &str, fallback: i32| -> Result<i32, LogError> {
                match data(key) {
                    None => Ok(fallback),
                    Some(text) => text.parse::<i32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        LogError::KafkaConfig(format!(
                            "ConfigMap `{config_namespace}/{config_name}`: `{key}` is `{text}`, not a positive whole number"
                        ))
                    }),
                }
            };
            topics.partitions = number(PARTITIONS_KEY, topics.partitions)?;
            topics.replication_factor = number(REPLICATION_KEY, topics.replication_factor)?;
        }
        let settings = settings.ok_or(LogError::KafkaNotConfigured)?;
        Ok(Target {
            cluster: self.cluster(settings)?,
            topic: topic_of(broker),
            topics,
        })
    }

    fn cluster(&self, settings: Settings) -> Result<Arc<Cluster>, LogError> {
        let mut clusters = self
            .clusters
            .lock()
            .map_err(|_| LogError::Kafka("the cluster table is poisoned".to_owned()))?;
        if let Some(cluster) = clusters.get(&settings) {
            return Ok(cluster.clone());
        }
        let producer: FutureProducer = settings
            .client_config_with(&[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("linger.ms", "1"),
                ("message.timeout.ms", "10000"),
            ])
            .create()
            .map_err(|error| LogError::KafkaConfig(format!("the Kafka producer: {error}")))?;
        let cluster = Arc::new(Cluster {
            settings: settings.clone(),
            producer,
            created: Mutex::new(HashSet::new()),
        });
        clusters.insert(settings, cluster.clone());
        Ok(cluster)
    }

    async fn produce(&self, event: &NewEvent) -> Result<(), LogError> {
        let target = self.target(&event.broker).await?;
        let key = partition_key(&event.payload);
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&target.topic).payload(event.payload.as_ref());
        if let Some(key) = key.as_deref() {
            record = record.key(key);
        }
        target
            .cluster
            .producer
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

/// The host of a bootstrap server `host:port` (`[v6]:port`, or a host alone), brackets removed.
fn host_of(server: &str) -> &str {
    let host = match server.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(host, _)| host),
        None => server.rsplit_once(':').map_or(server, |(host, _)| host),
    };
    host.trim()
}

/// Whether two `host:port` lists name the same servers, in any order.
fn same_servers(a: &str, b: &str) -> bool {
    let set = |list: &str| {
        let mut servers: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        servers.sort();
        servers.dedup();
        servers
    };
    set(a) == set(b)
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

    #[test]
    fn credentials_stay_with_their_cluster() {
        assert!(same_servers("a:9092,b:9092", " B:9092 , a:9092"));
        assert!(!same_servers("a:9092", "a:9092,evil:9092"));
        assert!(!same_servers("a:9092", "evil:9092"));
    }

    #[test]
    fn hosts_of_bootstrap_servers() {
        assert_eq!(host_of("kafka-1.internal:9092"), "kafka-1.internal");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("169.254.169.254"), "169.254.169.254");
        assert_eq!(host_of("[fd00::1]"), "fd00::1");
    }
}
