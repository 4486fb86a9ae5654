//! The CloudEvents HTTP protocol binding (1.0 and 0.3): decoding requests and responses in binary,
//! structured and batch modes with precise errors, and encoding events for delivery.
//!
//! Pure functions over headers and bytes; the broker's ingress and the dispatcher's reply handling
//! both use them, so an event is judged by the same rules wherever it enters.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cloudevents::event::{Data, ExtensionValue, SpecVersion};
use cloudevents::{
    AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV03, EventBuilderV10,
};
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde_json::Value;
use serde_json::value::RawValue;

use json::{Attributes, Batch, Item, Members};

mod encode;
mod json;
pub mod limits;
pub use encode::{data_bytes, encode_binary, encode_structured, encode_structured_inline};

pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Why a request is not an acceptable CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EventError {
    pub kind: EventErrorKind,
    /// The attribute at fault, when one is.
    pub attribute: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventErrorKind {
    /// 400: malformed or missing attributes, bad JSON.
    Invalid,
    /// 415: an event format kinetic does not read (e.g. `application/cloudevents+xml`).
    UnsupportedFormat,
}

impl EventError {
    fn invalid(attribute: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind: EventErrorKind::Invalid,
            attribute: attribute.map(str::to_owned),
            message: message.into(),
        }
    }

    fn at_index(mut self, index: usize) -> Self {
        self.message = format!("event {index} of the batch: {}", self.message);
        self
    }
}

/// How the event arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
    Batch,
}

/// Decodes a request (or response) carrying one or more CloudEvents, each checked against the
/// CloudEvents type system and kinetic's [`limits`].
pub fn decode(headers: &HeaderMap, body: &Bytes) -> Result<(Mode, Vec<Event>), EventError> {
    let (mode, events) = decode_unchecked(headers, body)?;
    for (index, event) in events.iter().enumerate() {
        limits::check(event).map_err(|error| match mode {
            Mode::Batch => error.at_index(index),
            Mode::Binary | Mode::Structured => error,
        })?;
    }
    Ok((mode, events))
}

fn decode_unchecked(headers: &HeaderMap, body: &Bytes) -> Result<(Mode, Vec<Event>), EventError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|value| {
            value.to_str().map_err(|_| {
                EventError::invalid(
                    Some("datacontenttype"),
                    "the Content-Type header is not valid text",
                )
            })
        })
        .transpose()?;
    let media = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    // A `ce-specversion` header makes the message binary mode, whatever its Content-Type: an
    // event whose datacontenttype is itself an event format is delivered that way.
    let binary = headers.contains_key("ce-specversion");
    match media.as_deref() {
        Some(STRUCTURED_CONTENT_TYPE) if !binary => {
            Ok((Mode::Structured, vec![decode_structured(body)?]))
        }
        Some(BATCH_CONTENT_TYPE) if !binary => Ok((Mode::Batch, decode_batch(body)?)),
        Some(other)
            if other.starts_with("application/cloudevents")
                && !headers.contains_key("ce-specversion") =>
        {
            Err(EventError {
                kind: EventErrorKind::UnsupportedFormat,
                attribute: None,
                message: format!(
                    "event format `{other}` is not supported; send `{STRUCTURED_CONTENT_TYPE}`, `{BATCH_CONTENT_TYPE}` or binary mode (ce-* headers)"
                ),
            })
        }
        _ => {
            if !headers.contains_key("ce-specversion") {
                return Err(EventError::invalid(
                    Some("specversion"),
                    "not a CloudEvent: binary mode needs a `ce-specversion` header, structured mode the Content-Type `application/cloudevents+json`",
                ));
            }
            Ok((
                Mode::Binary,
                vec![decode_binary(headers, content_type, body)?],
            ))
        }
    }
}

fn decode_binary(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<Event, EventError> {
    let mut attributes = Attributes::default();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = value.to_str().map_err(|_| {
            EventError::invalid(
                Some(attribute),
                format!("header `{name}` is not valid ASCII; percent-encode it"),
            )
        })?;
        let text = percent_decode(text).ok_or_else(|| {
            EventError::invalid(
                Some(attribute),
                format!("header `{name}` has a bad percent-encoding"),
            )
        })?;
        if attributes.insert(attribute.into(), Value::String(text)) {
            return Err(EventError::invalid(
                Some(attribute),
                format!("header `{name}` is repeated"),
            ));
        }
    }
    if let Some(content_type) = content_type {
        attributes.insert(
            "datacontenttype".into(),
            Value::String(content_type.to_owned()),
        );
    }
    let data = if body.is_empty() {
        None
    } else {
        Some(binary_data(content_type, body))
    };
    build(attributes, data, true)
}

