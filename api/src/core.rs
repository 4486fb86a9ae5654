//! Core `v1` kinds other resources reference: ConfigMap (string settings, e.g. Knative's
//! `kafka-broker-config` that a Kafka-class Broker's `spec.config` names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::meta::ObjectMeta;

/// apiVersion of the core kinds.
pub const CORE_API_VERSION: &str = "v1";

/// A ConfigMap: string keys to string values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        Ok(())
    }
}
