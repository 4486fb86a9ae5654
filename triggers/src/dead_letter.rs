//! The event sent to a dead-letter sink: the original event with Knative's error extensions.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use cloudevents::Event;
use cloudevents::event::ExtensionValue;
use kinetic_api::event::{ERROR_CODE, ERROR_DATA, ERROR_DATA_MAX, ERROR_DEST};

/// Adds `knativeerrordest` (the subscriber), `knativeerrorcode` (the last status, when there was an
/// answer) and `knativeerrordata` (base64 of the start of the last response body, at most
/// [`ERROR_DATA_MAX`] encoded characters: the body is cut before encoding, never the encoding).
pub fn decorate(
    mut event: Event,
    destination: &str,
    status: Option<i32>,
    body: Option<&[u8]>,
) -> Event {
    event.set_extension(ERROR_DEST, ExtensionValue::String(destination.to_owned()));
    if let Some(status) = status {
        event.set_extension(ERROR_CODE, ExtensionValue::String(status.to_string()));
    }
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        let keep = ERROR_DATA_MAX / 4 * 3;
        let encoded = BASE64_STANDARD.encode(&body[..body.len().min(keep)]);
        event.set_extension(ERROR_DATA, ExtensionValue::String(encoded));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event() -> Event {
        EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .build()
            .unwrap()
    }

    #[test]
    fn extensions_are_set_and_data_is_bounded() {
        let body = vec![b'x'; 5000];
        let decorated = decorate(event(), "http://sub/", Some(503), Some(&body));
        assert_eq!(
            decorated.extension(ERROR_DEST).unwrap().to_string(),
            "http://sub/"
        );
        assert_eq!(decorated.extension(ERROR_CODE).unwrap().to_string(), "503");
        let data = decorated.extension(ERROR_DATA).unwrap().to_string();
        assert_eq!(data.len(), ERROR_DATA_MAX);
        let decoded = BASE64_STANDARD.decode(&data).unwrap();
        assert_eq!(decoded, vec![b'x'; 768]);
        let short = decorate(event(), "http://sub/", None, Some(b"boom"));
        assert_eq!(
            short.extension(ERROR_DATA).unwrap().to_string(),
            BASE64_STANDARD.encode("boom")
        );
        assert!(short.extension(ERROR_CODE).is_none());
        assert!(
            decorate(event(), "d", Some(500), Some(b""))
                .extension(ERROR_DATA)
                .is_none()
        );
    }
}
