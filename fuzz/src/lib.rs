//! What each fuzz target does with one input. The fuzzers in `fuzz/libfuzzer` call these, and
//! `tests/replay.rs` runs every seed and every past finding through them on each `cargo test`, so a
//! crash once found stays fixed.
//!
//! A target fails by panicking. Beyond "does not crash", each checks a property kinetic relies on:
//! - an event the HTTP decoder accepts is stored and read back unchanged, and survives delivery in
//!   binary mode (how the dispatcher and the sources send it);
//! - a resource the YAML parser accepts is stored as JSON and read back equal and still valid;
//! - an event a source makes from a request or a notification survives storage and delivery too.
//!
//! Inputs that are HTTP requests are written as a header block, a blank line, then the body: one
//! `name: value` per line (lines that are not valid headers are skipped), so seeds stay readable.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone as _, Utc};
use cloudevents::event::{AttributeValue, Data};
use cloudevents::{AttributesReader as _, Event};
use http::{HeaderMap, HeaderName, HeaderValue};
use kinetic_api::Resource;
use kinetic_api::cloudevent::{self, Mode, data_bytes, encode_binary, encode_structured};

/// Splits an input into request headers and a body (see the crate docs).
pub fn request(data: &[u8]) -> (HeaderMap, Bytes) {
    let (head, body) = match data.windows(2).position(|pair| pair == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (&data[..0], data),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|byte| *byte == b'\n') {
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (headers, Bytes::copy_from_slice(body))
}

/// An event's attributes as the text a binary-mode header or a filter sees.
fn attributes(event: &Event) -> BTreeMap<String, String> {
    event
        .iter()
        .map(|(name, value)| {
            let text = match value {
                AttributeValue::Time(time) => {
                    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                }
                other => other.to_string(),
            };
            (name.to_owned(), text)
        })
        .collect()
}

/// Stored events are structured JSON (`encode_structured`, read back with `from_json`): what was
/// accepted must come back exactly.
fn check_storage(event: &Event) {
    let stored = encode_structured(event);
    let read = cloudevent::from_json(&stored)
        .unwrap_or_else(|error| panic!("a stored event does not read back: {error}\n{event}"));
    assert_eq!(
        attributes(&read),
        attributes(event),
        "storage changed the attributes"
    );
    assert_eq!(
        data_bytes(&read),
        data_bytes(event),
        "storage changed the data"
    );
}

/// Binary mode is how the dispatcher delivers and how the sources send: the receiver (another
/// kinetic, or kinetic's own reply handling) must decode the same event. Binary mode has no types,
/// so attributes compare as text; a JSON event without a content type gains `application/json`.
fn check_binary_delivery(event: &Event) {
    let (headers, body) = encode_binary(event);
    let (mode, decoded) = cloudevent::decode(&headers, &body).unwrap_or_else(|error| {
        panic!(
            "an accepted event does not decode after binary encoding: {error}\n{event}\n{headers:?}"
        )
    });
    assert_eq!(mode, Mode::Binary);
    let [received] = decoded.as_slice() else {
        panic!("binary mode decoded to {} events", decoded.len());
    };
    let mut expected = attributes(event);
    if event.datacontenttype().is_none() && matches!(event.data(), Some(Data::Json(_))) {
        expected.insert("datacontenttype".into(), "application/json".into());
    }
    assert_eq!(
        attributes(received),
        expected,
        "binary delivery changed the attributes"
    );
    assert_eq!(
        data_bytes(received),
        data_bytes(event),
        "binary delivery changed the data"
    );
}

/// The broker's ingress: any request, in any mode.
pub fn cloudevent_http(data: &[u8]) {
    let (headers, body) = request(data);
    let Ok((_, events)) = cloudevent::decode(&headers, &body) else {
        return;
    };
    for event in &events {
        check_storage(event);
        check_binary_delivery(event);
    }
}

/// Events the CESQL target evaluates against when its input carries none.
fn sample_events() -> Vec<Event> {
    let documents = [
        r#"{"specversion":"1.0","id":"1","source":"/shop","type":"com.example.order","subject":"42","time":"2026-01-02T03:04:05Z","count":7,"flag":true,"name":"Ada","datacontenttype":"application/json","data":{"a":1}}"#,
        r#"{"specversion":"1.0","id":"0","source":"x","type":"t","big":2147483647,"neg":-2147483648,"text":"TRUE"}"#,
    ];
    documents
        .iter()
        .map(|document| cloudevent::from_json(document.as_bytes()).expect("a valid sample event"))
        .collect()
}

/// CESQL: an expression on the first line, optionally an event (structured JSON) after it. Parsing
/// and evaluation never panic, and `matches` agrees with `evaluate`.
pub fn cesql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (expression, event) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(expression) = kinetic_cesql::Expression::parse(expression) else {
        return;
    };
    let events = match cloudevent::from_json(event.as_bytes()) {
        Ok(event) if kinetic_api::cloudevent::limits::check(&event).is_ok() => vec![event],
        _ => sample_events(),
    };
    for event in &events {
        let evaluation = expression.evaluate(event);
        let matched =
            evaluation.error.is_none() && evaluation.value == kinetic_cesql::Value::Boolean(true);
        assert_eq!(
            expression.matches(event),
            matched,
            "`matches` and `evaluate` disagree on `{expression}`"
        );
    }
}

