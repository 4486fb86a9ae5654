//! CloudEvents extension names and rules shared by the broker (which sets them) and the dispatcher
//! (which reads and forwards them).

/// Time the broker accepted the event (RFC 3339), set on every accepted event.
pub const ARRIVAL_TIME: &str = "knativearrivaltime";
/// Remaining hops before the event is refused, the reply-loop guard.
pub const BROKER_TTL: &str = "knativebrokerttl";
/// TTL given to an event that arrives without one.
pub const DEFAULT_BROKER_TTL: i64 = 255;
/// Ordered delivery lane of an event.
pub const PARTITION_KEY: &str = "partitionkey";
/// Dead-letter extensions (Knative's names).
pub const ERROR_DEST: &str = "knativeerrordest";
pub const ERROR_CODE: &str = "knativeerrorcode";
pub const ERROR_DATA: &str = "knativeerrordata";
/// Longest `knativeerrordata` value, in base64 characters.
pub const ERROR_DATA_MAX: usize = 1024;

/// What the broker does with an incoming TTL: absent → the default, present → clamped to the
/// default (a sender cannot buy itself more hops than a fresh event has) and decremented; an event
/// whose TTL would drop to zero or below is refused (`None`).
pub fn next_ttl(incoming: Option<i64>) -> Option<i64> {
    let ttl = incoming.map_or(DEFAULT_BROKER_TTL + 1, |ttl| ttl.min(DEFAULT_BROKER_TTL));
    (ttl > 1).then(|| ttl - 1)
}

/// `knativearrivaltime` for events accepted at `now`: formatted once for all events of a request.
pub fn arrival_time(now: chrono::DateTime<chrono::Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Microseconds since the Unix epoch of a `knativearrivaltime`. The broker's own form
/// (`2026-12-07T23:37:48.123456Z`, what [`arrival_time`] writes) is read by position; any other
/// RFC 3339 text goes through chrono. `None` when it is not a time.
pub fn arrival_micros(text: &str) -> Option<i64> {
    arrival_micros_fast(text.as_bytes()).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|at| at.timestamp_micros())
    })
}

/// [`arrival_micros`] of exactly `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn arrival_micros_fast(text: &[u8]) -> Option<i64> {
    if text.len() != 27
        || text[4] != b'-'
        || text[7] != b'-'
        || text[10] != b'T'
        || text[13] != b':'
        || text[16] != b':'
        || text[19] != b'.'
        || text[26] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        text[range].iter().try_fold(0i64, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + i64::from(byte - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let micros = number(20..26)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days from 1970-01-01 to the date (civil calendar, years counted from March).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// Applies the broker's acceptance rules to an event entering a broker's log (from a client or as a
/// reply): stamps `knativearrivaltime` (`arrival`, from [`arrival_time`]), and sets or decrements
/// `knativebrokerttl`, refusing an event whose TTL is spent (a reply loop).
pub fn admit(
    event: &mut cloudevents::Event,
    arrival: &str,
) -> Result<(), crate::cloudevent::EventError> {
    let incoming = crate::cloudevent::extension_i64(event, BROKER_TTL)?;
    let Some(ttl) = next_ttl(incoming) else {
        return Err(crate::cloudevent::EventError {
            kind: crate::cloudevent::EventErrorKind::Invalid,
            attribute: Some(BROKER_TTL.to_owned()),
            message: format!(
                "`{BROKER_TTL}` is {}: the event went through too many brokers (a reply loop?)",
                incoming.unwrap_or_default()
            ),
        });
    };
    event.set_extension(BROKER_TTL, cloudevents::event::ExtensionValue::Integer(ttl));
    event.set_extension(
        ARRIVAL_TIME,
        cloudevents::event::ExtensionValue::String(arrival.to_owned()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn arrival_times_read_as_chrono_reads_them() {
        use chrono::{TimeZone as _, Utc};
        let mut at = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        // Dates from 1970 to about 7000 (every leap rule), at odd times of day.
        for step in 0..5_000i64 {
            let text = super::arrival_time(at);
            assert_eq!(
                super::arrival_micros_fast(text.as_bytes()),
                Some(at.timestamp_micros()),
                "{text}"
            );
            at += chrono::Duration::microseconds(32_123_456_789_013 + step * 7);
        }
        for (text, micros) in [
            ("2000-02-29T23:59:59.999999Z", Some(951_868_799_999_999)),
            (
                "2026-12-07T23:37:48.123456+01:00",
                Some(1_796_683_068_123_456),
            ),
            ("2026-12-07T23:37:48Z", Some(1_796_686_668_000_000)),
            ("1969-12-31T23:59:59.000001Z", Some(-999_999)),
        ] {
            assert_eq!(super::arrival_micros(text), micros, "{text}");
        }
        for text in [
            "2001-02-29T00:00:00.000000Z",
            "2026-13-01T00:00:00.000000Z",
            "2026-12-07T24:00:00.000000Z",
            "2026-12-07T23:37:48.12345xZ",
            "not a time at all, 27 bytes",
            "",
        ] {
            assert_eq!(super::arrival_micros(text), None, "{text}");
        }
    }

    use super::*;

    #[test]
    fn ttl_rules() {
        assert_eq!(next_ttl(None), Some(255));
        assert_eq!(next_ttl(Some(255)), Some(254));
        assert_eq!(next_ttl(Some(2)), Some(1));
        assert_eq!(next_ttl(Some(1)), None);
        assert_eq!(next_ttl(Some(0)), None);
        assert_eq!(next_ttl(Some(-5)), None);
        assert_eq!(next_ttl(Some(256)), Some(254));
        assert_eq!(next_ttl(Some(i64::MAX)), Some(254));
        assert_eq!(next_ttl(Some(i64::MIN)), None);
    }
}
