//! Addressing CloudEvent context attributes and extensions from an expression (section 3.2).
//!
//! Names are matched case-insensitively: CloudEvents attribute names are lower case only, so
//! the parser lower-cases identifiers (the TCK addresses `source` as `SOURCE`). Values are
//! exposed as they appear in the JSON format: `time` as RFC 3339 text in UTC, URIs as
//! strings. Extensions keep their type, except integers outside the 32-bit range, which are
//! not CESQL Integers and are therefore represented as their decimal String.

use std::borrow::Cow;

use chrono::SecondsFormat;
use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, Event};

use super::value::Val;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attribute {
    SpecVersion,
    Id,
    Source,
    Type,
    DataContentType,
    DataSchema,
    Subject,
    Time,
    Extension(Box<str>),
}

impl Attribute {
    /// Resolves a lower-case attribute name.
    pub(super) fn from_name(name: String) -> Self {
        match name.as_str() {
            "specversion" => Self::SpecVersion,
            "id" => Self::Id,
            "source" => Self::Source,
            "type" => Self::Type,
            "datacontenttype" => Self::DataContentType,
            "dataschema" => Self::DataSchema,
            "subject" => Self::Subject,
            "time" => Self::Time,
            _ => Self::Extension(name.into_boxed_str()),
        }
    }

    pub(super) fn name(&self) -> &str {
        match self {
            Self::SpecVersion => "specversion",
            Self::Id => "id",
            Self::Source => "source",
            Self::Type => "type",
            Self::DataContentType => "datacontenttype",
            Self::DataSchema => "dataschema",
            Self::Subject => "subject",
            Self::Time => "time",
            Self::Extension(name) => name,
        }
    }

    /// The attribute's value, or `None` when the event does not have it.
    pub(super) fn read<'a>(&self, event: &'a Event) -> Option<Val<'a>> {
        let borrowed = |s: &'a str| Val::Str(Cow::Borrowed(s));
        match self {
            Self::SpecVersion => Some(borrowed(match event.specversion() {
                SpecVersion::V03 => "0.3",
                SpecVersion::V10 => "1.0",
            })),
            Self::Id => Some(borrowed(event.id())),
            Self::Source => Some(borrowed(event.source())),
            Self::Type => Some(borrowed(event.ty())),
            Self::DataContentType => event.datacontenttype().map(borrowed),
            Self::DataSchema => event.dataschema().map(|url| borrowed(url.as_str())),
            Self::Subject => event.subject().map(borrowed),
            Self::Time => event.time().map(|time| {
                Val::Str(Cow::Owned(
                    time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                ))
            }),
            Self::Extension(name) => event.extension(name).map(|value| match value {
                ExtensionValue::String(s) => borrowed(s),
                ExtensionValue::Boolean(b) => Val::Bool(*b),
                ExtensionValue::Integer(i) => match i32::try_from(*i) {
                    Ok(i) => Val::Int(i),
                    Err(_) => Val::Str(Cow::Owned(i.to_string())),
                },
            }),
        }
    }

    /// Whether the event has the attribute, without building its value.
    pub(super) fn exists(&self, event: &Event) -> bool {
        match self {
            Self::SpecVersion | Self::Id | Self::Source | Self::Type => true,
            Self::DataContentType => event.datacontenttype().is_some(),
            Self::DataSchema => event.dataschema().is_some(),
            Self::Subject => event.subject().is_some(),
            Self::Time => event.time().is_some(),
            Self::Extension(name) => event.extension(name).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event() -> Event {
        EventBuilderV10::new()
            .id("id-1")
            .source("http://localhost/source")
            .ty("example.type")
            .time("2018-04-26T14:48:09+02:00")
            .extension("small", 7_i64)
            .extension("big", 4_294_967_296_i64)
            .extension("flag", true)
            .build()
            .expect("valid event")
    }

    fn read(name: &str) -> Option<Value> {
        Attribute::from_name(name.to_owned())
            .read(&event())
            .map(Val::into_value)
    }

    #[test]
    fn context_attributes_are_strings() {
        assert_eq!(read("specversion"), Some(Value::from("1.0")));
        assert_eq!(read("source"), Some(Value::from("http://localhost/source")));
        assert_eq!(read("time"), Some(Value::from("2018-04-26T12:48:09Z")));
        assert_eq!(read("subject"), None);
    }

    #[test]
    fn extensions_keep_their_type_when_it_is_a_cesql_type() {
        assert_eq!(read("small"), Some(Value::Integer(7)));
        assert_eq!(read("big"), Some(Value::from("4294967296")));
        assert_eq!(read("flag"), Some(Value::Boolean(true)));
        assert_eq!(read("absent"), None);
    }

    #[test]
    fn required_attributes_always_exist() {
        let event = event();
        for name in ["specversion", "id", "source", "type", "time", "flag"] {
            assert!(
                Attribute::from_name(name.to_owned()).exists(&event),
                "{name}"
            );
        }
        for name in ["subject", "dataschema", "datacontenttype", "data", "absent"] {
            assert!(
                !Attribute::from_name(name.to_owned()).exists(&event),
                "{name}"
            );
        }
    }
}
