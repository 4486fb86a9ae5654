//! Kubernetes-style object metadata and references shared by every resource kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The namespace a resource lands in when `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `metadata` of a resource. Fields Kubernetes adds on the server side (`uid`, `resourceVersion`,
/// `creationTimestamp`, …) are accepted and ignored so that `kubectl get -o yaml` output applies as is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Name of the resource, a DNS-1123 label (lower-case letters, digits and `-`, at most 63).
    #[serde(default)]
    pub name: String,
    /// Namespace; `default` when absent.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Bumped by kinetic each time the resource's spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing)]
    pub uid: Option<String>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing)]
    pub finalizers: Option<Vec<String>>,
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<serde_json::Value>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

impl ObjectMeta {
    pub fn validate(&self) -> Result<(), Error> {
        validate_dns_label(&self.name).map_err(|e| e.under("metadata.name"))?;
        validate_dns_label(&self.namespace).map_err(|e| e.under("metadata.namespace"))?;
        Ok(())
    }
}

/// Checks a DNS-1123 label, the shape Kubernetes requires of names and namespaces.
pub fn validate_dns_label(value: &str) -> Result<(), Error> {
    let hint = "use lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters";
    if value.is_empty() {
        return Err(Error::new("", "is required").with_hint(hint));
    }
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::new("", format!("`{value}` is not a valid name")).with_hint(hint))
    }
}

/// A reference to another resource (Knative's `KReference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// Where events go (Knative's `Destination`): a `ref` to a resource, optionally with a relative `uri`
/// appended to its address, or an absolute `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// PEM CA certificates trusted for this destination (accepted for compatibility).
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// OIDC audience (accepted for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Resource kinds a destination `ref` may name.
pub const DESTINATION_KINDS: &[&str] = &["Broker", "Service"];

/// The URL at which the gateway serves a Service (or one of its traffic tags):
/// `http://{tag-}{service}.{namespace}.{domain}:{port}`. The dispatcher and sources resolve a
/// Service destination to it; the serving controller shows it.
pub fn service_url(
    service: &str,
    namespace: &str,
    tag: Option<&str>,
    domain: &str,
    port: u16,
) -> String {
    match tag {
        Some(tag) => format!("http://{tag}-{service}.{namespace}.{domain}:{port}"),
        None => format!("http://{service}.{namespace}.{domain}:{port}"),
    }
}

impl Destination {
    pub fn validate(&self) -> Result<(), Error> {
        match (&self.reference, &self.uri) {
            (None, None) => Err(Error::new("", "needs `ref` or `uri`").with_hint(
                "set `uri: http://host/path` for an outside endpoint, or `ref: {kind: Service, name: NAME}`",
            )),
            (Some(reference), uri) => {
                if !DESTINATION_KINDS.contains(&reference.kind.as_str()) {
                    return Err(Error::new(
                        "ref.kind",
                        format!("kind `{}` cannot receive events", reference.kind),
                    )
                    .with_hint(format!("use one of: {}", DESTINATION_KINDS.join(", "))));
                }
                validate_dns_label(&reference.name).map_err(|e| e.under("ref.name"))?;
                if let Some(namespace) = &reference.namespace {
                    validate_dns_label(namespace).map_err(|e| e.under("ref.namespace"))?;
                }
                if let Some(uri) = uri
                    && (uri.contains("://") || uri.starts_with("//"))
                {
                    return Err(Error::new("uri", format!("`{uri}` must be relative when `ref` is set"))
                        .with_hint("write a path such as `/hooks/orders`; it is appended to the ref's address"));
                }
                Ok(())
            }
            (None, Some(uri)) => validate_absolute_url(uri).map_err(|e| e.under("uri")),
        }
    }
}

/// Checks that `uri` is an absolute `http` or `https` URL with a host.
pub fn validate_absolute_url(uri: &str) -> Result<(), Error> {
    let hint = "write an absolute URL such as `http://127.0.0.1:9000/events`";
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(Error::new("", format!("`{uri}` is not an absolute URL")).with_hint(hint));
    };
    if scheme != "http" && scheme != "https" {
        return Err(Error::new("", format!("scheme `{scheme}` is not supported")).with_hint(hint));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(Error::new("", format!("`{uri}` has no host")).with_hint(hint));
    }
    if uri.contains(char::is_whitespace) {
        return Err(Error::new("", format!("`{uri}` contains white space")).with_hint(hint));
    }
    Ok(())
}

/// `url` as logs and status show it: a password in its userinfo, the values of query parameters
/// that name a credential (`password`, `token`, `key`, `secret`, `sig`, `auth`, `code`, …) and path
/// segments that look like a capability (20 or more letters, digits, `-` or `_`, with both letters
/// and digits, as Slack's and Discord's webhook URLs carry) become `***`. Text that is not a URL
/// is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let lower = key.to_ascii_lowercase();
                let secret = [
                    "pass",
                    "pwd",
                    "token",
                    "secret",
                    "sig",
                    "key",
                    "auth",
                    "credential",
                    "code",
                ]
                .iter()
                .any(|word| lower.contains(word));
                let value = if secret {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if let Some(segments) = parsed.path_segments() {
        let capability = |segment: &str| {
            segment.len() >= 20
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && segment.bytes().any(|b| b.is_ascii_digit())
                && segment.bytes().any(|b| b.is_ascii_alphabetic())
        };
        let masked: Vec<String> = segments
            .map(|segment| {
                if capability(segment) {
                    "***".to_owned()
                } else {
                    segment.to_owned()
                }
            })
            .collect();
        parsed.set_path(&masked.join("/"));
    }
    parsed.to_string().replace("%2A%2A%2A", "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets_in_logs() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/kinetic",
                "postgres://app:***@db:5432/kinetic",
            ),
            (
                "postgres://db/kinetic?user=app&password=s3cret&sslmode=verify-full",
                "postgres://db/kinetic?user=app&password=***&sslmode=verify-full",
            ),
            (
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX1",
                "https://hooks.slack.com/services/T00000000/B00000000/***",
            ),
            (
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37fb687f",
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=***",
            ),
            (
                "http://billing.example/hooks/orders-shipped-v2",
                "http://billing.example/hooks/orders-shipped-v2",
            ),
            ("sqlite:///tmp/state.db", "sqlite:///tmp/state.db"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "default", "my-broker-1", &"a".repeat(63)] {
            assert!(validate_dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations() {
        let uri = |u: &str| Destination {
            reference: None,
            uri: Some(u.into()),
            ca_certs: None,
            audience: None,
        };
        assert!(uri("http://127.0.0.1:8080/x").validate().is_ok());
        assert!(uri("https://example.com").validate().is_ok());
        assert_eq!(uri("/x").validate().unwrap_err().path, "uri");
        assert!(
            uri("ftp://x")
                .validate()
                .unwrap_err()
                .message
                .contains("scheme")
        );
        assert!(
            uri("http:///x")
                .validate()
                .unwrap_err()
                .message
                .contains("no host")
        );
        let none = Destination {
            uri: None,
            ..uri("")
        };
        assert!(
            none.validate()
                .unwrap_err()
                .message
                .contains("needs `ref` or `uri`")
        );
        let reference = Destination {
            reference: Some(KReference {
                kind: "Pod".into(),
                name: "p".into(),
                namespace: None,
                api_version: None,
            }),
            ..none
        };
        assert_eq!(reference.validate().unwrap_err().path, "ref.kind");
    }
}
