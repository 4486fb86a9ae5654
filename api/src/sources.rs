//! Source kinds: `sources.kinetic.dev/v1alpha1` S3Source and WebhookSource, Knative's
//! `sources.knative.dev/v1` PingSource and `sources.knative.dev/v1beta1` KafkaSource. Each turns
//! something outside kinetic into CloudEvents for its `spec.sink`.
//!
//! Secrets are never written inline: a [`SecretRef`] names an environment variable, a file, or a
//! Kubernetes-style `secretKeyRef` (a file `{name}/{key}` in the secrets directory), so resource
//! files can be committed and stored without the secrets in them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;
use crate::eventing::validate_attribute_name;
use crate::meta::{Destination, ObjectMeta};

mod kafka;
mod ping;
mod s3;
pub mod template;
mod webhook;

pub use kafka::{
    InitialOffset, KAFKA_SOURCES_API_VERSION, KafkaNet, KafkaOrdering, KafkaSasl, KafkaSource,
    KafkaSourceSpec, KafkaTls, SaslMechanism, SaslType,
};
pub use ping::{PingSource, PingSourceSpec};
pub use s3::{
    DEFAULT_POLL_INTERVAL, S3Credentials, S3Mode, S3Notifications, S3Poll, S3Source, S3SourceSpec,
    S3WebhookNotifications, SnsVerify, SqsNotifications, validate_bucket,
};
pub use template::Template;
pub use webhook::{
    BearerVerify, DEFAULT_WEBHOOK_TOLERANCE, GithubVerify, StandardWebhooksVerify, WebhookSource,
    WebhookSourceSpec, WebhookVerify,
};

/// apiVersion of kinetic's own source kinds.
pub const SOURCES_API_VERSION: &str = "sources.kinetic.dev/v1alpha1";
/// apiVersion of Knative's source kinds (PingSource).
pub const KNATIVE_SOURCES_API_VERSION: &str = "sources.knative.dev/v1";

/// CloudEvents attributes a `ceOverrides` extension may not replace.
pub const RESERVED_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

/// Where a secret comes from: `{env: NAME}`, `{file: PATH}` or `{secretKeyRef: {name, key}}`.
/// Inline values are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SecretRef {
    /// The value of an environment variable of the kinetic process.
    Env(String),
    /// The contents of a file, surrounding white space removed (a trailing newline is common).
    File(String),
    /// Kubernetes' form: key `key` of the secret `name`, kept as the file `{name}/{key}` in the
    /// secrets directory (the layout of a Kubernetes secret mounted as a volume).
    SecretKeyRef(SecretKeySelector),
}

/// `secretKeyRef`: one key of a named secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
    /// For a function's `env`: a missing secret leaves the variable unset instead of failing the
    /// instance's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

impl SecretKeySelector {
    /// The file, relative to the secrets directory, that holds this key.
    pub fn relative_path(&self) -> String {
        format!("{}/{}", self.name, self.key)
    }

    /// `name` is a Kubernetes object name and `key` a Kubernetes secret key, so the pair is a
    /// path of two plain components inside the secrets directory.
    pub fn validate(&self) -> Result<(), Error> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 253
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && self.name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && self.name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok {
            return Err(Error::new(
                "name",
                format!("`{}` is not a secret name", self.name),
            )
            .with_hint("use lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit (at most 253)"));
        }
        let key_ok = !self.key.is_empty()
            && self.key.len() <= 253
            && self.key != "."
            && self.key != ".."
            && self
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !key_ok {
            return Err(
                Error::new("key", format!("`{}` is not a secret key", self.key)).with_hint(
                    "use letters, digits, `-`, `_` and `.` (not `.` or `..`, at most 253)",
                ),
            );
        }
        Ok(())
    }
}

/// [`SecretRef`] as written: exactly one of its fields.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretRefFields {
    /// An environment variable of the kinetic process.
    env: Option<String>,
    /// A file, surrounding white space removed.
    file: Option<String>,
    /// One key of a named secret (a file `{name}/{key}` in the secrets directory).
    secret_key_ref: Option<SecretKeySelector>,
}

