//! S3Source: an object store's notifications (or a bucket listing) turned into CloudEvents.
//!
//! Every way a store tells kinetic about an object ends as one [`ObjectRecord`], and every record
//! becomes a CloudEvent the same way, so a consumer cannot tell AWS from MinIO, Tencent COS or a
//! polled bucket except by the event's `source`:
//! - [`parse`] reads a notification body: AWS S3 and MinIO `Records` ([`aws`]), Tencent COS
//!   `Records` ([`cos`]), either wrapped in an SNS envelope ([`sns`]); `s3:TestEvent` is no record.
//! - [`record_from_listing`] makes the same record from an object seen by a bucket poller.
//! - [`mapping`] filters records by the source's `eventTypes`, `prefix` and `suffix` and maps them
//!   to CloudEvents per the CloudEvents AWS S3 adapter. [`to_events`] does all of it for one body.
//!
//! Everything here is pure: no I/O, no clock. The caller confirms SNS subscriptions and delivers.

use chrono::{DateTime, SecondsFormat, Utc};
use cloudevents::Event;
use cloudevents::event::EventBuilderError;
use kinetic_api::sources::S3SourceSpec;
use serde_json::{Value, json};

pub mod aws;
pub mod cos;
pub mod key;
pub mod mapping;
pub mod sns;

pub use mapping::{event_id, selects, to_event};

/// One object event, whatever store or mode it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    /// `aws:s3`, `minio:s3`, `qcs::cos`, or the poller's `endpoint_source`.
    pub event_source: String,
    /// May be empty: MinIO sends `""` unless configured with a region.
    pub region: String,
    pub bucket: String,
    /// The object key, URL-decoded.
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
    /// S3's name without the `s3:` prefix, e.g. `ObjectCreated:Put`.
    pub event_name: String,
    pub event_time: Option<DateTime<Utc>>,
    /// `responseElements` `x-amz-request-id` and `x-amz-id-2`, when both are present.
    pub request_id: Option<(String, String)>,
    /// The record as the store sent it; the CloudEvent's data.
    pub raw: Value,
}

/// What one notification body holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// Object records; none for a test event or an SNS unsubscribe confirmation.
    Records(Vec<ObjectRecord>),
    /// SNS asks the endpoint to confirm a subscription by fetching `subscribe_url`.
    SubscriptionConfirmation { subscribe_url: String },
}

/// What one notification body becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// The selected records as CloudEvents, possibly none.
    Events(Vec<Event>),
    /// SNS asks the endpoint to confirm a subscription by fetching `subscribe_url`.
    SubscriptionConfirmation { subscribe_url: String },
}

/// Why a notification body did not become events. Every variant is the sender's mistake (or a
/// store format kinetic does not know); retrying the same body cannot succeed.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error(
        "the body is not an S3 notification: it has no `Records` array, is not `s3:TestEvent` and is not an SNS message"
    )]
    NoRecords,
    #[error("the SNS message has no string `{0}`")]
    SnsField(&'static str),
    #[error(
        "the SNS message's type `{0}` is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation"
    )]
    SnsType(String),
    #[error("the SNS notification's `Message` is not JSON: {0}")]
    SnsMessageNotJson(#[source] serde_json::Error),
    #[error("record {index} has no string `{field}`")]
    MissingField { index: usize, field: &'static str },
    #[error("record {index}: `{field}` is not a valid {expected}: `{value}`")]
    InvalidField {
        index: usize,
        field: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error("record {index} cannot become a CloudEvent: {source}")]
    Event {
        index: usize,
        #[source]
        source: EventBuilderError,
    },
}

/// Reads a notification body: an S3/MinIO/COS `Records` document, `s3:TestEvent`, or either
/// inside an SNS envelope.
pub fn parse(body: &[u8]) -> Result<Notification, MappingError> {
    let document: Value = serde_json::from_slice(body).map_err(MappingError::NotJson)?;
    if sns::is_envelope(&document) {
        return match sns::unwrap(&document)? {
            sns::Envelope::Notification(inner) => parse_records(&inner),
            sns::Envelope::SubscriptionConfirmation { subscribe_url } => {
                Ok(Notification::SubscriptionConfirmation { subscribe_url })
            }
            sns::Envelope::UnsubscribeConfirmation => Ok(Notification::Records(Vec::new())),
        };
    }
    parse_records(&document)
}

fn parse_records(document: &Value) -> Result<Notification, MappingError> {
    let Some(records) = document.get("Records").and_then(Value::as_array) else {
        // S3 sends this once when notifications are configured; it names no object.
        if document.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
            return Ok(Notification::Records(Vec::new()));
        }
        return Err(MappingError::NoRecords);
    };
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            if record.get("cos").is_some() {
                cos::record(index, record)
            } else {
                aws::record(index, record)
            }
        })
        .collect::<Result<_, _>>()
        .map(Notification::Records)
}

