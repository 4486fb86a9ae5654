//! Kubernetes resource quantities as a Service's `resources.limits` writes them: memory in bytes
//! with binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`) suffixes, CPU in cores
//! (`"1"`, `"0.5"`) or millicores (`"500m"`).

/// Bytes of a memory quantity: `"512Mi"`, `"1.5Gi"`, `"128M"`; a plain number is bytes, a
/// fraction of a byte rounds up. Exponents (`1e9`) are not accepted (write `1G`). `None` when the
/// text is not a quantity or is zero.
pub fn memory_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    let bytes = scaled(number, factor, true)?;
    (bytes > 0).then_some(bytes)
}

/// Millicores of a CPU quantity: `"1"` → 1000, `"0.5"` → 500, `"250m"` → 250. `None` when the text
/// is not a quantity, is zero, or is finer than a millicore.
pub fn cpu_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    let millis = match text.strip_suffix('m') {
        Some(number) if !number.contains('.') => scaled(number, 1, false)?,
        Some(_) => return None,
        None => scaled(text, 1000, false)?,
    };
    (millis > 0).then_some(millis)
}

/// `number × factor` for a decimal number text; `None` if it is not a plain decimal or overflows.
/// A result with a fraction left is rounded up with `round_up` (bytes, as Kubernetes does), and
/// refused without (millicores finer than 1m).
fn scaled(number: &str, factor: u64, round_up: bool) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 18
    {
        return None;
    }
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let denominator = 10u128.pow(fraction.len() as u32);
    let product = digits.checked_mul(u128::from(factor))?;
    let (quotient, rest) = (product / denominator, product % denominator);
    let value = match (rest, round_up) {
        (0, _) => quotient,
        (_, true) => quotient + 1,
        (_, false) => return None,
    };
    u64::try_from(value).ok()
}

/// A quantity as a YAML value: Kubernetes accepts `memory: 512Mi` and `cpu: 1` (a number) alike.
pub fn text_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("512Mi", Some(512 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1.5Gi", Some(3 << 29)),
            ("64Ki", Some(64 << 10)),
            ("128M", Some(128_000_000)),
            ("1k", Some(1000)),
            ("1048576", Some(1 << 20)),
            (" 2Mi ", Some(2 << 20)),
            ("0", None),
            ("0Mi", None),
            ("", None),
            ("Mi", None),
            ("12MB", None),
            ("-1Mi", None),
            ("1.5", Some(2)),
            ("0.5Ki", Some(512)),
            ("1e9", None),
            ("99999999999999Ti", None),
        ];
        for (text, want) in cases {
            assert_eq!(memory_bytes(text), *want, "{text:?}");
        }
    }

    #[test]
    fn cpu_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1", Some(1000)),
            ("2", Some(2000)),
            ("0.5", Some(500)),
            (".25", Some(250)),
            ("500m", Some(500)),
            ("1500m", Some(1500)),
            ("0.0005", None),
            ("0", None),
            ("0m", None),
            ("1.5m", None),
            ("one", None),
            ("", None),
            ("m", None),
        ];
        for (text, want) in cases {
            assert_eq!(cpu_millis(text), *want, "{text:?}");
        }
    }
}
