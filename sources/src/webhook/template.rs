//! Rendering a WebhookSource's templates (`com.github.{header:X-GitHub-Event}`,
//! `{json:/repository/full_name}`) against one request. The grammar and parsing live in
//! [`kinetic_api::sources::template`], so applying a resource already refused a broken template.

use std::fmt;

use http::HeaderMap;
use serde_json::Value;

pub use kinetic_api::sources::template::{Part, Template};

use super::verify::WEBHOOK_ID_HEADER;

/// GitHub's unique id of a delivery.
pub const GITHUB_DELIVERY_HEADER: &str = "x-github-delivery";

/// A placeholder had no value in the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{placeholder}` has no value: {reason}")]
pub struct MissingValue {
    /// The placeholder as written, e.g. `{header:X-GitHub-Event}`.
    pub placeholder: String,
    pub reason: &'static str,
}

/// The request a template is rendered against. `json` is the body parsed as JSON, when it is JSON.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub json: Option<&'a Value>,
    /// The raw body, for `{body:sha256}`.
    pub body: &'a [u8],
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("headers", &self.headers.len())
            .field("json", &self.json.is_some())
            .finish()
    }
}

/// Renders `template`; the first placeholder without a value is the error.
pub fn render(template: &Template, request: Request<'_>) -> Result<String, MissingValue> {
    let mut out = String::new();
    for part in template.parts() {
        let missing = |reason| MissingValue {
            placeholder: part.to_string(),
            reason,
        };
        match part {
            Part::Literal(text) => out.push_str(text),
            Part::Header(name) => {
                // `HeaderMap` compares names case-insensitively.
                let value = request
                    .headers
                    .get(name.as_str())
                    .ok_or_else(|| missing("the request has no such header"))?;
                let text = value
                    .to_str()
                    .map_err(|_| missing("the header is not ASCII text"))?;
                out.push_str(text);
            }
            Part::BodySha256 => {
                use sha2::Digest as _;
                out.push_str(&hex::encode(sha2::Sha256::digest(request.body)));
            }
            Part::Json(pointer) => {
                let json = request
                    .json
                    .ok_or_else(|| missing("the request body is not JSON"))?;
                match json.pointer(pointer) {
                    None | Some(Value::Null) => return Err(missing("the body has no such field")),
                    Some(Value::String(text)) => out.push_str(text),
                    Some(Value::Number(number)) => out.push_str(&number.to_string()),
                    Some(Value::Bool(flag)) => out.push_str(if *flag { "true" } else { "false" }),
                    Some(Value::Array(_) | Value::Object(_)) => {
                        return Err(missing("the field is an object or array, not a value"));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The event id: the `id` template when there is one, else the `webhook-id` header (Standard
/// Webhooks), else `X-GitHub-Delivery`; `None` when the request carries no id, and the caller makes
/// one up. A sender's own id makes its retries land on the same event, which the broker dedupes.
pub fn event_id(
    template: Option<&Template>,
    request: Request<'_>,
) -> Result<Option<String>, MissingValue> {
    if let Some(template) = template {
        return render(template, request).map(Some);
    }
    Ok([WEBHOOK_ID_HEADER, GITHUB_DELIVERY_HEADER]
        .into_iter()
        .filter_map(|name| request.headers.get(name)?.to_str().ok())
        .map(str::trim)
        .find(|id| !id.is_empty())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Request headers of a test case.
    type Pairs = &'static [(&'static str, &'static str)];

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn template(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    #[test]
    fn renders_headers_and_json() {
        let headers = headers(&[("x-github-event", "push"), ("X-Count", "3")]);
        let body = json!({
            "repository": {"full_name": "o/r", "stars": 42, "private": false, "topics": ["a"]},
            "a/b": {"~c": "escaped"},
        });
        let request = Request {
            headers: &headers,
            json: Some(&body),
            body: b"",
        };
        let cases = [
            ("com.github.{header:X-GitHub-Event}", "com.github.push"),
            ("{header:x-count}/{header:X-COUNT}", "3/3"),
            ("{json:/repository/full_name}", "o/r"),
            ("stars={json:/repository/stars}", "stars=42"),
            ("{json:/repository/private}", "false"),
            ("{json:/repository/topics/0}", "a"),
            ("{json:/a~1b/~0c}", "escaped"),
            ("{{{header:x-count}}}", "{3}"),
            ("plain", "plain"),
        ];
        for (text, want) in cases {
            assert_eq!(
                render(&template(text), request).as_deref(),
                Ok(want),
                "{text}"
            );
        }
    }

    #[test]
    fn names_the_placeholder_without_a_value() {
        let headers = headers(&[("x-github-event", "push")]);
        let body = json!({"repository": {"owner": {"login": "o"}}, "none": null});
        let with_json = Request {
            headers: &headers,
            json: Some(&body),
            body: b"",
        };
        let without_json = Request {
            headers: &headers,
            json: None,
            body: b"",
        };
        let cases = [
            (
                "a.{header:X-Missing}",
                with_json,
                "{header:X-Missing}",
                "no such header",
            ),
            (
                "{json:/repository/name}",
                with_json,
                "{json:/repository/name}",
                "no such field",
            ),
            ("{json:/none}", with_json, "{json:/none}", "no such field"),
            (
                "{json:/repository/owner}",
                with_json,
                "{json:/repository/owner}",
                "object or array",
            ),
            (
                "{json:/repository}",
                without_json,
                "{json:/repository}",
                "not JSON",
            ),
        ];
        for (text, request, placeholder, reason) in cases {
            let error = render(&template(text), request).expect_err(text);
            assert_eq!(error.placeholder, placeholder, "{text}");
            assert!(error.reason.contains(reason), "{text}: {error}");
            assert!(error.to_string().contains(placeholder), "{text}: {error}");
        }
    }

    #[test]
    fn default_event_ids() {
        let cases: &[(Pairs, Option<&str>)] = &[
            (
                &[("webhook-id", "msg_1"), ("X-GitHub-Delivery", "gh-1")],
                Some("msg_1"),
            ),
            (&[("X-GitHub-Delivery", "gh-1")], Some("gh-1")),
            (
                &[("webhook-id", " "), ("X-GitHub-Delivery", "gh-1")],
                Some("gh-1"),
            ),
            (&[("x-request-id", "r-1")], None),
            (&[], None),
        ];
        for (pairs, want) in cases {
            let headers = headers(pairs);
            let request = Request {
                headers: &headers,
                json: None,
                body: b"",
            };
            assert_eq!(
                event_id(None, request),
                Ok(want.map(str::to_owned)),
                "{pairs:?}"
            );
        }
        let headers = headers(&[("webhook-id", "msg_1"), ("x-delivery", "d-7")]);
        let request = Request {
            headers: &headers,
            json: None,
            body: b"",
        };
        let by_body = Request {
            body: b"{\"n\": 1}",
            ..request
        };
        assert_eq!(
            event_id(Some(&template("gh-{body:sha256}")), by_body),
            Ok(Some(
                "gh-e5d5f7c1d225fd6b13623ebb1b5b9d075c705659f81868b1e37005a0923b0346".into()
            ))
        );
        let custom = template("hook-{header:X-Delivery}");
        assert_eq!(
            event_id(Some(&custom), request),
            Ok(Some("hook-d-7".into()))
        );
        let missing = template("{header:X-Other}");
        assert!(event_id(Some(&missing), request).is_err());
    }
}
