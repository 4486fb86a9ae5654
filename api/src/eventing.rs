//! `eventing.knative.dev/v1` Broker and Trigger, with Knative's field names and validation rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::error::Error;
use crate::meta::{Destination, KReference, ObjectMeta};
use crate::sources::SecretRef;

pub const EVENTING_API_VERSION: &str = "eventing.knative.dev/v1";
/// Broker annotation that picks the broker implementation.
pub const BROKER_CLASS_ANNOTATION: &str = "eventing.knative.dev/broker.class";
/// Broker classes served by the store-backed broker (Knative's default class name is accepted so
/// that Knative YAML applies unchanged).
pub const STORE_BROKER_CLASSES: &[&str] = &["Kinetic", "MTChannelBasedBroker"];
/// The broker class whose log is a Kafka topic (Knative's Kafka broker class name).
pub const KAFKA_BROKER_CLASS: &str = "Kafka";

/// Where a broker keeps its accepted events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerClass {
    /// The store's event log (SQLite or PostgreSQL).
    Store,
    /// A Kafka topic per broker, a consumer group per trigger.
    Kafka,
}

/// Trigger annotation selecting ordered delivery (Knative's Kafka broker annotation).
pub const DELIVERY_ORDER_ANNOTATION: &str = "kafka.eventing.knative.dev/delivery.order";
/// Whether a Trigger's subscriber may reply with an event published to the broker (`"true"`, the
/// default as in Knative, or `"false"`).
pub const REPLIES_ANNOTATION: &str = "kinetic.dev/replies";

/// A Broker receives events at `POST /{namespace}/{name}` and keeps them durably until every
/// matching Trigger has delivered them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Broker {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BrokerSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerSpec {
    /// Implementation-specific configuration (e.g. a ConfigMap for the Kafka class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<KReference>,
    /// Delivery defaults for every Trigger of this Broker that does not set its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

impl Broker {
    pub fn class(&self) -> &str {
        self.metadata
            .annotations
            .get(BROKER_CLASS_ANNOTATION)
            .map(String::as_str)
            .unwrap_or("Kinetic")
    }

    /// The implementation of this broker's class; `None` for a class kinetic does not have.
    pub fn class_kind(&self) -> Option<BrokerClass> {
        match self.class() {
            KAFKA_BROKER_CLASS => Some(BrokerClass::Kafka),
            class if STORE_BROKER_CLASSES.contains(&class) => Some(BrokerClass::Store),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.metadata.validate()?;
        let class = self.class();
        if self.class_kind().is_none() {
            return Err(Error::new(
                format!("metadata.annotations[{BROKER_CLASS_ANNOTATION}]"),
                format!("broker class `{class}` is not available"),
            )
            .with_hint(format!(
                "remove the annotation (the store-backed class), or use one of: {}, {KAFKA_BROKER_CLASS}",
                STORE_BROKER_CLASSES.join(", ")
            )));
        }
        if let Some(delivery) = &self.spec.delivery {
            delivery.validate().map_err(|e| e.under("spec.delivery"))?;
        }
        Ok(())
    }
}

/// A Trigger selects events of one Broker with filters and delivers them to a subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: TriggerSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerSpec {
    /// Name of the Broker (same namespace) whose events this Trigger selects.
    pub broker: String,
    /// Legacy attribute filter: every key must be present with the given value; an empty value matches
    /// any value. Ignored when `filters` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TriggerFilter>,
    /// Filters in Knative's subscriptions API dialects; all of them must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<SubscriptionsApiFilter>,
    /// Where matching events are delivered.
    pub subscriber: Destination,
    /// Retries, backoff, timeout and dead-letter sink; overrides the Broker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerFilter {
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One filter of `spec.filters`. Exactly one dialect is set per filter object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionsApiFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<SubscriptionsApiFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<SubscriptionsApiFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<SubscriptionsApiFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cesql: Option<String>,
}

/// Delivery ordering of a Trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOrder {
    /// Events are delivered in parallel (bounded per trigger).
    Unordered,
    /// Events with the same `partitionkey` are delivered one at a time in acceptance order.
    Ordered,
}

