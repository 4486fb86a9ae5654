//! The JSON event format, read and written in one pass each.
//!
//! Reading takes a structured event's members straight from the bytes: attribute names borrowed
//! where they need no unescaping, and `data` kept as the JSON text that was sent (a
//! [`RawValue`]), not built into a tree of values only to be written out again. Whether the members
//! make an event is [`build`](super::build)'s to judge, as for binary mode.
//!
//! Writing puts the attributes down in the order of the format's spec, with JSON data as its text:
//! data that arrived as JSON (in either mode) is stored and delivered byte for byte as it was sent.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use chrono::SecondsFormat;
use cloudevents::event::{Data, ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, Event};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::is_json;

/// Attribute names and values as they arrived, before they are checked. A name given twice keeps
/// its last value, as JSON objects are usually read.
#[derive(Debug)]
pub(super) struct Attributes<'a>(Vec<(Cow<'a, str>, Value)>);

impl Default for Attributes<'_> {
    /// Room for the required attributes and a few more.
    fn default() -> Self {
        Self(Vec::with_capacity(8))
    }
}

impl<'a> Attributes<'a> {
    /// Sets `name`; whether it was set before.
    pub(super) fn insert(&mut self, name: Cow<'a, str>, value: Value) -> bool {
        match self.0.iter_mut().find(|(held, _)| *held == name) {
            Some((_, held)) => {
                *held = value;
                true
            }
            None => {
                self.0.push((name, value));
                false
            }
        }
    }

    pub(super) fn take(&mut self, name: &str) -> Option<Value> {
        let at = self.0.iter().position(|(held, _)| held == name)?;
        Some(self.0.remove(at).1)
    }

    pub(super) fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find_map(|(held, value)| (held == name).then_some(value))
    }

    pub(super) fn into_inner(self) -> Vec<(Cow<'a, str>, Value)> {
        self.0
    }
}

/// A structured event's members, read but not yet checked.
#[derive(Debug, Default)]
pub(super) struct Members<'a> {
    pub attributes: Attributes<'a>,
    /// `data` as the JSON text it was sent as.
    pub data: Option<&'a RawValue>,
    pub data_base64: Option<Value>,
}

/// One JSON value where an event was expected: its members, or a value that is no object.
pub(super) enum Item<'a> {
    Event(Members<'a>),
    NotObject,
}

/// A batch: its items, or a value that is no array.
pub(super) enum Batch<'a> {
    Items(Vec<Item<'a>>),
    NotArray,
}

/// An object member's name, borrowed from the input unless it held escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(name)))
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }
            fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Reads any JSON value; only an object becomes an event's members.
struct ItemVisitor;

impl ItemVisitor {
    fn not_object<E>(self) -> Result<Item<'static>, E> {
        Ok(Item::NotObject)
    }
}

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a structured event (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::default();
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            match name.as_ref() {
                "data" => members.data = Some(map.next_value::<&'de RawValue>()?),
                "data_base64" => members.data_base64 = Some(map.next_value::<Value>()?),
                _ => {
                    let value = map.next_value::<Value>()?;
                    members.attributes.insert(name, value);
                }
            }
        }
        Ok(Item::Event(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.not_object()
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

impl<'de> Deserialize<'de> for Batch<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = Batch<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch (a JSON array of events)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element::<Item<'de>>()? {
                    items.push(item);
                }
                Ok(Batch::Items(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Batch::NotArray)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Batch::NotArray)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Batch::NotArray)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Batch::NotArray)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Batch::NotArray)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Batch::NotArray)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Batch::NotArray)
            }
        }
        deserializer.deserialize_any(BatchVisitor)
    }
}

/// Whether `bytes` are one JSON value and nothing else, not even white space around it: such
/// data can be written into a structured event as it is, and read back the same.
pub(super) fn is_exact_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&RawValue>(bytes).is_ok_and(|raw| raw.get().len() == bytes.len())
}

/// Appends `text` as a JSON string.
fn string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn member(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    string(out, name);
    out.push(b':');
}

/// The event in the JSON event format; `None` for a 0.3 event (written by the SDK instead).
pub(super) fn write(event: &Event) -> Option<Vec<u8>> {
    if event.specversion() != SpecVersion::V10 {
        return None;
    }
    let data_len = match event.data() {
        Some(Data::Binary(bytes)) => bytes.len() * 4 / 3 + 4,
        Some(Data::String(text)) => text.len() + 2,
        Some(Data::Json(_)) | None => 64,
    };
    let mut out = Vec::with_capacity(
        256 + event.id().len() + event.source().len() + event.ty().len() + data_len,
    );
    out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    string(&mut out, event.id());
    member(&mut out, "source");
    string(&mut out, event.source());
    member(&mut out, "type");
    string(&mut out, event.ty());
    if let Some(content_type) = event.datacontenttype() {
        member(&mut out, "datacontenttype");
        string(&mut out, content_type);
    }
    if let Some(schema) = event.dataschema() {
        member(&mut out, "dataschema");
        string(&mut out, schema.as_str());
    }
    if let Some(subject) = event.subject() {
        member(&mut out, "subject");
        string(&mut out, subject);
    }
    if let Some(time) = event.time() {
        member(&mut out, "time");
        string(&mut out, &time.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }
    for (name, value) in event.iter_extensions() {
        member(&mut out, name);
        match value {
            ExtensionValue::String(text) => string(&mut out, text),
            ExtensionValue::Boolean(flag) => {
                out.extend_from_slice(if *flag { b"true" } else { b"false" });
            }
            ExtensionValue::Integer(number) => {
                let _ = write!(out, "{number}");
            }
        }
    }
    match event.data() {
        None => {}
        Some(Data::Json(value)) => {
            member(&mut out, "data");
            let _ = serde_json::to_writer(&mut out, value);
        }
        Some(Data::String(text)) => {
            member(&mut out, "data");
            string(&mut out, text);
        }
        Some(Data::Binary(bytes))
            if event.datacontenttype().is_some_and(is_json) && is_exact_json(bytes) =>
        {
            member(&mut out, "data");
            out.extend_from_slice(bytes);
        }
        Some(Data::Binary(bytes)) => {
            member(&mut out, "data_base64");
            out.push(b'"');
            out.extend_from_slice(BASE64_STANDARD.encode(bytes).as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
    Some(out)
}
