//! AWS S3 event notification records, and the stores that copy their shape (MinIO, moto, Ceph).
//!
//! The record is S3's `eventVersion` 2.x structure. MinIO adds top-level `EventName` and `Key`
//! beside `Records`; they repeat the record and are ignored.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::key::{self, Encoding};
use super::{MappingError, ObjectRecord, required, size_at, text_at};

/// Reads record `index` of an S3 notification.
pub fn record(index: usize, raw: &Value) -> Result<ObjectRecord, MappingError> {
    let bucket = required(index, raw, "/s3/bucket/name", "s3.bucket.name")?;
    let encoded_key = required(index, raw, "/s3/object/key", "s3.object.key")?;
    let event_name = required(index, raw, "/eventName", "eventName")?;
    let event_time = match text_at(raw, "/eventTime") {
        None => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|_| MappingError::InvalidField {
                    index,
                    field: "eventTime",
                    expected: "RFC 3339 time",
                    value: text.to_owned(),
                })?
                .with_timezone(&Utc),
        ),
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
