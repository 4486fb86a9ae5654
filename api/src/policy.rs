//! `eventing.knative.dev/v1alpha1` EventPolicy: who may send events to which Brokers, with Knative's
//! field names and rules, and the identities (OIDC subjects and audiences) they are written in.
//!
//! A policy names its targets (`spec.to`: Broker refs or label selectors; none = every Broker of
//! its namespace), its senders (`spec.from`: token subjects, `*` allowed at the end, or a `ref` to a
//! source, which stands for the subject kinetic gives that source) and optional `spec.filters` in
//! the Trigger dialects that every event from those senders must match.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::eventing::{EVENTING_API_VERSION, SubscriptionsApiFilter};
use crate::kind::Kind;
use crate::meta::{ObjectMeta, validate_dns_label};

pub const POLICY_API_VERSION: &str = "eventing.knative.dev/v1alpha1";

/// Who may send events to which Brokers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: EventPolicySpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventPolicySpec {
    /// The Brokers this policy applies to; empty = every Broker of the policy's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<EventPolicyTo>,
    /// The senders allowed; empty = nobody (other policies may still allow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<EventPolicyFrom>,
    /// Filters (the Trigger dialects) every event of an allowed sender must match; all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<SubscriptionsApiFilter>,
}

/// One target: a `ref` to a Broker, or a `selector` of Brokers by label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventPolicyTo {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<TargetSelector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// Brokers whose labels match (Kubernetes' label selector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSelector {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelRequirement {
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl TargetSelector {
    /// Whether `labels` satisfy every part of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                match requirement.operator.as_str() {
                    "In" => value.is_some_and(|v| requirement.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !requirement.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// One sender: a token subject (`sub`, `*` allowed at the end), or a `ref` to a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventPolicyFrom {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<SenderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SenderRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The policy's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The group of an apiVersion (`eventing.knative.dev/v1` → `eventing.knative.dev`).
fn group(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

/// Knative's OIDC subject of a resource's identity:
/// `system:serviceaccount:{namespace}:{name}-oidc-{group}-{kind}` (lower case), e.g.
/// `system:serviceaccount:default:tick-oidc-sources.knative.dev-pingsource`. kinetic signs the tokens
/// of its sources (and of Triggers' dead-letter hops) with this subject.
pub fn subject_of(api_version: &str, kind: &str, namespace: &str, name: &str) -> String {
    format!(
        "system:serviceaccount:{namespace}:{}",
        format!("{name}-oidc-{}-{kind}", group(api_version)).to_ascii_lowercase()
    )
}

/// Knative's audience of a Broker: `eventing.knative.dev/broker/{namespace}/{name}` (lower case).
pub fn broker_audience(namespace: &str, name: &str) -> String {
    format!("{}/broker/{namespace}/{name}", group(EVENTING_API_VERSION)).to_ascii_lowercase()
}

/// The audience of a destination (Knative's rule): its own `audience`, or, for a `ref` to a
/// Broker, the Broker's. kinetic sends a token for it with every event to that destination.
pub fn destination_audience(destination: &crate::Destination, namespace: &str) -> Option<String> {
    destination.audience.clone().or_else(|| {
        destination
            .reference
            .as_ref()
            .filter(|r| r.kind == "Broker")
            .map(|r| broker_audience(r.namespace.as_deref().unwrap_or(namespace), &r.name))
    })
}

impl EventPolicy {
    /// The subjects of `spec.from`, refs resolved to their sources' subjects (what Knative shows as
    /// `status.from`).
    pub fn subjects(&self) -> Vec<String> {
        self.spec
            .from
            .iter()
            .filter_map(|from| match (&from.sub, &from.reference) {
                (Some(sub), _) => Some(sub.clone()),
                (None, Some(reference)) => Some(subject_of(
                    &reference.api_version,
                    &reference.kind,
                    reference
                        .namespace
                        .as_deref()
                        .unwrap_or(&self.metadata.namespace),
                    &reference.name,
                )),
                (None, None) => None,
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.metadata.validate()?;
        for (index, to) in self.spec.to.iter().enumerate() {
            let at = format!("spec.to[{index}]");
            let (api_version, kind) = match (&to.reference, &to.selector) {
                (Some(reference), None) => {
                    validate_dns_label(&reference.name)
                        .map_err(|e| e.under(&format!("{at}.ref.name")))?;
                    (&reference.api_version, &reference.kind)
                }
                (None, Some(selector)) => {
                    for (i, requirement) in selector.match_expressions.iter().enumerate() {
                        let known = ["In", "NotIn", "Exists", "DoesNotExist"];
                        if !known.contains(&requirement.operator.as_str()) {
                            return Err(Error::new(
                                format!("{at}.selector.matchExpressions[{i}].operator"),
                                format!("`{}` is not an operator", requirement.operator),
                            )
                            .with_hint("use In, NotIn, Exists or DoesNotExist"));
                        }
                    }
                    (&selector.api_version, &selector.kind)
                }
                (None, None) => {
                    return Err(Error::new(at, "needs `ref` or `selector`").with_hint(
                        "e.g. `ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}`",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(Error::new(at, "sets both `ref` and `selector`")
                        .with_hint("give one of them per list item"));
                }
            };
            if kind != "Broker" || group(api_version) != group(EVENTING_API_VERSION) {
                return Err(Error::new(
                    format!("{at}.kind"),
                    format!("`{api_version}` `{kind}` does not receive events in kinetic"),
                )
                .with_hint(format!(
                    "policies apply to Brokers: `apiVersion: {EVENTING_API_VERSION}`, `kind: Broker`"
                )));
            }
        }
        for (index, from) in self.spec.from.iter().enumerate() {
            let at = format!("spec.from[{index}]");
            match (&from.reference, &from.sub) {
                (None, Some(sub)) => {
                    if sub.is_empty() {
                        return Err(Error::new(format!("{at}.sub"), "is empty").with_hint(
                            "give a token subject, e.g. `system:serviceaccount:default:my-app`, or `prefix*`",
                        ));
                    }
                    if sub.find('*').is_some_and(|star| star + 1 != sub.len()) {
                        return Err(Error::new(
                            format!("{at}.sub"),
                            format!("`{sub}`: '*' is only allowed as suffix"),
                        )
                        .with_hint("write `system:serviceaccount:default:*` to match a prefix"));
                    }
                }
                (Some(reference), None) => {
                    let known = Kind::SOURCES
                        .iter()
                        .map(|k| (k.api_version(), k.as_str()))
                        .chain([(EVENTING_API_VERSION, "Trigger")]);
                    let found = known.clone().find(|(_, k)| *k == reference.kind);
                    match found {
                        None => {
                            let kinds: Vec<_> = known.map(|(_, k)| k).collect();
                            return Err(Error::new(
                                format!("{at}.ref.kind"),
                                format!("`{}` does not send events in kinetic", reference.kind),
                            )
                            .with_hint(format!("use one of: {}", kinds.join(", "))));
                        }
                        Some((version, kind))
                            if group(version) != group(&reference.api_version) =>
                        {
                            return Err(Error::new(
                                format!("{at}.ref.apiVersion"),
                                format!("`{}` does not serve kind `{kind}`", reference.api_version),
                            )
                            .with_hint(format!("use `apiVersion: {version}`")));
                        }
                        Some(_) => {}
                    }
                    validate_dns_label(&reference.name)
                        .map_err(|e| e.under(&format!("{at}.ref.name")))?;
                    if let Some(namespace) = &reference.namespace {
                        validate_dns_label(namespace)
                            .map_err(|e| e.under(&format!("{at}.ref.namespace")))?;
                    }
                }
                (None, None) => {
                    return Err(Error::new(at, "needs `sub` or `ref`").with_hint(
                        "e.g. `sub: system:serviceaccount:default:my-app`, or `ref: {apiVersion: sources.knative.dev/v1, kind: PingSource, name: tick}`",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(Error::new(at, "sets both `sub` and `ref`")
                        .with_hint("give one of them per list item"));
                }
            }
        }
        for (index, filter) in self.spec.filters.iter().enumerate() {
            filter
                .validate()
                .map_err(|e| e.under(&format!("spec.filters[{index}]")))?;
        }
        Ok(())
    }
}

/// Whether `subject` is allowed by a `from` subject pattern: equal ignoring case, or, for a pattern
/// ending in `*`, starting with the rest (case-sensitive), as Knative matches.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => pattern.eq_ignore_ascii_case(subject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::parse_documents;

    fn policy(spec: &str) -> Result<EventPolicy, String> {
        let text = format!(
            "apiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}"
        );
        match parse_documents("p.yaml", &text) {
            Ok(mut resources) => match resources.remove(0) {
                crate::Resource::EventPolicy(policy) => Ok(policy),
                other => Err(format!("{other:?}")),
            },
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn knatives_example_applies_and_resolves_its_subjects() {
        let policy = policy(
            "  to:\n    - ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: my-broker}\n    - selector: {apiVersion: eventing.knative.dev/v1, kind: Broker, matchLabels: {app: special}}\n  from:\n    - ref: {apiVersion: sources.knative.dev/v1, kind: PingSource, name: my-source, namespace: other}\n    - sub: system:serviceaccount:shop:trusted-app\n    - sub: 'system:serviceaccount:shop:other-*'\n  filters:\n    - cesql: \"type IN ('order.created')\"\n    - exact: {type: order.created}\n",
        )
        .unwrap();
        assert_eq!(
            policy.subjects(),
            [
                "system:serviceaccount:other:my-source-oidc-sources.knative.dev-pingsource",
                "system:serviceaccount:shop:trusted-app",
                "system:serviceaccount:shop:other-*",
            ]
        );
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (
                "  from: [{sub: 'a*b'}]\n",
                "spec.from[0].sub",
                "only allowed as suffix",
            ),
            ("  from: [{sub: ''}]\n", "spec.from[0].sub", "is empty"),
            ("  from: [{}]\n", "spec.from[0]", "needs `sub` or `ref`"),
            (
                "  from: [{sub: a, ref: {apiVersion: sources.knative.dev/v1, kind: PingSource, name: x}}]\n",
                "spec.from[0]",
                "sets both",
            ),
            (
                "  from: [{ref: {apiVersion: v1, kind: Pod, name: x}}]\n",
                "spec.from[0].ref.kind",
                "does not send events",
            ),
            (
                "  from: [{ref: {apiVersion: sources.kinetic.dev/v1alpha1, kind: PingSource, name: x}}]\n",
                "spec.from[0].ref.apiVersion",
                "does not serve kind",
            ),
            (
                "  to: [{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: x}}]\n",
                "spec.to[0].kind",
                "does not receive events",
            ),
            ("  to: [{}]\n", "spec.to[0]", "needs `ref` or `selector`"),
            (
                "  to: [{selector: {apiVersion: eventing.knative.dev/v1, kind: Broker, matchExpressions: [{key: a, operator: Is}]}}]\n",
                "spec.to[0].selector.matchExpressions[0].operator",
                "not an operator",
            ),
            (
                "  filters: [{}]\n",
                "spec.filters[0]",
                "the filter is empty",
            ),
        ];
        for (spec, path, message) in cases {
            let error = policy(spec).unwrap_err();
            assert!(
                error.contains(&format!("{path}: ")) && error.contains(message),
                "{spec}: {error}"
            );
        }
    }

    #[test]
    fn subjects_match_exactly_ignoring_case_or_by_a_trailing_star() {
        assert!(subject_matches(
            "system:serviceaccount:a:b",
            "SYSTEM:serviceaccount:a:B"
        ));
        assert!(!subject_matches(
            "system:serviceaccount:a:b",
            "system:serviceaccount:a:bc"
        ));
        assert!(subject_matches(
            "system:serviceaccount:a:*",
            "system:serviceaccount:a:x"
        ));
        assert!(!subject_matches(
            "system:serviceaccount:a:*",
            "system:serviceaccount:A:x"
        ));
        assert!(subject_matches("*", "anyone"));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let selector = TargetSelector {
            api_version: EVENTING_API_VERSION.into(),
            kind: "Broker".into(),
            match_labels: [("app".to_owned(), "shop".to_owned())].into(),
            match_expressions: vec![LabelRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: vec!["dev".into()],
            }],
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(selector.matches(&labels(&[("app", "shop")])));
        assert!(selector.matches(&labels(&[("app", "shop"), ("tier", "prod")])));
        assert!(!selector.matches(&labels(&[("app", "shop"), ("tier", "dev")])));
        assert!(!selector.matches(&labels(&[("app", "other")])));
    }

    #[test]
    fn audiences_and_subjects_have_knatives_format() {
        assert_eq!(
            broker_audience("Shop", "Default"),
            "eventing.knative.dev/broker/shop/default"
        );
        assert_eq!(
            subject_of(
                "sources.kinetic.dev/v1alpha1",
                "WebhookSource",
                "shop",
                "github"
            ),
            "system:serviceaccount:shop:github-oidc-sources.kinetic.dev-webhooksource"
        );
    }
}