/// `kinetic apply`: a YAML (or JSON) file of resources. What is accepted is stored as JSON and read
/// back equal and still valid; triggers' and policies' filters compile or are refused cleanly, and a
/// Service's autoscaling annotations are judged.
pub fn resources(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(resources) = kinetic_api::parse_documents("fuzz.yaml", text) else {
        return;
    };
    for resource in &resources {
        let stored = resource.to_json();
        let read = Resource::from_value(stored.clone()).unwrap_or_else(|error| {
            panic!("a stored resource does not read back: {error}\n{stored}")
        });
        assert_eq!(&read, resource, "storage changed the resource\n{stored}");
        match resource {
            Resource::Trigger(trigger) => {
                let _ = kinetic_triggers::Filter::compile(trigger);
            }
            Resource::EventPolicy(policy) => {
                let _ = kinetic_triggers::Filter::compile_all(&policy.spec.filters, "spec.filters");
            }
            Resource::Service(service) => {
                let template = &service.spec.template;
                let _ = kinetic_serving::autoscaler::revision_config(
                    &kinetic_serving::autoscaler::Defaults::default(),
                    &template.metadata.annotations,
                    template.spec.container_concurrency(),
                );
            }
            _ => {}
        }
    }
}

/// The time the webhook target verifies at: 2023-11-14T22:13:20Z.
const NOW_SECONDS: i64 = 1_700_000_000;
const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
/// The Standard Webhooks specification's example secret.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BEARER_TOKEN: &[u8] = b"fuzz-token";
/// A signature header whose value is this is replaced by the right signature for the request, so
/// the fuzzer gets past verification to the templates.
const SIGN_HERE: &str = "SIGN";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Signs a request whose signature header says [`SIGN_HERE`], as the sender would.
fn sign(headers: &mut HeaderMap, body: &[u8]) {
    use base64::Engine as _;
    if headers
        .get("x-hub-signature-256")
        .is_some_and(|value| value == SIGN_HERE)
    {
        let digest = hex::encode(hmac_sha256(GITHUB_SECRET, &[body]));
        let value = HeaderValue::try_from(format!("sha256={digest}")).expect("ASCII");
        headers.insert("x-hub-signature-256", value);
    }
    if headers
        .get("webhook-signature")
        .is_some_and(|value| value == SIGN_HERE)
    {
        let key = base64::prelude::BASE64_STANDARD
            .decode(STANDARD_SECRET.trim_start_matches("whsec_"))
            .expect("base64");
        let id = headers.get("webhook-id").map_or(&b""[..], |v| v.as_bytes());
        let timestamp = headers
            .get("webhook-timestamp")
            .map_or(&b""[..], |v| v.as_bytes());
        let signature = base64::prelude::BASE64_STANDARD
            .encode(hmac_sha256(&key, &[id, b".", timestamp, b".", body]));
        let value = HeaderValue::try_from(format!("v1,{signature}")).expect("ASCII");
        headers.insert("webhook-signature", value);
    }
}

