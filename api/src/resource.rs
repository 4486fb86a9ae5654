//! Reading resources: multi-document YAML (or JSON) into typed, validated [`Resource`]s.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::ConfigMap;
use crate::error::{Error, join_path};
use crate::eventing::{Broker, EVENTING_API_VERSION, Trigger};
use crate::kind::Kind;
use crate::policy::EventPolicy;
use crate::serving::Service;
use crate::sources::{KafkaSource, PingSource, S3Source, WebhookSource};

/// Every kind of resource kinetic accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Broker(Broker),
    Trigger(Trigger),
    Service(Service),
    S3Source(S3Source),
    WebhookSource(WebhookSource),
    PingSource(PingSource),
    KafkaSource(KafkaSource),
    ConfigMap(ConfigMap),
    EventPolicy(EventPolicy),
}

/// Every kind a user may apply, as `(apiVersion, kind)`: all but Revisions, which kinetic writes.
pub fn kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    Kind::ALL
        .iter()
        .filter(|k| **k != Kind::Revision)
        .map(|k| (k.api_version(), k.as_str()))
}

/// The identity of a resource: kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl Resource {
    pub fn key(&self) -> ResourceKey {
        let (kind, meta) = match self {
            Resource::Broker(b) => (Kind::Broker, &b.metadata),
            Resource::Trigger(t) => (Kind::Trigger, &t.metadata),
            Resource::Service(s) => (Kind::Service, &s.metadata),
            Resource::S3Source(s) => (Kind::S3Source, &s.metadata),
            Resource::WebhookSource(s) => (Kind::WebhookSource, &s.metadata),
            Resource::PingSource(s) => (Kind::PingSource, &s.metadata),
            Resource::KafkaSource(s) => (Kind::KafkaSource, &s.metadata),
            Resource::ConfigMap(c) => (Kind::ConfigMap, &c.metadata),
            Resource::EventPolicy(p) => (Kind::EventPolicy, &p.metadata),
        };
        ResourceKey {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        }
    }

    pub fn metadata_mut(&mut self) -> &mut crate::meta::ObjectMeta {
        match self {
            Resource::Broker(b) => &mut b.metadata,
            Resource::Trigger(t) => &mut t.metadata,
            Resource::Service(s) => &mut s.metadata,
            Resource::S3Source(s) => &mut s.metadata,
            Resource::WebhookSource(s) => &mut s.metadata,
            Resource::PingSource(s) => &mut s.metadata,
            Resource::KafkaSource(s) => &mut s.metadata,
            Resource::ConfigMap(c) => &mut c.metadata,
            Resource::EventPolicy(p) => &mut p.metadata,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Resource::Broker(b) => b.validate(),
            Resource::Trigger(t) => t.validate(),
            Resource::Service(s) => s.validate(),
            Resource::S3Source(s) => s.validate(),
            Resource::WebhookSource(s) => s.validate(),
            Resource::PingSource(s) => s.validate(),
            Resource::KafkaSource(s) => s.validate(),
            Resource::ConfigMap(c) => c.validate(),
            Resource::EventPolicy(p) => p.validate(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        fn value<T: Serialize>(resource: &T) -> serde_json::Value {
            // Serializing these plain data types cannot fail.
            serde_json::to_value(resource).unwrap_or(serde_json::Value::Null)
        }
        match self {
            Resource::Broker(b) => value(b),
            Resource::Trigger(t) => value(t),
            Resource::Service(s) => value(s),
            Resource::S3Source(s) => value(s),
            Resource::WebhookSource(s) => value(s),
            Resource::PingSource(s) => value(s),
            Resource::KafkaSource(s) => value(s),
            Resource::ConfigMap(c) => value(c),
            Resource::EventPolicy(p) => value(p),
        }
    }

    /// Builds a resource from one JSON (or YAML-decoded) document and validates it. Errors carry the
    /// resource name and field path but no file or document number; callers add those.
    pub fn from_value(document: serde_json::Value) -> Result<Resource, Error> {
        let object = document.as_object().ok_or_else(|| {
            Error::new(
                "",
                "a resource must be a mapping with apiVersion, kind, metadata and spec",
            )
        })?;
        let text = |field: &str| {
            object
                .get(field)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let api_version = text("apiVersion").ok_or_else(|| {
            Error::new("apiVersion", "is required")
                .with_hint(format!("e.g. `apiVersion: {EVENTING_API_VERSION}`"))
        })?;
        let kind = text("kind").ok_or_else(|| {
            Error::new("kind", "is required").with_hint(
                "e.g. `kind: Broker`, `kind: Trigger`, `kind: Service` or `kind: PingSource`",
            )
        })?;
        let label = object
            .get("metadata")
            .and_then(|m| {
                let name = m.get("name")?.as_str()?;
                let namespace = m
                    .get("namespace")
                    .and_then(|n| n.as_str())
                    .unwrap_or("default");
                Some(format!("{kind} {namespace}/{name}"))
            })
            .unwrap_or_else(|| kind.clone());
        if kind == "Revision" {
            return Err(
                Error::new("kind", "revisions are created by kinetic, not applied")
                    .with_hint(
                        "change the Service's `spec.template`; each change creates a new revision",
                    )
                    .in_resource(label),
            );
        }
        let known = kinds().find(|(_, k)| *k == kind);
        let resource = match known {
            None => {
                let kinds: Vec<_> = kinds().map(|(v, k)| format!("{v} {k}")).collect();
                return Err(Error::new("kind", format!("kind `{kind}` is not known"))
                    .with_hint(format!("kinetic accepts: {}", kinds.join(", "))));
            }
            Some((version, _)) if version != api_version => {
                return Err(Error::new(
                    "apiVersion",
                    format!("`{api_version}` does not serve kind `{kind}`"),
                )
                .with_hint(format!("use `apiVersion: {version}`")));
            }
            Some((_, "Broker")) => typed(document).map(Resource::Broker),
            Some((_, "Service")) => typed(document).map(Resource::Service),
            Some((_, "S3Source")) => typed(document).map(Resource::S3Source),
            Some((_, "WebhookSource")) => typed(document).map(Resource::WebhookSource),
            Some((_, "PingSource")) => typed(document).map(Resource::PingSource),
            Some((_, "KafkaSource")) => typed(document).map(Resource::KafkaSource),
            Some((_, "ConfigMap")) => typed(document).map(Resource::ConfigMap),
            Some((_, "EventPolicy")) => typed(document).map(Resource::EventPolicy),
            Some(_) => typed(document).map(Resource::Trigger),
        }
        .map_err(|e| e.in_resource(label.clone()))?;
        resource.validate().map_err(|e| e.in_resource(label))?;
        Ok(resource)
    }
}

fn typed<T: DeserializeOwned>(document: serde_json::Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(document).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = error.into_inner().to_string();
        let hint = if message.starts_with("unknown field") {
            "remove the field or fix its spelling (field names are case-sensitive camelCase)"
        } else if message.starts_with("missing field") {
            "add the field"
        } else {
            "check the field's type against the documentation in docs/"
        };
        Error::new(join_path("", &path), message).with_hint(hint)
    })
}

