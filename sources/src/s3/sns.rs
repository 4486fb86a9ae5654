//! SNS envelopes: a bucket that publishes to an SNS topic reaches kinetic wrapped in one, either
//! POSTed by SNS itself or as the body of an SQS message without raw delivery.
//!
//! The envelope's signature is not checked here: a pushed source with `sns.topicArns` checks it
//! on the raw request first ([`super::sns_signature`]); through SQS, AWS IAM vouches for it.

use serde_json::Value;

use super::MappingError;

/// What an SNS envelope carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// `Type: Notification`: its `Message`, parsed.
    Notification(Value),
    /// `Type: SubscriptionConfirmation`: fetching `SubscribeURL` confirms the subscription.
    SubscriptionConfirmation { subscribe_url: String },
    /// `Type: UnsubscribeConfirmation`: nothing to do.
    UnsubscribeConfirmation,
}

/// Whether a JSON document is an SNS envelope rather than a notification: S3 notifications have
/// no top-level `Type`, SNS messages always have one.
pub fn is_envelope(document: &Value) -> bool {
    document.get("Type").is_some() && document.get("Records").is_none()
}

/// Opens an SNS envelope.
pub fn unwrap(document: &Value) -> Result<Envelope, MappingError> {
    let text = |field: &'static str| {
        document
            .get(field)
            .and_then(Value::as_str)
            .ok_or(MappingError::SnsField(field))
    };
    match text("Type")? {
        "Notification" => serde_json::from_str(text("Message")?)
            .map(Envelope::Notification)
            .map_err(MappingError::SnsMessageNotJson),
        "SubscriptionConfirmation" => Ok(Envelope::SubscriptionConfirmation {
            subscribe_url: text("SubscribeURL")?.to_owned(),
        }),
        "UnsubscribeConfirmation" => Ok(Envelope::UnsubscribeConfirmation),
        other => Err(MappingError::SnsType(other.to_owned())),
    }
}
