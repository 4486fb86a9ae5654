//! The CloudEvent a kinetic S3Source emits for an uploaded object, read from an HTTP request.
//!
//! What arrives (kinetic's S3 mapping, after the CloudEvents AWS S3 adapter), in binary mode
//! (`ce-*` headers, the record as the body) or structured mode (`application/cloudevents+json`,
//! the record in `data`):
//!
//! | attribute | value |
//! |---|---|
//! | `type` | `com.amazonaws.s3.ObjectCreated:Put` (or `:Post`, `:Copy`, `:CompleteMultipartUpload`) |
//! | `source` | `aws:s3.us-east-1.photos` |
//! | `subject` | the object key, URL-decoded |
//! | data | the S3 event record: `s3.bucket.name`, `s3.object.key` (URL-encoded), `s3.object.size`, … |
//!
//! The key comes from `subject` (already decoded); an event without one falls back to the
//! record's `s3.object.key`, decoded as S3 encodes keys in notifications.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::failure::Failure;

/// What every object-created event's type starts with.
pub const CREATED_PREFIX: &str = "com.amazonaws.s3.ObjectCreated:";

/// One uploaded object, as the event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The event's `id`: the reply's id is derived from it, so a redelivery replies the same event
    /// and kinetic's broker keeps it once.
    pub id: String,
    pub bucket: String,
    pub key: String,
    /// `s3.object.size` when the record has it.
    pub size: Option<u64>,
}

/// Reads the event of a request (`headers`, `body`).
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Upload, Failure> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let structured = header("content-type")
        .is_some_and(|t| t.trim_start().starts_with("application/cloudevents+json"));
    let (id, ty, subject, record) = if structured {
        let envelope: Value = serde_json::from_slice(body)
            .map_err(|e| Failure::BadEvent(format!("the structured event is not JSON: {e}")))?;
        let text = |name: &str| {
            envelope
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let record = match envelope.get("data") {
            // `data` of an `application/json` event may be the record or a string holding it.
            Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| {
                Failure::BadEvent(format!("the event's data is not an S3 record: {e}"))
            })?,
            Some(record) => record.clone(),
            None => Value::Null,
        };
        (text("id"), text("type"), text("subject"), record)
    } else {
        let record = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| {
                Failure::BadEvent(format!("the event's data is not an S3 record (JSON): {e}"))
            })?
        };
        // Binary-mode attribute values are %-encoded (space, `"`, `%`, non-ASCII).
        let owned = |name: &str| header(name).map(percent_decode);
        (
            owned("ce-id"),
            owned("ce-type"),
            owned("ce-subject"),
            record,
        )
    };
    let id = id.filter(|id| !id.is_empty()).ok_or_else(|| {
        Failure::BadEvent("the request is not a CloudEvent: it has no id (ce-id)".into())
    })?;
    let ty = ty.unwrap_or_default();
    if !ty.starts_with(CREATED_PREFIX) {
        return Err(Failure::BadEvent(format!(
            "its type is {ty:?}; the thumbnailer takes {CREATED_PREFIX}* events from an S3Source \
             (select them in the trigger's filter)"
        )));
    }
    let object = &record["s3"]["object"];
    let bucket = record["s3"]["bucket"]["name"]
        .as_str()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| Failure::BadEvent("its data has no s3.bucket.name".into()))?
        .to_owned();
    let key = match subject.filter(|s| !s.is_empty()) {
        Some(subject) => subject,
        None => object["key"]
            .as_str()
            .filter(|key| !key.is_empty())
            .map(decode_key)
            .ok_or_else(|| {
                Failure::BadEvent("it has neither a subject nor s3.object.key".into())
            })?,
    };
    Ok(Upload {
        id,
        bucket,
        key,
        size: object["size"].as_u64(),
    })
}

/// Decodes a binary-mode header value (CloudEvents HTTP binding, 3.1.3.2): `%XX` escapes of UTF-8
/// bytes. A `%` not followed by two hex digits stays as written.
pub fn percent_decode(text: &str) -> String {
    unescape(text, false)
}

/// Decodes a key as S3 writes it in notifications: `%XX` escapes and `+` for a space. A `%` not
/// followed by two hex digits stays as written.
pub fn decode_key(key: &str) -> String {
    unescape(key, true)
}

