//! ISO-8601 durations as Knative's `DeliverySpec` writes them (`PT0.2S`, `PT30S`, `PT1H30M`, `P1D`).

use std::time::Duration;

/// Parses an ISO-8601 duration. Weeks, days, hours, minutes and (fractional) seconds are accepted;
/// years and months are refused because their length is ambiguous.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("`{text}` is not an ISO-8601 duration: {why}");
    let body = text
        .strip_prefix('P')
        .ok_or_else(|| bad("it must start with `P`, e.g. `PT0.2S`, `PT30S` or `PT1H`"))?;
    if body.is_empty() {
        return Err(bad("nothing follows `P`"));
    }
    let (date, time) = match body.split_once('T') {
        Some((date, time)) => {
            if time.is_empty() {
                return Err(bad("nothing follows `T`"));
            }
            (date, Some(time))
        }
        None => (body, None),
    };
    let mut nanos: u128 = 0;
    let mut any = false;
    let mut fold = |part: &str, units: &[(char, u128)], section: &str| -> Result<(), String> {
        let mut rest = part;
        let mut last_unit = None::<usize>;
        while !rest.is_empty() {
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
                .ok_or_else(|| bad(&format!("the number `{rest}` has no unit")))?;
            let (number, tail) = rest.split_at(end);
            let unit = tail.chars().next().unwrap_or(' ');
            let index = units
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(|| {
                    let allowed: String = units.iter().map(|(u, _)| *u).collect();
                    if section == "date" && matches!(unit, 'Y' | 'M') {
                        bad("years and months have no fixed length; use days (`P1D`) or hours (`PT24H`)")
                    } else {
                        bad(&format!("unit `{unit}` is not allowed in the {section} part (allowed: {allowed})"))
                    }
                })?;
            if last_unit.is_some_and(|last| index <= last) {
                return Err(bad("units must appear once each, largest first"));
            }
            last_unit = Some(index);
            if number.is_empty() {
                return Err(bad(&format!("unit `{unit}` has no number before it")));
            }
            let number = number.replace(',', ".");
            let (whole, fraction) = number.split_once('.').unwrap_or((&number, ""));
            if whole.is_empty() && fraction.is_empty() {
                return Err(bad("a number is empty"));
            }
            if fraction.contains('.') {
                return Err(bad(&format!("`{number}` is not a number")));
            }
            let scale = units[index].1;
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole
                    .parse()
                    .map_err(|_| bad(&format!("`{number}` is too large")))?
            };
            let mut value = whole
                .checked_mul(scale)
                .ok_or_else(|| bad("the duration is too large"))?;
            if !fraction.is_empty() {
                if fraction.len() > 9 {
                    return Err(bad("at most 9 fractional digits are supported"));
                }
                let digits: u128 = fraction.parse().map_err(|_| bad("bad fraction"))?;
                value += digits * scale / 10u128.pow(fraction.len() as u32);
            }
            nanos = nanos
                .checked_add(value)
                .ok_or_else(|| bad("the duration is too large"))?;
            any = true;
            rest = &tail[unit.len_utf8()..];
        }
        Ok(())
    };
    const SECOND: u128 = 1_000_000_000;
    fold(
        date,
        &[('W', 7 * 86_400 * SECOND), ('D', 86_400 * SECOND)],
        "date",
    )?;
    if let Some(time) = time {
        fold(
            time,
            &[('H', 3_600 * SECOND), ('M', 60 * SECOND), ('S', SECOND)],
            "time",
        )?;
    }
    if !any {
        return Err(bad("it has no value"));
    }
    let nanos = u64::try_from(nanos).map_err(|_| bad("the duration is too large"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration back in ISO-8601 (`PT0.2S`), the inverse of [`parse`] for what it produces.
pub fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        format!("PT{secs}S")
    } else {
        let fraction = format!("{nanos:09}");
        format!("PT{secs}.{}S", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_knative_forms() {
        let cases = [
            ("PT0.2S", Duration::from_millis(200)),
            ("PT1S", Duration::from_secs(1)),
            ("PT30S", Duration::from_secs(30)),
            ("PT1M", Duration::from_secs(60)),
            ("PT1H30M", Duration::from_secs(5400)),
            ("P1D", Duration::from_secs(86_400)),
            ("P1W", Duration::from_secs(604_800)),
            ("P1DT1S", Duration::from_secs(86_401)),
            ("PT0S", Duration::ZERO),
            ("PT0,5S", Duration::from_millis(500)),
            ("PT.5S", Duration::from_millis(500)),
            ("PT0.000000001S", Duration::from_nanos(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_malformed_input_with_reasons() {
        let cases = [
            ("", "must start with `P`"),
            ("0.2S", "must start with `P`"),
            ("P", "nothing follows"),
            ("PT", "nothing follows `T`"),
            ("P1Y", "years and months"),
            ("P1M", "years and months"),
            ("PT1D", "not allowed in the time part"),
            ("PT5", "has no unit"),
            ("PTS", "has no number"),
            ("PT1S1M", "largest first"),
            ("PT1.2.3S", "not a number"),
            ("PT-1S", "is not allowed"),
            ("PT99999999999999999999999999999999999999999H", "too large"),
        ];
        for (text, want) in cases {
            let error = parse(text).expect_err(text);
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn format_round_trips() {
        for millis in [0u64, 1, 200, 1000, 1500, 86_400_000] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse(&format(duration)), Ok(duration));
        }
    }
}
