//! What an event entering kinetic may hold, beyond the attribute rules of [`build`](super::build):
//! the characters the CloudEvents type system allows in a String, and lengths a store can index.
//!
//! The spec's String is "a sequence of allowable Unicode characters": the control characters
//! U+0000–U+001F and U+007F–U+009F and the noncharacters are not allowed. Lengths are kinetic's:
//! `id`, `source` and `partitionkey` are keys of the store's dedupe and lane indexes, whose rows
//! PostgreSQL caps at 2,704 bytes; the other strings are capped so that a single event cannot
//! grow the log cache or a delivery's headers without bound (the body limit still applies to
//! everything, data included).
//!
//! Checked where events enter (the ingress and subscribers' replies, through
//! [`decode`](super::decode)), not when the log is read back: an event stored by an earlier
//! version is still delivered.

use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, Event};

use super::EventError;
use crate::event::PARTITION_KEY;

/// Longest `id`, `source` and `type`, in bytes (UTF-8).
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest `partitionkey`, in bytes: it names an ordered lane, stored and indexed per delivery.
pub const MAX_PARTITION_KEY_BYTES: usize = 1024;
/// Longest `subject`, `dataschema`, `datacontenttype` or extension value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Names no extension attribute may have: structured JSON, how kinetic stores events, uses them for
/// the data, so such an event could not be read back.
pub const RESERVED_NAMES: [&str; 2] = ["data", "data_base64"];
/// Most extension attributes on one event.
pub const MAX_EXTENSIONS: usize = 64;
/// Most events in one batch-mode request.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Whether `c` may appear in a CloudEvents String.
fn allowed(c: char) -> bool {
    let code = u32::from(c);
    !(c.is_control() || (0xFDD0..=0xFDEF).contains(&code) || (code & 0xFFFE) == 0xFFFE)
}

