//! Tencent Cloud COS event notification records, normalized to the S3 shape.
//!
//! COS documents its record as `{"cos": {"cosBucket": {name, appid, region}, "cosObject": {key,
//! size, vid, meta, url}, ...}, "event": {eventName, eventSource, eventTime, ...}}` where:
//! - the key is a path `/<appid>/<bucket>/<key>`;
//! - `cosBucket.name` is the bucket's short name in older messages (`photos`) and its full S3 API
//!   name in newer ones (`photos-1250000000`); the record always carries the full name, the one
//!   an S3Source's `spec.bucket` holds;
//! - `eventName` has a `cos:` prefix and removals are `ObjectRemove:*`; the record carries S3's
//!   names (`ObjectCreated:Put`, `ObjectRemoved:Delete`) so one `eventTypes` filter and one event
//!   type serve both stores;
//! - `eventTime` is Unix seconds.
//!
//! Keys are taken as percent-encoded (`%XX` decoded, `+` kept): COS, unlike S3, has no form
//! encoding in its messages.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::key::{self, Encoding};
use super::{MappingError, ObjectRecord, required, size_at, text_at};

/// `eventSource` of COS records.
pub const EVENT_SOURCE: &str = "qcs::cos";

/// Reads record `index` of a COS notification.
pub fn record(index: usize, raw: &Value) -> Result<ObjectRecord, MappingError> {
    let name = required(index, raw, "/cos/cosBucket/name", "cos.cosBucket.name")?;
    let path = required(index, raw, "/cos/cosObject/key", "cos.cosObject.key")?;
    let event_name = required(index, raw, "/event/eventName", "event.eventName")?;
    let appid = text_at(raw, "/cos/cosBucket/appid");
    let (bucket, short_name) = match appid {
        Some(appid) => match name.strip_suffix(&format!("-{appid}")) {
            Some(short) => (name.to_owned(), short),
            None => (format!("{name}-{appid}"), name),
        },
        None => (name.to_owned(), name),
    };
    let event_time = match raw.pointer("/event/eventTime") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            unix_seconds(value).ok_or_else(|| MappingError::InvalidField {
                index,
                field: "event.eventTime",
                expected: "Unix time in seconds",
                value: value.to_string(),
            })?,
        ),
    };
    let event_name = event_name.strip_prefix("cos:").unwrap_or(event_name);
    let event_name = match event_name.strip_prefix("ObjectRemove:") {
        Some(detail) => format!("ObjectRemoved:{detail}"),
        None => event_name.to_owned(),
    };
    let owned = |pointer| text_at(raw, pointer).map(str::to_owned);
    let etag = raw
        .pointer("/cos/cosObject/meta")
        .and_then(Value::as_object)
        .and_then(|meta| {
            meta.iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("etag"))
                .and_then(|(_, value)| value.as_str())
                .filter(|etag| !etag.is_empty())
                .map(str::to_owned)
        });
    Ok(ObjectRecord {
        event_source: owned("/event/eventSource").unwrap_or_else(|| EVENT_SOURCE.to_owned()),
        region: owned("/cos/cosBucket/region").unwrap_or_default(),
        key: key::decode(
            strip_bucket_path(path, appid, short_name, &bucket),
            Encoding::Percent,
        ),
        bucket,
        size: size_at(index, raw, "/cos/cosObject/size", "cos.cosObject.size")?,
        etag,
        version_id: owned("/cos/cosObject/vid"),
        sequencer: None,
        event_name,
        event_time,
        request_id: None,
        raw: raw.clone(),
    })
}

/// The object key inside COS's `/<appid>/<bucket>/<key>` path. A path in another shape loses only
/// its leading `/`, so an unexpected format still names the object.
fn strip_bucket_path<'a>(path: &'a str, appid: Option<&str>, short: &str, full: &str) -> &'a str {
    let path = path.strip_prefix('/').unwrap_or(path);
    let Some(rest) = appid.and_then(|appid| path.strip_prefix(appid)?.strip_prefix('/')) else {
        return path;
    };
    [short, full]
        .iter()
        .find_map(|name| rest.strip_prefix(name)?.strip_prefix('/'))
        .unwrap_or(path)
}

fn unix_seconds(value: &Value) -> Option<DateTime<Utc>> {
    let seconds = match value {
        Value::Number(number) => number.as_i64()?,
        Value::String(text) => text.parse().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp(seconds, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::fixtures::cos_record;
    use serde_json::json;

    #[test]
    fn records_are_normalized_to_s3() {
        let record = record(0, &cos_record()).unwrap();
        assert_eq!(record.event_source, "qcs::cos");
        assert_eq!(record.region, "ap-guangzhou");
        assert_eq!(record.bucket, "photos-1250000000");
        assert_eq!(record.key, "uploads/a.jpg");
        assert_eq!(record.event_name, "ObjectCreated:Put");
        assert_eq!(
            record.event_time,
            DateTime::from_timestamp(1_700_000_000, 0)
        );
        assert_eq!(record.size, Some(1234));
        assert_eq!(
            record.etag.as_deref(),
            Some("\"5f4dcc3b5aa765d61d8327deb882cf99\"")
        );
        assert_eq!(record.version_id, None, "an empty vid is no version");
        assert_eq!(record.request_id, None);
        assert_eq!(record.raw, cos_record());
    }

    #[test]
    fn variants() {
        type Case = (
            &'static str,
            Value,
            fn(&ObjectRecord) -> String,
            &'static str,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // Older messages name the bucket without its appid.
            ("/cos/cosBucket/name", json!("photos"), |r| r.bucket.clone(), "photos-1250000000"),
            ("/cos/cosBucket/name", json!("photos"), |r| r.key.clone(), "uploads/a.jpg"),
            ("/cos/cosObject/key", json!("/1250000000/photos-1250000000/uploads/a.jpg"), |r| r.key.clone(), "uploads/a.jpg"),
            ("/cos/cosObject/key", json!("/1250000000/photos/a%20b+c.jpg"), |r| r.key.clone(), "a b+c.jpg"),
            ("/cos/cosObject/key", json!("/elsewhere/a.jpg"), |r| r.key.clone(), "elsewhere/a.jpg"),
            ("/cos/cosObject/key", json!("/1250000000/other/a.jpg"), |r| r.key.clone(), "1250000000/other/a.jpg"),
            ("/event/eventName", json!("cos:ObjectRemove:Delete"), |r| r.event_name.clone(), "ObjectRemoved:Delete"),
            ("/event/eventName", json!("cos:ObjectCreated:CompleteMultipartUpload"), |r| r.event_name.clone(), "ObjectCreated:CompleteMultipartUpload"),
            ("/event/eventTime", json!("1700000001"), |r| r.event_time.unwrap().timestamp().to_string(), "1700000001"),
            ("/cos/cosObject/vid", json!("MTg0NDUxNTc1NjIzMTQ1MDAwODg"), |r| r.version_id.clone().unwrap(), "MTg0NDUxNTc1NjIzMTQ1MDAwODg"),
            ("/cos/cosObject/size", json!("77"), |r| r.size.unwrap().to_string(), "77"),
        ];
        for (pointer, value, read, expected) in cases {
            let mut raw = cos_record();
            *raw.pointer_mut(pointer).unwrap() = value.clone();
            let record = record(0, &raw).unwrap();
            assert_eq!(read(&record), *expected, "{pointer} = {value}");
        }
    }
}