impl Trigger {
    pub fn delivery_order(&self) -> Result<DeliveryOrder, Error> {
        match self
            .metadata
            .annotations
            .get(DELIVERY_ORDER_ANNOTATION)
            .map(String::as_str)
        {
            None | Some("unordered") => Ok(DeliveryOrder::Unordered),
            Some("ordered") => Ok(DeliveryOrder::Ordered),
            Some(other) => Err(Error::new(
                format!("metadata.annotations[{DELIVERY_ORDER_ANNOTATION}]"),
                format!("`{other}` is not a delivery order"),
            )
            .with_hint("use `ordered` or `unordered`")),
        }
    }

    /// Whether the subscriber's answers may be replies ([`REPLIES_ANNOTATION`]).
    pub fn replies(&self) -> Result<bool, Error> {
        match self
            .metadata
            .annotations
            .get(REPLIES_ANNOTATION)
            .map(String::as_str)
        {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(Error::new(
                format!("metadata.annotations[{REPLIES_ANNOTATION}]"),
                format!("`{other}` is not a boolean"),
            )
            .with_hint("use \"true\" (replies are published to the broker, the default) or \"false\" (answers are never replies)")),
        }
    }

    /// Structural validation. CESQL expressions are only checked for presence here; the filter
    /// compiler (which owns the CESQL engine) checks their syntax, see [`Self::cesql_expressions`].
    pub fn validate(&self) -> Result<(), Error> {
        self.metadata.validate()?;
        self.delivery_order()?;
        self.replies()?;
        crate::meta::validate_dns_label(&self.spec.broker).map_err(|e| e.under("spec.broker"))?;
        if let Some(filter) = &self.spec.filter {
            for name in filter.attributes.keys() {
                validate_attribute_name(name)
                    .map_err(|e| e.under(&format!("spec.filter.attributes[{name}]")))?;
            }
        }
        for (index, filter) in self.spec.filters.iter().enumerate() {
            filter
                .validate()
                .map_err(|e| e.under(&format!("spec.filters[{index}]")))?;
        }
        self.spec
            .subscriber
            .validate()
            .map_err(|e| e.under("spec.subscriber"))?;
        if let Some(delivery) = &self.spec.delivery {
            delivery.validate().map_err(|e| e.under("spec.delivery"))?;
        }
        Ok(())
    }

    /// Every CESQL expression in `spec.filters`, with its field path.
    pub fn cesql_expressions(&self) -> Vec<(String, &str)> {
        fn walk<'a>(
            filter: &'a SubscriptionsApiFilter,
            path: String,
            out: &mut Vec<(String, &'a str)>,
        ) {
            if let Some(expression) = &filter.cesql {
                out.push((format!("{path}.cesql"), expression));
            }
            for (name, list) in [("all", &filter.all), ("any", &filter.any)] {
                for (index, inner) in list.iter().flatten().enumerate() {
                    walk(inner, format!("{path}.{name}[{index}]"), out);
                }
            }
            if let Some(inner) = &filter.not {
                walk(inner, format!("{path}.not"), out);
            }
        }
        let mut out = Vec::new();
        for (index, filter) in self.spec.filters.iter().enumerate() {
            walk(filter, format!("spec.filters[{index}]"), &mut out);
        }
        out
    }
}

impl SubscriptionsApiFilter {
    fn dialects(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.all.is_some() {
            set.push("all");
        }
        if self.any.is_some() {
            set.push("any");
        }
        if self.not.is_some() {
            set.push("not");
        }
        if self.exact.is_some() {
            set.push("exact");
        }
        if self.prefix.is_some() {
            set.push("prefix");
        }
        if self.suffix.is_some() {
            set.push("suffix");
        }
        if self.cesql.is_some() {
            set.push("cesql");
        }
        set
    }

