//! WebhookSource: inbound HTTP POSTs turned into CloudEvents.
//!
//! A request is first verified on its raw body ([`verify`]), then becomes one event whose data is
//! the body exactly as received and whose `type`, `source` and `id` come from [`template`]s over
//! the headers and the JSON body. [`Webhook::compile`] turns a validated `WebhookSourceSpec` into
//! a [`Webhook`] once, reading its secrets; [`to_event`] is then a pure function per request. The
//! HTTP handler around it maps [`WebhookError::status`] to the response.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use cloudevents::event::{Data, EventBuilderError};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use kinetic_api::sources::{SecretRef, WebhookSourceSpec, WebhookVerify};

pub(crate) mod kind;
pub mod template;
pub mod verify;

pub use template::{MissingValue, Request, Template, event_id, render};
pub use verify::{KeyError, Verifier, VerifyError};

/// `type` of events from a WebhookSource without a `type` template.
pub const DEFAULT_EVENT_TYPE: &str = "dev.kinetic.webhook";
/// `datacontenttype` when the request has no Content-Type.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The default `source` of a WebhookSource's events.
pub fn default_source(namespace: &str, name: &str) -> String {
    format!("/apis/v1/namespaces/{namespace}/webhooksources/{name}")
}

/// Why one request did not become an event.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the request is not authenticated: {0}")]
    Unauthorized(#[from] VerifyError),
    #[error("the event cannot be named: {0}")]
    MissingValue(#[from] MissingValue),
    #[error("the event's `{0}` rendered empty")]
    EmptyAttribute(&'static str),
    #[error("the event is not valid: {0}")]
    Event(#[from] EventBuilderError),
    #[error("the event would be refused: {0}")]
    Invalid(#[from] kinetic_api::cloudevent::EventError),
}

impl WebhookError {
    /// 401 for a request that failed verification, 400 for one that cannot become an event.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Why a WebhookSource cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("environment variable `{0}` is not set or not UTF-8")]
    MissingEnv(String),
    #[error("secret file `{}` cannot be read", path.display())]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Outside(String),
    #[error("secret at `{field}`: {source}")]
    Key {
        field: &'static str,
        #[source]
        source: KeyError,
    },
    #[error("`spec.{field}`: {message}")]
    Template {
        field: &'static str,
        message: String,
    },
}

/// Reads a secret from the process environment or a file, within the process's secret scope
/// ([`kinetic_api::secret::read`]).
pub fn read_secret(secret: &SecretRef) -> Result<Vec<u8>, SetupError> {
    use kinetic_api::secret::ReadError;
    kinetic_api::secret::read(secret).map_err(|error| match error {
        ReadError::MissingEnv(name) => SetupError::MissingEnv(name),
        ReadError::File { path, source } => SetupError::SecretFile { path, source },
        ReadError::Outside(why) => SetupError::Outside(why),
    })
}

/// A WebhookSource ready to take requests: secrets read, templates parsed.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub verifier: Option<Verifier>,
    pub event_type: Option<Template>,
    pub source: Option<Template>,
    pub id: Option<Template>,
    /// `ceOverrides.extensions`, set on every event.
    pub extensions: BTreeMap<String, String>,
}

impl Webhook {
    /// Compiles a validated spec. `secret` resolves secret references; pass [`read_secret`].
    pub fn compile(
        spec: &WebhookSourceSpec,
        mut secret: impl FnMut(&SecretRef) -> Result<Vec<u8>, SetupError>,
    ) -> Result<Webhook, SetupError> {
        let verifier = match &spec.verify {
            None => None,
            Some(verify) => Some(compile_verifier(verify, &mut secret)?),
        };
        let template = |field, text: &Option<String>| {
            text.as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|message| SetupError::Template { field, message })
        };
        Ok(Webhook {
            verifier,
            event_type: template("type", &spec.event_type)?,
            source: template("source", &spec.source)?,
            id: template("id", &spec.id)?,
            extensions: spec
                .ce_overrides
                .as_ref()
                .map(|o| o.extensions.clone())
                .unwrap_or_default(),
        })
    }
}

/// Reads the secrets of `verify` and builds its verifier (also used by S3Source push notifications).
pub fn compile_verifier(
    verify: &WebhookVerify,
    secret: &mut impl FnMut(&SecretRef) -> Result<Vec<u8>, SetupError>,
) -> Result<Verifier, SetupError> {
    let key = |field| move |source| SetupError::Key { field, source };
    if let Some(github) = &verify.github {
        return Verifier::github(secret(&github.secret)?).map_err(key("verify.github.secret"));
    }
    if let Some(bearer) = &verify.bearer {
        return Verifier::bearer(secret(&bearer.token)?).map_err(key("verify.bearer.token"));
    }
    let standard = verify.standard_webhooks.as_ref().ok_or(SetupError::Key {
        field: "verify",
        source: KeyError::Empty,
    })?;
    let secrets = standard
        .secrets
        .iter()
        .map(&mut *secret)
        .collect::<Result<Vec<_>, _>>()?;
    Verifier::standard_webhooks(&secrets, standard.tolerance())
        .map_err(key("verify.standardWebhooks.secrets"))
}

/// Turns one request into a CloudEvent: verifies it on the raw `body`, names it with the
/// templates, and carries the body unchanged as the event's data. Pure: `now` is the event's `time`
/// and the reference for timestamp tolerance; only a missing id draws a random UUID.
pub fn to_event(
    webhook: &Webhook,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Event, WebhookError> {
    if let Some(verifier) = &webhook.verifier {
        verifier.verify(headers, body, now)?;
    }
    let templates = [&webhook.event_type, &webhook.source, &webhook.id];
    let json = templates
        .iter()
        .any(|t| t.as_ref().is_some_and(Template::uses_json))
        .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
        .flatten();
    let request = Request {
        headers,
        json: json.as_ref(),
        body,
    };
    let rendered = |template: &Option<Template>, attribute, default: String| {
        let value = match template {
            Some(template) => render(template, request)?,
            None => default,
        };
        if value.is_empty() {
            return Err(WebhookError::EmptyAttribute(attribute));
        }
        Ok(value)
    };
    let event_type = rendered(&webhook.event_type, "type", DEFAULT_EVENT_TYPE.into())?;
    let source = rendered(&webhook.source, "source", default_source(namespace, name))?;
    let id = match event_id(webhook.id.as_ref(), request)? {
        Some(id) if id.is_empty() => return Err(WebhookError::EmptyAttribute("id")),
        Some(id) => id,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    let mut builder = EventBuilderV10::new()
        .id(id)
        .ty(event_type)
        .source(source)
        .time(now);
    if !body.is_empty() {
        builder = builder.data(content_type, Data::Binary(body.to_vec()));
    }
    for (extension, value) in &webhook.extensions {
        builder = builder.extension(extension, value.as_str());
    }
    let event = builder.build()?;
    kinetic_api::cloudevent::validate(&event)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use cloudevents::AttributesReader as _;
    use kinetic_api::Resource;

    fn spec(verify_and_templates: &str) -> WebhookSourceSpec {
        let text = format!(
            "apiVersion: sources.kinetic.dev/v1alpha1\nkind: WebhookSource\nmetadata: {{name: hook, namespace: ns}}\nspec:\n  sink: {{uri: 'http://127.0.0.1:1/'}}\n{verify_and_templates}"
        );
        let mut resources = kinetic_api::parse_documents("hook.yaml", &text).expect("valid");
        let Some(Resource::WebhookSource(source)) = resources.pop() else {
            panic!("not a WebhookSource")
        };
        source.spec
    }

    fn secrets(secret: &SecretRef) -> Result<Vec<u8>, SetupError> {
        match secret {
            SecretRef::Env(name) if name == "GH" => Ok(b"It's a Secret to Everybody".to_vec()),
            SecretRef::Env(name) if name == "TOKEN" => Ok(b"t0ken".to_vec()),
            SecretRef::Env(name) => Err(SetupError::MissingEnv(name.clone())),
            other => panic!("no {other}"),
        }
    }

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

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn a_signed_github_delivery_becomes_an_event() {
        let webhook = Webhook::compile(
            &spec(
                "  verify: {github: {secret: {env: GH}}}\n  type: 'com.github.{header:X-GitHub-Event}'\n  ceOverrides: {extensions: {team: infra}}\n",
            ),
            secrets,
        )
        .unwrap();
        let request = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            (
                "X-Hub-Signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
            ("Content-Type", "text/plain"),
        ]);
        let event = to_event(&webhook, "ns", "hook", &request, b"Hello, World!", now()).unwrap();
        assert_eq!(event.ty(), "com.github.push");
        assert_eq!(event.id(), "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(
            event.source().to_string(),
            "/apis/v1/namespaces/ns/webhooksources/hook"
        );
        assert_eq!(event.datacontenttype(), Some("text/plain"));
        assert_eq!(event.time(), Some(&now()));
        assert_eq!(event.data(), Some(&Data::Binary(b"Hello, World!".to_vec())));
        assert_eq!(
            event.extension("team").map(ToString::to_string).as_deref(),
            Some("infra")
        );

        let mut tampered = request.clone();
        tampered.remove("X-Hub-Signature-256");
        let error =
            to_event(&webhook, "ns", "hook", &tampered, b"Hello, World!", now()).unwrap_err();
        assert!(
            matches!(
                error,
                WebhookError::Unauthorized(VerifyError::MissingHeader(_))
            ),
            "{error}"
        );
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        let error =
            to_event(&webhook, "ns", "hook", &request, b"Hello, World?", now()).unwrap_err();
        assert!(
            matches!(
                error,
                WebhookError::Unauthorized(VerifyError::SignatureMismatch)
            ),
            "{error}"
        );
    }

    #[test]
    fn defaults_without_templates() {
        let webhook = Webhook::compile(&spec("  insecure: true\n"), secrets).unwrap();
        let event = to_event(
            &webhook,
            "ns",
            "hook",
            &HeaderMap::new(),
            b"\x00\x01",
            now(),
        )
        .unwrap();
        assert_eq!(event.ty(), DEFAULT_EVENT_TYPE);
        assert!(uuid::Uuid::parse_str(event.id()).is_ok(), "{}", event.id());
        assert_eq!(event.datacontenttype(), Some(DEFAULT_CONTENT_TYPE));
        assert_eq!(event.data(), Some(&Data::Binary(vec![0, 1])));
        let again = to_event(
            &webhook,
            "ns",
            "hook",
            &HeaderMap::new(),
            b"\x00\x01",
            now(),
        )
        .unwrap();
        assert_ne!(
            again.id(),
            event.id(),
            "each id-less request is a new event"
        );
        let sender_id = headers(&[("webhook-id", "msg_1")]);
        let event = to_event(&webhook, "ns", "hook", &sender_id, b"", now()).unwrap();
        assert_eq!(event.id(), "msg_1");
        assert_eq!(event.data(), None);
    }

    #[test]
    fn json_templates_read_the_body_and_keep_it_unchanged() {
        let webhook = Webhook::compile(
            &spec(
                "  verify: {bearer: {token: {env: TOKEN}}}\n  type: 'com.example.{json:/action}'\n  source: '{json:/repository/html_url}'\n  id: 'order-{json:/id}'\n",
            ),
            secrets,
        )
        .unwrap();
        let body = br#"{"action":  "opened", "id": 17, "repository": {"html_url": "https://example.com/r"}}"#;
        let request = headers(&[
            ("Authorization", "Bearer t0ken"),
            ("Content-Type", "application/json"),
        ]);
        let event = to_event(&webhook, "ns", "hook", &request, body, now()).unwrap();
        assert_eq!(event.ty(), "com.example.opened");
        assert_eq!(event.source().to_string(), "https://example.com/r");
        assert_eq!(event.id(), "order-17");
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.data(), Some(&Data::Binary(body.to_vec())));

        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"id": 1, "repository": {"html_url": "x"}}"#,
                "{json:/action}",
            ),
            (b"not json", "{json:/action}"),
            (
                br#"{"action": "a", "id": {"n": 1}, "repository": {"html_url": "x"}}"#,
                "{json:/id}",
            ),
        ];
        for (body, placeholder) in cases {
            let error = to_event(&webhook, "ns", "hook", &request, body, now()).unwrap_err();
            let WebhookError::MissingValue(missing) = &error else {
                panic!("{error}")
            };
            assert_eq!(missing.placeholder, *placeholder);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        }
        let empty = br#"{"action": "a", "id": 1, "repository": {"html_url": ""}}"#;
        assert!(matches!(
            to_event(&webhook, "ns", "hook", &request, empty, now()),
            Err(WebhookError::EmptyAttribute("source"))
        ));
    }

    #[test]
    fn setup_errors_name_the_secret() {
        let error = Webhook::compile(
            &spec("  verify: {github: {secret: {env: NOPE}}}\n"),
            secrets,
        )
        .unwrap_err();
        assert!(
            matches!(&error, SetupError::MissingEnv(name) if name == "NOPE"),
            "{error}"
        );
        let error = Webhook::compile(
            &spec("  verify: {standardWebhooks: {secrets: [{env: GH}]}}\n"),
            secrets,
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                SetupError::Key {
                    source: KeyError::NotBase64,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn secret_files_lose_their_trailing_newline() {
        let path =
            std::env::temp_dir().join(format!("kinetic-webhook-secret-{}", std::process::id()));
        std::fs::write(&path, "whsec_abc\n").unwrap();
        let secret = SecretRef::File(path.to_string_lossy().into_owned());
        assert_eq!(read_secret(&secret).unwrap(), b"whsec_abc");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            read_secret(&secret),
            Err(SetupError::SecretFile { .. })
        ));
        assert!(matches!(
            read_secret(&SecretRef::Env("KINETIC_TEST_SURELY_UNSET_VARIABLE".into())),
            Err(SetupError::MissingEnv(_))
        ));
    }
}
