//! The grammar of the templates a `WebhookSource` names an event's `type`, `source` and `id` with:
//! literal text, `{header:NAME}`, `{json:/json/pointer}`, `{body:sha256}` (the hex SHA-256 of the
//! raw body: an id that stays the same for the same body, whatever unsigned headers say), and
//! `{{` / `}}` for literal braces.
//!
//! Parsing lives here so that applying a resource refuses a broken template; rendering against a
//! request lives in the sources crate.

use std::fmt;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    /// The value of a request header (names compare case-insensitively).
    Header(String),
    /// The value at an RFC 6901 JSON pointer into the request body.
    Json(String),
    /// The hex SHA-256 of the raw request body.
    BodySha256,
}

impl fmt::Display for Part {
    /// Writes the placeholder as the user wrote it, e.g. `{header:X-GitHub-Event}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Literal(text) => write!(f, "{}", text.replace('{', "{{").replace('}', "}}")),
            Part::Header(name) => write!(f, "{{header:{name}}}"),
            Part::Json(pointer) => write!(f, "{{json:{pointer}}}"),
            Part::BodySha256 => write!(f, "{{body:sha256}}"),
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template. The error says what is wrong, without a field path.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(index) = rest.find(['{', '}']) {
            literal.push_str(&rest[..index]);
            let tail = &rest[index..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
                continue;
            }
            if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!(
                    "a `}}` at byte {index} closes nothing; write `}}}}` for a literal brace"
                ));
            }
            let end = tail.find('}').ok_or_else(|| {
                "a `{` is never closed; write `{{` for a literal brace".to_owned()
            })?;
            let placeholder = &tail[1..end];
            let part = parse_placeholder(placeholder)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether rendering needs the request body parsed as JSON.
    pub fn uses_json(&self) -> bool {
        self.parts.iter().any(|part| matches!(part, Part::Json(_)))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts.iter().try_for_each(|part| write!(f, "{part}"))
    }
}

fn parse_placeholder(placeholder: &str) -> Result<Part, String> {
    if placeholder.contains('{') {
        return Err(format!(
            "`{{{placeholder}}}` nests a `{{`; placeholders cannot contain braces"
        ));
    }
    let unknown = || {
        format!(
            "`{{{placeholder}}}` is not a placeholder; use `{{header:NAME}}`, `{{json:/pointer}}` or `{{body:sha256}}`"
        )
    };
    let (kind, argument) = placeholder.split_once(':').ok_or_else(unknown)?;
    match kind {
        "header" => {
            if argument.is_empty() || !argument.bytes().all(is_token_byte) {
                return Err(format!(
                    "`{argument}` in `{{{placeholder}}}` is not an HTTP header name"
                ));
            }
            Ok(Part::Header(argument.to_owned()))
        }
        "json" => {
            if !argument.starts_with('/') {
                return Err(format!(
                    "`{argument}` in `{{{placeholder}}}` is not a JSON pointer; it starts with `/`, e.g. `/repository/full_name`"
                ));
            }
            let mut escapes = argument.split('~').skip(1);
            if escapes.any(|after| !(after.starts_with('0') || after.starts_with('1'))) {
                return Err(format!(
                    "`{argument}` in `{{{placeholder}}}` has a `~` not followed by 0 or 1 (write `~0` for `~`, `~1` for `/`)"
                ));
            }
            Ok(Part::Json(argument.to_owned()))
        }
        "body" if argument == "sha256" => Ok(Part::BodySha256),
        "body" => Err(format!(
            "`{{{placeholder}}}`: the body's only placeholder is `{{body:sha256}}`"
        )),
        _ => Err(unknown()),
    }
}

/// RFC 9110 `tchar`: the bytes of a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders_and_escapes() {
        let cases: &[(&str, &[Part])] = &[
            ("", &[]),
            ("plain", &[Part::Literal("plain".into())]),
            (
                "com.github.{header:X-GitHub-Event}",
                &[
                    Part::Literal("com.github.".into()),
                    Part::Header("X-GitHub-Event".into()),
                ],
            ),
            (
                "{json:/repository/full_name}/{json:/a~1b~0c}",
                &[
                    Part::Json("/repository/full_name".into()),
                    Part::Literal("/".into()),
                    Part::Json("/a~1b~0c".into()),
                ],
            ),
            ("{{literal}}", &[Part::Literal("{literal}".into())]),
            (
                "a{{{header:x}}}b",
                &[
                    Part::Literal("a{".into()),
                    Part::Header("x".into()),
                    Part::Literal("}b".into()),
                ],
            ),
        ];
        for (text, want) in cases {
            let template = Template::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(template.parts(), *want, "{text}");
            assert_eq!(template.to_string(), *text, "{text} round trip");
        }
    }

    #[test]
    fn refuses_broken_templates() {
        let cases = [
            ("{ns}", "not a placeholder"),
            ("{query:x}", "not a placeholder"),
            ("{header:}", "not an HTTP header name"),
            ("{header:X Event}", "not an HTTP header name"),
            ("{json:repository}", "starts with `/`"),
            ("{json:/a~2}", "`~` not followed"),
            ("a{header:x", "never closed"),
            ("a}b", "closes nothing"),
            ("{header:{x}}", "nests"),
        ];
        for (text, want) in cases {
            let error = Template::parse(text).expect_err(text);
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
