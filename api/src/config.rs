//! Knative's cluster configuration ConfigMaps, read from kinetic's system namespace
//! ([`SYSTEM_NAMESPACE`]) with Knative's keys: on Kubernetes they are ConfigMaps in
//! `kinetic-system`; elsewhere they are applied like any resource (`kinetic apply`) in that
//! namespace. Every process reads them from its resource snapshot, so a change takes effect as
//! soon as the snapshot has it, without a restart.
//!
//! - [`BR_DEFAULTS`] (`config-br-defaults`): the delivery defaults of brokers, cluster-wide and
//!   per namespace ([`BrokerDefaults`]);
//! - [`FEATURES`] (`config-features`): `default-authorization-mode` ([`Features`]).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::ConfigMap;
use crate::error::Error;
use crate::eventing::DeliverySpec;

/// The namespace whose ConfigMaps configure kinetic.
pub const SYSTEM_NAMESPACE: &str = "kinetic-system";
/// Knative's broker defaults ConfigMap.
pub const BR_DEFAULTS: &str = "config-br-defaults";
/// Its one key: YAML with `clusterDefault` and `namespaceDefaults`.
pub const BR_DEFAULTS_KEY: &str = "default-br-config";
/// Knative's feature flags ConfigMap.
pub const FEATURES: &str = "config-features";

/// The configuration ConfigMaps kinetic reads.
pub const NAMES: &[&str] = &[BR_DEFAULTS, FEATURES];

/// One entry of `default-br-config`: what a broker without its own settings gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerConfig {
    /// Knative's default broker class: written into a Broker created without one by the
    /// defaulting webhook on Kubernetes, never applied to a Broker that exists (a default that
    /// changed later would move it to another log).
    #[serde(default)]
    pub broker_class: Option<String>,
    /// Delivery defaults for the brokers' triggers, under the broker's and the trigger's own.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// Knative's reference to the class's own configuration (`apiVersion`, `kind`, `name`,
    /// `namespace`): accepted, not used.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `config-br-defaults`: the cluster's defaults, and a namespace's in place of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerDefaults {
    #[serde(default)]
    pub cluster_default: Option<BrokerConfig>,
    #[serde(default)]
    pub namespace_defaults: BTreeMap<String, BrokerConfig>,
}

impl BrokerDefaults {
    /// Reads a `config-br-defaults` ConfigMap. Errors name the key and the field.
    pub fn from_config_map(config: &ConfigMap) -> Result<BrokerDefaults, Error> {
        let Some(text) = config.data.get(BR_DEFAULTS_KEY) else {
            return Ok(BrokerDefaults::default());
        };
        let under = format!("data[{BR_DEFAULTS_KEY}]");
        let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|error| {
            Error::new(&under, format!("is not YAML: {error}"))
                .with_hint("write `clusterDefault: {delivery: {retry: 5}}` as Knative's config-br-defaults does")
        })?;
        let defaults: BrokerDefaults =
            serde_path_to_error::deserialize(&value).map_err(|error| {
                Error::new(
                    crate::error::join_path(&under, &error.path().to_string()),
                    error.inner().to_string(),
                )
            })?;
        let entries = defaults
            .cluster_default
            .iter()
            .map(|config| ("clusterDefault".to_owned(), config))
            .chain(
                defaults
                    .namespace_defaults
                    .iter()
                    .map(|(namespace, config)| (format!("namespaceDefaults.{namespace}"), config)),
            );
        for (path, config) in entries {
            if let Some(delivery) = &config.delivery {
                delivery
                    .validate()
                    .map_err(|error| error.under(&format!("{under}.{path}.delivery")))?;
            }
        }
        Ok(defaults)
    }

    /// The defaults for brokers of `namespace`: the namespace's entry, else the cluster's.
    pub fn for_namespace(&self, namespace: &str) -> Option<&BrokerConfig> {
        self.namespace_defaults
            .get(namespace)
            .or(self.cluster_default.as_ref())
    }
}

/// `config-features`: the flags kinetic reads; Knative's others are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// Who may send to a broker no EventPolicy applies to: `allow-all`, `deny-all` or
    /// `allow-same-namespace`. Overrides `--default-authorization-mode`.
    pub default_authorization_mode: Option<String>,
}

