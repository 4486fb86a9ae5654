//! Knative's `schedule` and `timezone`, and the firing rule.
//!
//! A schedule is a standard 5-field cron expression (minute, hour, day of month, month, day of
//! week), or one of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//! `@hourly`, optionally preceded by `CRON_TZ=Area/City ` (or `TZ=Area/City `), as Knative accepts.
//! `spec.timezone` names the zone instead; both at once is an error (Knative rejects it too, since
//! it prepends `CRON_TZ=` to a schedule that already has one). Without either, times are UTC: where
//! Knative uses its adapter's system zone, kinetic picks the one answer that is the same on every
//! host. `@every <duration>` is refused: its ticks count from whenever a process started, so
//! processes sharing a store would not agree on them.
//!
//! Day of month and day of week together match when either does, as in Vixie cron and Knative.
//!
//! Daylight saving time, in the schedule's zone: a wall-clock time that does not exist (spring
//! forward) fires at the first instant after the gap, once; a time that happens twice (fall back)
//! fires once, at the earlier instant, for a schedule that names its hour; a schedule over every
//! hour fires in both.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::{Error, Result};

/// What Knative uses when `spec.schedule` is empty: every minute.
pub const DEFAULT_SCHEDULE: &str = "* * * * *";

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses `spec.schedule` and `spec.timezone` (`None` or `""`: not set).
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<Schedule> {
        let invalid = |reason: &str| Error::InvalidSchedule {
            schedule: schedule.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = schedule.trim();
        let (prefixed_zone, pattern) = match trimmed
            .strip_prefix("CRON_TZ=")
            .map(|rest| ("CRON_TZ=", rest))
            .or_else(|| trimmed.strip_prefix("TZ=").map(|rest| ("TZ=", rest)))
        {
            Some((prefix, rest)) => {
                let (zone, pattern) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    invalid(&format!("`{prefix}` must be followed by a time zone, a space and the cron expression"))
                })?;
                (Some((prefix, zone)), pattern.trim())
            }
            None => (None, trimmed),
        };
        let timezone = timezone.map(str::trim).filter(|zone| !zone.is_empty());
        let zone_name = match (prefixed_zone, timezone) {
            (Some((prefix, _)), Some(_)) => {
                return Err(Error::TwoTimeZones {
                    prefix: prefix.to_owned(),
                });
            }
            (Some((_, zone)), None) | (None, Some(zone)) => Some(zone),
            (None, None) => None,
        };
        let zone = match zone_name {
            Some(name) => {
                Tz::from_str(name).map_err(|_| Error::UnknownTimeZone(name.to_owned()))?
            }
            None => Tz::UTC,
        };

        if pattern.is_empty() {
            return Err(invalid(&format!(
                "it is empty (Knative's default is `{DEFAULT_SCHEDULE}`, every minute)"
            )));
        }
        let pattern = if pattern.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            pattern
        };
        if pattern.starts_with('@') {
            const NAMES: [&str; 6] = [
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@hourly",
            ];
            if pattern.to_ascii_lowercase().starts_with("@every") {
                return Err(invalid(
                    "`@every` is not supported, because its ticks depend on when a process started; write the interval as a cron expression, such as `*/5 * * * *`",
                ));
            }
            if !NAMES.iter().any(|name| pattern.eq_ignore_ascii_case(name)) {
                return Err(invalid(
                    "unknown shorthand; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly",
                ));
            }
        } else {
            let fields = pattern.split_whitespace().count();
            if fields != 5 {
                return Err(invalid(&format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
                )));
            }
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|source| Error::InvalidCron {
                schedule: schedule.to_owned(),
                source,
            })?;
        let parsed = Schedule { cron, zone };
        // A pattern such as `0 0 30 2 *` parses but names no real day.
        if parsed
            .next_after(Utc.timestamp_opt(0, 0).unwrap())
            .is_none()
        {
            return Err(invalid("it never fires (no date matches it)"));
        }
        Ok(parsed)
    }

    /// The schedule's time zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first tick strictly after `t`; `None` when there is none.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), false)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The last tick at or before `t`; `None` when there is none.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.zone), true)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }
}

/// What a PingSource should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Fire the event of `tick` (at or before now). `skipped` is true when earlier ticks since the
    /// last fired one (or since the source was created) are not fired: only the latest is.
    Fire { tick: DateTime<Utc>, skipped: bool },
    /// Nothing to fire; look again at `next` (`None`: the schedule never fires again).
    Wait { next: Option<DateTime<Utc>> },
}