/// Parses a file of one or more YAML (or JSON) documents separated by `---`. Empty documents are
/// skipped. Every error names the file, the 1-based document number and the field path.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Resource>, Error> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|error| {
        Error::new("", format!("is not valid YAML: {error}"))
            .in_file(file)
            .with_hint("check indentation and quoting")
    })?;
    let mut resources = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let resource =
            Resource::from_value(document).map_err(|e| e.in_file(file).in_document(index + 1))?;
        resources.push(resource);
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
  namespace: shop
  annotations:
    kafka.eventing.knative.dev/delivery.order: ordered
spec:
  broker: default
  filter:
    attributes:
      type: com.example.order
  filters:
    - any:
        - exact: {type: a}
        - prefix: {source: /shop}
    - not:
        suffix: {subject: .tmp}
    - cesql: "type LIKE 'com.%'"
  subscriber:
    uri: http://127.0.0.1:9000/orders
  delivery:
    retry: 3
    backoffPolicy: linear
    backoffDelay: PT0.5S
    timeout: PT10S
    retryAfterMax: PT0S
    format: json
    deadLetterSink:
      uri: http://127.0.0.1:9000/dead
"#;

    #[test]
    fn parses_knative_yaml() {
        let resources = parse_documents("good.yaml", GOOD).expect("valid");
        assert_eq!(resources.len(), 2);
        let Resource::Trigger(trigger) = &resources[1] else {
            panic!("not a trigger")
        };
        assert_eq!(trigger.metadata.namespace, "shop");
        assert_eq!(resources[0].key().namespace, "default");
        assert_eq!(trigger.spec.filters.len(), 3);
        assert_eq!(
            trigger.delivery_order().unwrap(),
            crate::eventing::DeliveryOrder::Ordered
        );
        assert_eq!(
            trigger.cesql_expressions(),
            vec![("spec.filters[2].cesql".to_owned(), "type LIKE 'com.%'")]
        );
        // Round trip through JSON keeps the resource.
        let again = Resource::from_value(resources[1].to_json()).expect("round trip");
        assert_eq!(again, resources[1]);
    }

    fn error_of(yaml: &str) -> Error {
        parse_documents("bad.yaml", yaml).expect_err("must be refused")
    }

    const TRIGGER_HEAD: &str =
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n";

    #[test]
    fn refuses_mistakes_with_location_and_hint() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, delivery: {retries: 3}}",
                "spec.delivery.retries",
                "unknown field `retries`",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, delivery: {retry: many}}",
                "spec.delivery.retry",
                "invalid type",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, delivery: {backoffDelay: 2s}}",
                "spec.delivery.backoffDelay",
                "ISO-8601",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, delivery: {retry: -1}}",
                "spec.delivery.retry",
                "negative",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, delivery: {backoffPolicy: random}}",
                "spec.delivery.backoffPolicy",
                "unknown variant",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, delivery: {timeout: PT0S}}",
                "spec.delivery.timeout",
                "longer than zero",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, filters: [{exact: {type: a}, prefix: {type: b}}]}",
                "spec.filters[0]",
                "several dialects: exact, prefix",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, filters: [{}]}",
                "spec.filters[0]",
                "empty",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, filters: [{all: [{not: {exact: {Type: a}}}]}]}",
                "spec.filters[0].all[0].not.exact[Type]",
                "attribute name",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, filters: [{prefix: {}}]}",
                "spec.filters[0].prefix",
                "at least one",
            ),
            (
                "spec: {broker: b, subscriber: {uri: 'http://x'}, filter: {attributes: {'my-attr': x}}}",
                "spec.filter.attributes[my-attr]",
                "attribute name",
            ),
            (
                "spec: {broker: b, subscriber: {}}",
                "spec.subscriber",
                "needs `ref` or `uri`",
            ),
            (
                "spec: {broker: b, subscriber: {uri: '/relative'}}",
                "spec.subscriber.uri",
                "absolute",
            ),
            (
                "spec: {subscriber: {uri: 'http://x'}}",
                "spec",
                "missing field `broker`",
            ),
            (
                "spec: {broker: B, subscriber: {uri: 'http://x'}}",
                "spec.broker",
                "not a valid name",
            ),
        ];
        for (spec, path, message) in cases {
            let error = error_of(&format!("{TRIGGER_HEAD}{spec}\n"));
            assert_eq!(error.file.as_deref(), Some("bad.yaml"), "{spec}");
            assert_eq!(error.document, Some(1), "{spec}");
            assert_eq!(error.path, *path, "{spec}: {error}");
            assert!(error.message.contains(message), "{spec}: {error}");
            assert!(error.hint.is_some(), "{spec}: {error}");
        }
    }

    #[test]
    fn refuses_bad_documents() {
        let error = error_of(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: a}\n---\nkind: Broker\n",
        );
        assert_eq!(
            (error.document, error.path.as_str()),
            (Some(2), "apiVersion")
        );
        let error =
            error_of("apiVersion: eventing.knative.dev/v1\nkind: Channel\nmetadata: {name: a}\n");
        assert!(error.message.contains("`Channel` is not known"), "{error}");
        let error = error_of("apiVersion: v1\nkind: Broker\nmetadata: {name: a}\n");
        assert!(error.hint.unwrap().contains("eventing.knative.dev/v1"));
        let error = error_of("kind: [\n");
        assert!(error.message.contains("not valid YAML"), "{error}");
        let error = error_of(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: a, annotations: {eventing.knative.dev/broker.class: Nope}}\n",
        );
        assert!(error.message.contains("`Nope` is not available"), "{error}");
        let error = error_of(&format!("{TRIGGER_HEAD}  annotations: {{kafka.eventing.knative.dev/delivery.order: sorted}}\nspec: {{broker: b, subscriber: {{uri: 'http://x'}}}}\n").replace("metadata: {name: t}\n  annotations", "metadata:\n  name: t\n  annotations"));
        assert!(error.message.contains("not a delivery order"), "{error}");
    }

    #[test]
    fn empty_documents_are_skipped() {
        let text = format!(
            "---\n{TRIGGER_HEAD}spec: {{broker: b, subscriber: {{uri: 'http://x'}}}}\n---\n"
        );
        assert_eq!(parse_documents("f", &text).unwrap().len(), 1);
    }
}
