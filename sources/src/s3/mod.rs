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
//! All of the above is pure: no I/O, no clock. The caller confirms SNS subscriptions and delivers.
//! The I/O shell of the pulling modes: [`client`] builds the AWS SDK clients from a spec, and
//! [`sqs`] reads `notifications.sqs` queues, [`poll`] lists polled buckets.

use chrono::{DateTime, SecondsFormat, Utc};
use cloudevents::Event;
use cloudevents::event::EventBuilderError;
use kinetic_api::sources::S3SourceSpec;
use serde_json::{Value, json};

pub mod aws;
pub mod client;
pub mod cos;
#[cfg(test)]
mod fixtures;
pub mod key;
pub(crate) mod kind;
pub mod mapping;
pub mod poll;
pub mod sns;
pub mod sns_signature;
pub(crate) mod sqs;

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
    #[error("record {index} makes an event the broker would refuse: {source}")]
    Invalid {
        index: usize,
        #[source]
        source: kinetic_api::cloudevent::EventError,
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
            let event =
                to_event(spec, &record).map_err(|source| MappingError::Event { index, source })?;
            kinetic_api::cloudevent::validate(&event)
                .map_err(|source| MappingError::Invalid { index, source })?;
            events.push(event);
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
/// while listing the same object twice is the same event (the same id). For a removal pass the
/// last listing's `last_modified`, not the time the poller noticed: a poller that restarts and
/// notices the removal again then emits the same id.
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use cloudevents::AttributesReader as _;
    use cloudevents::event::Data;
    use fixtures::{aws_record, body, cos_record, minio_body, moto_record, sns};

    pub(super) fn spec(extra: Value) -> S3SourceSpec {
        let mut spec = json!({
            "bucket": "photos",
            "sink": {"uri": "http://127.0.0.1:1/"},
            "notifications": {"webhook": {}}
        });
        for (name, value) in extra.as_object().unwrap() {
            spec[name] = value.clone();
        }
        serde_json::from_value(spec).unwrap()
    }

    fn events(spec: &S3SourceSpec, body: &[u8]) -> Vec<Event> {
        match to_events(spec, body).unwrap() {
            Parsed::Events(events) => events,
            other => panic!("{other:?}"),
        }
    }

    fn one(spec: &S3SourceSpec, body: &[u8]) -> Event {
        let mut events = events(spec, body);
        assert_eq!(events.len(), 1, "{events:?}");
        events.pop().unwrap()
    }

    #[test]
    fn an_aws_record_follows_the_cloudevents_adapter() {
        let spec = spec(json!({"ceOverrides": {"extensions": {"team": "media"}}}));
        let event = one(&spec, &body(&[aws_record()]));
        assert_eq!(
            event.id(),
            "C3D13FE58DE4C810.FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
        );
        assert_eq!(event.ty(), "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(event.source().to_string(), "aws:s3.us-east-1.photos");
        assert_eq!(event.subject(), Some("uploads/red flower.jpg"));
        assert_eq!(
            event.time(),
            Some(&Utc.timestamp_millis_opt(1_714_564_800_123).unwrap())
        );
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.data(), Some(&Data::Json(aws_record())));
        assert_eq!(
            event.extension("team").map(ToString::to_string).as_deref(),
            Some("media")
        );
    }

    #[test]
    fn a_record_without_request_ids_gets_a_stable_id() {
        let spec = spec(json!({}));
        let event = one(&spec, &body(&[moto_record()]));
        assert!(uuid::Uuid::parse_str(event.id()).is_ok(), "{}", event.id());
        assert_eq!(event.subject(), Some("uploads/a b.txt"));
        assert_eq!(event.source().to_string(), "aws:s3.us-east-1.photos");

        let again = one(&spec, &body(&[moto_record()]));
        assert_eq!(again.id(), event.id(), "a redelivery must dedupe");

        let changes: &[(&str, Value)] = &[
            ("/s3/object/sequencer", json!("1")),
            ("/s3/object/eTag", json!("\"other\"")),
            ("/s3/object/key", json!("uploads%2Fc.txt")),
            ("/eventTime", json!("2024-05-01T12:00:01.000Z")),
            ("/eventName", json!("ObjectRemoved:Delete")),
        ];
        for (pointer, value) in changes {
            let mut changed = moto_record();
            *changed.pointer_mut(pointer).unwrap() = value.clone();
            let other = one(&spec, &body(&[changed]));
            assert_ne!(other.id(), event.id(), "{pointer} changed");
        }
    }

    #[test]
    fn minio_records_take_the_sources_region_when_they_have_none() {
        let event = one(
            &spec(json!({})),
            &serde_json::to_vec(&minio_body()).unwrap(),
        );
        assert_eq!(event.source().to_string(), "minio:s3..images");
        assert_eq!(event.ty(), "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(event.subject(), Some("my photo.jpg"));
        assert!(uuid::Uuid::parse_str(event.id()).is_ok(), "{}", event.id());

        let regional = spec(json!({"region": "eu-west-1"}));
        let event = one(&regional, &serde_json::to_vec(&minio_body()).unwrap());
        assert_eq!(event.source().to_string(), "minio:s3.eu-west-1.images");
    }

    #[test]
    fn test_events_and_unsubscriptions_are_no_events() {
        let spec = spec(json!({}));
        let test_event = json!({
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": "2024-05-01T12:00:00.000Z",
            "Bucket": "photos",
            "RequestId": "5582815E1AEA5ADF",
            "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"
        });
        assert!(events(&spec, &serde_json::to_vec(&test_event).unwrap()).is_empty());
        assert!(events(&spec, &body(&[])).is_empty());
        let unsubscribed = sns(
            "UnsubscribeConfirmation",
            json!({"Message": "You have chosen to deactivate subscription", "SubscribeURL": "https://sns.example/?Action=ConfirmSubscription"}),
        );
        assert!(events(&spec, &unsubscribed).is_empty());
    }

    #[test]
    fn sns_notifications_are_unwrapped() {
        let spec = spec(json!({}));
        let message = String::from_utf8(body(&[aws_record()])).unwrap();
        let envelope = sns(
            "Notification",
            json!({"Subject": "Amazon S3 Notification", "Message": message}),
        );
        let event = one(&spec, &envelope);
        assert_eq!(event.id(), one(&spec, &body(&[aws_record()])).id());
        assert_eq!(event.subject(), Some("uploads/red flower.jpg"));

        let confirmation = sns(
            "SubscriptionConfirmation",
            json!({"Message": "You have chosen to subscribe", "Token": "2336412f37", "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37"}),
        );
        assert_eq!(
            to_events(&spec, &confirmation).unwrap(),
            Parsed::SubscriptionConfirmation {
                subscribe_url:
                    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37"
                        .into()
            }
        );
    }

    #[test]
    fn cos_records_become_the_same_events() {
        let spec = spec(json!({"bucket": "photos-1250000000"}));
        let event = one(&spec, &body(&[cos_record()]));
        assert_eq!(event.ty(), "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(
            event.source().to_string(),
            "qcs::cos.ap-guangzhou.photos-1250000000"
        );
        assert_eq!(event.subject(), Some("uploads/a.jpg"));
        assert_eq!(
            event.time(),
            Some(&Utc.timestamp_opt(1_700_000_000, 0).unwrap())
        );
        assert_eq!(event.data(), Some(&Data::Json(cos_record())));
        assert!(uuid::Uuid::parse_str(event.id()).is_ok(), "{}", event.id());
        assert_eq!(one(&spec, &body(&[cos_record()])).id(), event.id());
    }

    #[test]
    fn only_selected_records_become_events() {
        let spec = spec(json!({"eventTypes": ["s3:ObjectCreated:*"], "suffix": ".jpg"}));
        let mut removed = aws_record();
        removed["eventName"] = json!("ObjectRemoved:Delete");
        let events = events(&spec, &body(&[moto_record(), aws_record(), removed]));
        let subjects: Vec<_> = events.iter().map(|e| e.subject().unwrap()).collect();
        assert_eq!(subjects, ["uploads/red flower.jpg"]);
    }

    #[test]
    fn malformed_bodies_name_the_problem() {
        let spec = spec(json!({}));
        let mut no_bucket = aws_record();
        no_bucket["s3"]["bucket"]
            .as_object_mut()
            .unwrap()
            .remove("name");
        let mut bad_time = aws_record();
        bad_time["eventTime"] = json!("yesterday");
        let mut bad_size = aws_record();
        bad_size["s3"]["object"]["size"] = json!(-1);
        let mut cos_no_key = cos_record();
        cos_no_key["cos"]["cosObject"]["key"] = json!("");
        let mut cos_bad_time = cos_record();
        cos_bad_time["event"]["eventTime"] = json!("noon");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"<xml/>".to_vec(), "not JSON"),
            (b"{\"records\": []}".to_vec(), "no `Records` array"),
            (b"[1, 2]".to_vec(), "no `Records` array"),
            (
                body(&[aws_record(), no_bucket]),
                "record 1 has no string `s3.bucket.name`",
            ),
            (
                body(&[json!({})]),
                "record 0 has no string `s3.bucket.name`",
            ),
            (
                body(&[bad_time]),
                "record 0: `eventTime` is not a valid RFC 3339 time: `yesterday`",
            ),
            (
                body(&[bad_size]),
                "record 0: `s3.object.size` is not a valid size in bytes: `-1`",
            ),
            (
                body(&[cos_no_key]),
                "record 0 has no string `cos.cosObject.key`",
            ),
            (
                body(&[cos_bad_time]),
                "`event.eventTime` is not a valid Unix time in seconds",
            ),
            (
                sns("Notification", json!({})),
                "SNS message has no string `Message`",
            ),
            (
                sns("Notification", json!({"Message": "hello"})),
                "`Message` is not JSON",
            ),
            (
                sns("SubscriptionConfirmation", json!({"Message": "m"})),
                "no string `SubscribeURL`",
            ),
            (sns("Reminder", json!({})), "type `Reminder`"),
        ];
        for (body, expected) in cases {
            let error = to_events(&spec, &body).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{}: `{error}` does not say `{expected}`",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn listed_objects_look_like_notifications() {
        let spec = spec(json!({}));
        let object = ListedObject {
            key: "uploads/red flower.jpg".into(),
            etag: Some("\"d41d8cd98f00b204e9800998ecf8427e\"".into()),
            size: 1024,
            last_modified: Utc.timestamp_opt(1_714_564_800, 0).unwrap(),
        };
        let created = record_from_listing("photos", "us-east-1", "aws:s3", &object, true);
        // The synthesized record reads back as the same record, as a notification would.
        assert_eq!(aws::record(0, &created.raw).unwrap(), created);
        let event = to_event(&spec, &created).unwrap();
        assert_eq!(event.ty(), "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(event.source().to_string(), "aws:s3.us-east-1.photos");
        assert_eq!(event.subject(), Some("uploads/red flower.jpg"));
        assert_eq!(event.time(), Some(&object.last_modified));
        assert_eq!(created.raw["s3"]["object"]["key"], "uploads/red+flower.jpg");

        let listed_again = record_from_listing("photos", "us-east-1", "aws:s3", &object, true);
        assert_eq!(to_event(&spec, &listed_again).unwrap().id(), event.id());

        let removed = record_from_listing("photos", "us-east-1", "aws:s3", &object, false);
        assert_eq!(removed.event_name, "ObjectRemoved:Delete");
        assert_eq!(aws::record(0, &removed.raw).unwrap(), removed);
        assert_ne!(to_event(&spec, &removed).unwrap().id(), event.id());

        let reuploaded = ListedObject {
            last_modified: Utc.timestamp_opt(1_714_564_900, 0).unwrap(),
            ..object
        };
        let reuploaded = record_from_listing("photos", "us-east-1", "aws:s3", &reuploaded, true);
        assert_ne!(to_event(&spec, &reuploaded).unwrap().id(), event.id());
    }
}
