//! The decision, with no I/O: which EventPolicies apply to a broker, whether a request needs a
//! token, and whether a verified sender's events may enter. Knative's rules:
//!
//! - A policy applies to the Brokers of its namespace that `spec.to` names (a ref, or a label
//!   selector); an empty `to` applies to all of them.
//! - When any policy applies, an event enters if some applying policy lists the sender's subject in
//!   `from` and the event matches that policy's `filters`. (Knative's code stops at the first
//!   policy naming the subject; its documentation and design say any policy — that is the rule
//!   here.)
//! - When none applies, the default authorization mode decides: `allow-all` (no token needed),
//!   `deny-all`, or `allow-same-namespace` (a subject `system:serviceaccount:{namespace}:…`).

use std::collections::{BTreeMap, HashMap};

use cloudevents::{AttributesReader, Event};
use kinetic_api::Broker;
use kinetic_api::policy::{EventPolicy, EventPolicyTo, subject_matches};
use kinetic_triggers::Filter;

/// Knative's `default-authorization-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AllowAll,
    DenyAll,
    AllowSameNamespace,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowAll => "allow-all",
            Self::DenyAll => "deny-all",
            Self::AllowSameNamespace => "allow-same-namespace",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "allow-all" => Ok(Self::AllowAll),
            "deny-all" => Ok(Self::DenyAll),
            "allow-same-namespace" => Ok(Self::AllowSameNamespace),
            _ => Err(format!(
                "`{text}` is not an authorization mode; use allow-all, deny-all or allow-same-namespace"
            )),
        }
    }
}

/// One policy, ready to judge events.
#[derive(Debug)]
pub struct Compiled {
    pub namespace: String,
    pub name: String,
    to: Vec<EventPolicyTo>,
    /// `spec.from`, refs resolved to subjects.
    pub subjects: Vec<String>,
    filter: Filter,
}

impl Compiled {
    /// `None` when the filters do not compile (apply refuses those; a store edited by hand may not).
    pub fn new(policy: &EventPolicy) -> Option<Self> {
        let filter = match Filter::compile_all(&policy.spec.filters, "spec.filters") {
            Ok(filter) => filter,
            Err(error) => {
                tracing::warn!(policy = %format!("{}/{}", policy.metadata.namespace, policy.metadata.name), %error, "EventPolicy ignored: its filters do not compile.");
                return None;
            }
        };
        Some(Self {
            namespace: policy.metadata.namespace.clone(),
            name: policy.metadata.name.clone(),
            to: policy.spec.to.clone(),
            subjects: policy.subjects(),
            filter,
        })
    }

    /// Whether this policy applies to broker `name` (of the policy's namespace) with `labels`.
    fn applies_to(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.to.is_empty()
            || self
                .to
                .iter()
                .any(|to| match (&to.reference, &to.selector) {
                    (Some(reference), _) => reference.name == name,
                    (None, Some(selector)) => selector.matches(labels),
                    (None, None) => false,
                })
    }

    fn allows(&self, subject: &str) -> bool {
        self.subjects
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
    }
}

/// Every policy and broker label set, as last read from the store.
#[derive(Debug, Default)]
pub struct Snapshot {
    policies: HashMap<String, Vec<Compiled>>,
    labels: HashMap<(String, String), BTreeMap<String, String>>,
}

impl Snapshot {
    pub fn build(policies: &[EventPolicy], brokers: &[Broker]) -> Self {
        let mut by_namespace: HashMap<String, Vec<Compiled>> = HashMap::new();
        for policy in policies {
            if let Some(compiled) = Compiled::new(policy) {
                by_namespace
                    .entry(compiled.namespace.clone())
                    .or_default()
                    .push(compiled);
            }
        }
        for list in by_namespace.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let labels = brokers
            .iter()
            .map(|b| {
                (
                    (b.metadata.namespace.clone(), b.metadata.name.clone()),
                    b.metadata.labels.clone(),
                )
            })
            .collect();
        Self {
            policies: by_namespace,
            labels,
        }
    }

    /// The policies that apply to broker `namespace/name`, by name.
    pub fn applying(&self, namespace: &str, name: &str) -> Vec<&Compiled> {
        // Most namespaces have no policy: no allocation on the ingress's path for them.
        let Some(list) = self.policies.get(namespace) else {
            return Vec::new();
        };
        let empty = BTreeMap::new();
        let labels = self
            .labels
            .get(&(namespace.to_owned(), name.to_owned()))
            .unwrap_or(&empty);
        list.iter().filter(|p| p.applies_to(name, labels)).collect()
    }
}

/// Whether a request to a broker needs a verified token.
pub fn needs_token(applying: &[&Compiled], mode: Mode) -> bool {
    !applying.is_empty() || mode != Mode::AllowAll
}