impl schemars::JsonSchema for SecretRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SecretRefFields::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.is_string() {
            return Err(D::Error::custom(
                "an inline secret is not accepted; write `{env: NAME}`, `{file: PATH}` or `{secretKeyRef: {name: NAME, key: KEY}}` so the secret stays out of the resource",
            ));
        }
        let fields: SecretRefFields = serde_json::from_value(value).map_err(|error| {
            D::Error::custom(format!(
                "a secret is `{{env: NAME}}`, `{{file: PATH}}` or `{{secretKeyRef: {{name: NAME, key: KEY}}}}`: {error}"
            ))
        })?;
        match (fields.env, fields.file, fields.secret_key_ref) {
            (Some(env), None, None) => Ok(SecretRef::Env(env)),
            (None, Some(file), None) => Ok(SecretRef::File(file)),
            (None, None, Some(selector)) => Ok(SecretRef::SecretKeyRef(selector)),
            _ => Err(D::Error::custom(
                "a secret needs exactly one of `env`, `file` or `secretKeyRef`",
            )),
        }
    }
}

impl std::fmt::Display for SecretRef {
    /// Where the secret is, never its value: `env NAME`, `file PATH`, `secret NAME key KEY`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env {name}"),
            SecretRef::File(path) => write!(f, "file {path}"),
            SecretRef::SecretKeyRef(selector) => {
                write!(f, "secret {} key {}", selector.name, selector.key)
            }
        }
    }
}

impl SecretRef {
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            SecretRef::Env(name) => {
                let ok = name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if ok {
                    Ok(())
                } else {
                    Err(Error::new(
                        "env",
                        format!("`{name}` is not an environment variable name"),
                    )
                    .with_hint("use letters, digits and `_`, not starting with a digit"))
                }
            }
            SecretRef::File(path) if path.trim().is_empty() => {
                Err(Error::new("file", "is empty").with_hint("give the path of the secret's file"))
            }
            SecretRef::File(_) => Ok(()),
            SecretRef::SecretKeyRef(selector) => {
                selector.validate().map_err(|e| e.under("secretKeyRef"))?;
                if selector.optional == Some(true) {
                    return Err(Error::new("secretKeyRef.optional", "is true for a secret kinetic needs")
                        .with_hint("remove `optional`; only a function's `env` may name a secret that is missing"));
                }
                Ok(())
            }
        }
    }
}

/// Knative's `CloudEventOverrides`: extension attributes set on every event a source emits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudEventOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
}

impl CloudEventOverrides {
    pub fn validate(&self) -> Result<(), Error> {
        for name in self.extensions.keys() {
            let path = format!("extensions[{name}]");
            validate_attribute_name(name).map_err(|e| e.under(&path))?;
            if RESERVED_ATTRIBUTES.contains(&name.as_str()) {
                return Err(
                    Error::new(path, format!("`{name}` is not an extension attribute")).with_hint(
                        "ceOverrides only adds extensions; the source sets the core attributes",
                    ),
                );
            }
        }
        Ok(())
    }
}

