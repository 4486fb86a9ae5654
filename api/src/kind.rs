//! The kinds of resource kinetic keeps, as one type: each with its `apiVersion`, its `kind` and the
//! lower-case plural the CLI and the HTTP API use (`kinetic get pingsources`,
//! `/api/v1/pingsources`).

use std::fmt;

use crate::core::CORE_API_VERSION;
use crate::eventing::EVENTING_API_VERSION;
use crate::policy::POLICY_API_VERSION;
use crate::serving::SERVING_API_VERSION;
use crate::sources::{KAFKA_SOURCES_API_VERSION, KNATIVE_SOURCES_API_VERSION, SOURCES_API_VERSION};

/// A kind of resource kinetic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Broker,
    Trigger,
    EventPolicy,
    Service,
    /// Written by kinetic from a Service's template, never applied.
    Revision,
    ConfigMap,
    S3Source,
    WebhookSource,
    PingSource,
    KafkaSource,
}

impl Kind {
    /// Every kind, in the order listings show them.
    pub const ALL: &'static [Kind] = &[
        Kind::Broker,
        Kind::Trigger,
        Kind::EventPolicy,
        Kind::Service,
        Kind::Revision,
        Kind::ConfigMap,
        Kind::S3Source,
        Kind::WebhookSource,
        Kind::PingSource,
        Kind::KafkaSource,
    ];

    /// The source kinds: the one list that resource parsing, the HTTP API, the CLI and `kinetic
    /// get sources` read. A new kind is added here (and to [`Kind::ALL`]), then given its spec
    /// ([`crate::sources`]), its parsing arm ([`crate::resource`]) and its `Kind` implementation in
    /// `kinetic-sources`' controller.
    pub const SOURCES: &'static [Kind] = &[
        Kind::S3Source,
        Kind::WebhookSource,
        Kind::PingSource,
        Kind::KafkaSource,
    ];

    /// As in a resource's `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Broker => "Broker",
            Kind::Trigger => "Trigger",
            Kind::EventPolicy => "EventPolicy",
            Kind::Service => "Service",
            Kind::Revision => "Revision",
            Kind::ConfigMap => "ConfigMap",
            Kind::S3Source => "S3Source",
            Kind::WebhookSource => "WebhookSource",
            Kind::PingSource => "PingSource",
            Kind::KafkaSource => "KafkaSource",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Broker | Kind::Trigger => EVENTING_API_VERSION,
            Kind::EventPolicy => POLICY_API_VERSION,
            Kind::Service | Kind::Revision => SERVING_API_VERSION,
            Kind::ConfigMap => CORE_API_VERSION,
            Kind::S3Source | Kind::WebhookSource => SOURCES_API_VERSION,
            Kind::PingSource => KNATIVE_SOURCES_API_VERSION,
            Kind::KafkaSource => KAFKA_SOURCES_API_VERSION,
        }
    }

    /// Lower case and plural, as the CLI and the HTTP API name it.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Broker => "brokers",
            Kind::Trigger => "triggers",
            Kind::EventPolicy => "eventpolicies",
            Kind::Service => "services",
            Kind::Revision => "revisions",
            Kind::ConfigMap => "configmaps",
            Kind::S3Source => "s3sources",
            Kind::WebhookSource => "webhooksources",
            Kind::PingSource => "pingsources",
            Kind::KafkaSource => "kafkasources",
        }
    }

    /// Short names Knative's CLI and kubectl accept besides the singular and plural.
    fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &["ksvc"],
            Kind::Revision => &["rev"],
            _ => &[],
        }
    }

    pub fn is_source(self) -> bool {
        Kind::SOURCES.contains(&self)
    }

    /// The kind named `name` as a user writes it: its kind, plural, singular or short name, in any
    /// case (`PingSource`, `pingsources`, `pingsource`; `ksvc`).
    pub fn named(name: &str) -> Option<Kind> {
        let name = name.to_ascii_lowercase();
        Kind::ALL.iter().copied().find(|kind| {
            kind.as_str().eq_ignore_ascii_case(&name)
                || kind.plural() == name
                || kind.short_names().contains(&name.as_str())
        })
    }

    /// The kind whose `kind` field is exactly `kind` (as stored).
    pub fn of(kind: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_each_of_its_names() {
        for &kind in Kind::ALL {
            let singular = kind.as_str().to_lowercase();
            for name in [
                kind.as_str(),
                kind.plural(),
                &singular,
                &kind.as_str().to_uppercase(),
            ] {
                assert_eq!(Kind::named(name), Some(kind), "{name}");
            }
            assert_eq!(Kind::of(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::named("ksvc"), Some(Kind::Service));
        assert_eq!(Kind::named("rev"), Some(Kind::Revision));
        assert_eq!(Kind::named("sources"), None);
        assert_eq!(Kind::of("broker"), None, "a stored kind is exact");
    }

    #[test]
    fn names_are_unique_and_sources_are_listed() {
        let mut plurals: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        plurals.sort_unstable();
        plurals.dedup();
        assert_eq!(plurals.len(), Kind::ALL.len());
        assert!(Kind::SOURCES.iter().all(|k| Kind::ALL.contains(k)));
        assert_eq!(
            Kind::ALL.iter().filter(|k| k.is_source()).count(),
            Kind::SOURCES.len()
        );
    }
}
