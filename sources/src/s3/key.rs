//! Object keys as notifications carry them: URL-encoded, with `+` for a space (AWS), sometimes
//! with `/` encoded too (moto writes `%2F`).

/// How a store encodes keys in its notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-www-form-urlencoded`: `%XX` escapes and `+` for a space (AWS, MinIO).
    Form,
    /// `%XX` escapes only; a `+` is a plus (COS).
    Percent,
}

/// Decodes a notification's key. A `%` not followed by two hex digits is kept as written rather
/// than failing the record: a store that did not encode such a key still names its object. Bytes
/// that are not UTF-8 once decoded become U+FFFD.
pub fn decode(key: &str, encoding: Encoding) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if encoding == Encoding::Form => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into())
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

/// Encodes a key the way AWS does in notifications: unreserved characters and `/` as they are,
/// a space as `+`, everything else as `%XX`.
pub fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        let cases = [
            ("photos/a.jpg", Encoding::Form, "photos/a.jpg"),
            ("red+flower.jpg", Encoding::Form, "red flower.jpg"),
            ("red+flower.jpg", Encoding::Percent, "red+flower.jpg"),
            ("uploads%2Fa+b.txt", Encoding::Form, "uploads/a b.txt"),
            ("a%2b.txt", Encoding::Form, "a+.txt"),
            ("caf%C3%A9", Encoding::Form, "café"),
            ("100%", Encoding::Form, "100%"),
            ("100%2", Encoding::Form, "100%2"),
            ("%zz", Encoding::Form, "%zz"),
            ("%FF", Encoding::Form, "\u{FFFD}"),
        ];
        for (key, encoding, decoded) in cases {
            assert_eq!(decode(key, encoding), decoded, "{key} {encoding:?}");
        }
    }

    #[test]
    fn encoding_round_trips() {
        for key in ["photos/red flower.jpg", "a+b%c/ü?.txt", "", "plain"] {
            let encoded = encode(key);
            assert!(!encoded.contains(' '), "{encoded}");
            assert_eq!(decode(&encoded, Encoding::Form), key);
        }
        assert_eq!(encode("a b+c/d"), "a+b%2Bc/d");
    }
}