/// A binary-mode body as event data. JSON stays bytes: parsing it would reorder keys, drop white
/// space and round numbers beyond `f64`, so the subscriber would not get what was sent (and a
/// signature over the body would no longer verify). Structured output shows it as JSON again, see
/// [`encode_structured_inline`].
fn binary_data(content_type: Option<&str>, body: &Bytes) -> Data {
    let content_type = content_type.unwrap_or("");
    if !is_json(content_type)
        && content_type
            .get(..5)
            .is_some_and(|start| start.eq_ignore_ascii_case("text/"))
        && let Ok(text) = std::str::from_utf8(body)
    {
        return Data::String(text.to_owned());
    }
    Data::Binary(body.to_vec())
}

/// Whether a content type (in any letter case) is JSON.
pub(crate) fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        || media.eq_ignore_ascii_case("text/json")
        || (media.len() >= 5 && media.as_bytes()[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

fn decode_structured(body: &Bytes) -> Result<Event, EventError> {
    let item: Item<'_> = serde_json::from_slice(body).map_err(|error| {
        EventError::invalid(None, format!("the body is not valid JSON: {error}"))
    })?;
    structured(item)
}

fn decode_batch(body: &Bytes) -> Result<Vec<Event>, EventError> {
    let batch: Batch<'_> = serde_json::from_slice(body).map_err(|error| {
        EventError::invalid(None, format!("the batch is not valid JSON: {error}"))
    })?;
    let Batch::Items(items) = batch else {
        return Err(EventError::invalid(
            None,
            "a batch must be a JSON array of events",
        ));
    };
    if items.is_empty() {
        return Err(EventError::invalid(
            None,
            "the batch is empty; send at least one event",
        ));
    }
    if items.len() > limits::MAX_BATCH_EVENTS {
        return Err(EventError::invalid(
            None,
            format!(
                "the batch holds {} events; kinetic accepts at most {} per request, so split it",
                items.len(),
                limits::MAX_BATCH_EVENTS
            ),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        events.push(structured(item).map_err(|e| e.at_index(index))?);
    }
    Ok(events)
}

/// An event from a structured event's members. JSON data is kept as the text that was sent
/// (binary data, as in binary mode) when the event says its content type is JSON; without a
/// content type it is JSON by the format's rule, and kept parsed, so deliveries still say so.
fn structured(item: Item<'_>) -> Result<Event, EventError> {
    let Item::Event(Members {
        attributes,
        data,
        data_base64,
    }) = item
    else {
        return Err(EventError::invalid(
            None,
            "a structured event must be a JSON object",
        ));
    };
    let text = |raw: &RawValue, attribute: &str| -> Result<String, EventError> {
        serde_json::from_str::<String>(raw.get())
            .map_err(|error| EventError::invalid(Some(attribute), format!("{error}")))
    };
    let parsed = |raw: &RawValue| -> Result<Value, EventError> {
        serde_json::from_str::<Value>(raw.get())
            .map_err(|error| EventError::invalid(Some("data"), format!("{error}")))
    };
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(EventError::invalid(
                Some("data"),
                "set `data` or `data_base64`, not both",
            ));
        }
        (None, Some(Value::String(encoded))) => Some(Data::Binary(
            BASE64_STANDARD
                .decode(encoded.as_bytes())
                .map_err(|error| {
                    EventError::invalid(
                        Some("data_base64"),
                        format!("is not valid base64: {error}"),
                    )
                })?,
        )),
        (None, Some(_)) => {
            return Err(EventError::invalid(
                Some("data_base64"),
                "must be a base64 string",
            ));
        }
        (None, None) => None,
        (Some(raw), None) if raw.get() == "null" => None,
        // CloudEvents 0.3 marks base64 data with `datacontentencoding` instead of `data_base64`.
        (Some(raw), None) if raw.get().starts_with('"') && base64_v03(&attributes) => {
            Some(Data::Binary(
                BASE64_STANDARD
                    .decode(text(raw, "data")?.as_bytes())
                    .map_err(|error| {
                        EventError::invalid(Some("data"), format!("is not valid base64: {error}"))
                    })?,
            ))
        }
        (Some(raw), None) => match attributes.get("datacontenttype").and_then(Value::as_str) {
            None => Some(Data::Json(parsed(raw)?)),
            Some(content_type) if is_json(content_type) => {
                Some(Data::Binary(raw.get().as_bytes().to_vec()))
            }
            Some(_) if raw.get().starts_with('"') => Some(Data::String(text(raw, "data")?)),
            Some(_) => Some(Data::Json(parsed(raw)?)),
        },
    };
    build(attributes, data, false)
}

