//! Source kinds: `sources.kinetic.dev/v1alpha1` S3Source and WebhookSource, and Knative's
//! `sources.knative.dev/v1` PingSource. Each turns something outside kinetic into CloudEvents for its
//! `spec.sink`.
//!
//! Secrets are never written inline: a [`SecretRef`] names an environment variable or a file, so
//! resource files can be committed and stored without the secrets in them.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration;
use crate::error::Error;
use crate::eventing::validate_attribute_name;
use crate::meta::{Destination, ObjectMeta, validate_absolute_url};

pub mod template;

pub use template::Template;

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

/// Where a secret comes from: `{env: NAME}` or `{file: PATH}`. Inline values are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SecretRef {
    /// The value of an environment variable of the kinetic process.
    Env(String),
    /// The contents of a file, surrounding white space removed (a trailing newline is common).
    File(String),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            env: Option<String>,
            file: Option<String>,
        }
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.is_string() {
            return Err(D::Error::custom(
                "an inline secret is not accepted; write `{env: NAME}` or `{file: PATH}` so the secret stays out of the resource",
            ));
        }
        let fields: Fields = serde_json::from_value(value).map_err(|error| {
            D::Error::custom(format!(
                "a secret is `{{env: NAME}}` or `{{file: PATH}}`: {error}"
            ))
        })?;
        match (fields.env, fields.file) {
            (Some(env), None) => Ok(SecretRef::Env(env)),
            (None, Some(file)) => Ok(SecretRef::File(file)),
            _ => Err(D::Error::custom(
                "a secret needs exactly one of `env` or `file`",
            )),
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
        }
    }
}

/// Knative's `CloudEventOverrides`: extension attributes set on every event a source emits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

fn validate_common(
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

// ---------------------------------------------------------------------------------------------
// S3Source

/// An S3Source turns an S3 (or S3-compatible) bucket's object notifications into CloudEvents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Source {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S3SourceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3SourceSpec {
    /// Name of the bucket whose objects are watched.
    pub bucket: String,
    /// Endpoint of an S3-compatible store (MinIO, COS, …); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (most S3-compatible stores).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_path_style: bool,
    /// Access keys; the default AWS credential chain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<S3Credentials>,
    /// Notification types to emit, e.g. `ObjectCreated:*`; every type when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Only objects whose key starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only objects whose key ends with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// How the store tells kinetic about changes; exclusive with `poll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<S3Notifications>,
    /// List the bucket periodically instead of receiving notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<S3Poll>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Credentials {
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretRef>,
}

/// Exactly one of `sqs` or `webhook`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Notifications {
    /// Read notifications from an SQS (or compatible) queue the bucket publishes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsNotifications>,
    /// The store POSTs notifications to `/sources/{namespace}/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<S3WebhookNotifications>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqsNotifications {
    pub queue_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3WebhookNotifications {
    /// How pushed notifications are authenticated (MinIO sends a bearer token); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<WebhookVerify>,
}

/// The default interval between two listings of a polled bucket.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Poll {
    /// ISO-8601 time between listings, at least `PT1S`; `PT10S` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Emit an event for each object already in the bucket at the first listing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emit_existing: bool,
}

impl S3Poll {
    /// The interval; call after validation (an invalid interval falls back to the default).
    pub fn interval(&self) -> Duration {
        self.interval
            .as_deref()
            .and_then(|text| duration::parse(text).ok())
            .unwrap_or(DEFAULT_POLL_INTERVAL)
    }
}

