//! S3Source in the controller: which mode each source runs in. A pulling source (SQS, polling) is
//! a task of this process; a pushed one is an endpoint at `POST /sources/{namespace}/{name}` for
//! its bucket's notifications (S3, MinIO, COS, or SNS wrapping them).

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use kinetic_api::sources::{S3Mode, S3Source, S3SourceSpec};
use kinetic_store::StoredResource;
use serde_json::json;

use crate::controller::kind::{self, Endpoint, Kind, Prepared, Route};
use crate::controller::{Key, Sources, answer, retry_later};
use crate::s3;
use crate::s3::sns_signature::SnsVerifier;
use crate::sink::Target;
use crate::webhook::{self, Verifier};

pub(crate) struct S3Kind;

impl Kind for S3Kind {
    fn kind(&self) -> &'static str {
        "S3Source"
    }

    fn prepare(&self, sources: &Arc<Sources>, stored: &StoredResource) -> Result<Prepared, String> {
        let source: S3Source = kind::read(stored)?;
        let mode = source.mode().map_err(|e| e.to_string())?;
        let sink = kind::sink_of(sources, self, stored, &source.spec.sink)?;
        match mode {
            S3Mode::Webhook(push) => {
                let verifier = match &push.verify {
                    Some(verify) => Some(
                        webhook::compile_verifier(verify, &mut webhook::read_secret)
                            .map_err(|e| e.to_string())?,
                    ),
                    None => None,
                };
                let sns = push.sns.as_ref().map(|sns| {
                    SnsVerifier::new(sns.topic_arns.clone(), sources.sns_certificates.clone())
                });
                Ok(Prepared::Endpoint {
                    sink: sink.clone(),
                    endpoint: Arc::new(Bucket {
                        spec: source.spec,
                        verifier,
                        sns,
                        sink,
                    }),
                })
            }
            S3Mode::Sqs(sqs) => {
                let queue_url = sqs.queue_url.clone();
                let spec = Arc::new(source.spec);
                Ok(Prepared::task(sink, move |sources, key, sink, cancel| {
                    s3::sqs::run(sources, key, spec, queue_url, sink, cancel)
                }))
            }
            S3Mode::Poll(poll) => {
                let poll = poll.clone();
                let uid = stored.uid.clone();
                let spec = Arc::new(source.spec);
                Ok(Prepared::task(sink, move |sources, key, sink, cancel| {
                    s3::poll::run(sources, key, spec, poll, uid, sink, cancel)
                }))
            }
        }
    }

    fn state_key(&self, namespace: &str, name: &str) -> Option<String> {
        Some(s3::poll::state_key(namespace, name))
    }

    fn route(&self) -> Option<Route> {
        Some(Route {
            prefix: "/sources",
            unknown: |namespace, name| {
                format!(
                    "no S3Source {namespace}/{name} with `notifications.webhook`; check the URL (`/sources/NAMESPACE/NAME`)"
                )
            },
        })
    }
}

/// An S3Source whose bucket pushes its notifications to kinetic.
struct Bucket {
    spec: S3SourceSpec,
    verifier: Option<Verifier>,
    /// With `sns.topicArns`: requests must be SNS messages of those topics, signed by AWS.
    sns: Option<SnsVerifier>,
    sink: Target,
}

impl Endpoint for Bucket {
    fn receive<'a>(
        &'a self,
        sources: &'a Arc<Sources>,
        key: &'a Key,
        headers: &'a HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'a, Response> {
        Box::pin(notified(sources, key, self, headers, body))
    }
}

/// One push from a bucket (S3, MinIO, COS, or SNS wrapping them): every selected object becomes an
/// event; `202` once the sink accepted all of them, so the store sends the notification again
/// otherwise (a resent event keeps its id and dedupes at the broker).
async fn notified(
    sources: &Arc<Sources>,
    key: &Key,
    bucket: &Bucket,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Utc::now();
    if let Some(verifier) = &bucket.verifier
        && let Err(error) = verifier.verify(headers, &body, arrived)
    {
        sources.update(key, |s| s.last_error = Some(error.to_string()));
        return answer(StatusCode::UNAUTHORIZED, "unauthorized", &error.to_string());
    }
    if let Some(sns) = &bucket.sns
        && let Err(error) = sns.verify(&body, arrived).await
    {
        sources.update(key, |s| s.last_error = Some(error.to_string()));
        return if error.is_transient() {
            retry_later(&error.to_string())
        } else {
            answer(StatusCode::UNAUTHORIZED, "unauthorized", &error.to_string())
        };
    }
    let events = match s3::to_events(&bucket.spec, &body) {
        Ok(s3::Parsed::Events(events)) => events,
        // Only a signed message from a topic of the source's `sns` is acted on: it makes kinetic
        // fetch a URL.
        Ok(s3::Parsed::SubscriptionConfirmation { subscribe_url }) if bucket.sns.is_some() => {
            return confirm_subscription(sources, key, &subscribe_url).await;
        }
        Ok(s3::Parsed::SubscriptionConfirmation { .. }) => {
            let why = "an SNS subscription confirmation is only acted on by an S3Source with `notifications.webhook.sns` (its topicArns), which checks the message's signature";
            sources.update(key, |s| s.last_error = Some(why.to_owned()));
            return answer(StatusCode::BAD_REQUEST, "invalid", why);
        }
        Err(error) => {
            sources.update(key, |s| s.last_error = Some(error.to_string()));
            return answer(StatusCode::BAD_REQUEST, "invalid", &error.to_string());
        }
    };
    let accepted = json!({ "events": events.len() });
    crate::controller::push_to_sink(
        sources,
        key,
        &bucket.sink,
        &events,
        arrived,
        accepted,
        "send the notification again",
    )
    .await
}

/// Confirms an SNS subscription by fetching its `SubscribeURL`, as SNS asks.
async fn confirm_subscription(sources: &Sources, key: &Key, url: &str) -> Response {
    if let Err(error) = s3::sns_signature::check_subscribe_url(url) {
        sources.update(key, |s| s.last_error = Some(error.to_string()));
        return answer(StatusCode::BAD_REQUEST, "invalid", &error.to_string());
    }
    let confirmed = sources.sink.get(url).await;
    match confirmed {
        Ok(()) => {
            let url = kinetic_api::meta::redact_url(url);
            tracing::info!(namespace = %key.1, name = %key.2, %url, "Confirmed an SNS subscription.");
            (StatusCode::OK, axum::Json(json!({ "confirmed": url }))).into_response()
        }
        Err(error) => {
            sources.update(key, |s| {
                s.last_error = Some(format!("confirming the SNS subscription failed: {error}"))
            });
            answer(
                StatusCode::BAD_GATEWAY,
                "subscription-unconfirmed",
                "fetching the SubscribeURL failed; see `kinetic get sources`",
            )
        }
    }
}
