//! Knative's `KafkaSource` (`sources.knative.dev/v1beta1`): records of Kafka topics as CloudEvents.
//!
//! The fields are Knative's. Secrets (`net.sasl.*`, `net.tls.*`) are [`SecretRef`]s: Knative's
//! `{secretKeyRef: {name, key}}` reads the file `{name}/{key}` in kinetic's secrets directory (the
//! layout of a mounted Kubernetes secret), and `{env: NAME}` or `{file: PATH}` name a variable or
//! a file directly.

use serde::{Deserialize, Deserializer, Serialize};

use super::{CloudEventOverrides, SecretRef, validate_common};
use crate::error::Error;
use crate::eventing::DELIVERY_ORDER_ANNOTATION;
use crate::meta::{Destination, ObjectMeta};

/// apiVersion of Knative's KafkaSource.
pub const KAFKA_SOURCES_API_VERSION: &str = "sources.knative.dev/v1beta1";

/// Knative's KafkaSource: every record of `topics` becomes a CloudEvent for `sink`; a record's
/// offset is committed only after the sink accepted its event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSource {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: KafkaSourceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// `host:port` of Kafka brokers to bootstrap from; an entry may hold several, comma-separated.
    pub bootstrap_servers: Vec<String>,
    /// Topics whose records are read.
    pub topics: Vec<String>,
    /// Kafka consumer group; when absent `kinetic-kafkasource-{namespace}-{name}-{uid}`, so a
    /// source deleted and created again starts afresh from `initialOffset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Where a consumer group without committed offsets starts: `latest` (the default) or
    /// `earliest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_offset: Option<InitialOffset>,
    /// SASL and TLS towards the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<KafkaNet>,
    /// `ordered` (the default): one record at a time per partition; `unordered`: records of a
    /// partition in parallel (bounded), offsets still committed in order; `key` (kinetic's):
    /// order kept per record key, different keys of a partition in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<KafkaOrdering>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InitialOffset {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KafkaOrdering {
    // One record at a time per partition (Knative's `ordered`).
    Ordered,
    // Several records of a partition at once, no order kept (Knative's `unordered`).
    Unordered,
    // kinetic's, beyond Knative: order kept per record key, different keys of a partition at once.
    // Records without a key keep no order.
    Key,
}

/// Knative's `net`: how the consumer authenticates and encrypts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaNet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSasl {
    /// Authenticate with SASL; the other fields are read only when this is true.
    #[serde(default)]
    pub enable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// The mechanism: `PLAIN` (the default), `SCRAM-SHA-256` or `SCRAM-SHA-512`, written as is
    /// or read from a secret as Knative does.
    #[serde(
        default,
        rename = "type",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "sasl_type"
    )]
    pub mechanism: Option<SaslType>,
}

/// The SASL mechanism, given as text or read from a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SaslType {
    Mechanism(SaslMechanism),
    Secret(SecretRef),
}

/// Text or a secret reference: a schema a Kubernetes structural schema cannot split, so it only
/// keeps the value as it is; kinetic's own validation says what is wrong.
impl schemars::JsonSchema for SaslType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SaslType".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, or a secret holding one",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka's `sasl.mechanism` and Knative use.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Reads a mechanism's name (as a secret holds it; case and surrounding space ignored).
    pub fn parse(text: &str) -> Option<SaslMechanism> {
        match text.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
            _ => None,
        }
    }
}

const SASL_HINT: &str = "write `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, or `{env: NAME}` / `{file: PATH}` naming where it is kept";

fn sasl_type<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SaslType>, D::Error> {
    use serde::de::Error as _;
    let value = serde_json::Value::deserialize(deserializer)?;
    if let Some(text) = value.as_str() {
        return SaslMechanism::parse(text)
            .map(|m| Some(SaslType::Mechanism(m)))
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "`{text}` is not a SASL mechanism kinetic supports ({SASL_HINT})"
                ))
            });
    }
    SecretRef::deserialize(value)
        .map(|s| Some(SaslType::Secret(s)))
        .map_err(D::Error::custom)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaTls {
    /// Connect with TLS; the other fields are read only when this is true.
    #[serde(default)]
    pub enable: bool,
    /// PEM certificates of the authorities that signed the brokers' certificates; the system's
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretRef>,
    /// PEM client certificate (mutual TLS); needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretRef>,
    /// PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
}