    pub fn validate(&self) -> Result<(), Error> {
        let dialects = self.dialects();
        match dialects.len() {
            0 => {
                return Err(Error::new("", "the filter is empty")
                    .with_hint("set exactly one of exact, prefix, suffix, all, any, not, cesql"));
            }
            1 => {}
            _ => {
                return Err(Error::new(
                    "",
                    format!("one filter sets several dialects: {}", dialects.join(", ")),
                )
                .with_hint(
                    "put each dialect in its own list item, or combine them with `all:` or `any:`",
                ));
            }
        }
        for (name, map) in [
            ("exact", &self.exact),
            ("prefix", &self.prefix),
            ("suffix", &self.suffix),
        ] {
            let Some(map) = map else { continue };
            if map.is_empty() {
                return Err(Error::new(name, "needs at least one attribute")
                    .with_hint(format!("e.g. `{name}: {{type: com.example.order}}`")));
            }
            for (attribute, value) in map {
                validate_attribute_name(attribute)
                    .map_err(|e| e.under(&format!("{name}[{attribute}]")))?;
                if name != "exact" && value.is_empty() {
                    return Err(Error::new(
                        format!("{name}[{attribute}]"),
                        format!("an empty {name} matches everything"),
                    )
                    .with_hint(format!("give a non-empty {name}, or remove the filter")));
                }
            }
        }
        for (name, list) in [("all", &self.all), ("any", &self.any)] {
            for (index, inner) in list.iter().flatten().enumerate() {
                inner
                    .validate()
                    .map_err(|e| e.under(&format!("{name}[{index}]")))?;
            }
        }
        if let Some(inner) = &self.not {
            inner.validate().map_err(|e| e.under("not"))?;
        }
        if let Some(expression) = &self.cesql
            && expression.trim().is_empty()
        {
            return Err(Error::new("cesql", "the expression is empty")
                .with_hint("e.g. `cesql: \"type LIKE 'com.example.%'\"`"));
        }
        Ok(())
    }
}

/// CloudEvents attribute names: lower-case letters and digits.
pub fn validate_attribute_name(name: &str) -> Result<(), Error> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(
            Error::new("", format!("`{name}` is not a CloudEvents attribute name"))
                .with_hint("attribute names use only lower-case letters a-z and digits 0-9"),
        )
    }
}

/// Knative's `DeliverySpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverySpec {
    /// Where events go after the retries are spent (or on a non-retryable answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// ISO-8601 base delay between retries, e.g. `PT0.2S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    /// ISO-8601 timeout of each attempt, e.g. `PT30S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// ISO-8601 cap on an honoured `Retry-After`; `PT0S` ignores `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<String>,
    /// Event format of deliveries: `binary` (default) or `json` (structured mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DeliveryFormat>,
    /// kinetic's extension: sign every delivery so the subscriber can tell it came from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<DeliverySigning>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `backoffDelay × k` before retry k.
    Linear,
    /// `backoffDelay × 2^k` before retry k.
    Exponential,
    /// The schedule webhook senders use (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then 10 h), each
    /// wait ±20 % at random; `backoffDelay` does not apply.
    Webhook,
}

/// How deliveries are signed (kinetic's extension of `DeliverySpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverySigning {
    /// [Standard Webhooks](https://www.standardwebhooks.com/) signatures: `webhook-id`,
    /// `webhook-timestamp` and `webhook-signature` headers on every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_webhooks: Option<StandardWebhooksSigning>,
}

/// Standard Webhooks signing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StandardWebhooksSigning {
    /// Signing secrets, `whsec_<base64>` (the prefix is optional, the rest is always base64, as the
    /// reference libraries read it). Every delivery carries one signature per secret, so a secret
    /// is rotated by adding the new one, letting subscribers switch, then removing the old.
    pub secrets: Vec<SecretRef>,
}

