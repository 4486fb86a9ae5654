//! Encoding events for delivery: binary mode (headers and body) and structured JSON.

use std::borrow::Cow;

use bytes::Bytes;
use chrono::SecondsFormat;
use cloudevents::event::{AttributeValue, Data, SpecVersion};
use cloudevents::{AttributesReader, Event};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::is_json;

/// `%XX` encoding of a header value: space, `"`, `%` and everything outside printable ASCII.
fn percent_encode(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%')
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for byte in text.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Cow::Owned(out)
}

/// The event's data as the bytes of a binary-mode body.
pub fn data_bytes(event: &Event) -> Bytes {
    match event.data() {
        None => Bytes::new(),
        Some(Data::Binary(bytes)) => Bytes::copy_from_slice(bytes),
        Some(Data::String(text)) => Bytes::copy_from_slice(text.as_bytes()),
        Some(Data::Json(value)) => Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
    }
}

/// Headers and body of a binary-mode message.
pub fn encode_binary(event: &Event) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(12);
    for (name, value) in event.iter() {
        if name == "datacontenttype" {
            if let Ok(value) = HeaderValue::from_str(&attribute_text(&value)) {
                headers.insert(CONTENT_TYPE, value);
            }
            continue;
        }
        let Some(header) = attribute_header(name) else {
            continue;
        };
        // Percent-encoded text is printable ASCII: always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&percent_encode(&attribute_text(&value))) {
            headers.append(header, value);
        }
    }
    if event.datacontenttype().is_none() && matches!(event.data(), Some(Data::Json(_))) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    (headers, data_bytes(event))
}

/// The `ce-` header of an attribute. Extension names are lower-case letters and digits (checked
/// when the event was accepted), so only a name that is not would give `None`.
fn attribute_header(name: &str) -> Option<HeaderName> {
    Some(HeaderName::from_static(match name {
        "specversion" => "ce-specversion",
        "id" => "ce-id",
        "source" => "ce-source",
        "type" => "ce-type",
        "subject" => "ce-subject",
        "time" => "ce-time",
        "dataschema" => "ce-dataschema",
        "schemaurl" => "ce-schemaurl",
        _ => {
            let mut header = String::with_capacity(3 + name.len());
            header.push_str("ce-");
            header.push_str(name);
            return HeaderName::try_from(header).ok();
        }
    }))
}

/// An attribute's value as header text. `time` is written as structured mode writes it (and as
/// filters read it): RFC 3339 in UTC with `Z`, not the SDK's `+00:00`.
fn attribute_text<'a>(value: &AttributeValue<'a>) -> Cow<'a, str> {
    match *value {
        AttributeValue::String(text) => Cow::Borrowed(text),
        AttributeValue::URIRef(text) => Cow::Borrowed(text.as_str()),
        AttributeValue::URI(url) => Cow::Borrowed(url.as_str()),
        AttributeValue::SpecVersion(SpecVersion::V10) => Cow::Borrowed("1.0"),
        AttributeValue::SpecVersion(SpecVersion::V03) => Cow::Borrowed("0.3"),
        AttributeValue::Time(time) => Cow::Owned(time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        ref other => Cow::Owned(other.to_string()),
    }
}

/// The event in structured JSON, exactly: bytes stay bytes (`data_base64`), and data whose
/// content type is JSON stays the JSON text that was accepted (`data`). This is how events are
/// stored; read them back with [`from_json`](super::from_json).
pub fn encode_structured(event: &Event) -> Bytes {
    match super::json::write(event) {
        Some(written) => Bytes::from(written),
        // 0.3, whose base64 data is marked differently: the SDK's writer.
        None => Bytes::from(serde_json::to_vec(event).unwrap_or_default()),
    }
}

/// The event in structured JSON for readers (structured-mode delivery, the API): data whose content
/// type is JSON is shown as JSON (`data`) when it parses, instead of base64. [`encode_structured`]
/// does so already for 1.0 events whose data is JSON and nothing else; this also shows data with
/// white space around it (a body ending in a newline), and 0.3 events.
pub fn encode_structured_inline(event: &Event) -> Bytes {
    match event.data() {
        Some(Data::Binary(bytes))
            if is_json(&content_type_of(event))
                && (event.specversion() != SpecVersion::V10
                    || !super::json::is_exact_json(bytes)) =>
        {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(value) => {
                    let mut inline = event.clone();
                    inline.set_data_unchecked(Data::Json(value));
                    encode_structured(&inline)
                }
                Err(_) => encode_structured(event),
            }
        }
        _ => encode_structured(event),
    }
}

fn content_type_of(event: &Event) -> String {
    event.datacontenttype().unwrap_or("").to_ascii_lowercase()
}
