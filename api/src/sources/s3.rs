//! `S3Source`: an S3 (or S3-compatible) bucket's object notifications as CloudEvents.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CloudEventOverrides, SecretRef, WebhookVerify, validate_common};
use crate::duration;
use crate::error::Error;
use crate::meta::{Destination, ObjectMeta, validate_absolute_url};

/// An S3Source turns an S3 (or S3-compatible) bucket's object notifications into CloudEvents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Source {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S3SourceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Credentials {
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretRef>,
}

/// Exactly one of `sqs` or `webhook`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Notifications {
    /// Read notifications from an SQS (or compatible) queue the bucket publishes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsNotifications>,
    /// The store POSTs notifications to `/sources/{namespace}/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<S3WebhookNotifications>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqsNotifications {
    pub queue_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3WebhookNotifications {
    /// How pushed notifications are authenticated (MinIO sends a bearer token). Either this or
    /// `sns` is required unless `insecure` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<WebhookVerify>,
    /// Accept every notification without verification (anyone who can reach the URL can forge
    /// object events).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Notifications come from AWS SNS: every request must be an SNS message signed by AWS and
    /// published to one of these topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<SnsVerify>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnsVerify {
    /// ARNs of the topics whose messages are accepted (`arn:aws:sns:REGION:ACCOUNT:NAME`). A
    /// signature only proves that AWS sent the message; anyone can have AWS send to this URL from
    /// a topic of their own, so the topic is what makes the message yours.
    pub topic_arns: Vec<String>,
}

impl SnsVerify {
    fn validate(&self) -> Result<(), Error> {
        if self.topic_arns.is_empty() {
            return Err(Error::new("topicArns", "is empty").with_hint(
                "name the topics the bucket publishes to, e.g. `topicArns: [arn:aws:sns:us-east-1:123456789012:photos]`",
            ));
        }
        for (index, arn) in self.topic_arns.iter().enumerate() {
            let parts: Vec<&str> = arn.split(':').collect();
            let valid = parts.len() == 6
                && parts[0] == "arn"
                && parts[1].starts_with("aws")
                && parts[2] == "sns"
                && parts[3..].iter().all(|part| !part.is_empty());
            if !valid {
                return Err(Error::new(
                    format!("topicArns[{index}]"),
                    format!("`{arn}` is not an SNS topic ARN"),
                )
                .with_hint("write it as `arn:aws:sns:REGION:ACCOUNT_ID:TOPIC_NAME`"));
            }
        }
        Ok(())
    }
}

/// The default interval between two listings of a polled bucket.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
                let verified = webhook.verify.is_some() || webhook.sns.is_some();
                if verified && webhook.insecure {
                    return Err(Error::new(
                        "spec.notifications.webhook.insecure",
                        "is set together with `verify` or `sns`",
                    )
                    .with_hint("remove `insecure: true`: notifications are verified"));
                }
                if !verified && !webhook.insecure {
                    return Err(Error::new(
                        "spec.notifications.webhook",
                        "needs `verify` or `sns`: without them, anyone who can reach the URL can forge object events",
                    )
                    .with_hint("MinIO: `verify: {bearer: {token: {env: NAME}}}` with the token of its webhook target; AWS: `sns: {topicArns: [ARN]}`; or `insecure: true` to accept every notification"));
                }
                if let Some(verify) = &webhook.verify {
                    verify
                        .validate()
                        .map_err(|e| e.under("spec.notifications.webhook.verify"))?;
                }
                if let Some(sns) = &webhook.sns {
                    sns.validate()
                        .map_err(|e| e.under("spec.notifications.webhook.sns"))?;
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
        let hint = "set exactly one of `notifications: {sqs: {queueUrl: URL}}`, `notifications: {webhook: {verify: {bearer: {token: {env: NAME}}}}}` or `poll: {interval: PT10S}`";
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
