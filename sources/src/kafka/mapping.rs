//! A Kafka record as a CloudEvent, as Knative's KafkaSource maps it.
//!
//! A record that already is a CloudEvent under the CloudEvents Kafka protocol binding passes
//! through unchanged: binary mode (`ce_` headers, `content-type` as `datacontenttype`, the value as
//! data) or structured mode (a `content-type: application/cloudevents+json` header and the event as
//! the value). Any other record, or one whose CloudEvent is invalid, becomes an event of type
//! `dev.knative.kafka.event` built from the record's coordinates, key, headers, timestamp and value.
//! `ceOverrides.extensions` are set on every event.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use chrono::{DateTime, Utc};
use cloudevents::event::ExtensionValue;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde_json::{Map, Value};

/// The type of events made from records that are not CloudEvents.
pub const KAFKA_EVENT_TYPE: &str = "dev.knative.kafka.event";
/// The content type of a structured-mode record.
const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Prefix of the extension each record header becomes.
pub const HEADER_EXTENSION_PREFIX: &str = "kafkaheader";

/// The parts of a Kafka record the mapping reads; borrowed from the consumer's message.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch (create or log-append time), when the record has one.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

/// Who emits the events: the KafkaSource's namespace and name, and its `ceOverrides.extensions`.
#[derive(Debug, Clone, Default)]
pub struct Emitter {
    pub namespace: String,
    pub name: String,
    pub extensions: BTreeMap<String, String>,
}

/// The event for `record`. Never fails: a record that is not a valid CloudEvent is mapped as a
/// plain record.
pub fn to_event(emitter: &Emitter, record: &Record<'_>) -> Event {
    let mut event = as_cloud_event(record).unwrap_or_else(|| plain_event(emitter, record));
    for (name, value) in &emitter.extensions {
        event.set_extension(name, ExtensionValue::String(value.clone()));
    }
    event
}

/// The record's own CloudEvent, if it carries one in binary or structured mode.
fn as_cloud_event(record: &Record<'_>) -> Option<Event> {
    let content_type = header_text(record, "content-type");
    let binary = record
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("ce_specversion"));
    if binary {
        return binary_event(record, content_type.as_deref());
    }
    let media = content_type.as_deref().map(media_type);
    if media.as_deref() == Some(STRUCTURED_CONTENT_TYPE) {
        return kinetic_api::cloudevent::from_json(record.value?).ok();
    }
    None
}

/// Binary mode: every `ce_` header is an attribute (text, as the Kafka binding writes them).
fn binary_event(record: &Record<'_>, content_type: Option<&str>) -> Option<Event> {
    let mut object = Map::new();
    for (name, value) in record.headers {
        let lower = name.to_ascii_lowercase();
        let Some(attribute) = lower.strip_prefix("ce_") else {
            continue;
        };
        let text = std::str::from_utf8(value.as_deref()?).ok()?;
        object.insert(attribute.to_owned(), Value::String(text.to_owned()));
    }
    if let Some(content_type) = content_type {
        object.insert(
            "datacontenttype".into(),
            Value::String(content_type.to_owned()),
        );
    }
    if let Some(value) = record.value {
        object.insert(
            "data_base64".into(),
            Value::String(BASE64_STANDARD.encode(value)),
        );
    }
    let text = serde_json::to_vec(&Value::Object(object)).ok()?;
    kinetic_api::cloudevent::from_json(&text).ok()
}

/// A record that is not a CloudEvent, mapped as Knative maps it.
fn plain_event(emitter: &Emitter, record: &Record<'_>) -> Event {
    let (partition, offset) = (record.partition, record.offset);
    let mut builder = EventBuilderV10::new()
        .id(format!("partition:{partition}/offset:{offset}"))
        .ty(KAFKA_EVENT_TYPE)
        .source(format!(
            "/apis/v1/namespaces/{}/kafkasources/{}#{}",
            emitter.namespace, emitter.name, record.topic
        ))
        .subject(format!("partition:{partition}#{offset}"));
    if let Some(time) = record
        .timestamp
        .and_then(DateTime::<Utc>::from_timestamp_millis)
    {
        builder = builder.time(time);
    }
    if let Some(key) = record.key.filter(|k| !k.is_empty()) {
        let key = key_text(key);
        builder = builder
            .extension("key", key.clone())
            .extension("partitionkey", key);
    }
    let mut content_type = None;
    for (name, value) in record.headers {
        if name.eq_ignore_ascii_case("content-type") {
            content_type = value
                .as_deref()
                .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
            continue;
        }
        let extension = header_extension(name);
        let text = value
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        builder = builder.extension(&extension, text);
    }
    // The builder only fails on missing id, source or type, which are always set here.
    let mut event = builder.build().unwrap_or_default();
    if let Some(value) = record.value {
        let data = cloudevents::Data::Binary(value.to_vec());
        match content_type {
            Some(content_type) => {
                event.set_data(content_type, data);
            }
            None => {
                event.set_data_unchecked(data);
            }
        }
    }
    event
}

