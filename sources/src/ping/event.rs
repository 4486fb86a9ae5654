//! The CloudEvent of a tick, as Knative's PingSource sends it, but with an id that every process
//! computes alike.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{Error, Result};

/// CloudEvents `type` of every PingSource event.
pub const EVENT_TYPE: &str = "dev.knative.sources.ping";

/// What the spec says to send: `spec.data` or `spec.dataBase64`, `spec.contentType`, and
/// `spec.ceOverrides.extensions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PingPayload<'a> {
    pub data: Option<&'a str>,
    pub data_base64: Option<&'a str>,
    /// The media type of the data. Knative's default is none: no `datacontenttype` attribute.
    pub content_type: Option<&'a str>,
    pub extensions: Option<&'a BTreeMap<String, String>>,
}

/// A tick's event, to be turned into a CloudEvent by whoever sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingEvent {
    /// The same for a tick in every process and on every retry, so the broker's dedupe (on source
    /// and id) drops a tick that was sent twice; different for each tick and each incarnation of
    /// the source (the resource's uid is part of it).
    pub id: String,
    /// `/apis/v1/namespaces/{namespace}/pingsources/{name}`.
    pub source: String,
    /// [`EVENT_TYPE`].
    pub ty: &'static str,
    /// The tick's scheduled time, not the moment of sending, so a late tick says when it was due.
    pub time: DateTime<Utc>,
    pub datacontenttype: Option<String>,
    /// `None` when neither `data` nor `dataBase64` is set: an event without data.
    pub data: Option<Vec<u8>>,
    pub extensions: BTreeMap<String, String>,
}

/// Knative's `source` attribute for a PingSource.
pub fn event_source(namespace: &str, name: &str) -> String {
    format!("/apis/v1/namespaces/{namespace}/pingsources/{name}")
}

/// The event of `tick` for the PingSource `namespace/name` whose resource has `uid`.
pub fn ping_event(
    namespace: &str,
    name: &str,
    uid: &str,
    tick: DateTime<Utc>,
    payload: &PingPayload<'_>,
) -> Result<PingEvent> {
    let data = match (payload.data, payload.data_base64) {
        (Some(_), Some(_)) => return Err(Error::DataAndDataBase64),
        (Some(text), None) => Some(text.as_bytes().to_vec()),
        (None, Some(encoded)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(Error::InvalidDataBase64)?,
        ),
        (None, None) => None,
    };
    let source = event_source(namespace, name);
    let tick_text = tick.to_rfc3339_opts(SecondsFormat::Secs, true);
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("kinetic:{source}?uid={uid}&tick={tick_text}").as_bytes(),
    )
    .to_string();
    Ok(PingEvent {
        id,
        source,
        ty: EVENT_TYPE,
        time: tick,
        datacontenttype: payload
            .content_type
            .filter(|content_type| !content_type.is_empty())
            .map(str::to_owned),
        data,
        extensions: payload.extensions.cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339 in a test")
            .with_timezone(&Utc)
    }

    #[test]
    fn event_has_knatives_type_source_and_the_tick_time() {
        let extensions = BTreeMap::from([("team".to_owned(), "ops".to_owned())]);
        let payload = PingPayload {
            data: Some(r#"{"message": "Hello world!"}"#),
            content_type: Some("application/json"),
            extensions: Some(&extensions),
            ..PingPayload::default()
        };
        let at = tick("2024-05-15T10:05:00Z");
        let event = ping_event("default", "heartbeat", "uid-1", at, &payload).expect("valid");
        assert_eq!(event.ty, "dev.knative.sources.ping");
        assert_eq!(
            event.source,
            "/apis/v1/namespaces/default/pingsources/heartbeat"
        );
        assert_eq!(event.time, at);
        assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(
            event.data.as_deref(),
            Some(br#"{"message": "Hello world!"}"#.as_slice())
        );
        assert_eq!(event.extensions, extensions);
        assert!(uuid::Uuid::parse_str(&event.id).is_ok());
    }

    #[test]
    fn id_is_stable_per_tick_and_differs_between_ticks_and_sources() {
        let payload = PingPayload::default();
        let at = tick("2024-05-15T10:05:00Z");
        let id = |namespace, name, uid, at| {
            ping_event(namespace, name, uid, at, &payload)
                .expect("valid")
                .id
        };
        let first = id("default", "p", "u1", at);
        assert_eq!(first, id("default", "p", "u1", at), "same tick, same id");
        assert_ne!(
            first,
            id("default", "p", "u1", tick("2024-05-15T10:06:00Z"))
        );
        assert_ne!(first, id("default", "q", "u1", at));
        assert_ne!(first, id("other", "p", "u1", at));
        assert_ne!(first, id("default", "p", "u2", at), "a recreated source");
    }

    #[test]
    fn data_base64_is_decoded_and_defaults_are_empty() {
        let at = tick("2024-05-15T10:05:00Z");
        let binary = ping_event(
            "default",
            "p",
            "u",
            at,
            &PingPayload {
                data_base64: Some("AAEC/w=="),
                ..PingPayload::default()
            },
        )
        .expect("valid");
        assert_eq!(binary.data, Some(vec![0, 1, 2, 255]));
        assert_eq!(
            binary.datacontenttype, None,
            "Knative's default content type is none"
        );

        let empty = ping_event("default", "p", "u", at, &PingPayload::default()).expect("valid");
        assert_eq!((empty.data, empty.datacontenttype), (None, None));
        assert!(empty.extensions.is_empty());
    }

    #[test]
    fn bad_data_is_a_users_mistake() {
        let at = tick("2024-05-15T10:05:00Z");
        let both = PingPayload {
            data: Some("x"),
            data_base64: Some("eA=="),
            ..PingPayload::default()
        };
        assert!(matches!(
            ping_event("default", "p", "u", at, &both),
            Err(Error::DataAndDataBase64)
        ));
        let bad = PingPayload {
            data_base64: Some("not base64!"),
            ..PingPayload::default()
        };
        let error = ping_event("default", "p", "u", at, &bad).expect_err("invalid");
        assert!(
            error
                .to_string()
                .contains("spec.dataBase64 is not valid base64")
        );
    }
}