/// Turns one notification body into the CloudEvents of the records `spec` selects.
///
/// A record without a region (MinIO's default) takes `spec.region`, so its `source` still names
/// one. Pure and deterministic: the same body gives the same events with the same ids.
pub fn to_events(spec: &S3SourceSpec, body: &[u8]) -> Result<Parsed, MappingError> {
    let records = match parse(body)? {
        Notification::SubscriptionConfirmation { subscribe_url } => {
            return Ok(Parsed::SubscriptionConfirmation { subscribe_url });
        }
        Notification::Records(records) => records,
    };
    let mut events = Vec::new();
    for (index, mut record) in records.into_iter().enumerate() {
        if record.region.is_empty()
            && let Some(region) = &spec.region
        {
            record.region.clone_from(region);
        }
        if selects(spec, &record) {
            events.push(
                to_event(spec, &record).map_err(|source| MappingError::Event { index, source })?,
            );
        }
    }
    Ok(Parsed::Events(events))
}

/// An object seen in a bucket listing, as a poller reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// The key as stored (not URL-encoded).
    pub key: String,
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// The record a notification would have carried for an object a poller saw appear
/// (`created`: `ObjectCreated:Put`) or disappear (`ObjectRemoved:Delete`), so polling emits the
/// same CloudEvents as notifications.
///
/// The sequencer is the object's modification time, so re-uploading an object is a new event
/// while listing the same object twice is the same event (the same id).
pub fn record_from_listing(
    bucket: &str,
    region: &str,
    endpoint_source: &str,
    object: &ListedObject,
    created: bool,
) -> ObjectRecord {
    let event_name = if created {
        "ObjectCreated:Put"
    } else {
        "ObjectRemoved:Delete"
    };
    let sequencer = format!(
        "{:016X}",
        object
            .last_modified
            .timestamp_nanos_opt()
            .unwrap_or_default()
    );
    let event_time = object.last_modified;
    let mut s3_object = json!({
        "key": key::encode(&object.key),
        "sequencer": sequencer,
    });
    if created {
        s3_object["size"] = json!(object.size);
    }
    if let Some(etag) = &object.etag {
        s3_object["eTag"] = json!(etag);
    }
    let raw = json!({
        "eventVersion": "2.1",
        "eventSource": endpoint_source,
        "awsRegion": region,
        "eventTime": event_time.to_rfc3339_opts(SecondsFormat::Millis, true),
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": s3_object,
        },
    });
    ObjectRecord {
        event_source: endpoint_source.to_owned(),
        region: region.to_owned(),
        bucket: bucket.to_owned(),
        key: object.key.clone(),
        size: created.then_some(object.size),
        etag: object.etag.clone(),
        version_id: None,
        sequencer: Some(sequencer),
        event_name: event_name.to_owned(),
        event_time: Some(event_time),
        request_id: None,
        raw,
    }
}

/// The non-empty string at a JSON pointer.
fn text_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// The required string at `pointer` (spelled `field` in errors) of record `index`.
fn required<'a>(
    index: usize,
    value: &'a Value,
    pointer: &str,
    field: &'static str,
) -> Result<&'a str, MappingError> {
    text_at(value, pointer).ok_or(MappingError::MissingField { index, field })
}

/// A size sent as a number or, by some stores, as a string of digits.
fn size_at(
    index: usize,
    value: &Value,
    pointer: &str,
    field: &'static str,
) -> Result<Option<u64>, MappingError> {
    match value.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) if number.as_u64().is_some() => Ok(number.as_u64()),
        Some(Value::String(text)) if text.parse::<u64>().is_ok() => Ok(text.parse().ok()),
        Some(other) => Err(MappingError::InvalidField {
            index,
            field,
            expected: "size in bytes",
            value: other.to_string(),
        }),
    }
}