/// The WebhookSources this target sends each request to: each verifier, with and without
/// templates over headers, JSON fields and the body's digest.
fn webhooks() -> Vec<kinetic_sources::webhook::Webhook> {
    use kinetic_sources::webhook::{Template, Verifier, Webhook};
    let template = |text: &str| Some(Template::parse(text).expect("a valid template"));
    let verifiers = [
        None,
        Some(Verifier::github(GITHUB_SECRET.to_vec()).expect("a key")),
        Some(
            Verifier::standard_webhooks(&[STANDARD_SECRET], Duration::from_secs(300))
                .expect("a key"),
        ),
        Some(Verifier::bearer(BEARER_TOKEN.to_vec()).expect("a key")),
    ];
    let mut webhooks = Vec::new();
    for verifier in verifiers {
        webhooks.push(Webhook {
            verifier: verifier.clone(),
            event_type: None,
            source: None,
            id: None,
            extensions: BTreeMap::new(),
        });
        webhooks.push(Webhook {
            verifier,
            event_type: template("com.github.{header:X-GitHub-Event}"),
            source: template("https://github.com/{json:/repository/full_name}"),
            id: template("{json:/id}-{body:sha256}"),
            extensions: BTreeMap::from([("origin".to_owned(), "fuzz".to_owned())]),
        });
    }
    webhooks
}

/// WebhookSource: a request (see the crate docs) to every kind of verifier. Verification and
/// templates never panic, and the event made is one the broker can store and receive.
pub fn webhook(data: &[u8]) {
    let (mut headers, body) = request(data);
    sign(&mut headers, &body);
    let now = Utc
        .timestamp_opt(NOW_SECONDS, 0)
        .single()
        .expect("a valid time");
    for webhook in webhooks() {
        if let Ok(event) =
            kinetic_sources::webhook::to_event(&webhook, "ns", "hook", &headers, &body, now)
        {
            check_source_event(&event);
        }
    }
}

/// An event a source made goes to its sink in binary mode and may be stored: sources check their
/// events by the broker's rules, so what they make must survive both.
fn check_source_event(event: &Event) {
    if let Err(error) = cloudevent::validate(event) {
        panic!("a source made an event the broker refuses: {error}\n{event}");
    }
    check_storage(event);
    check_binary_delivery(event);
}

/// The certificate of the SNS test vectors (self-signed for tests; its key was not kept).
const SNS_CERTIFICATE: &[u8] = include_bytes!("../seeds/sns_cert.pem");
/// The topic of the SNS test vectors.
const SNS_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:photos";

/// S3Source: a notification body as S3, MinIO, IBM COS or SNS (around any of them) sends it, to a
/// source that takes every object and one that selects by type, prefix and suffix. Mapping never
/// panics and its events survive storage and delivery. A pushed body is also checked as an SNS
/// message the way a source with `sns.topicArns` checks it (the certificate "fetched" is the test
/// vectors' own), which never panics either.
pub fn s3_notification(data: &[u8]) {
    let specs = [
        r#"{"bucket":"uploads","region":"us-east-1","sink":{"uri":"http://127.0.0.1:1/"}}"#,
        r#"{"bucket":"uploads","endpoint":"http://127.0.0.1:9000","forcePathStyle":true,"eventTypes":["ObjectCreated:*"],"prefix":"images/","suffix":".jpg","sink":{"uri":"http://127.0.0.1:1/"}}"#,
    ];
    for spec in specs {
        let spec: kinetic_api::sources::S3SourceSpec =
            serde_json::from_str(spec).expect("a valid spec");
        if let Ok(kinetic_sources::s3::Parsed::Events(events)) =
            kinetic_sources::s3::to_events(&spec, data)
        {
            for event in &events {
                check_source_event(event);
            }
        }
    }
    use kinetic_sources::s3::sns_signature::{Certificates, SnsVerifier};
    let fetch: kinetic_sources::s3::sns_signature::FetchCertificate =
        std::sync::Arc::new(|_url| Box::pin(async { Ok(SNS_CERTIFICATE.to_vec()) }));
    let verifier = SnsVerifier::new(
        vec![SNS_TOPIC.to_owned()],
        std::sync::Arc::new(Certificates::new(fetch)),
    );
    let now = Utc
        .with_ymd_and_hms(2026, 11, 27, 10, 0, 2)
        .single()
        .expect("a valid time");
    let _ = futures::executor::block_on(verifier.verify(data, now));
}