/// How an S3Source learns about changes, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Mode<'a> {
    Sqs(&'a SqsNotifications),
    Webhook(&'a S3WebhookNotifications),
    Poll(&'a S3Poll),
}

/// Notification kinds an `eventTypes` entry may name, with the sub-kinds each has.
const S3_EVENT_TYPES: &[(&str, &[&str])] = &[
    (
        "ObjectCreated",
        &["*", "Put", "Post", "Copy", "CompleteMultipartUpload"],
    ),
    ("ObjectRemoved", &["*", "Delete", "DeleteMarkerCreated"]),
    ("ObjectRestore", &["*", "Post", "Completed", "Delete"]),
    ("ObjectTagging", &["*", "Put", "Delete"]),
    ("ObjectAcl", &["Put"]),
];

impl S3Source {
    pub fn validate(&self) -> Result<(), Error> {
        let spec = &self.spec;
        validate_common(&self.metadata, &spec.sink, spec.ce_overrides.as_ref())?;
        validate_bucket(&spec.bucket).map_err(|e| e.under("spec.bucket"))?;
        if let Some(endpoint) = &spec.endpoint {
            validate_absolute_url(endpoint).map_err(|e| e.under("spec.endpoint"))?;
        }
        if let Some(region) = &spec.region
            && (region.is_empty()
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(
                Error::new("spec.region", format!("`{region}` is not a region")).with_hint(
                    "e.g. `us-east-1`; S3-compatible stores often accept any, such as `us-east-1`",
                ),
            );
        }
        if let Some(credentials) = &spec.credentials {
            for (name, secret) in [
                ("accessKeyId", Some(&credentials.access_key_id)),
                ("secretAccessKey", Some(&credentials.secret_access_key)),
                ("sessionToken", credentials.session_token.as_ref()),
            ] {
                if let Some(secret) = secret {
                    secret
                        .validate()
                        .map_err(|e| e.under(&format!("spec.credentials.{name}")))?;
                }
            }
        }
        for (index, event_type) in spec.event_types.iter().enumerate() {
            validate_s3_event_type(event_type)
                .map_err(|e| e.under(&format!("spec.eventTypes[{index}]")))?;
        }
        match self.mode()? {
            S3Mode::Sqs(sqs) => validate_absolute_url(&sqs.queue_url)
                .map_err(|e| e.under("spec.notifications.sqs.queueUrl"))?,
            S3Mode::Webhook(webhook) => {
                if let Some(verify) = &webhook.verify {
                    verify
                        .validate()
                        .map_err(|e| e.under("spec.notifications.webhook.verify"))?;
                }
            }
            S3Mode::Poll(poll) => {
                if let Some(interval) = &poll.interval {
                    let parsed = duration::parse(interval).map_err(|message| {
                        Error::new("spec.poll.interval", message)
                            .with_hint("write e.g. `PT5S` or `PT1M`")
                    })?;
                    if parsed < Duration::from_secs(1) {
                        return Err(Error::new(
                            "spec.poll.interval",
                            format!("`{interval}` is shorter than one second"),
                        )
                        .with_hint("poll at most once a second, e.g. `PT5S`"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Which notification mode the source uses; an error unless exactly one is set.
    pub fn mode(&self) -> Result<S3Mode<'_>, Error> {
        let spec = &self.spec;
        let notifications = spec.notifications.as_ref();
        let mut modes = Vec::new();
        if let Some(sqs) = notifications.and_then(|n| n.sqs.as_ref()) {
            modes.push(("notifications.sqs", S3Mode::Sqs(sqs)));
        }
        if let Some(webhook) = notifications.and_then(|n| n.webhook.as_ref()) {
            modes.push(("notifications.webhook", S3Mode::Webhook(webhook)));
        }
        if let Some(poll) = &spec.poll {
            modes.push(("poll", S3Mode::Poll(poll)));
        }
        let hint = "set exactly one of `notifications: {sqs: {queueUrl: URL}}`, `notifications: {webhook: {}}` or `poll: {interval: PT10S}`";
        match modes.as_slice() {
            [(_, mode)] => Ok(*mode),
            [] if notifications.is_some() => {
                Err(Error::new("spec.notifications", "names no notification mode").with_hint(hint))
            }
            [] => Err(Error::new("spec", "no notification mode is set").with_hint(hint)),
            several => {
                let names: Vec<_> = several.iter().map(|(name, _)| *name).collect();
                Err(Error::new(
                    "spec",
                    format!("several notification modes are set: {}", names.join(", ")),
                )
                .with_hint(hint))
            }
        }
    }
}

/// Checks S3's bucket naming rules.
pub fn validate_bucket(bucket: &str) -> Result<(), Error> {
    let hint = "3 to 63 lower-case letters, digits, `.` and `-`, starting and ending with a letter or digit";
    let bad = |why: &str| Err(Error::new("", format!("`{bucket}` {why}")).with_hint(hint));
    if !(3..=63).contains(&bucket.len()) {
        return bad("is not 3 to 63 characters long");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("has characters other than lower-case letters, digits, `.` and `-`");
    }
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge(bucket.bytes().next()) || !edge(bucket.bytes().last()) {
        return bad("must start and end with a letter or digit");
    }
    if bucket.contains("..") || bucket.contains(".-") || bucket.contains("-.") {
        return bad("has `.` next to `.` or `-`");
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("looks like an IP address");
    }
    Ok(())
}

fn validate_s3_event_type(event_type: &str) -> Result<(), Error> {
    let bare = event_type.strip_prefix("s3:").unwrap_or(event_type);
    let known = bare.split_once(':').is_some_and(|(kind, detail)| {
        S3_EVENT_TYPES
            .iter()
            .any(|(k, details)| *k == kind && details.contains(&detail))
    });
    if known {
        Ok(())
    } else {
        Err(
            Error::new("", format!("`{event_type}` is not an S3 event type"))
                .with_hint("e.g. `ObjectCreated:*`, `ObjectCreated:Put` or `ObjectRemoved:*` (the `s3:` prefix is optional)"),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// WebhookSource

/// A WebhookSource accepts HTTP POSTs at `/sources/{namespace}/{name}` and turns each into a
/// CloudEvent whose data is the request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSource {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: WebhookSourceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSourceSpec {
    /// How requests are authenticated; every request is accepted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<WebhookVerify>,
    /// Template of the event's `type`, e.g. `com.github.{header:X-GitHub-Event}`;
    /// `dev.kinetic.webhook` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Template of the event's `source`; `/apis/v1/namespaces/{namespace}/webhooksources/{name}`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Template of the event's `id`; when absent the `webhook-id` or `X-GitHub-Delivery` header,
    /// else a new id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

/// Exactly one of `github`, `standardWebhooks` or `bearer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookVerify {
    /// GitHub's `X-Hub-Signature-256` HMAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubVerify>,
    /// The Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_webhooks: Option<StandardWebhooksVerify>,
    /// An `Authorization: Bearer TOKEN` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerVerify>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubVerify {
    pub secret: SecretRef,
}

/// Standard Webhooks' default tolerance between the signed timestamp and now.
pub const DEFAULT_WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StandardWebhooksVerify {
    /// Signing secrets (`whsec_…`); a request signed with any of them passes, so a secret can be
    /// rotated by adding the new one before removing the old.
    pub secrets: Vec<SecretRef>,
    /// ISO-8601 allowed difference between `webhook-timestamp` and now; `PT5M` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
}

impl StandardWebhooksVerify {
    /// The tolerance; call after validation (an invalid one falls back to the default).
    pub fn tolerance(&self) -> Duration {
        self.tolerance
            .as_deref()
            .and_then(|text| duration::parse(text).ok())
            .unwrap_or(DEFAULT_WEBHOOK_TOLERANCE)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BearerVerify {
    pub token: SecretRef,
}

impl WebhookVerify {
    pub fn validate(&self) -> Result<(), Error> {
        let set: Vec<&str> = [
            ("github", self.github.is_some()),
            ("standardWebhooks", self.standard_webhooks.is_some()),
            ("bearer", self.bearer.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let hint = "set exactly one of `github: {secret: {env: NAME}}`, `standardWebhooks: {secrets: [{env: NAME}]}` or `bearer: {token: {env: NAME}}`, or remove `verify`";
        match set.len() {
            0 => return Err(Error::new("", "names no verification").with_hint(hint)),
            1 => {}
            _ => {
                return Err(Error::new(
                    "",
                    format!("several verifications are set: {}", set.join(", ")),
                )
                .with_hint(hint));
            }
        }
        if let Some(github) = &self.github {
            github
                .secret
                .validate()
                .map_err(|e| e.under("github.secret"))?;
        }
        if let Some(bearer) = &self.bearer {
            bearer
                .token
                .validate()
                .map_err(|e| e.under("bearer.token"))?;
        }
        if let Some(standard) = &self.standard_webhooks {
            if standard.secrets.is_empty() {
                return Err(Error::new("standardWebhooks.secrets", "is empty")
                    .with_hint("add the signing secret, e.g. `secrets: [{env: WEBHOOK_SECRET}]`"));
            }
            for (index, secret) in standard.secrets.iter().enumerate() {
                secret
                    .validate()
                    .map_err(|e| e.under(&format!("standardWebhooks.secrets[{index}]")))?;
            }
            if let Some(tolerance) = &standard.tolerance {
                let parsed = duration::parse(tolerance).map_err(|message| {
                    Error::new("standardWebhooks.tolerance", message).with_hint("write e.g. `PT5M`")
                })?;
                if parsed < Duration::from_secs(1) {
                    return Err(Error::new(
                        "standardWebhooks.tolerance",
                        format!("`{tolerance}` is shorter than one second"),
                    )
                    .with_hint("clocks drift; allow at least a few seconds, e.g. `PT5M`"));
                }
            }
        }
        Ok(())
    }
}

impl WebhookSource {
    pub fn validate(&self) -> Result<(), Error> {
        let spec = &self.spec;
        validate_common(&self.metadata, &spec.sink, spec.ce_overrides.as_ref())?;
        if let Some(verify) = &spec.verify {
            verify.validate().map_err(|e| e.under("spec.verify"))?;
        }
        for (name, text) in [
            ("type", &spec.event_type),
            ("source", &spec.source),
            ("id", &spec.id),
        ] {
            let Some(text) = text else { continue };
            let path = format!("spec.{name}");
            let template = Template::parse(text).map_err(|message| {
                Error::new(path.as_str(), message)
                    .with_hint("placeholders are `{header:NAME}` and `{json:/pointer}`; `{{` and `}}` are literal braces")
            })?;
            if template.parts().is_empty() {
                return Err(Error::new(path, "is empty")
                    .with_hint("remove the field for the default, or write a template"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// PingSource

/// Knative's PingSource: an event on a cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSource {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PingSourceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSourceSpec {
    /// Five-field cron schedule, e.g. `*/1 * * * *`, optionally prefixed `CRON_TZ=Europe/Madrid `.
    pub schedule: String,
    /// IANA time zone the schedule is read in; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Media type of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Event data as text; exclusive with `dataBase64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Event data as base64 bytes; exclusive with `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

impl PingSourceSpec {
    /// The time zone (from `timezone` or a `CRON_TZ=`/`TZ=` prefix) and the five cron fields.
    pub fn schedule_parts(&self) -> (Option<&str>, &str) {
        let schedule = self.schedule.trim();
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = schedule.strip_prefix(prefix) {
                let (zone, cron) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                return (Some(zone), cron.trim());
            }
        }
        (self.timezone.as_deref(), schedule)
    }

    /// The event data as bytes; call after validation.
    pub fn data_bytes(&self) -> Option<Vec<u8>> {
        match (&self.data, &self.data_base64) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(encoded)) => BASE64_STANDARD.decode(encoded).ok(),
            (None, None) => None,
        }
    }
}

impl PingSource {
    pub fn validate(&self) -> Result<(), Error> {
        let spec = &self.spec;
        validate_common(&self.metadata, &spec.sink, spec.ce_overrides.as_ref())?;
        let schedule = spec.schedule.trim_start();
        let prefixed = schedule.starts_with("CRON_TZ=") || schedule.starts_with("TZ=");
        if prefixed && spec.timezone.is_some() {
            return Err(Error::new(
                "spec.timezone",
                "is set and the schedule has a `CRON_TZ=` prefix",
            )
            .with_hint("keep one: remove `timezone` or the prefix"));
        }
        let (zone, cron) = spec.schedule_parts();
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let cron_hint = "five fields: minute hour day-of-month month day-of-week, e.g. `*/5 * * * *`, optionally prefixed `CRON_TZ=Europe/Madrid `";
        if fields.len() != 5 {
            return Err(Error::new(
                "spec.schedule",
                format!("`{}` has {} fields, not 5", spec.schedule, fields.len()),
            )
            .with_hint(cron_hint));
        }
        if let Some(field) = fields.iter().find(|field| {
            !field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"*/,-?#".contains(&b))
        }) {
            return Err(Error::new(
                "spec.schedule",
                format!("the field `{field}` is not a cron field"),
            )
            .with_hint(cron_hint));
        }
        if let Some(zone) = zone {
            let path = if spec.timezone.is_some() {
                "spec.timezone"
            } else {
                "spec.schedule"
            };
            validate_time_zone(zone).map_err(|e| e.under(path))?;
        }
        if let Some(content_type) = &spec.content_type {
            let (kind, subtype) = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .split_once('/')
                .unwrap_or(("", ""));
            if kind.is_empty() || subtype.is_empty() {
                return Err(Error::new(
                    "spec.contentType",
                    format!("`{content_type}` is not a media type"),
                )
                .with_hint("e.g. `application/json` or `text/plain`"));
            }
        }
        match (&spec.data, &spec.data_base64) {
            (Some(_), Some(_)) => {
                return Err(Error::new("spec", "sets both `data` and `dataBase64`")
                    .with_hint("keep `data` for text, `dataBase64` for bytes"));
            }
            (None, Some(encoded)) => {
                BASE64_STANDARD.decode(encoded).map_err(|error| {
                    Error::new("spec.dataBase64", format!("is not valid base64: {error}"))
                        .with_hint(
                            "encode the bytes with standard base64 (`base64` on the command line)",
                        )
                })?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn validate_time_zone(zone: &str) -> Result<(), Error> {
    let ok = !zone.is_empty()
        && !zone.starts_with('/')
        && !zone.ends_with('/')
        && !zone.contains("..")
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new("", format!("`{zone}` is not a time zone name"))
            .with_hint("use an IANA name such as `Europe/Madrid` or `UTC`"))
    }
}

#[cfg(test)]
mod tests {
    use crate::resource::{Resource, parse_documents};

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
        assert_eq!(resources[1].key().kind, "WebhookSource");
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
                "  notifications: {webhook: {}}\n",
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
        let poll = parse_documents("ok.yaml", &cases[1]).unwrap();
        let Resource::S3Source(s3) = &poll[0] else {
            panic!()
        };
        let super::S3Mode::Poll(poll) = s3.mode().unwrap() else {
            panic!()
        };
        assert_eq!(poll.interval(), std::time::Duration::from_secs(5));
        let ping = parse_documents("ok.yaml", &cases[4]).unwrap();
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
                "exactly one of `env` or `file`",
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