impl KafkaSource {
    pub fn validate(&self) -> Result<(), Error> {
        let spec = &self.spec;
        validate_common(&self.metadata, &spec.sink, spec.ce_overrides.as_ref())?;
        if spec.bootstrap_servers.is_empty() {
            return Err(Error::new("spec.bootstrapServers", "is empty")
                .with_hint("list the brokers to bootstrap from, e.g. `[kafka-1:9092]`"));
        }
        for (index, entry) in spec.bootstrap_servers.iter().enumerate() {
            for server in entry.split(',') {
                validate_server(server.trim())
                    .map_err(|e| e.under(&format!("spec.bootstrapServers[{index}]")))?;
            }
        }
        if spec.topics.is_empty() {
            return Err(Error::new("spec.topics", "is empty")
                .with_hint("list the topics to read, e.g. `[orders]`"));
        }
        for (index, topic) in spec.topics.iter().enumerate() {
            validate_topic(topic).map_err(|e| e.under(&format!("spec.topics[{index}]")))?;
        }
        if let Some(group) = &spec.consumer_group
            && (group.trim().is_empty() || group.chars().any(char::is_control))
        {
            return Err(Error::new(
                "spec.consumerGroup",
                format!("`{group}` is not a consumer group name"),
            )
            .with_hint(
                "give a name without control characters, or remove the field for a default",
            ));
        }
        self.ordering()?;
        if let Some(net) = &spec.net {
            validate_net(net).map_err(|e| e.under("spec.net"))?;
        }
        Ok(())
    }

    /// The ordering: `spec.ordering`, else the `kafka.eventing.knative.dev/delivery.order`
    /// annotation, else ordered. The two must agree when both are set.
    pub fn ordering(&self) -> Result<KafkaOrdering, Error> {
        let path = format!("metadata.annotations[{DELIVERY_ORDER_ANNOTATION}]");
        let annotated = match self
            .metadata
            .annotations
            .get(DELIVERY_ORDER_ANNOTATION)
            .map(String::as_str)
        {
            None => None,
            Some("ordered") => Some(KafkaOrdering::Ordered),
            Some("unordered") => Some(KafkaOrdering::Unordered),
            Some(other) => {
                return Err(
                    Error::new(path, format!("`{other}` is not a delivery order"))
                        .with_hint("use `ordered` or `unordered`"),
                );
            }
        };
        match (self.spec.ordering, annotated) {
            (Some(spec), Some(annotation)) if spec != annotation => Err(Error::new(
                "spec.ordering",
                "disagrees with the delivery-order annotation",
            )
            .with_hint(format!(
                "keep `spec.ordering` and remove the annotation `{DELIVERY_ORDER_ANNOTATION}`"
            ))),
            (Some(ordering), _) | (None, Some(ordering)) => Ok(ordering),
            (None, None) => Ok(KafkaOrdering::Ordered),
        }
    }

    /// Where a group without committed offsets starts.
    pub fn initial_offset(&self) -> InitialOffset {
        self.spec.initial_offset.unwrap_or(InitialOffset::Latest)
    }

    /// The consumer group: `spec.consumerGroup`, else one named after the source and its `uid`.
    pub fn consumer_group(&self, uid: &str) -> String {
        match &self.spec.consumer_group {
            Some(group) => group.clone(),
            None => format!(
                "kinetic-kafkasource-{}-{}-{uid}",
                self.metadata.namespace, self.metadata.name
            ),
        }
    }

