//! Core `v1` kinds other resources reference: ConfigMap (string settings, e.g. Knative's
//! `kafka-broker-config` that a Kafka-class Broker's `spec.config` names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::meta::ObjectMeta;

/// apiVersion of the core kinds.
pub const CORE_API_VERSION: &str = "v1";

/// A ConfigMap: string keys to string values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Accepted for compatibility; kinetic reads only `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl ConfigMap {
    pub fn validate(&self) -> Result<(), Error> {
        self.metadata.validate()?;
        for key in self.data.keys() {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(Error::new(
                    format!("data[{key}]"),
                    format!("`{key}` is not a valid ConfigMap key"),
                )
                .with_hint("use letters, digits, `-`, `_` and `.`"));
            }
        }
        // kinetic's own configuration (`kinetic-system/config-*`) must be readable.
        crate::config::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::resource::Resource;

    fn parse(yaml: &str) -> Result<Resource, crate::Error> {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("YAML");
        Resource::from_value(value)
    }

    #[test]
    fn knatives_kafka_broker_config_applies() {
        let parsed = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kafka-broker-config, namespace: knative-eventing}\ndata:\n  bootstrap.servers: 'a:9092,b:9092'\n  default.topic.partitions: '10'\n",
        )
        .expect("valid");
        let Resource::ConfigMap(config) = parsed else {
            panic!("not a ConfigMap")
        };
        assert_eq!(config.data["bootstrap.servers"], "a:9092,b:9092");
    }

    #[test]
    fn values_must_be_strings_and_keys_well_formed() {
        let error = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  default.topic.partitions: 10\n",
        )
        .expect_err("a number is not a ConfigMap value");
        assert!(error.to_string().contains("data"), "{error}");
        let error =
            parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  'a b': x\n")
                .expect_err("a key with a space");
        assert!(
            error.to_string().contains("not a valid ConfigMap key"),
            "{error}"
        );
    }
}
