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
