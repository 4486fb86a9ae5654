//! Which records an S3Source emits, and the CloudEvent each becomes.
//!
//! The event follows the CloudEvents AWS S3 adapter (`cloudevents/adapters/aws-s3.md`):
//!
//! | attribute | value |
//! |---|---|
//! | `id` | `x-amz-request-id` `.` `x-amz-id-2`; without them, see [`event_id`] |
//! | `source` | `eventSource` `.` `awsRegion` `.` bucket, e.g. `aws:s3.us-east-1.photos` |
//! | `type` | `com.amazonaws.s3.` eventName, e.g. `com.amazonaws.s3.ObjectCreated:Put` |
//! | `subject` | the decoded object key |
//! | `time` | `eventTime` |
//! | `datacontenttype` | `application/json` |
//! | data | the record as the store sent it |
//!
//! Every store gets the `com.amazonaws.s3.` type, COS included: its records are normalized to
//! S3's event names, and only `source` (`qcs::cos.<region>.<bucket>`) tells the stores apart, so
//! one Trigger filter on `type` serves them all.

use cloudevents::event::EventBuilderError;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use kinetic_api::sources::S3SourceSpec;

use super::ObjectRecord;

/// What every event type starts with.
pub const TYPE_PREFIX: &str = "com.amazonaws.s3.";
/// `datacontenttype` of every event: the data is the JSON record.
pub const CONTENT_TYPE: &str = "application/json";

/// Whether `spec` asks for `record`: its event name matches one of `eventTypes` (all when none;
/// `ObjectCreated:*` matches every `ObjectCreated:` name; the `s3:` prefix is optional) and its
/// decoded key has `prefix` and `suffix`.
pub fn selects(spec: &S3SourceSpec, record: &ObjectRecord) -> bool {
    let name = record
        .event_name
        .strip_prefix("s3:")
        .unwrap_or(&record.event_name);
    let type_matches = spec.event_types.is_empty()
        || spec.event_types.iter().any(|wanted| {
            let wanted = wanted.strip_prefix("s3:").unwrap_or(wanted);
            match wanted.strip_suffix('*') {
                Some(kind) => name.starts_with(kind),
                None => name == wanted,
            }
        });
    type_matches
        && spec
            .prefix
            .as_deref()
            .is_none_or(|prefix| record.key.starts_with(prefix))
        && spec
            .suffix
            .as_deref()
            .is_none_or(|suffix| record.key.ends_with(suffix))
}

/// The event's id: the adapter's `<x-amz-request-id>.<x-amz-id-2>` when the record has both;
/// otherwise (moto, COS, a polled bucket) a UUID v5 over the store, bucket, key, event name,
/// version id, ETag (both: an unversioned bucket's version id is `null` for every object),
/// sequencer and time. Either way a notification delivered twice has one
/// id, so the broker keeps it once, while a later change to the same object has another.
pub fn event_id(record: &ObjectRecord) -> String {
    // The adapter's id names the request. One request removes many objects at once
    // (DeleteObjects), and each removal arrives with the same request ids: they would dedupe into
    // one event at the broker. A removal therefore always gets the id derived from the object.
    if let Some((request_id, host_id)) = &record.request_id
        && !record.event_name.starts_with("ObjectRemoved")
    {
        return format!("{request_id}.{host_id}");
    }
    // A JSON array separates the parts unambiguously whatever characters a key holds.
    let parts = serde_json::json!([
        record.event_source,
        record.region,
        record.bucket,
        record.key,
        record.event_name,
        record.version_id,
        record.etag,
        record.sequencer,
        record.event_time.map(|time| time.timestamp_nanos_opt()),
    ]);
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("kinetic:s3?record={parts}").as_bytes(),
    )
    .to_string()
}