impl DeliverySigning {
    pub fn validate(&self) -> Result<(), Error> {
        let Some(standard) = &self.standard_webhooks else {
            return Err(Error::new("", "no signing scheme is set").with_hint(
                "write `signing: {standardWebhooks: {secrets: [{env: WEBHOOK_SECRET}]}}`, or remove `signing`",
            ));
        };
        if standard.secrets.is_empty() {
            return Err(
                Error::new("standardWebhooks.secrets", "needs at least one secret").with_hint(
                    "e.g. `secrets: [{env: WEBHOOK_SECRET}]` or `[{file: /run/secrets/webhook}]`",
                ),
            );
        }
        for (index, secret) in standard.secrets.iter().enumerate() {
            secret
                .validate()
                .map_err(|e| e.under(&format!("standardWebhooks.secrets[{index}]")))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryFormat {
    Binary,
    Json,
}

impl DeliverySpec {
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(retry) = self.retry
            && retry < 0
        {
            return Err(Error::new("retry", format!("{retry} is negative"))
                .with_hint("use 0 for no retries, or a positive count"));
        }
        for (name, value) in [
            ("backoffDelay", &self.backoff_delay),
            ("timeout", &self.timeout),
            ("retryAfterMax", &self.retry_after_max),
        ] {
            let Some(value) = value else { continue };
            let parsed = duration::parse(value).map_err(|message| {
                Error::new(name, message).with_hint("write e.g. `PT0.2S`, `PT30S` or `PT1M`")
            })?;
            if name == "timeout" && parsed.is_zero() {
                return Err(Error::new(name, "must be longer than zero")
                    .with_hint("write e.g. `PT30S`; leave it out for the default"));
            }
        }
        if let Some(sink) = &self.dead_letter_sink {
            sink.validate().map_err(|e| e.under("deadLetterSink"))?;
        }
        if let Some(signing) = &self.signing {
            signing.validate().map_err(|e| e.under("signing"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::resource::{Resource, parse_documents};

    const HEAD: &str = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: b\n  subscriber: {uri: 'https://hooks.example/in'}\n";

    fn delivery(yaml: &str) -> Result<super::DeliverySpec, crate::Error> {
        let resources = parse_documents("t.yaml", &format!("{HEAD}  delivery: {yaml}\n"))?;
        let Some(Resource::Trigger(trigger)) = resources.into_iter().next() else {
            panic!("not a trigger");
        };
        Ok(trigger.spec.delivery.expect("delivery"))
    }

    #[test]
    fn signing_and_the_webhook_policy_parse() {
        let spec = delivery(
            "{backoffPolicy: webhook, signing: {standardWebhooks: {secrets: [{env: WEBHOOK_SECRET}, {file: /run/secrets/old}]}}}",
        )
        .expect("valid");
        assert_eq!(spec.backoff_policy, Some(super::BackoffPolicy::Webhook));
        let secrets = &spec.signing.unwrap().standard_webhooks.unwrap().secrets;
        assert_eq!(
            secrets,
            &[
                crate::sources::SecretRef::Env("WEBHOOK_SECRET".into()),
                crate::sources::SecretRef::File("/run/secrets/old".into()),
            ]
        );
    }

    #[test]
    fn signing_mistakes_are_refused_with_their_path() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "{signing: {}}",
                "spec.delivery.signing",
                "no signing scheme",
            ),
            (
                "{signing: {standardWebhooks: {secrets: []}}}",
                "spec.delivery.signing.standardWebhooks.secrets",
                "at least one secret",
            ),
            (
                "{signing: {standardWebhooks: {secrets: [{env: '1BAD'}]}}}",
                "spec.delivery.signing.standardWebhooks.secrets[0].env",
                "not an environment variable name",
            ),
            (
                "{signing: {standardWebhooks: {secrets: [{file: ' '}]}}}",
                "spec.delivery.signing.standardWebhooks.secrets[0].file",
                "is empty",
            ),
            (
                "{signing: {standardWebhooks: {secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']}}}",
                "spec.delivery.signing.standardWebhooks.secrets[0]",
                "inline secret is not accepted",
            ),
            (
                "{signing: {hmac: {secrets: [{env: S}]}}}",
                "spec.delivery.signing.hmac",
                "unknown field",
            ),
        ];
        for (yaml, path, message) in cases {
            let error = delivery(yaml).expect_err(yaml);
            assert_eq!(error.path, *path, "{yaml}: {error}");
            assert!(error.message.contains(message), "{yaml}: {error}");
            assert!(error.hint.is_some(), "{yaml}: {error}");
        }
    }
}