fn unescape(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) if plus_is_space => out.push(b' '),
            (byte, _, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    /// A record as moto sends it (kinetic passes it on unchanged as the event's data).
    fn record() -> Value {
        json!({
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2024-05-01T12:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
                "object": {"key": "uploads%2Fred+flower.jpg", "size": 2048, "eTag": "\"x\""}
            }
        })
    }

    fn binary(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn s3_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "req.host"),
            ("ce-type", "com.amazonaws.s3.ObjectCreated:Put"),
            ("ce-source", "aws:s3.us-east-1.photos"),
            ("ce-subject", "uploads/red%20flower.jpg"),
            ("content-type", "application/json"),
        ]
    }

    #[test]
    fn reads_a_binary_mode_s3_event() {
        let body = serde_json::to_vec(&record()).unwrap();
        let upload = parse(&binary(&s3_headers()), &body).unwrap();
        assert_eq!(
            upload,
            Upload {
                id: "req.host".into(),
                bucket: "photos".into(),
                key: "uploads/red flower.jpg".into(),
                size: Some(2048),
            }
        );
    }

    #[test]
    fn without_a_subject_the_record_key_is_decoded() {
        let headers: Vec<_> = s3_headers()
            .into_iter()
            .filter(|(n, _)| *n != "ce-subject")
            .collect();
        let body = serde_json::to_vec(&record()).unwrap();
        let upload = parse(&binary(&headers), &body).unwrap();
        assert_eq!(upload.key, "uploads/red flower.jpg");
    }

    #[test]
    fn reads_a_structured_mode_event() {
        let envelope = json!({
            "specversion": "1.0",
            "id": "abc",
            "type": "com.amazonaws.s3.ObjectCreated:CompleteMultipartUpload",
            "source": "minio:s3..photos",
            "subject": "uploads/big.png",
            "datacontenttype": "application/json",
            "data": record(),
        });
        let headers = binary(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let upload = parse(&headers, &serde_json::to_vec(&envelope).unwrap()).unwrap();
        assert_eq!(upload.id, "abc");
        assert_eq!(upload.bucket, "photos");
        assert_eq!(upload.key, "uploads/big.png");
        // `data` as a JSON string holding the record.
        let mut as_text = envelope.clone();
        as_text["data"] = json!(record().to_string());
        let upload = parse(&headers, &serde_json::to_vec(&as_text).unwrap()).unwrap();
        assert_eq!(upload.bucket, "photos");
    }

    #[test]
    fn refuses_what_is_not_an_object_created_event() {
        let body = serde_json::to_vec(&record()).unwrap();
        let with = |name: &'static str, value: Option<&'static str>| {
            let mut headers = binary(&s3_headers());
            headers.remove(name);
            if let Some(value) = value {
                headers.insert(name, HeaderValue::from_static(value));
            }
            headers
        };
        let cases: Vec<(HeaderMap, Vec<u8>, &str)> = vec![
            (with("ce-id", None), body.clone(), "no id"),
            (
                with("ce-type", Some("com.amazonaws.s3.ObjectRemoved:Delete")),
                body.clone(),
                "ObjectRemoved:Delete",
            ),
            (with("ce-type", None), body.clone(), "its type is \"\""),
            (
                binary(&s3_headers()),
                b"not json".to_vec(),
                "not an S3 record",
            ),
            (
                binary(&s3_headers()),
                serde_json::to_vec(&json!({"s3": {"object": {"key": "a"}}})).unwrap(),
                "no s3.bucket.name",
            ),
            (
                with("ce-subject", None),
                serde_json::to_vec(&json!({"s3": {"bucket": {"name": "b"}}})).unwrap(),
                "neither a subject nor s3.object.key",
            ),
        ];
        for (headers, body, says) in cases {
            let failure = parse(&headers, &body).unwrap_err();
            assert!(matches!(failure, Failure::BadEvent(_)), "{failure:?}");
            assert!(
                failure.to_string().contains(says),
                "{failure} should say {says}"
            );
        }
    }

    #[test]
    fn keys_decode_like_s3_notifications() {
        for (encoded, decoded) in [
            ("uploads/a.jpg", "uploads/a.jpg"),
            ("uploads%2Fa+b.jpg", "uploads/a b.jpg"),
            ("caf%C3%A9.png", "café.png"),
            ("100%25.png", "100%.png"),
            ("odd%zz%2.png", "odd%zz%2.png"),
            ("plus%2B.png", "plus+.png"),
        ] {
            assert_eq!(decode_key(encoded), decoded);
        }
        // Header values: `+` is a plus.
        assert_eq!(
            percent_decode("uploads/%C3%89t%C3%A9%20a+b.jpg"),
            "uploads/Été a+b.jpg"
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
