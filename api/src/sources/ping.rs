//! Knative's `PingSource`: an event on a cron schedule. The schedule is checked for shape here;
//! the sources crate parses it fully.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde::{Deserialize, Serialize};

use super::{CloudEventOverrides, validate_common};
use crate::error::Error;
use crate::meta::{Destination, ObjectMeta};

/// Knative's PingSource: an event on a cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSource {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PingSourceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingSourceSpec {
    /// Five-field cron schedule, e.g. `*/1 * * * *`, optionally prefixed `CRON_TZ=Europe/Madrid `.
    pub schedule: String,
    /// IANA time zone the schedule is read in; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Media type of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Event data as text; exclusive with `dataBase64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Event data as base64 bytes; exclusive with `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

impl PingSourceSpec {
    /// The time zone (from `timezone` or a `CRON_TZ=`/`TZ=` prefix) and the five cron fields.
    pub fn schedule_parts(&self) -> (Option<&str>, &str) {
        let schedule = self.schedule.trim();
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = schedule.strip_prefix(prefix) {
                let (zone, cron) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                return (Some(zone), cron.trim());
            }
        }
        (self.timezone.as_deref(), schedule)
    }

    /// The event data as bytes; call after validation.
    pub fn data_bytes(&self) -> Option<Vec<u8>> {
        match (&self.data, &self.data_base64) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(encoded)) => BASE64_STANDARD.decode(encoded).ok(),
            (None, None) => None,
        }
    }
}

impl PingSource {
    pub fn validate(&self) -> Result<(), Error> {
        let spec = &self.spec;
        validate_common(&self.metadata, &spec.sink, spec.ce_overrides.as_ref())?;
        let schedule = spec.schedule.trim_start();
        let prefixed = schedule.starts_with("CRON_TZ=") || schedule.starts_with("TZ=");
        if prefixed && spec.timezone.is_some() {
            return Err(Error::new(
                "spec.timezone",
                "is set and the schedule has a `CRON_TZ=` prefix",
            )
            .with_hint("keep one: remove `timezone` or the prefix"));
        }
        let (zone, cron) = spec.schedule_parts();
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let cron_hint = "five fields: minute hour day-of-month month day-of-week, e.g. `*/5 * * * *`, or @yearly, @monthly, @weekly, @daily, @hourly; optionally prefixed `CRON_TZ=Europe/Madrid `";
        let descriptor = [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        ]
        .iter()
        .any(|d| cron.eq_ignore_ascii_case(d));
        if !descriptor && fields.len() != 5 {
            return Err(Error::new(
                "spec.schedule",
                format!("`{}` has {} fields, not 5", spec.schedule, fields.len()),
            )
            .with_hint(cron_hint));
        }
        if let Some(field) = fields.iter().filter(|_| !descriptor).find(|field| {
            !field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"*/,-?#".contains(&b))
        }) {
            return Err(Error::new(
                "spec.schedule",
                format!("the field `{field}` is not a cron field"),
            )
            .with_hint(cron_hint));
        }
        if let Some(zone) = zone {
            let path = if spec.timezone.is_some() {
                "spec.timezone"
            } else {
                "spec.schedule"
            };
            validate_time_zone(zone).map_err(|e| e.under(path))?;
        }
        if let Some(content_type) = &spec.content_type {
            let (kind, subtype) = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .split_once('/')
                .unwrap_or(("", ""));
            if kind.is_empty() || subtype.is_empty() {
                return Err(Error::new(
                    "spec.contentType",
                    format!("`{content_type}` is not a media type"),
                )
                .with_hint("e.g. `application/json` or `text/plain`"));
            }
        }
        match (&spec.data, &spec.data_base64) {
            (Some(_), Some(_)) => {
                return Err(Error::new("spec", "sets both `data` and `dataBase64`")
                    .with_hint("keep `data` for text, `dataBase64` for bytes"));
            }
            (None, Some(encoded)) => {
                BASE64_STANDARD.decode(encoded).map_err(|error| {
                    Error::new("spec.dataBase64", format!("is not valid base64: {error}"))
                        .with_hint(
                            "encode the bytes with standard base64 (`base64` on the command line)",
                        )
                })?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn validate_time_zone(zone: &str) -> Result<(), Error> {
    let ok = !zone.is_empty()
        && !zone.starts_with('/')
        && !zone.ends_with('/')
        && !zone.contains("..")
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new("", format!("`{zone}` is not a time zone name"))
            .with_hint("use an IANA name such as `Europe/Madrid` or `UTC`"))
    }
}