fn base64_v03(object: &Attributes<'_>) -> bool {
    object.get("specversion").and_then(Value::as_str) == Some("0.3")
        && object
            .get("datacontentencoding")
            .and_then(Value::as_str)
            .is_some_and(|encoding| encoding.eq_ignore_ascii_case("base64"))
}

/// Builds an event from attribute values, checking each against the CloudEvents spec. In binary mode
/// every value arrives as a string; in structured mode extensions may be booleans or integers.
fn build(
    mut attributes: Attributes<'_>,
    data: Option<Data>,
    binary: bool,
) -> Result<Event, EventError> {
    let mut take = |name: &str| attributes.take(name);
    let specversion = match take("specversion") {
        None => {
            return Err(EventError::invalid(
                Some("specversion"),
                "is required (use \"1.0\")",
            ));
        }
        Some(Value::String(version)) if version == "1.0" || version == "0.3" => version,
        Some(other) => {
            return Err(EventError::invalid(
                Some("specversion"),
                format!("{other} is not supported; use \"1.0\" (or \"0.3\")"),
            ));
        }
    };
    let v03 = specversion == "0.3";
    let required = |value: Option<Value>, name: &str| -> Result<String, EventError> {
        match value {
            None => Err(EventError::invalid(
                Some(name),
                format!("`{name}` is required"),
            )),
            Some(Value::String(text)) if text.is_empty() => Err(EventError::invalid(
                Some(name),
                format!("`{name}` must not be empty"),
            )),
            Some(Value::String(text)) => Ok(text),
            Some(other) => Err(EventError::invalid(
                Some(name),
                format!("`{name}` must be a string, not {other}"),
            )),
        }
    };
    let optional = |value: Option<Value>, name: &str| -> Result<Option<String>, EventError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Err(EventError::invalid(
                Some(name),
                format!("`{name}` must not be empty when present"),
            )),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(EventError::invalid(
                Some(name),
                format!("`{name}` must be a string, not {other}"),
            )),
        }
    };
    let id = required(take("id"), "id")?;
    let source = required(take("source"), "source")?;
    if source.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EventError::invalid(
            Some("source"),
            "`source` must be a URI-reference without white space",
        ));
    }
    let ty = required(take("type"), "type")?;
    let subject = optional(take("subject"), "subject")?;
    let time = optional(take("time"), "time")?
        .map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    EventError::invalid(
                        Some("time"),
                        format!(
                            "`{text}` is not an RFC 3339 timestamp (e.g. 2026-01-02T15:04:05Z)"
                        ),
                    )
                })
        })
        .transpose()?;
    let datacontenttype = optional(take("datacontenttype"), "datacontenttype")?;
    if let Some(content_type) = &datacontenttype
        && !content_type.contains('/')
    {
        return Err(EventError::invalid(
            Some("datacontenttype"),
            format!("`{content_type}` is not a media type (e.g. application/json)"),
        ));
    }
    let schema_name = if v03 { "schemaurl" } else { "dataschema" };
    let dataschema = optional(take(schema_name), schema_name)?
        .map(|text| {
            url::Url::parse(&text).map_err(|_| {
                EventError::invalid(
                    Some(schema_name),
                    format!("`{text}` is not an absolute URI"),
                )
            })
        })
        .transpose()?;
    if v03 && let Some(encoding) = optional(take("datacontentencoding"), "datacontentencoding")? {
        // 0.3 structured events may carry base64 data marked by datacontentencoding.
        if !encoding.eq_ignore_ascii_case("base64") {
            return Err(EventError::invalid(
                Some("datacontentencoding"),
                "only `base64` is defined",
            ));
        }
    }
    let mut extensions = Vec::new();
    for (name, value) in attributes.into_inner() {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(EventError::invalid(
                Some(&name),
                format!(
                    "`{name}` is not a valid attribute name: use only lower-case letters a-z and digits 0-9"
                ),
            ));
        }
        let value = match value {
            Value::String(text) => ExtensionValue::String(text),
            Value::Bool(flag) if !binary => ExtensionValue::Boolean(flag),
            Value::Number(number) if !binary && number.as_i64().is_some() => {
                ExtensionValue::Integer(number.as_i64().unwrap_or_default())
            }
            Value::Null => continue,
            other => {
                return Err(EventError::invalid(
                    Some(&name),
                    format!("extension `{name}` must be a string, boolean or integer, not {other}"),
                ));
            }
        };
        extensions.push((name, value));
    }
    let mut event = if v03 {
        let mut builder = EventBuilderV03::new().id(id).source(source).ty(ty);
        if let Some(time) = time {
            builder = builder.time(time);
        }
        if let Some(subject) = subject {
            builder = builder.subject(subject);
        }
        builder.build()
    } else {
        let mut builder = EventBuilderV10::new().id(id).source(source).ty(ty);
        if let Some(time) = time {
            builder = builder.time(time);
        }
        if let Some(subject) = subject {
            builder = builder.subject(subject);
        }
        builder.build()
    }
    .map_err(|error| EventError::invalid(None, error.to_string()))?;
    match (data, datacontenttype) {
        (Some(data), Some(content_type)) => {
            event.set_data(content_type, data);
        }
        (Some(data), None) => {
            event.set_data_unchecked(data);
        }
        (None, Some(content_type)) => {
            event.set_datacontenttype(Some(content_type));
        }
        (None, None) => {}
    }
    if let Some(schema) = dataschema {
        event.set_dataschema(Some(schema));
    }
    for (name, value) in extensions {
        event.set_extension(&name, value);
    }
    Ok(event)
}