pub(crate) fn validate_common(
    metadata: &ObjectMeta,
    sink: &Destination,
    overrides: Option<&CloudEventOverrides>,
) -> Result<(), Error> {
    metadata.validate()?;
    sink.validate().map_err(|e| e.under("spec.sink"))?;
    if let Some(overrides) = overrides {
        overrides
            .validate()
            .map_err(|e| e.under("spec.ceOverrides"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::kind::Kind;
    use crate::resource::{Resource, parse_documents};

    #[test]
    fn the_registry_names_every_source_kind_the_parser_accepts() {
        for &kind in Kind::SOURCES {
            assert_eq!(
                kind.plural(),
                format!("{}s", kind.as_str().to_ascii_lowercase())
            );
            // Known to the parser under its apiVersion: what is wrong is the missing spec, not the
            // kind or the version.
            let text = format!(
                "apiVersion: {}\nkind: {}\nmetadata: {{name: x}}\n",
                kind.api_version(),
                kind.as_str()
            );
            let error = parse_documents("k.yaml", &text).unwrap_err().to_string();
            assert!(
                !error.contains("is not known") && !error.contains("does not serve"),
                "{}: {error}",
                kind.as_str()
            );
            let wrong = format!(
                "apiVersion: example.com/v1\nkind: {}\nmetadata: {{name: x}}\n",
                kind.as_str()
            );
            let error = parse_documents("k.yaml", &wrong).unwrap_err().to_string();
            assert!(
                error.contains(kind.api_version()),
                "{}: {error}",
                kind.as_str()
            );
        }
    }

    const S3: &str = r#"
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {name: photos, namespace: default}
spec:
  bucket: photos
  endpoint: http://127.0.0.1:9000
  region: us-east-1
  forcePathStyle: true
  credentials:
    accessKeyId: {env: AWS_ACCESS_KEY_ID}
    secretAccessKey: {file: /run/secrets/aws}
  eventTypes: ["ObjectCreated:*", "s3:ObjectRemoved:Delete"]
  prefix: uploads/
  suffix: .jpg
  notifications:
    sqs: {queueUrl: "http://127.0.0.1:9000/123456789012/photos-events"}
  sink:
    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
  ceOverrides: {extensions: {team: photos}}
"#;

    const WEBHOOK: &str = r#"
apiVersion: sources.kinetic.dev/v1alpha1
kind: WebhookSource
metadata: {name: github}
spec:
  verify:
    github: {secret: {env: GITHUB_WEBHOOK_SECRET}}
  type: "com.github.{header:X-GitHub-Event}"
  source: "{json:/repository/html_url}"
  id: "{header:X-GitHub-Delivery}"
  sink:
    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
"#;

    const PING: &str = r#"
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: every-minute}
spec:
  schedule: "*/1 * * * *"
  timezone: Europe/Madrid
  contentType: application/json
  data: '{"message": "hello"}'
  sink: {uri: "http://127.0.0.1:9000/"}
  ceOverrides: {extensions: {a: b}}
"#;

    #[test]
    fn ping_schedules_take_cron_descriptors() {
        for schedule in ["@hourly", "@daily", "CRON_TZ=Europe/Madrid @weekly"] {
            let text = PING
                .replace("\"*/1 * * * *\"", &format!("\"{schedule}\""))
                .replace("  timezone: Europe/Madrid\n", "");
            assert!(parse_documents("ping.yaml", &text).is_ok(), "{schedule}");
        }
    }

    #[test]
    fn parses_the_three_kinds_and_round_trips() {
        let text = format!("{S3}---{WEBHOOK}---{PING}");
        let resources = parse_documents("sources.yaml", &text).expect("valid");
        assert_eq!(resources.len(), 3);
        let Resource::S3Source(s3) = &resources[0] else {
            panic!("not an S3Source")
        };
        assert!(matches!(s3.mode().unwrap(), super::S3Mode::Sqs(_)));
        assert_eq!(
            s3.spec.credentials.as_ref().unwrap().secret_access_key,
            super::SecretRef::File("/run/secrets/aws".into())
        );
        let Resource::WebhookSource(webhook) = &resources[1] else {
            panic!("not a WebhookSource")
        };
        assert_eq!(webhook.metadata.namespace, "default");
        assert_eq!(resources[1].key().kind, crate::Kind::WebhookSource);
        let Resource::PingSource(ping) = &resources[2] else {
            panic!("not a PingSource")
        };
        assert_eq!(
            ping.spec.schedule_parts(),
            (Some("Europe/Madrid"), "*/1 * * * *")
        );
        assert_eq!(
            ping.spec.data_bytes().unwrap(),
            br#"{"message": "hello"}"#.to_vec()
        );
        for resource in &resources {
            let again = Resource::from_value(resource.to_json()).expect("round trip");
            assert_eq!(&again, resource);
        }
    }

    #[test]
    fn accepts_the_other_modes_and_forms() {
        let cases = [
            S3.replace(
                "  notifications:\n    sqs: {queueUrl: \"http://127.0.0.1:9000/123456789012/photos-events\"}\n",
                "  notifications: {webhook: {verify: {bearer: {token: {env: MINIO_TOKEN}}}}}\n",
            ),
            S3.replace(
                "  notifications:\n    sqs: {queueUrl: \"http://127.0.0.1:9000/123456789012/photos-events\"}\n",
                "  notifications: {webhook: {insecure: true}}\n",
            ),
            S3.replace(
                "  notifications:\n    sqs: {queueUrl: \"http://127.0.0.1:9000/123456789012/photos-events\"}\n",
                "  poll: {interval: PT5S, emitExisting: true}\n",
            ),
            WEBHOOK.replace(
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "standardWebhooks: {secrets: [{env: WH_SECRET}, {file: /run/secrets/old}], tolerance: PT5M}",
            ),
            WEBHOOK.replace(
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "bearer: {token: {env: HOOK_TOKEN}}",
            ),
            PING.replace("  timezone: Europe/Madrid\n", "")
                .replace("*/1 * * * *", "CRON_TZ=America/New_York 0 9 * * MON-FRI"),
            PING.replace(
                "data: '{\"message\": \"hello\"}'",
                "dataBase64: 'aGVsbG8='",
            ),
        ];
        for text in &cases {
            parse_documents("ok.yaml", text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        }
        let poll = parse_documents("ok.yaml", &cases[2]).unwrap();
        let Resource::S3Source(s3) = &poll[0] else {
            panic!()
        };
        let super::S3Mode::Poll(poll) = s3.mode().unwrap() else {
            panic!()
        };
        assert_eq!(poll.interval(), std::time::Duration::from_secs(5));
        let ping = parse_documents("ok.yaml", &cases[5]).unwrap();
        let Resource::PingSource(ping) = &ping[0] else {
            panic!()
        };
        assert_eq!(
            ping.spec.schedule_parts(),
            (Some("America/New_York"), "0 9 * * MON-FRI")
        );
    }

    #[test]
    fn refuses_mistakes_with_location_and_hint() {
        const SQS: &str = "  notifications:\n    sqs: {queueUrl: \"http://127.0.0.1:9000/123456789012/photos-events\"}\n";
        // (document, replace, with, path, message)
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            (
                S3,
                SQS,
                "  notifications: {webhook: {}}\n",
                "spec.notifications.webhook",
                "needs `verify` or `sns`",
            ),
            (
                S3,
                SQS,
                "  notifications: {webhook: {insecure: true, sns: {topicArns: ['arn:aws:sns:us-east-1:1:t']}}}\n",
                "spec.notifications.webhook.insecure",
                "together with",
            ),
            (
                WEBHOOK,
                "  verify:\n    github: {secret: {env: GITHUB_WEBHOOK_SECRET}}\n",
                "",
                "spec.verify",
                "is required",
            ),
            (
                S3,
                "bucket: photos",
                "bucket: Photos",
                "spec.bucket",
                "lower-case",
            ),
            (S3, "bucket: photos", "bucket: ab", "spec.bucket", "3 to 63"),
            (
                S3,
                "bucket: photos",
                "bucket: a..b",
                "spec.bucket",
                "next to",
            ),
            (
                S3,
                "bucket: photos",
                "bucket: -ab",
                "spec.bucket",
                "start and end",
            ),
            (
                S3,
                "bucket: photos",
                "bucket: 192.168.1.1",
                "spec.bucket",
                "IP address",
            ),
            (
                S3,
                "endpoint: http://127.0.0.1:9000",
                "endpoint: 127.0.0.1:9000",
                "spec.endpoint",
                "not an absolute URL",
            ),
            (
                S3,
                "{env: AWS_ACCESS_KEY_ID}",
                "AKIAEXAMPLE",
                "spec.credentials.accessKeyId",
                "inline secret",
            ),
            (
                S3,
                "{env: AWS_ACCESS_KEY_ID}",
                "{env: A, file: /b}",
                "spec.credentials.accessKeyId",
                "exactly one of `env`, `file` or `secretKeyRef`",
            ),
            (
                S3,
                "{env: AWS_ACCESS_KEY_ID}",
                "{value: x}",
                "spec.credentials.accessKeyId",
                "unknown field `value`",
            ),
            (
                S3,
                "{env: AWS_ACCESS_KEY_ID}",
                "{env: 1KEY}",
                "spec.credentials.accessKeyId.env",
                "environment variable name",
            ),
            (
                S3,
                "\"ObjectCreated:*\"",
                "\"ObjectMade:*\"",
                "spec.eventTypes[0]",
                "not an S3 event type",
            ),
            (
                S3,
                "\"ObjectCreated:*\"",
                "\"ObjectCreated\"",
                "spec.eventTypes[0]",
                "not an S3 event type",
            ),
            (S3, SQS, "", "spec", "no notification mode"),
            (
                S3,
                SQS,
                "  notifications: {}\n",
                "spec.notifications",
                "names no notification mode",
            ),
            (
                S3,
                SQS,
                "  notifications: {sqs: {queueUrl: 'http://q'}, webhook: {}}\n",
                "spec",
                "notifications.sqs, notifications.webhook",
            ),
            (
                S3,
                SQS,
                "  notifications: {webhook: {}}\n  poll: {}\n",
                "spec",
                "notifications.webhook, poll",
            ),
            (
                S3,
                SQS,
                "  notifications: {sqs: {queueUrl: 'queue'}}\n",
                "spec.notifications.sqs.queueUrl",
                "absolute",
            ),
            (
                S3,
                SQS,
                "  poll: {interval: PT0.5S}\n",
                "spec.poll.interval",
                "shorter than one second",
            ),
            (
                S3,
                SQS,
                "  notifications: {webhook: {sns: {topicArns: []}}}\n",
                "spec.notifications.webhook.sns.topicArns",
                "is empty",
            ),
            (
                S3,
                SQS,
                "  notifications: {webhook: {sns: {topicArns: ['arn:aws:sqs:us-east-1:1:q']}}}\n",
                "spec.notifications.webhook.sns.topicArns[0]",
                "not an SNS topic ARN",
            ),
            (
                S3,
                SQS,
                "  poll: {interval: 5s}\n",
                "spec.poll.interval",
                "ISO-8601",
            ),
            (
                S3,
                SQS,
                "  poll: {intervall: PT5S}\n",
                "spec.poll.intervall",
                "unknown field `intervall`",
            ),
            (
                S3,
                "kind: Broker, name: default",
                "kind: Pod, name: default",
                "spec.sink.ref.kind",
                "cannot receive events",
            ),
            (
                S3,
                "{team: photos}",
                "{Team: photos}",
                "spec.ceOverrides.extensions[Team]",
                "attribute name",
            ),
            (
                S3,
                "{team: photos}",
                "{type: photos}",
                "spec.ceOverrides.extensions[type]",
                "not an extension",
            ),
            (
                WEBHOOK,
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "github: {secret: {env: A}}\n    bearer: {token: {env: B}}",
                "spec.verify",
                "github, bearer",
            ),
            (
                WEBHOOK,
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "{}",
                "spec.verify",
                "names no verification",
            ),
            (
                WEBHOOK,
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "github: {secret: s3cr3t}",
                "spec.verify.github.secret",
                "inline secret",
            ),
            (
                WEBHOOK,
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "standardWebhooks: {secrets: []}",
                "spec.verify.standardWebhooks.secrets",
                "is empty",
            ),
            (
                WEBHOOK,
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "standardWebhooks: {secrets: [{file: ' '}]}",
                "spec.verify.standardWebhooks.secrets[0].file",
                "is empty",
            ),
            (
                WEBHOOK,
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "standardWebhooks: {secrets: [{env: S}], tolerance: 5m}",
                "spec.verify.standardWebhooks.tolerance",
                "ISO-8601",
            ),
            (
                WEBHOOK,
                "github: {secret: {env: GITHUB_WEBHOOK_SECRET}}",
                "bearer: {token: {env: ''}}",
                "spec.verify.bearer.token.env",
                "environment variable name",
            ),
            (
                WEBHOOK,
                "com.github.{header:X-GitHub-Event}",
                "com.github.{event}",
                "spec.type",
                "not a placeholder",
            ),
            (
                WEBHOOK,
                "{json:/repository/html_url}",
                "{json:repository}",
                "spec.source",
                "JSON pointer",
            ),
            (
                WEBHOOK,
                "{header:X-GitHub-Delivery}",
                "{header:X-GitHub-Delivery",
                "spec.id",
                "never closed",
            ),
            (
                WEBHOOK,
                "\"{header:X-GitHub-Delivery}\"",
                "''",
                "spec.id",
                "is empty",
            ),
            (
                PING,
                "*/1 * * * *",
                "*/1 * * *",
                "spec.schedule",
                "4 fields, not 5",
            ),
            (
                PING,
                "*/1 * * * *",
                "@every 1m",
                "spec.schedule",
                "fields, not 5",
            ),
            (
                PING,
                "*/1 * * * *",
                "*/1 * * * * *",
                "spec.schedule",
                "6 fields",
            ),
            (
                PING,
                "*/1 * * * *",
                "*/1 * * * $",
                "spec.schedule",
                "not a cron field",
            ),
            (
                PING,
                "*/1 * * * *",
                "CRON_TZ=UTC */1 * * * *",
                "spec.timezone",
                "CRON_TZ",
            ),
            (
                PING,
                "Europe/Madrid",
                "Europe/../etc",
                "spec.timezone",
                "time zone",
            ),
            (
                PING,
                "application/json",
                "json",
                "spec.contentType",
                "media type",
            ),
            (
                PING,
                "data: '{\"message\": \"hello\"}'",
                "data: x\n  dataBase64: eA==",
                "spec",
                "both `data` and `dataBase64`",
            ),
            (
                PING,
                "data: '{\"message\": \"hello\"}'",
                "dataBase64: '!!'",
                "spec.dataBase64",
                "base64",
            ),
            (
                PING,
                "sink: {uri: \"http://127.0.0.1:9000/\"}",
                "sink: {}",
                "spec.sink",
                "needs `ref` or `uri`",
            ),
            (
                PING,
                "{a: b}",
                "{time: b}",
                "spec.ceOverrides.extensions[time]",
                "not an extension",
            ),
            (
                PING,
                "schedule:",
                "scheduel:",
                "spec.scheduel",
                "unknown field `scheduel`",
            ),
        ];
        for (document, from, to, path, message) in cases {
            assert!(document.contains(from), "{from} not in the document");
            let text = document.replace(from, to);
            let error = parse_documents("bad.yaml", &text).expect_err(&text);
            assert_eq!(error.path, *path, "{to}: {error}");
            assert!(error.message.contains(message), "{to}: {error}");
            assert!(error.hint.is_some(), "{to}: {error}");
            assert!(error.resource.is_some(), "{to}: {error}");
        }
    }

    #[test]
    fn refuses_a_source_kind_under_the_wrong_api_version() {
        let text = PING.replace("sources.knative.dev/v1", "sources.kinetic.dev/v1alpha1");
        let error = parse_documents("bad.yaml", &text).unwrap_err();
        assert_eq!(error.path, "apiVersion");
        assert!(error.hint.unwrap().contains("sources.knative.dev/v1"));
    }
}