/// Whether `subject`'s `events` may enter broker `namespace/broker`; the refusal says why.
pub fn decide(
    applying: &[&Compiled],
    mode: Mode,
    namespace: &str,
    broker: &str,
    subject: &str,
    events: &[Event],
) -> Result<(), String> {
    if applying.is_empty() {
        return match mode {
            Mode::AllowAll => Ok(()),
            Mode::DenyAll => Err(format!(
                "no EventPolicy applies to broker `{namespace}/{broker}` and the default authorization mode is deny-all; apply an EventPolicy that lists `{subject}` in spec.from"
            )),
            Mode::AllowSameNamespace => {
                if subject.starts_with(&format!("system:serviceaccount:{namespace}:")) {
                    Ok(())
                } else {
                    Err(format!(
                        "`{subject}` is not of namespace `{namespace}` and no EventPolicy applies to broker `{namespace}/{broker}` (the default authorization mode is allow-same-namespace); apply an EventPolicy that lists it in spec.from"
                    ))
                }
            }
        };
    }
    let allowing: Vec<&&Compiled> = applying.iter().filter(|p| p.allows(subject)).collect();
    if allowing.is_empty() {
        let names: Vec<&str> = applying.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "no EventPolicy of broker `{namespace}/{broker}` allows `{subject}` (policies: {})",
            names.join(", ")
        ));
    }
    for event in events {
        if !allowing.iter().any(|p| p.filter.matches(event)) {
            let names: Vec<&str> = allowing.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "event `{}` (type `{}`) does not match the filters of the EventPolicy that allows `{subject}` ({})",
                event.id(),
                event.ty(),
                names.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder as _, EventBuilderV10};

    fn policies(yaml: &str) -> Vec<EventPolicy> {
        kinetic_api::parse_documents("p.yaml", yaml)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                kinetic_api::Resource::EventPolicy(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn broker(name: &str, labels: &[(&str, &str)]) -> Broker {
        let labels: String = labels
            .iter()
            .map(|(k, v)| format!("{k}: '{v}', "))
            .collect();
        let yaml = format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: {name}, namespace: shop, labels: {{{labels}}}}}\n"
        );
        match kinetic_api::parse_documents("b.yaml", &yaml)
            .unwrap()
            .remove(0)
        {
            kinetic_api::Resource::Broker(b) => b,
            _ => unreachable!(),
        }
    }

    fn event(ty: &str) -> Event {
        EventBuilderV10::new()
            .id("e1")
            .source("/s")
            .ty(ty)
            .build()
            .unwrap()
    }

    const POLICIES: &str = "
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: orders, namespace: shop}
spec:
  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders}}]
  from: [{sub: 'system:serviceaccount:shop:checkout-*'}]
  filters: [{prefix: {type: com.shop.order.}}]
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: audit, namespace: shop}
spec:
  to: [{selector: {apiVersion: eventing.knative.dev/v1, kind: Broker, matchLabels: {audited: 'yes'}}}]
  from:
    - sub: auditor
    - ref: {apiVersion: sources.knative.dev/v1, kind: PingSource, name: tick}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: everything, namespace: other}
spec:
  from: [{sub: '*'}]
";

    #[test]
    fn policies_apply_by_ref_selector_and_namespace() {
        let snapshot = Snapshot::build(
            &policies(POLICIES),
            &[
                broker("orders", &[("audited", "yes")]),
                broker("plain", &[]),
            ],
        );
        let names = |ns: &str, b: &str| -> Vec<String> {
            snapshot
                .applying(ns, b)
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names("shop", "orders"), ["audit", "orders"]);
        assert_eq!(names("shop", "plain"), Vec::<String>::new());
        assert_eq!(names("other", "anything"), ["everything"]);
        assert_eq!(names("third", "orders"), Vec::<String>::new());
    }

    #[test]
    fn a_sender_needs_a_policy_naming_it_and_matching_filters() {
        let snapshot = Snapshot::build(
            &policies(POLICIES),
            &[broker("orders", &[("audited", "yes")])],
        );
        let applying = snapshot.applying("shop", "orders");
        let order = [event("com.shop.order.created")];
        let other = [event("com.shop.refund")];
        let decide = |subject: &str, events: &[Event]| {
            decide(&applying, Mode::DenyAll, "shop", "orders", subject, events)
        };
        assert!(decide("system:serviceaccount:shop:checkout-1", &order).is_ok());
        let error = decide("system:serviceaccount:shop:checkout-1", &other).unwrap_err();
        assert!(error.contains("does not match the filters") && error.contains("orders"));
        // Another policy allows the auditor with no filters: anything goes.
        assert!(decide("auditor", &other).is_ok());
        assert!(
            decide(
                "system:serviceaccount:shop:tick-oidc-sources.knative.dev-pingsource",
                &other
            )
            .is_ok()
        );
        let error = decide("system:serviceaccount:shop:intruder", &order).unwrap_err();
        assert!(
            error.contains("no EventPolicy of broker `shop/orders` allows"),
            "{error}"
        );
        // A batch is refused whole when one event is refused.
        let batch = [event("com.shop.order.created"), event("com.shop.refund")];
        assert!(decide("system:serviceaccount:shop:checkout-1", &batch).is_err());
    }

    #[test]
    fn the_default_mode_decides_for_brokers_no_policy_names() {
        let none: Vec<&Compiled> = Vec::new();
        let events = [event("t")];
        assert!(!needs_token(&none, Mode::AllowAll));
        assert!(needs_token(&none, Mode::DenyAll));
        assert!(needs_token(&none, Mode::AllowSameNamespace));
        assert!(decide(&none, Mode::AllowAll, "shop", "b", "anyone", &events).is_ok());
        assert!(decide(&none, Mode::DenyAll, "shop", "b", "anyone", &events).is_err());
        let same = |subject: &str| {
            decide(
                &none,
                Mode::AllowSameNamespace,
                "shop",
                "b",
                subject,
                &events,
            )
        };
        assert!(same("system:serviceaccount:shop:app").is_ok());
        assert!(same("system:serviceaccount:shopping:app").is_err());
        assert!(same("app").is_err());
        assert_eq!("Deny-All".parse::<Mode>(), Ok(Mode::DenyAll));
        assert!("open".parse::<Mode>().is_err());
    }
}