/// The values `default-authorization-mode` takes.
pub const AUTHORIZATION_MODES: &[&str] = &["allow-all", "deny-all", "allow-same-namespace"];

impl Features {
    pub fn from_config_map(config: &ConfigMap) -> Result<Features, Error> {
        let mode = config.data.get("default-authorization-mode");
        if let Some(mode) = mode
            && !AUTHORIZATION_MODES.contains(&mode.trim().to_ascii_lowercase().as_str())
        {
            return Err(Error::new(
                "data[default-authorization-mode]",
                format!("`{mode}` is not an authorization mode"),
            )
            .with_hint(format!("use one of: {}", AUTHORIZATION_MODES.join(", "))));
        }
        Ok(Features {
            default_authorization_mode: mode.map(|m| m.trim().to_ascii_lowercase()),
        })
    }
}

/// Checks `config` when it is one of the configuration ConfigMaps kinetic reads.
pub fn validate(config: &ConfigMap) -> Result<(), Error> {
    if config.metadata.namespace != SYSTEM_NAMESPACE {
        return Ok(());
    }
    match config.metadata.name.as_str() {
        BR_DEFAULTS => BrokerDefaults::from_config_map(config).map(|_| ()),
        FEATURES => Features::from_config_map(config).map(|_| ()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
            "data": data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn knatives_broker_defaults_are_read_per_namespace() {
        // As in Knative's eventing-core.yaml, with a namespace of its own.
        let config = config_map(
            BR_DEFAULTS,
            &[(
                BR_DEFAULTS_KEY,
                "clusterDefault:\n  brokerClass: MTChannelBasedBroker\n  apiVersion: v1\n  kind: ConfigMap\n  name: config-br-default-channel\n  namespace: knative-eventing\n  delivery:\n    retry: 10\n    backoffPolicy: exponential\n    backoffDelay: PT0.2S\nnamespaceDefaults:\n  orders:\n    delivery:\n      retry: 3\n      timeout: PT5S\n",
            )],
        );
        let defaults = BrokerDefaults::from_config_map(&config).unwrap();
        let cluster = defaults.for_namespace("anywhere").unwrap();
        assert_eq!(
            cluster.broker_class.as_deref(),
            Some("MTChannelBasedBroker")
        );
        assert_eq!(cluster.delivery.as_ref().unwrap().retry, Some(10));
        let orders = defaults
            .for_namespace("orders")
            .unwrap()
            .delivery
            .as_ref()
            .unwrap();
        assert_eq!(orders.retry, Some(3));
        assert_eq!(orders.timeout.as_deref(), Some("PT5S"));
    }

    #[test]
    fn a_bad_default_says_which_key_and_field() {
        let config = config_map(
            BR_DEFAULTS,
            &[(
                BR_DEFAULTS_KEY,
                "clusterDefault:\n  delivery:\n    backoffDelay: soon\n",
            )],
        );
        let error = validate(&config).unwrap_err();
        assert!(
            error
                .path
                .starts_with("data[default-br-config].clusterDefault.delivery.backoffDelay"),
            "{error}"
        );
        let config = config_map(BR_DEFAULTS, &[(BR_DEFAULTS_KEY, "clusterDefaults: {}\n")]);
        let error = validate(&config).unwrap_err();
        assert!(error.to_string().contains("clusterDefaults"), "{error}");
        let config = config_map(FEATURES, &[("default-authorization-mode", "maybe")]);
        let error = validate(&config).unwrap_err();
        assert_eq!(error.path, "data[default-authorization-mode]");
        assert!(
            error.to_string().contains("allow-same-namespace"),
            "{error}"
        );
    }

    #[test]
    fn features_and_other_namespaces() {
        let config = config_map(
            FEATURES,
            &[
                ("default-authorization-mode", "Deny-All"),
                ("new-trigger-filters", "enabled"),
            ],
        );
        assert_eq!(
            Features::from_config_map(&config)
                .unwrap()
                .default_authorization_mode
                .as_deref(),
            Some("deny-all")
        );
        let mut elsewhere = config_map(FEATURES, &[("default-authorization-mode", "maybe")]);
        elsewhere.metadata.namespace = "default".to_owned();
        assert!(
            validate(&elsewhere).is_ok(),
            "only kinetic-system's are kinetic's"
        );
    }
}