/// The CloudEvent for one record, with `ceOverrides.extensions` set.
pub fn to_event(spec: &S3SourceSpec, record: &ObjectRecord) -> Result<Event, EventBuilderError> {
    let mut builder = EventBuilderV10::new()
        .id(event_id(record))
        .ty(format!("{TYPE_PREFIX}{}", record.event_name))
        .source(format!(
            "{}.{}.{}",
            record.event_source, record.region, record.bucket
        ))
        .subject(record.key.as_str())
        .data(CONTENT_TYPE, record.raw.clone());
    if let Some(time) = record.event_time {
        builder = builder.time(time);
    }
    for (extension, value) in spec
        .ce_overrides
        .iter()
        .flat_map(|overrides| &overrides.extensions)
    {
        builder = builder.extension(extension, value.as_str());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::aws;
    use crate::s3::fixtures::aws_record;
    use serde_json::json;

    fn record(event_name: &str, encoded_key: &str) -> ObjectRecord {
        let mut raw = aws_record();
        raw["eventName"] = json!(event_name);
        raw["s3"]["object"]["key"] = json!(encoded_key);
        aws::record(0, &raw).unwrap()
    }

    fn spec(event_types: &[&str], prefix: Option<&str>, suffix: Option<&str>) -> S3SourceSpec {
        serde_json::from_value(json!({
            "bucket": "photos",
            "sink": {"uri": "http://127.0.0.1:1/"},
            "eventTypes": event_types,
            "prefix": prefix,
            "suffix": suffix,
        }))
        .unwrap()
    }

    #[test]
    fn filters() {
        let put = ("ObjectCreated:Put", "uploads/a.jpg");
        let multipart = ("ObjectCreated:CompleteMultipartUpload", "uploads/big.mov");
        let delete = ("ObjectRemoved:Delete", "uploads/a.jpg");
        let prefixed = ("s3:ObjectCreated:Copy", "uploads/b.jpg");
        let spaced = ("ObjectCreated:Put", "my+photos%2Fred+flower.JPG");
        /// eventTypes, prefix, suffix, (eventName, encoded key), selected.
        type Case<'a> = (
            &'a [&'a str],
            Option<&'a str>,
            Option<&'a str>,
            (&'a str, &'a str),
            bool,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (&[], None, None, put, true),
            (&[], None, None, delete, true),
            (&["ObjectCreated:*"], None, None, put, true),
            (&["ObjectCreated:*"], None, None, multipart, true),
            (&["ObjectCreated:*"], None, None, delete, false),
            (&["s3:ObjectCreated:*"], None, None, multipart, true),
            (&["s3:ObjectCreated:*"], None, None, prefixed, true),
            (&["ObjectCreated:Copy"], None, None, prefixed, true),
            (&["ObjectCreated:Put"], None, None, put, true),
            (&["s3:ObjectCreated:Put"], None, None, put, true),
            (&["ObjectCreated:Put"], None, None, multipart, false),
            (&["ObjectCreated:Post"], None, None, put, false),
            (&["ObjectCreated:Put", "ObjectRemoved:*"], None, None, delete, true),
            (&["ObjectRemoved:Delete"], None, None, put, false),
            (&["ObjectRemoved:DeleteMarkerCreated"], None, None, delete, false),
            (&[], Some("uploads/"), None, put, true),
            (&[], Some("downloads/"), None, put, false),
            (&[], None, Some(".jpg"), put, true),
            (&[], None, Some(".jpg"), multipart, false),
            (&[], Some("uploads/"), Some(".mov"), multipart, true),
            (&[], Some("uploads/"), Some(".mov"), put, false),
            // Prefix and suffix see the decoded key.
            (&[], Some("my photos/"), Some("flower.JPG"), spaced, true),
            (&[], Some("my+photos"), None, spaced, false),
            (&[], None, Some(".jpg"), spaced, false),
            (&["ObjectRemoved:*"], Some("uploads/"), None, put, false),
        ];
        for (event_types, prefix, suffix, (name, key), expected) in cases {
            let spec = spec(event_types, *prefix, *suffix);
            assert_eq!(
                selects(&spec, &record(name, key)),
                *expected,
                "{event_types:?} prefix {prefix:?} suffix {suffix:?} on {name} {key}"
            );
        }
    }

    #[test]
    fn ids_need_both_request_ids() {
        let mut raw = aws_record();
        let with_both = aws::record(0, &raw).unwrap();
        assert_eq!(
            event_id(&with_both),
            "C3D13FE58DE4C810.FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
        );
        raw["responseElements"]
            .as_object_mut()
            .unwrap()
            .remove("x-amz-id-2");
        let request_id_only = aws::record(0, &raw).unwrap();
        assert_eq!(request_id_only.request_id, None);
        let id = event_id(&request_id_only);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }

    #[test]
    fn removals_of_one_request_keep_their_own_ids() {
        // DeleteObjects removes many keys in one request: each removal must stay an event.
        let mut first = aws::record(0, &aws_record()).unwrap();
        first.event_name = "ObjectRemoved:Delete".into();
        let mut second = first.clone();
        second.key = "other.jpg".into();
        assert!(first.request_id.is_some());
        assert_ne!(event_id(&first), event_id(&second));
        assert!(uuid::Uuid::parse_str(&event_id(&first)).is_ok());
    }
}