/// `%XX` decoding of a binary-mode header value (HTTP binding 1.0.2, section 3.1.3.2).
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks an event kinetic made itself (a source's) by the rules an event sent to the broker is
/// judged by: the CloudEvents type system as structured JSON reads it, and [`limits`]. An event that
/// passes can be sent, stored and read back.
pub fn validate(event: &Event) -> Result<(), EventError> {
    let stored = encode_structured(event);
    let item: Item<'_> = serde_json::from_slice(&stored)
        .map_err(|error| EventError::invalid(None, format!("the event is not JSON: {error}")))?;
    structured(item)?;
    limits::check(event)
}

/// Reads an event written by [`encode_structured`]. Unlike the SDK's reader, data stays the bytes
/// that were accepted (`data_base64`, and JSON data under a JSON content type, kept as its text),
/// so it is delivered as it was accepted.
pub fn from_json(payload: &[u8]) -> Result<Event, serde_json::Error> {
    let item: Item<'_> = serde_json::from_slice(payload)?;
    structured(item).map_err(<serde_json::Error as serde::de::Error>::custom)
}

/// The spec version's wire string.
pub fn spec_version(event: &Event) -> &'static str {
    match event.specversion() {
        SpecVersion::V03 => "0.3",
        SpecVersion::V10 => "1.0",
    }
}

/// An extension as an integer, whether it arrived as an integer or as a string of digits.
pub fn extension_i64(event: &Event, name: &str) -> Result<Option<i64>, EventError> {
    match event.extension(name) {
        None => Ok(None),
        Some(ExtensionValue::Integer(value)) => Ok(Some(*value)),
        Some(ExtensionValue::String(text)) => text.trim().parse().map(Some).map_err(|_| {
            EventError::invalid(
                Some(name),
                format!("`{name}` must be an integer, not `{text}`"),
            )
        }),
        Some(ExtensionValue::Boolean(_)) => Err(EventError::invalid(
            Some(name),
            format!("`{name}` must be an integer, not a boolean"),
        )),
    }
}

