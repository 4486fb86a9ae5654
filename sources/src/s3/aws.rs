//! AWS S3 event notification records, and the stores that copy their shape (MinIO, moto, Ceph).
//!
//! The record is S3's `eventVersion` 2.x structure. MinIO adds top-level `EventName` and `Key`
//! beside `Records`; they repeat the record and are ignored.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::key::{self, Encoding};
use super::{MappingError, ObjectRecord, required, size_at, text_at};

/// An S3 `eventTime`: RFC 3339, or the same without a zone (some S3-compatible stores and
/// emulators leave out the `Z`), read as UTC.
fn event_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// Reads record `index` of an S3 notification.
pub fn record(index: usize, raw: &Value) -> Result<ObjectRecord, MappingError> {
    let bucket = required(index, raw, "/s3/bucket/name", "s3.bucket.name")?;
    let encoded_key = required(index, raw, "/s3/object/key", "s3.object.key")?;
    let event_name = required(index, raw, "/eventName", "eventName")?;
    let event_time = match text_at(raw, "/eventTime") {
        None => None,
        Some(text) => Some(event_time(text).ok_or_else(|| MappingError::InvalidField {
            index,
            field: "eventTime",
            expected: "RFC 3339 time",
            value: text.to_owned(),
        })?),
    };
    let owned = |pointer| text_at(raw, pointer).map(str::to_owned);
    let request_id =
        owned("/responseElements/x-amz-request-id").zip(owned("/responseElements/x-amz-id-2"));
    Ok(ObjectRecord {
        event_source: owned("/eventSource").unwrap_or_else(|| "aws:s3".to_owned()),
        region: owned("/awsRegion").unwrap_or_default(),
        bucket: bucket.to_owned(),
        key: key::decode(encoded_key, Encoding::Form),
        size: size_at(index, raw, "/s3/object/size", "s3.object.size")?,
        etag: owned("/s3/object/eTag"),
        version_id: owned("/s3/object/versionId"),
        sequencer: owned("/s3/object/sequencer"),
        // Some S3-compatible stores write the configuration's `s3:` prefix into the name.
        event_name: event_name
            .strip_prefix("s3:")
            .unwrap_or(event_name)
            .to_owned(),
        event_time,
        request_id,
        raw: raw.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::event_time;

    #[test]
    fn event_times_without_a_zone_are_utc() {
        let zoned = event_time("2024-05-01T12:00:01.250Z").unwrap();
        assert_eq!(event_time("2024-05-01T12:00:01.250"), Some(zoned));
        assert_eq!(event_time("2024-05-01T14:00:01.250+02:00"), Some(zoned));
        assert_eq!(event_time("yesterday"), None);
    }
}