/// Checks one String attribute's characters and length.
fn text(attribute: &str, value: &str, max: usize) -> Result<(), EventError> {
    // Printable ASCII, what nearly every attribute is, needs no look at characters.
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !printable && let Some((at, c)) = value.char_indices().find(|&(_, c)| !allowed(c)) {
        return Err(EventError::invalid(
            Some(attribute),
            format!(
                "`{attribute}` holds the character U+{:04X} at byte {at}; CloudEvents strings may not hold control characters (U+0000-U+001F, U+007F-U+009F) or noncharacters. Percent-encode binary ids, or send them as data",
                u32::from(c)
            ),
        ));
    }
    if value.len() > max {
        return Err(EventError::invalid(
            Some(attribute),
            format!(
                "`{attribute}` is {} bytes long; kinetic accepts at most {max}. Shorten it, or move the content into the event's data",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// `datacontenttype` is a media type (RFC 2046), which is ASCII, and it is sent as the
/// `Content-Type` header of every binary-mode delivery, which cannot carry anything else.
fn media_type(value: &str) -> Result<(), EventError> {
    match value.char_indices().find(|(_, c)| !c.is_ascii()) {
        None => Ok(()),
        Some((at, c)) => Err(EventError::invalid(
            Some("datacontenttype"),
            format!(
                "`datacontenttype` holds the character U+{:04X} at byte {at}; a media type is ASCII (RFC 2046), and binary-mode deliveries send it as the Content-Type header. Write e.g. `application/json` or `text/plain; charset=utf-8`",
                u32::from(c)
            ),
        )),
    }
}

/// Checks an event's attributes against the rules above.
pub fn check(event: &Event) -> Result<(), EventError> {
    text("id", event.id(), MAX_KEY_BYTES)?;
    text("source", event.source().as_str(), MAX_KEY_BYTES)?;
    text("type", event.ty(), MAX_KEY_BYTES)?;
    if let Some(subject) = event.subject() {
        text("subject", subject, MAX_VALUE_BYTES)?;
    }
    if let Some(content_type) = event.datacontenttype() {
        text("datacontenttype", content_type, MAX_VALUE_BYTES)?;
        media_type(content_type)?;
    }
    if let Some(schema) = event.dataschema() {
        text("dataschema", schema.as_str(), MAX_VALUE_BYTES)?;
    }
    let mut count = 0;
    for (name, value) in event.iter_extensions() {
        count += 1;
        if count > MAX_EXTENSIONS {
            return Err(EventError::invalid(
                None,
                format!(
                    "the event has more than {MAX_EXTENSIONS} extension attributes; move the rest into its data"
                ),
            ));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(EventError::invalid(
                Some(name),
                format!(
                    "`{name}` cannot be an extension attribute: the JSON event format reserves it for the event's data; rename the `ce-{name}` header"
                ),
            ));
        }
        if let ExtensionValue::String(value) = value {
            let max = if name == PARTITION_KEY {
                MAX_PARTITION_KEY_BYTES
            } else {
                MAX_VALUE_BYTES
            };
            text(name, value, max)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::EventBuilder as _;
    use cloudevents::event::AttributesWriter as _;

    fn event(id: &str) -> Event {
        cloudevents::EventBuilderV10::new()
            .id(id)
            .source("/s")
            .ty("t")
            .build()
            .unwrap()
    }

    #[test]
    fn characters_the_spec_forbids() {
        for bad in [
            "a\0b",
            "a\u{1f}",
            "\u{7f}",
            "x\u{85}",
            "\u{fdd0}",
            "\u{fffe}",
            "\u{1ffff}",
        ] {
            let error = check(&event(bad)).unwrap_err();
            assert_eq!(error.attribute.as_deref(), Some("id"), "{bad:?}");
            assert!(error.message.contains("U+"), "{error}");
        }
        for good in ["a b", "ü-€-😀", "%00", "\u{fdcf}", "\u{fffd}"] {
            check(&event(good)).unwrap();
        }
    }

    /// Found by the fuzzer: an event whose media type was not ASCII was accepted, then could not
    /// be delivered in binary mode, whose Content-Type header it is.
    #[test]
    fn the_media_type_is_ascii() {
        let typed = |content_type: &str| {
            let mut event = event("1");
            event.set_datacontenttype(Some(content_type));
            check(&event)
        };
        typed("text/plain; charset=utf-8").unwrap();
        let error = typed("text/pl\u{1be}ain").unwrap_err();
        assert_eq!(error.attribute.as_deref(), Some("datacontenttype"));
        assert!(error.message.contains("U+01BE at byte 7"), "{error}");
    }

    #[test]
    fn lengths() {
        check(&event(&"i".repeat(MAX_KEY_BYTES))).unwrap();
        let error = check(&event(&"i".repeat(MAX_KEY_BYTES + 1))).unwrap_err();
        assert!(error.message.contains("1025 bytes"), "{error}");
        // Counted in bytes: 342 three-byte characters are 1,026 bytes.
        assert!(check(&event(&"€".repeat(342))).is_err());

        let mut lane = event("1");
        lane.set_extension(PARTITION_KEY, "k".repeat(MAX_PARTITION_KEY_BYTES + 1));
        assert_eq!(
            check(&lane).unwrap_err().attribute.as_deref(),
            Some(PARTITION_KEY)
        );
        let mut other = event("1");
        other.set_extension("note", "n".repeat(MAX_VALUE_BYTES));
        check(&other).unwrap();
        other.set_extension("note", "n".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(
            check(&other).unwrap_err().attribute.as_deref(),
            Some("note")
        );
        other.set_extension("note", "a\nb");
        assert!(check(&other).is_err());

        let mut many = event("1");
        for n in 0..=MAX_EXTENSIONS {
            many.set_extension(&format!("e{n}"), 1_i64);
        }
        assert!(check(&many).unwrap_err().message.contains("extension"));
        for name in RESERVED_NAMES {
            let mut reserved = event("1");
            reserved.set_extension(name, "x");
            assert_eq!(
                check(&reserved).unwrap_err().attribute.as_deref(),
                Some(name)
            );
        }
    }
}