/// An extension's value as text (`partitionkey` lanes, filters).
pub fn extension_text(event: &Event, name: &str) -> Option<String> {
    event.extension(name).map(|value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const BINARY: &[(&str, &str)] = &[
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("content-type", "application/json"),
    ];

    #[test]
    fn binary_mode_round_trips() {
        let mut pairs = BINARY.to_vec();
        pairs.push(("ce-subject", "caf%C3%A9 au lait"));
        pairs.push(("ce-partitionkey", "k1"));
        pairs.push(("ce-time", "2026-01-02T03:04:05Z"));
        let (mode, events) = decode(&headers(&pairs), &Bytes::from_static(br#"{"a":1}"#)).unwrap();
        assert_eq!(mode, Mode::Binary);
        let event = &events[0];
        assert_eq!(event.subject(), Some("café au lait"));
        assert_eq!(extension_text(event, "partitionkey").as_deref(), Some("k1"));
        assert_eq!(event.data(), Some(&Data::Binary(br#"{"a":1}"#.to_vec())));
        let (encoded, body) = encode_binary(event);
        assert_eq!(encoded["ce-subject"], "caf%C3%A9%20au%20lait");
        let (_, again) = decode(&encoded, &body).unwrap();
        assert_eq!(&again[0], event);
    }

    #[test]
    fn binary_json_data_is_delivered_as_sent() {
        let sent: &[u8] = br#"{ "b": 1, "a": 12345678901234567890123, "c": 1.10 }"#;
        let (_, events) = decode(&headers(BINARY), &Bytes::from_static(sent)).unwrap();
        // Stored and read back, then delivered in binary mode: the same bytes.
        let stored = encode_structured(&events[0]);
        let read = from_json(&stored).unwrap();
        assert_eq!(read, events[0]);
        let (encoded, body) = encode_binary(&read);
        assert_eq!(body.as_ref(), sent);
        assert_eq!(encoded["content-type"], "application/json");
        // For readers the data is JSON again.
        let inline: Value = serde_json::from_slice(&encode_structured_inline(&read)).unwrap();
        assert_eq!(inline["data"]["b"], 1);
        assert!(inline.get("data_base64").is_none(), "{inline}");
        // Not JSON after all: stays base64 there too.
        let (_, events) = decode(&headers(BINARY), &Bytes::from_static(b"{nope")).unwrap();
        let inline: Value = serde_json::from_slice(&encode_structured_inline(&events[0])).unwrap();
        assert_eq!(inline["data_base64"], "e25vcGU=");
    }

    #[test]
    fn stored_events_read_back_unchanged() {
        let structured = |body: &'static str| {
            decode(
                &headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]),
                &Bytes::from_static(body.as_bytes()),
            )
            .unwrap()
            .1
            .remove(0)
        };
        let mut text = BINARY.to_vec();
        text.retain(|(name, _)| *name != "content-type");
        text.push(("content-type", "text/plain"));
        let events = [
            structured(
                r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":[1,2]},"n":3,"f":true,"subject":"x","time":"2026-01-02T03:04:05Z","dataschema":"https://e.com/s"}"#,
            ),
            structured(r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"text"}"#),
            structured(
                r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAH/"}"#,
            ),
            structured(
                r#"{"specversion":"0.3","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","datacontentencoding":"base64","data":"AAH/"}"#,
            ),
            structured(
                r#"{"specversion":"0.3","id":"1","source":"/s","type":"t","schemaurl":"https://e.com/s"}"#,
            ),
            decode(&headers(&text), &Bytes::from_static(b"caf\xc3\xa9"))
                .unwrap()
                .1
                .remove(0),
        ];
        for event in &events {
            let stored = encode_structured(event);
            assert_eq!(
                &from_json(&stored).unwrap(),
                event,
                "{}",
                String::from_utf8_lossy(&stored)
            );
        }
        // CloudEvents 0.3 base64 data is bytes.
        assert_eq!(events[3].data(), Some(&Data::Binary(vec![0, 1, 255])));
        assert!(from_json(b"{}").is_err());
    }

    #[test]
    fn binary_time_is_written_as_sent() {
        for time in ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456Z"] {
            let mut pairs = BINARY.to_vec();
            pairs.push(("ce-time", time));
            let (_, events) = decode(&headers(&pairs), &Bytes::new()).unwrap();
            let (encoded, _) = encode_binary(&events[0]);
            assert_eq!(encoded["ce-time"], time);
        }
        // Another offset is normalised to UTC.
        let mut pairs = BINARY.to_vec();
        pairs.push(("ce-time", "2026-01-02T05:04:05+02:00"));
        let (_, events) = decode(&headers(&pairs), &Bytes::new()).unwrap();
        let (encoded, _) = encode_binary(&events[0]);
        assert_eq!(encoded["ce-time"], "2026-01-02T03:04:05Z");
    }

    #[test]
    fn structured_and_batch() {
        let body = Bytes::from_static(br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE=","count":3,"flag":true}"#);
        let (mode, events) = decode(
            &headers(&[(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )]),
            &body,
        )
        .unwrap();
        assert_eq!(mode, Mode::Structured);
        assert_eq!(events[0].data(), Some(&Data::Binary(vec![0, 1])));
        assert_eq!(
            events[0].extension("count"),
            Some(&ExtensionValue::Integer(3))
        );
        let json = encode_structured(&events[0]);
        assert_eq!(from_json(&json).unwrap(), events[0]);
        let batch = Bytes::from_static(br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"0.3","id":"2","source":"/s","type":"t"}]"#);
        let (mode, events) =
            decode(&headers(&[("content-type", BATCH_CONTENT_TYPE)]), &batch).unwrap();
        assert_eq!((mode, events.len()), (Mode::Batch, 2));
        assert_eq!(spec_version(&events[1]), "0.3");
    }

    #[test]
    fn structured_json_data_is_kept_as_sent() {
        let sent = r#"{ "b": 1, "a": 12345678901234567890123, "c": 1.10 }"#;
        let body = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data":{sent}}}"#
        );
        let (_, events) = decode(
            &headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]),
            &Bytes::from(body),
        )
        .unwrap();
        // Kept as the text, stored as JSON (not base64), read back and delivered unchanged.
        assert_eq!(
            events[0].data(),
            Some(&Data::Binary(sent.as_bytes().to_vec()))
        );
        let stored = encode_structured(&events[0]);
        let stored_text = std::str::from_utf8(&stored).unwrap();
        assert!(
            stored_text.ends_with(&format!(r#""data":{sent}}}"#)),
            "{stored_text}"
        );
        let read = from_json(&stored).unwrap();
        assert_eq!(read, events[0]);
        let (encoded, delivered) = encode_binary(&read);
        assert_eq!(delivered.as_ref(), sent.as_bytes());
        assert_eq!(encoded["content-type"], "application/json");
        // A JSON string under a JSON content type is JSON text too; under text/plain it is text.
        for (content_type, data, expected) in [
            (
                "application/json",
                r#""hi""#,
                Data::Binary(br#""hi""#.to_vec()),
            ),
            ("text/plain", r#""hi""#, Data::String("hi".into())),
            ("text/plain", "5", Data::Json(serde_json::json!(5))),
        ] {
            let body = format!(
                r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"{content_type}","data":{data}}}"#
            );
            let (_, events) = decode(
                &headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]),
                &Bytes::from(body),
            )
            .unwrap();
            assert_eq!(events[0].data(), Some(&expected), "{content_type} {data}");
            assert_eq!(
                from_json(&encode_structured(&events[0])).unwrap(),
                events[0]
            );
        }
        // Without a content type, data is JSON by the format's rule; binary mode says so.
        let (_, events) = decode(
            &headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]),
            &Bytes::from_static(
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}}"#,
            ),
        )
        .unwrap();
        assert_eq!(
            events[0].data(),
            Some(&Data::Json(serde_json::json!({"a": 1})))
        );
        assert_eq!(
            from_json(&encode_structured(&events[0])).unwrap(),
            events[0]
        );
        assert_eq!(
            encode_binary(&events[0]).0["content-type"],
            "application/json"
        );
    }

    #[test]
    fn binary_json_bodies_are_stored_as_json_only_when_exact() {
        // An exact JSON body is stored as JSON; one with a newline after it as base64, so its
        // bytes come back exactly. Readers see JSON either way.
        for (sent, stored_as) in [
            (&br#"{"a":1}"#[..], "data"),
            (&b"{\"a\":1}\n"[..], "data_base64"),
        ] {
            let (_, events) = decode(&headers(BINARY), &Bytes::copy_from_slice(sent)).unwrap();
            let stored: Value = serde_json::from_slice(&encode_structured(&events[0])).unwrap();
            assert!(stored.get(stored_as).is_some(), "{stored}");
            let read = from_json(&encode_structured(&events[0])).unwrap();
            assert_eq!(encode_binary(&read).1.as_ref(), sent);
            let inline: Value = serde_json::from_slice(&encode_structured_inline(&read)).unwrap();
            assert_eq!(inline["data"]["a"], 1, "{inline}");
        }
    }

    #[test]
    fn an_event_format_as_datacontenttype_is_delivered_in_binary_mode() {
        let mut event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .build()
            .unwrap();
        event.set_data(BATCH_CONTENT_TYPE, Data::Binary(b"{ \"opened\"".to_vec()));
        let (headers, body) = encode_binary(&event);
        let (mode, decoded) = decode(&headers, &body).unwrap();
        assert_eq!(mode, Mode::Binary);
        assert_eq!(data_bytes(&decoded[0]), data_bytes(&event));
    }

    #[test]
    fn structured_members_as_json_reads_them() {
        // A name written with escapes is the same name; a name given twice keeps its last value.
        let (_, events) = decode(
            &headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]),
            &Bytes::from_static(
                br#"{"specversion":"1.0","\u0069d":"1","source":"/s","type":"t","type":"u","color":"red"}"#,
            ),
        )
        .unwrap();
        assert_eq!((events[0].id(), events[0].ty()), ("1", "u"));
        assert_eq!(extension_text(&events[0], "color").as_deref(), Some("red"));
        // Items of a batch that are not objects are named by their index.
        let error = decode(
            &headers(&[("content-type", BATCH_CONTENT_TYPE)]),
            &Bytes::from_static(
                br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},[1,{"a":2}]]"#,
            ),
        )
        .unwrap_err();
        assert_eq!(
            error.message,
            "event 1 of the batch: a structured event must be a JSON object"
        );
        for body in [&br#"{"a":[1]}"#[..], b"3", b"\"x\"", b"null", b"true"] {
            let error = decode(
                &headers(&[("content-type", BATCH_CONTENT_TYPE)]),
                &Bytes::copy_from_slice(body),
            )
            .unwrap_err();
            assert_eq!(error.message, "a batch must be a JSON array of events");
        }
    }

    #[test]
    fn refusals_name_the_attribute() {
        let structured = |body: &'static str| {
            decode(
                &headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]),
                &Bytes::from_static(body.as_bytes()),
            )
            .unwrap_err()
        };
        let cases = [
            (
                structured(r#"{"id":"1","source":"/s","type":"t"}"#),
                Some("specversion"),
            ),
            (
                structured(r#"{"specversion":"2.0","id":"1","source":"/s","type":"t"}"#),
                Some("specversion"),
            ),
            (
                structured(r#"{"specversion":"1.0","source":"/s","type":"t"}"#),
                Some("id"),
            ),
            (
                structured(r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#),
                Some("id"),
            ),
            (
                structured(r#"{"specversion":"1.0","id":"1","source":"/s"}"#),
                Some("type"),
            ),
            (
                structured(
                    r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"}"#,
                ),
                Some("time"),
            ),
            (
                structured(
                    r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad-Name":"x"}"#,
                ),
                Some("Bad-Name"),
            ),
            (
                structured(
                    r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{"a":1}}"#,
                ),
                Some("ext"),
            ),
            (
                structured(
                    r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}"#,
                ),
                Some("data"),
            ),
            (
                structured(
                    r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","dataschema":"not a uri"}"#,
                ),
                Some("dataschema"),
            ),
            (structured("{nope"), None),
            (structured("[]"), None),
        ];
        for (error, attribute) in cases {
            assert_eq!(error.kind, EventErrorKind::Invalid, "{error}");
            assert_eq!(error.attribute.as_deref(), attribute, "{error}");
        }
        let error = decode(
            &headers(&[("content-type", "application/cloudevents+xml")]),
            &Bytes::new(),
        )
        .unwrap_err();
        assert_eq!(error.kind, EventErrorKind::UnsupportedFormat);
        let error = decode(
            &headers(&[("content-type", "application/json")]),
            &Bytes::new(),
        )
        .unwrap_err();
        assert_eq!(error.attribute.as_deref(), Some("specversion"));
        let error = decode(
            &headers(&[("content-type", BATCH_CONTENT_TYPE)]),
            &Bytes::from_static(b"[{}]"),
        )
        .unwrap_err();
        assert!(error.message.starts_with("event 0 of the batch"), "{error}");
    }

    #[test]
    fn integer_extensions_from_strings() {
        let mut pairs = BINARY.to_vec();
        pairs.push(("ce-knativebrokerttl", "12"));
        let (_, events) = decode(&headers(&pairs), &Bytes::new()).unwrap();
        assert_eq!(extension_i64(&events[0], "knativebrokerttl"), Ok(Some(12)));
        pairs.pop();
        pairs.push(("ce-knativebrokerttl", "x"));
        let (_, events) = decode(&headers(&pairs), &Bytes::new()).unwrap();
        assert!(extension_i64(&events[0], "knativebrokerttl").is_err());
    }
}
