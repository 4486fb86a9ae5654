//! Durations as Knative's `config-autoscaler` and `autoscaling.knative.dev/*` annotations write them:
//! Go's `time.ParseDuration` syntax (`60s`, `1m30s`, `500ms`, `1.5h`).

use std::time::Duration;

const NANOS_PER: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 micro sign
    ("μs", 1_000), // U+03BC Greek small letter mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration into signed nanoseconds, as Go's `time.ParseDuration` does: an optional sign,
/// then numbers with optional fractions, each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`). `0` alone needs no unit. Like Go, the result must fit in an `i64` of nanoseconds.
pub fn parse_signed(text: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("`{text}` is not a duration: {why}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad("it is empty; write a number and a unit, e.g. `60s`"));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, after) = rest.split_at(digits);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let end = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(end)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad("expected a number"));
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(bad(&format!(
                "the number `{whole}{}{fraction}` has no unit (use ns, us, ms, s, m or h)",
                if fraction.is_empty() { "" } else { "." }
            )));
        }
        let scale = NANOS_PER
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, nanos)| *nanos)
            .ok_or_else(|| {
                bad(&format!(
                    "unknown unit `{unit}` (use ns, us, ms, s, m or h)"
                ))
            })?;
        let too_large = || bad("it is too large");
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(too_large)?;
        if !fraction.is_empty() {
            // Go keeps at most the digits that cannot overflow and scales them with a float.
            let kept = &fraction[..fraction.len().min(18)];
            let digits: u64 = kept.parse().map_err(|_| too_large())?;
            let divisor = 10f64.powi(kept.len() as i32);
            value = value
                .checked_add((digits as f64 * (scale as f64 / divisor)) as u64)
                .ok_or_else(too_large)?;
        }
        total = total.checked_add(value).ok_or_else(too_large)?;
        rest = after;
    }
    if negative {
        if total > 1 << 63 {
            return Err(bad("it is too large"));
        }
        Ok((total as i64).wrapping_neg())
    } else {
        i64::try_from(total).map_err(|_| bad("it is too large"))
    }
}

/// Parses a non-negative Go duration.
pub fn parse(text: &str) -> Result<Duration, String> {
    let nanos = parse_signed(text)?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("`{text}` is negative; it must be zero or more"))
}

/// Formats a duration the way Go prints one (`1m30s`, `500ms`, `0s`), so error messages echo the
/// syntax users write.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (scale, unit) = match nanos {
            n if n < 1_000 => (1, "ns"),
            n if n < 1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = nanos % 60_000_000_000;
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&format!("{}s", fraction(seconds, 1_000_000_000)));
    text
}

fn fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("60s", 60_000_000_000),
            ("6s", 6_000_000_000),
            ("1m30s", 90_000_000_000),
            ("500ms", 500_000_000),
            ("1.5h", 5_400_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("2h45m", 9_900_000_000_000),
            ("1h1m1s1ms1us1ns", 3_661_001_001_001),
            ("3µs", 3_000),
            ("3μs", 3_000),
            ("+5s", 5_000_000_000),
            ("-5s", -5_000_000_000),
            ("0s", 0),
            ("1s500ms", 1_500_000_000),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse_signed(text), Ok(*nanos), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for text in [
            "",
            "-",
            "60",
            "1.5",
            "s",
            "1x",
            "1d",
            ".s",
            "1..5s",
            "9223372036854775808ns",
            "3000000h",
        ] {
            assert!(parse_signed(text).is_err(), "{text} should not parse");
        }
        let error = parse_signed("60").unwrap_err();
        assert!(error.contains("has no unit"), "{error}");
        let error = parse_signed("5d").unwrap_err();
        assert!(error.contains("unknown unit `d`"), "{error}");
    }

    #[test]
    fn unsigned_parse_refuses_negative() {
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        let error = parse("-1s").unwrap_err();
        assert!(error.contains("negative"), "{error}");
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(6), "6s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_micros(3), "3µs"),
            (Duration::from_nanos(7), "7ns"),
        ];
        for (duration, text) in cases {
            assert_eq!(format(duration), text);
            assert_eq!(parse(text), Ok(duration), "{text} round-trips");
        }
    }
}