/// A key as text: as is when UTF-8, else base64 (the text form of CloudEvents' binary type).
pub fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => text.to_owned(),
        Err(_) => BASE64_STANDARD.encode(key),
    }
}

/// The extension a header becomes: `kafkaheader` and the header's name lower-cased with every
/// character other than `a-z` and `0-9` removed (`Content-Length` → `kafkaheadercontentlength`).
pub fn header_extension(name: &str) -> String {
    let mut extension = String::from(HEADER_EXTENSION_PREFIX);
    extension.extend(
        name.chars()
            .flat_map(char::to_lowercase)
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
    );
    extension
}

fn header_text(record: &Record<'_>, name: &str) -> Option<String> {
    record
        .headers
        .iter()
        .rev()
        .find(|(header, _)| header.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| value.as_deref())
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use cloudevents::AttributesReader as _;

    use super::*;

    fn emitter() -> Emitter {
        Emitter {
            namespace: "shop".into(),
            name: "orders".into(),
            extensions: BTreeMap::new(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Option<Vec<u8>>)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Some(v.as_bytes().to_vec())))
            .collect()
    }

    fn record<'a>(
        headers: &'a [(String, Option<Vec<u8>>)],
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
    ) -> Record<'a> {
        Record {
            topic: "orders.eu",
            partition: 2,
            offset: 1234,
            timestamp: Some(1_700_000_000_123),
            key,
            value,
            headers,
        }
    }

    fn text(event: &Event, name: &str) -> Option<String> {
        event.extension(name).map(ToString::to_string)
    }

    fn data(event: &Event) -> Vec<u8> {
        match event.data() {
            Some(cloudevents::Data::Binary(bytes)) => bytes.clone(),
            Some(cloudevents::Data::String(text)) => text.clone().into_bytes(),
            Some(cloudevents::Data::Json(json)) => serde_json::to_vec(json).unwrap(),
            None => Vec::new(),
        }
    }

    #[test]
    fn a_plain_record_maps_as_knative_maps_it() {
        let headers = headers(&[
            ("Content-Type", "Application/JSON"),
            ("X-Request-Id", "r-1"),
            ("trace_parent", "00-ab"),
        ]);
        let value = br#"{"order": 1}"#;
        let event = to_event(
            &emitter(),
            &record(&headers, Some(b"customer-7"), Some(value)),
        );
        assert_eq!(event.ty(), KAFKA_EVENT_TYPE);
        assert_eq!(
            event.source().to_string(),
            "/apis/v1/namespaces/shop/kafkasources/orders#orders.eu"
        );
        assert_eq!(event.id(), "partition:2/offset:1234");
        assert_eq!(event.subject(), Some("partition:2#1234"));
        assert_eq!(
            event.time().map(|t| t.timestamp_millis()),
            Some(1_700_000_000_123)
        );
        assert_eq!(text(&event, "key").as_deref(), Some("customer-7"));
        assert_eq!(text(&event, "partitionkey").as_deref(), Some("customer-7"));
        assert_eq!(
            text(&event, "kafkaheaderxrequestid").as_deref(),
            Some("r-1")
        );
        assert_eq!(
            text(&event, "kafkaheadertraceparent").as_deref(),
            Some("00-ab")
        );
        // The content type is the event's, not an extension.
        assert_eq!(text(&event, "kafkaheadercontenttype"), None);
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(data(&event), value.to_vec());
    }

    #[test]
    fn a_bare_record_has_no_key_time_or_data() {
        let mut bare = record(&[], None, None);
        bare.timestamp = None;
        let event = to_event(&emitter(), &bare);
        assert_eq!(event.id(), "partition:2/offset:1234");
        assert!(event.time().is_none());
        assert!(event.data().is_none());
        assert!(event.datacontenttype().is_none());
        assert_eq!(event.iter_extensions().count(), 0);
        // An empty key is no key.
        let event = to_event(&emitter(), &record(&[], Some(b""), Some(b"x")));
        assert_eq!(text(&event, "key"), None);
    }

    #[test]
    fn a_binary_key_is_base64() {
        let event = to_event(&emitter(), &record(&[], Some(&[0xff, 0x00, 0x10]), None));
        assert_eq!(text(&event, "key").as_deref(), Some("/wAQ"));
        assert_eq!(text(&event, "partitionkey").as_deref(), Some("/wAQ"));
    }

    #[test]
    fn a_binary_mode_cloud_event_passes_through() {
        let headers = headers(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "order-1"),
            ("ce_source", "/shop"),
            ("ce_type", "com.example.order"),
            ("ce_time", "2024-01-02T03:04:05Z"),
            ("ce_subject", "o/1"),
            ("ce_partitionkey", "c-7"),
            ("content-type", "application/json"),
        ]);
        let value = br#"{"order": 1}"#;
        let event = to_event(&emitter(), &record(&headers, Some(b"k"), Some(value)));
        assert_eq!(event.id(), "order-1");
        assert_eq!(event.source().to_string(), "/shop");
        assert_eq!(event.ty(), "com.example.order");
        assert_eq!(event.subject(), Some("o/1"));
        assert_eq!(
            event.time().unwrap().to_rfc3339(),
            "2024-01-02T03:04:05+00:00"
        );
        assert_eq!(text(&event, "partitionkey").as_deref(), Some("c-7"));
        assert_eq!(text(&event, "key"), None);
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(data(&event), value.to_vec());
    }

    #[test]
    fn a_structured_cloud_event_passes_through() {
        let headers = headers(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let value = br#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t.x","datacontenttype":"text/plain","data":"hello","ext1":"v"}"#;
        let event = to_event(&emitter(), &record(&headers, None, Some(value)));
        assert_eq!(event.id(), "s-1");
        assert_eq!(event.ty(), "t.x");
        assert_eq!(text(&event, "ext1").as_deref(), Some("v"));
        assert_eq!(data(&event), b"hello".to_vec());
    }

    #[test]
    fn an_invalid_cloud_event_is_mapped_as_a_plain_record() {
        // Binary mode without `ce_type`.
        let binary = headers(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "x"),
            ("ce_source", "/s"),
        ]);
        let event = to_event(&emitter(), &record(&binary, None, Some(b"v")));
        assert_eq!(event.ty(), KAFKA_EVENT_TYPE);
        assert_eq!(
            text(&event, "kafkaheadercespecversion").as_deref(),
            Some("1.0")
        );
        // Structured mode whose value is not an event.
        let structured = headers(&[("content-type", "application/cloudevents+json")]);
        let event = to_event(&emitter(), &record(&structured, None, Some(b"{nope")));
        assert_eq!(event.ty(), KAFKA_EVENT_TYPE);
        assert_eq!(
            event.datacontenttype(),
            Some("application/cloudevents+json")
        );
        assert_eq!(data(&event), b"{nope".to_vec());
    }

    #[test]
    fn overrides_are_set_on_every_event() {
        let mut emitter = emitter();
        emitter.extensions.insert("team".into(), "orders".into());
        let plain = to_event(&emitter, &record(&[], None, None));
        let binary = headers(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "x"),
            ("ce_source", "/s"),
            ("ce_type", "t"),
        ]);
        let passed = to_event(&emitter, &record(&binary, None, None));
        for event in [plain, passed] {
            assert_eq!(text(&event, "team").as_deref(), Some("orders"));
        }
    }

    #[test]
    fn header_names_are_normalised() {
        for (name, extension) in [
            ("Content-Length", "kafkaheadercontentlength"),
            ("x_B3.TraceId", "kafkaheaderxb3traceid"),
            ("ÜBER-1", "kafkaheaderber1"),
            ("", "kafkaheader"),
            ("UPPER9", "kafkaheaderupper9"),
        ] {
            assert_eq!(header_extension(name), extension, "{name}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalised_header_names_are_attribute_names(name in ".{0,40}") {
            let extension = header_extension(&name);
            proptest::prop_assert!(kinetic_api::eventing::validate_attribute_name(&extension).is_ok());
            proptest::prop_assert!(extension.starts_with(HEADER_EXTENSION_PREFIX));
        }
    }
}