/// Which tick to fire at `now`, given the last tick fired (from the checkpoint) and when the source
/// was created (or its spec last changed).
///
/// Each tick fires once: a tick at or before `last_fired` never fires again. Ticks at or before
/// `created` never fire, so a new source (no checkpoint yet) starts with the first tick after it
/// was created, a changed schedule with its first tick after the change, and a checkpoint left by
/// an earlier source of the same name cannot hold a new one back. A tick exactly at `now` is due.
///
/// After downtime only the most recent missed tick fires, not one event per missed tick: a ping is
/// a heartbeat ("it is time to run"), and a storm of stale ticks after an outage would make
/// consumers run the same job many times at once. One late event still tells them that the time
/// came while kinetic was down.
pub fn due(
    schedule: &Schedule,
    last_fired: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Due {
    let floor = last_fired.map_or(created, |fired| fired.max(created));
    match schedule.latest_at_or_before(now) {
        Some(tick) if tick > floor => Due::Fire {
            tick,
            skipped: schedule.next_after(floor).is_some_and(|first| first < tick),
        },
        _ => Due::Wait {
            next: schedule.next_after(now.max(floor)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339 in a test")
            .with_timezone(&Utc)
    }

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *", None).expect("valid")
    }

    #[test]
    fn good_schedules_parse() {
        let from = utc("2024-05-15T10:07:30Z");
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("* * * * *", None, "2024-05-15T10:08:00Z"),
            ("  */15 * * * *  ", None, "2024-05-15T10:15:00Z"),
            ("0 12 * * MON-FRI", None, "2024-05-15T12:00:00Z"),
            ("0 0 1 jan *", None, "2025-01-01T00:00:00Z"),
            ("0 0 * * 0", None, "2024-05-19T00:00:00Z"),
            ("0 0 * * 7", None, "2024-05-19T00:00:00Z"),
            // Day of month or day of week (Vixie cron): the 20th, or any Friday.
            ("0 0 20 * FRI", None, "2024-05-17T00:00:00Z"),
            ("@hourly", None, "2024-05-15T11:00:00Z"),
            ("@daily", None, "2024-05-16T00:00:00Z"),
            ("@midnight", None, "2024-05-16T00:00:00Z"),
            ("@weekly", None, "2024-05-19T00:00:00Z"),
            ("@monthly", None, "2024-06-01T00:00:00Z"),
            ("@yearly", None, "2025-01-01T00:00:00Z"),
            (
                "CRON_TZ=Europe/Madrid 0 9 * * *",
                None,
                "2024-05-16T07:00:00Z",
            ),
            (
                "TZ=America/New_York 0 9 * * *",
                None,
                "2024-05-15T13:00:00Z",
            ),
            ("0 9 * * *", Some("Asia/Tokyo"), "2024-05-16T00:00:00Z"),
            ("0 9 * * *", Some(""), "2024-05-16T09:00:00Z"),
            ("0 0 29 2 *", None, "2028-02-29T00:00:00Z"),
        ];
        for (schedule, timezone, next) in cases {
            let parsed = Schedule::parse(schedule, *timezone)
                .unwrap_or_else(|error| panic!("{schedule:?}: {error}"));
            assert_eq!(
                parsed.next_after(from),
                Some(utc(next)),
                "{schedule:?} in {timezone:?}"
            );
        }
    }

    #[test]
    fn bad_schedules_are_rejected_with_what_to_fix() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("", None, "it is empty (Knative's default is `* * * * *`"),
            (
                "* * * *",
                None,
                "expected 5 fields (minute hour day-of-month month day-of-week), found 4",
            ),
            ("0 * * * * *", None, "expected 5 fields"),
            ("61 * * * *", None, "not a valid cron schedule"),
            ("* 24 * * *", None, "not a valid cron schedule"),
            ("* * * * MONDAY-ish", None, "not a valid cron schedule"),
            ("@every 1m", None, "`@every` is not supported"),
            ("@fortnightly", None, "unknown shorthand"),
            ("0 0 30 2 *", None, "it never fires"),
            (
                "CRON_TZ=Europe/Madrid",
                None,
                "must be followed by a time zone",
            ),
            (
                "CRON_TZ=Mars/Olympus 0 9 * * *",
                None,
                "time zone `Mars/Olympus` is unknown",
            ),
            (
                "0 9 * * *",
                Some("Europe/Madird"),
                "time zone `Europe/Madird` is unknown",
            ),
            (
                "CRON_TZ=Europe/Madrid 0 9 * * *",
                Some("Europe/Madrid"),
                "sets a time zone with `CRON_TZ=` and spec.timezone is set too",
            ),
        ];
        for (schedule, timezone, expected) in cases {
            let error = Schedule::parse(schedule, *timezone)
                .err()
                .unwrap_or_else(|| panic!("{schedule:?} should be rejected"));
            let message = error.to_string();
            assert!(
                message.contains(expected),
                "{schedule:?}: `{message}` should contain `{expected}`"
            );
        }
    }

    #[test]
    fn madrid_daily_tick_follows_daylight_saving_time() {
        let nine = Schedule::parse("0 9 * * *", Some("Europe/Madrid")).expect("valid");
        // CET (UTC+1) before 2024-03-31, CEST (UTC+2) after, CET again from 2024-10-27.
        assert_eq!(
            nine.next_after(utc("2024-03-30T12:00:00Z")),
            Some(utc("2024-03-31T07:00:00Z"))
        );
        assert_eq!(
            nine.next_after(utc("2024-03-29T12:00:00Z")),
            Some(utc("2024-03-30T08:00:00Z"))
        );
        assert_eq!(
            nine.next_after(utc("2024-10-26T12:00:00Z")),
            Some(utc("2024-10-27T08:00:00Z"))
        );
        assert_eq!(nine.zone(), chrono_tz::Europe::Madrid);
    }

    #[test]
    fn madrid_times_in_the_gap_and_the_overlap_fire_once() {
        let half_past_two =
            Schedule::parse("CRON_TZ=Europe/Madrid 30 2 * * *", None).expect("valid");
        // 2024-03-31 02:00 CET jumps to 03:00 CEST: 02:30 does not exist, the tick is at 03:00 CEST.
        assert_eq!(
            half_past_two.next_after(utc("2024-03-30T12:00:00Z")),
            Some(utc("2024-03-31T01:00:00Z"))
        );
        assert_eq!(
            half_past_two.next_after(utc("2024-03-31T01:00:00Z")),
            Some(utc("2024-04-01T00:30:00Z"))
        );
        // 2024-10-27 03:00 CEST falls back to 02:00 CET: 02:30 happens twice, fires at the first.
        assert_eq!(
            half_past_two.next_after(utc("2024-10-26T12:00:00Z")),
            Some(utc("2024-10-27T00:30:00Z"))
        );
        assert_eq!(
            half_past_two.next_after(utc("2024-10-27T00:30:00Z")),
            Some(utc("2024-10-28T01:30:00Z"))
        );
    }

    #[test]
    fn due_table() {
        let schedule = every_minute();
        let created = utc("2024-05-15T10:00:30Z");
        let cases: &[(&str, Option<&str>, &str, Due)] = &[
            (
                "first start before any tick",
                None,
                "2024-05-15T10:00:45Z",
                Due::Wait {
                    next: Some(utc("2024-05-15T10:01:00Z")),
                },
            ),
            (
                "first start after the first tick",
                None,
                "2024-05-15T10:01:05Z",
                Due::Fire {
                    tick: utc("2024-05-15T10:01:00Z"),
                    skipped: false,
                },
            ),
            (
                "first start long after creation fires only the latest",
                None,
                "2024-05-15T10:09:59Z",
                Due::Fire {
                    tick: utc("2024-05-15T10:09:00Z"),
                    skipped: true,
                },
            ),
            (
                "normal tick",
                Some("2024-05-15T10:04:00Z"),
                "2024-05-15T10:05:00.200Z",
                Due::Fire {
                    tick: utc("2024-05-15T10:05:00Z"),
                    skipped: false,
                },
            ),
            (
                "clock exactly at the tick",
                Some("2024-05-15T10:04:00Z"),
                "2024-05-15T10:05:00Z",
                Due::Fire {
                    tick: utc("2024-05-15T10:05:00Z"),
                    skipped: false,
                },
            ),
            (
                "just before the tick",
                Some("2024-05-15T10:04:00Z"),
                "2024-05-15T10:04:59.999Z",
                Due::Wait {
                    next: Some(utc("2024-05-15T10:05:00Z")),
                },
            ),
            (
                "already fired",
                Some("2024-05-15T10:05:00Z"),
                "2024-05-15T10:05:00.500Z",
                Due::Wait {
                    next: Some(utc("2024-05-15T10:06:00Z")),
                },
            ),
            (
                "missed ticks after downtime: only the latest",
                Some("2024-05-15T10:02:00Z"),
                "2024-05-15T13:41:10Z",
                Due::Fire {
                    tick: utc("2024-05-15T13:41:00Z"),
                    skipped: true,
                },
            ),
            (
                "a checkpoint older than the source does not fire ticks before creation",
                Some("2024-05-14T08:00:00Z"),
                "2024-05-15T10:00:50Z",
                Due::Wait {
                    next: Some(utc("2024-05-15T10:01:00Z")),
                },
            ),
            (
                "a checkpoint ahead of the clock (another host's clock) waits past it",
                Some("2024-05-15T10:07:00Z"),
                "2024-05-15T10:06:30Z",
                Due::Wait {
                    next: Some(utc("2024-05-15T10:08:00Z")),
                },
            ),
        ];
        for (name, last_fired, now, expected) in cases {
            let got = due(&schedule, last_fired.map(utc), created, utc(now));
            assert_eq!(got, *expected, "{name}");
        }
    }

    #[test]
    fn due_with_a_tick_at_creation_does_not_fire_it() {
        let created = utc("2024-05-15T10:00:00Z");
        assert_eq!(
            due(&every_minute(), None, created, created),
            Due::Wait {
                next: Some(utc("2024-05-15T10:01:00Z"))
            }
        );
    }

    #[test]
    fn due_in_a_time_zone() {
        let schedule = Schedule::parse("0 9 * * *", Some("Europe/Madrid")).expect("valid");
        let created = utc("2024-03-01T00:00:00Z");
        assert_eq!(
            due(
                &schedule,
                Some(utc("2024-03-30T08:00:00Z")),
                created,
                utc("2024-03-31T07:00:01Z")
            ),
            Due::Fire {
                tick: utc("2024-03-31T07:00:00Z"),
                skipped: false
            }
        );
    }

    fn schedules() -> impl Strategy<Value = Schedule> {
        prop::sample::select(vec![
            ("* * * * *", None),
            ("*/7 * * * *", None),
            ("30 2 * * *", Some("Europe/Madrid")),
            ("0 * * * *", Some("Europe/Madrid")),
            ("15 1-3 * * SUN", Some("America/New_York")),
            ("0 0 29 2 *", None),
            ("@weekly", Some("Australia/Lord_Howe")),
        ])
        .prop_map(|(text, zone)| Schedule::parse(text, zone).expect("valid"))
    }

    proptest! {
        #[test]
        fn ticks_move_forward(schedule in schedules(), start_ms in 0i64..4_102_444_800_000) {
            let start = Utc.timestamp_millis_opt(start_ms).unwrap();
            let mut previous = start;
            for _ in 0..5 {
                let next = schedule.next_after(previous).expect("schedules in the table fire forever");
                prop_assert!(next > previous, "{next} after {previous}");
                prop_assert_eq!(schedule.latest_at_or_before(next), Some(next));
                previous = next;
            }
        }

        #[test]
        fn due_never_fires_a_fired_or_future_tick(
            schedule in schedules(),
            created_ms in 0i64..4_102_444_800_000,
            fired_after_ms in prop::option::of(0i64..10_000_000_000),
            now_after_ms in 0i64..10_000_000_000,
        ) {
            let created = Utc.timestamp_millis_opt(created_ms).unwrap();
            let last_fired = fired_after_ms.map(|ms| Utc.timestamp_millis_opt(created_ms + ms).unwrap());
            let now = Utc.timestamp_millis_opt(created_ms + now_after_ms).unwrap();
            match due(&schedule, last_fired, created, now) {
                Due::Fire { tick, .. } => {
                    prop_assert!(tick <= now);
                    prop_assert!(tick > created);
                    prop_assert!(last_fired.is_none_or(|fired| tick > fired));
                    prop_assert_eq!(schedule.next_after(tick).map(|next| next > now), Some(true), "the latest due tick");
                }
                Due::Wait { next } => {
                    let next = next.expect("schedules in the table fire forever");
                    prop_assert!(next > now);
                }
            }
        }
    }
}