    /// The bootstrap servers as librdkafka takes them: one comma-separated list.
    pub fn bootstrap_servers(&self) -> String {
        self.spec
            .bootstrap_servers
            .iter()
            .flat_map(|entry| entry.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn validate_server(server: &str) -> Result<(), Error> {
    let hint = "write `host:port`, e.g. `kafka-1:9092` or `127.0.0.1:9092`";
    let bad = |why: &str| Err(Error::new("", format!("`{server}` {why}")).with_hint(hint));
    if server.contains("://") {
        return bad("has a scheme; Kafka brokers are `host:port`");
    }
    let Some((host, port)) = server.rsplit_once(':') else {
        return bad("has no port");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return bad("has no valid host");
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => bad("has no valid port (1 to 65535)"),
    }
}

/// Kafka's topic naming rules: 1 to 249 of `a-zA-Z0-9._-`, not `.` or `..`.
fn validate_topic(topic: &str) -> Result<(), Error> {
    let ok = (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(
            Error::new("", format!("`{topic}` is not a Kafka topic name"))
                .with_hint("1 to 249 letters, digits, `.`, `_` and `-` (not `.` or `..` alone)"),
        )
    }
}

fn validate_net(net: &KafkaNet) -> Result<(), Error> {
    if let Some(sasl) = net.sasl.as_ref().filter(|s| s.enable) {
        for (field, secret) in [("user", &sasl.user), ("password", &sasl.password)] {
            let Some(secret) = secret else {
                return Err(Error::new(format!("sasl.{field}"), "is required when `sasl.enable` is true")
                    .with_hint(format!("add `{field}: {{env: NAME}}` or `{field}: {{file: PATH}}`, or set `enable: false`")));
            };
            secret
                .validate()
                .map_err(|e| e.under(&format!("sasl.{field}")))?;
        }
        if let Some(SaslType::Secret(secret)) = &sasl.mechanism {
            secret.validate().map_err(|e| e.under("sasl.type"))?;
        }
    }
    if let Some(tls) = net.tls.as_ref().filter(|t| t.enable) {
        for (field, secret) in [
            ("caCert", &tls.ca_cert),
            ("cert", &tls.cert),
            ("key", &tls.key),
        ] {
            if let Some(secret) = secret {
                secret
                    .validate()
                    .map_err(|e| e.under(&format!("tls.{field}")))?;
            }
        }
        match (&tls.cert, &tls.key) {
            (Some(_), None) => {
                return Err(
                    Error::new("tls.key", "is required with `tls.cert`").with_hint(
                        "a client certificate needs its private key: add `key: {file: PATH}`",
                    ),
                );
            }
            (None, Some(_)) => {
                return Err(
                    Error::new("tls.cert", "is required with `tls.key`").with_hint(
                        "add the client certificate `cert: {file: PATH}`, or remove `key`",
                    ),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Resource, parse_documents};

    const KAFKA: &str = r#"
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: orders, namespace: shop}
spec:
  bootstrapServers: ["kafka-1:9092,kafka-2:9092", "[::1]:9093"]
  topics: [orders, orders.eu]
  consumerGroup: order-readers
  initialOffset: earliest
  ordering: unordered
  net:
    sasl:
      enable: true
      user: {env: KAFKA_USER}
      password: {file: /run/secrets/kafka/password}
      type: SCRAM-SHA-512
    tls:
      enable: true
      caCert: {file: /run/secrets/kafka/ca.crt}
  sink:
    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
  ceOverrides: {extensions: {team: orders}}
"#;

    const MINIMAL: &str = r#"
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: minimal}
spec:
  bootstrapServers: [127.0.0.1:9092]
  topics: [t]
  sink: {uri: "http://127.0.0.1:9000/"}
"#;

    fn kafka(text: &str) -> KafkaSource {
        let mut resources = parse_documents("kafka.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        let Some(Resource::KafkaSource(source)) = resources.pop() else {
            panic!("not a KafkaSource")
        };
        source
    }

    #[test]
    fn parses_knative_fields_and_round_trips() {
        let source = kafka(KAFKA);
        assert_eq!(
            source.bootstrap_servers(),
            "kafka-1:9092,kafka-2:9092,[::1]:9093"
        );
        assert_eq!(source.ordering().unwrap(), KafkaOrdering::Unordered);
        assert_eq!(source.initial_offset(), InitialOffset::Earliest);
        assert_eq!(source.consumer_group("u1"), "order-readers");
        let sasl = source.spec.net.as_ref().unwrap().sasl.as_ref().unwrap();
        assert_eq!(
            sasl.mechanism,
            Some(SaslType::Mechanism(SaslMechanism::ScramSha512))
        );
        let resource = Resource::KafkaSource(source);
        assert_eq!(resource.key().kind, crate::Kind::KafkaSource);
        let again = Resource::from_value(resource.to_json()).expect("round trip");
        assert_eq!(again, resource);
    }

    #[test]
    fn knatives_secret_key_refs_are_read_from_the_secrets_directory() {
        // As Knative's documentation writes a KafkaSource with SASL and TLS.
        let knative = KAFKA
            .replace(
                "user: {env: KAFKA_USER}",
                "user: {secretKeyRef: {name: kafka-creds, key: user}}",
            )
            .replace(
                "password: {file: /run/secrets/kafka/password}",
                "password:\n        secretKeyRef:\n          name: kafka-creds\n          key: password",
            )
            .replace(
                "type: SCRAM-SHA-512",
                "type: {secretKeyRef: {name: kafka-creds, key: saslType}}",
            )
            .replace(
                "caCert: {file: /run/secrets/kafka/ca.crt}",
                "caCert: {secretKeyRef: {name: kafka-tls, key: ca.crt}}",
            );
        let source = kafka(&knative);
        let net = source.spec.net.as_ref().unwrap();
        let sasl = net.sasl.as_ref().unwrap();
        let Some(SecretRef::SecretKeyRef(user)) = &sasl.user else {
            panic!("{:?}", sasl.user)
        };
        assert_eq!(user.relative_path(), "kafka-creds/user");
        assert!(
            matches!(&sasl.mechanism, Some(SaslType::Secret(SecretRef::SecretKeyRef(t))) if t.key == "saslType")
        );
        let ca = net.tls.as_ref().unwrap().ca_cert.as_ref().unwrap();
        assert_eq!(ca.to_string(), "secret kafka-tls key ca.crt");
        let resource = Resource::KafkaSource(source);
        assert_eq!(Resource::from_value(resource.to_json()).unwrap(), resource);
        // `optional` is for a function's environment; a source needs its credentials.
        let optional = KAFKA.replace(
            "user: {env: KAFKA_USER}",
            "user: {secretKeyRef: {name: kafka-creds, key: user, optional: true}}",
        );
        let error = parse_documents("kafka.yaml", &optional).unwrap_err();
        assert_eq!(error.path, "spec.net.sasl.user.secretKeyRef.optional");
    }

    #[test]
    fn defaults_are_knatives() {
        let source = kafka(MINIMAL);
        assert_eq!(source.ordering().unwrap(), KafkaOrdering::Ordered);
        assert_eq!(source.initial_offset(), InitialOffset::Latest);
        assert_eq!(
            source.consumer_group("1234"),
            "kinetic-kafkasource-default-minimal-1234"
        );
        let annotated = MINIMAL.replace(
            "metadata: {name: minimal}",
            "metadata: {name: minimal, annotations: {kafka.eventing.knative.dev/delivery.order: unordered}}",
        );
        assert_eq!(
            kafka(&annotated).ordering().unwrap(),
            KafkaOrdering::Unordered
        );
        let secret_type = KAFKA.replace("type: SCRAM-SHA-512", "type: {env: KAFKA_SASL_TYPE}");
        let source = kafka(&secret_type);
        let sasl = source.spec.net.as_ref().unwrap().sasl.as_ref().unwrap();
        assert_eq!(
            sasl.mechanism,
            Some(SaslType::Secret(SecretRef::Env("KAFKA_SASL_TYPE".into())))
        );
        // SASL fields are not read while SASL is off, as in Knative.
        let off = KAFKA.replace(
            "      enable: true\n      user: {env: KAFKA_USER}\n",
            "      enable: false\n",
        );
        kafka(&off);
    }

    #[test]
    fn refuses_mistakes_with_location_and_hint() {
        // (replace, with, path, message)
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "bootstrapServers: [\"kafka-1:9092,kafka-2:9092\", \"[::1]:9093\"]",
                "bootstrapServers: []",
                "spec.bootstrapServers",
                "is empty",
            ),
            (
                "\"[::1]:9093\"",
                "\"kafka-3\"",
                "spec.bootstrapServers[1]",
                "has no port",
            ),
            (
                "\"[::1]:9093\"",
                "\"kafka://k:9092\"",
                "spec.bootstrapServers[1]",
                "scheme",
            ),
            (
                "kafka-2:9092",
                "kafka-2:http",
                "spec.bootstrapServers[0]",
                "valid port",
            ),
            (
                "bootstrapServers: [\"kafka-1:9092,kafka-2:9092\", \"[::1]:9093\"]",
                "bootstrapServers: kafka-1:9092",
                "spec.bootstrapServers",
                "invalid type",
            ),
            (
                "topics: [orders, orders.eu]",
                "topics: []",
                "spec.topics",
                "is empty",
            ),
            (
                "topics: [orders, orders.eu]",
                "topics: [orders, 'orders/eu']",
                "spec.topics[1]",
                "not a Kafka topic name",
            ),
            (
                "topics: [orders, orders.eu]",
                "topic: orders",
                "spec.topic",
                "unknown field `topic`",
            ),
            (
                "consumerGroup: order-readers",
                "consumerGroup: ' '",
                "spec.consumerGroup",
                "not a consumer group",
            ),
            (
                "initialOffset: earliest",
                "initialOffset: oldest",
                "spec.initialOffset",
                "unknown variant `oldest`",
            ),
            (
                "ordering: unordered",
                "ordering: sorted",
                "spec.ordering",
                "unknown variant `sorted`",
            ),
            (
                "metadata: {name: orders, namespace: shop}",
                "metadata: {name: orders, namespace: shop, annotations: {kafka.eventing.knative.dev/delivery.order: ordered}}",
                "spec.ordering",
                "disagrees",
            ),
            (
                "metadata: {name: orders, namespace: shop}",
                "metadata: {name: orders, namespace: shop, annotations: {kafka.eventing.knative.dev/delivery.order: random}}",
                "metadata.annotations[kafka.eventing.knative.dev/delivery.order]",
                "not a delivery order",
            ),
            (
                "user: {env: KAFKA_USER}",
                "user: alice",
                "spec.net.sasl.user",
                "inline secret",
            ),
            (
                "user: {env: KAFKA_USER}",
                "user: {secretKeyRef: {name: Kafka, key: user}}",
                "spec.net.sasl.user.secretKeyRef.name",
                "not a secret name",
            ),
            (
                "      user: {env: KAFKA_USER}\n",
                "",
                "spec.net.sasl.user",
                "is required",
            ),
            (
                "user: {env: KAFKA_USER}",
                "user: {env: 9USER}",
                "spec.net.sasl.user.env",
                "environment variable name",
            ),
            (
                "type: SCRAM-SHA-512",
                "type: GSSAPI",
                "spec.net.sasl.type",
                "not a SASL mechanism",
            ),
            (
                "      caCert: {file: /run/secrets/kafka/ca.crt}\n",
                "      cert: {file: /run/secrets/kafka/tls.crt}\n",
                "spec.net.tls.key",
                "is required with `tls.cert`",
            ),
            (
                "      caCert: {file: /run/secrets/kafka/ca.crt}\n",
                "      caCert: {file: /a}\n      insecure: true\n",
                "spec.net.tls.insecure",
                "unknown field `insecure`",
            ),
            (
                "{team: orders}",
                "{Team: orders}",
                "spec.ceOverrides.extensions[Team]",
                "attribute name",
            ),
            (
                "kind: Broker, name: default",
                "kind: Pod, name: default",
                "spec.sink.ref.kind",
                "cannot receive events",
            ),
        ];
        for (from, to, path, message) in cases {
            assert!(KAFKA.contains(from), "{from} not in the document");
            let text = KAFKA.replace(from, to);
            let error = parse_documents("bad.yaml", &text).expect_err(&text);
            assert_eq!(error.path, *path, "{to}: {error}");
            assert!(error.message.contains(message), "{to}: {error}");
            assert!(error.hint.is_some(), "{to}: {error}");
            assert_eq!(error.file.as_deref(), Some("bad.yaml"));
            assert_eq!(error.document, Some(1));
            assert_eq!(error.resource.as_deref(), Some("KafkaSource shop/orders"));
        }
    }

    #[test]
    fn refuses_the_kind_under_another_api_version() {
        let text = MINIMAL.replace("sources.knative.dev/v1beta1", "sources.knative.dev/v1");
        let error = parse_documents("bad.yaml", &text).unwrap_err();
        assert_eq!(error.path, "apiVersion");
        assert!(error.hint.unwrap().contains("sources.knative.dev/v1beta1"));
    }
}
