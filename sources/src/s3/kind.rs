//! S3Sources in the controller: which mode each one runs in, the tasks of the pulling modes
//! (SQS, polling), and the pushed notifications at `POST /sources/{namespace}/{name}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::{HeaderMap, StatusCode};
use kinetic_api::sources::{S3Mode, S3Poll, S3Source, S3SourceSpec};
use serde_json::json;

use super::{Key, Sources, answer, lock, retry_later};
use crate::s3;
use crate::s3::sns_signature::SnsVerifier;
use crate::sink::Target;
use crate::webhook::{self, Verifier};

/// An S3Source whose bucket pushes its notifications to kinetic.
pub(super) struct Bucket {
    spec: Arc<S3SourceSpec>,
    verifier: Option<Arc<Verifier>>,
    /// With `sns.topicArns`: requests must be SNS messages of those topics, signed by AWS.
    sns: Option<Arc<SnsVerifier>>,
    sink: Target,
}

/// What an S3Source needs, by mode.
enum S3Task {
    /// The bucket pushes to `/sources/{namespace}/{name}`.
    Push(Bucket),
    /// A task of this process pulls.
    Pull {
        spec: Arc<S3SourceSpec>,
        sink: Target,
        mode: Pull,
    },
}

enum Pull {
    /// Reads the queue at this URL.
    Sqs(String),
    /// Lists the bucket.
    Poll(S3Poll),
}

impl Sources {
    /// The S3Source part of [`Sources::reconcile`]: serves pushing sources, starts, restarts (on a
    /// new generation) and stops the tasks of pulling ones.
    pub(super) async fn reconcile_s3(
        self: &Arc<Self>,
        seen: &mut Vec<Key>,
    ) -> kinetic_store::Result<()> {
        let mut buckets = HashMap::new();
        let stored_sources = self.store.list_resources("S3Source", None).await?;
        // Pull tasks of sources gone or changed stop here; the others keep running.
        let without_task: Vec<String> = self
            .pulls
            .sync(&stored_sources)
            .into_iter()
            .map(|s| s.uid.clone())
            .collect();
        for stored in &stored_sources {
            let key: Key = (
                "S3Source".into(),
                stored.namespace.clone(),
                stored.name.clone(),
            );
            seen.push(key.clone());
            let id = (stored.namespace.clone(), stored.name.clone());
            if !without_task.contains(&stored.uid) {
                continue;
            }
            // Pushed sources are compiled on every pass, so a rotated verification secret (a
            // file replaced, as Kubernetes does with mounted secrets) takes effect within a pass.
            let bucket = serde_json::from_value::<S3Source>(stored.body.clone())
                .map_err(|e| format!("stored resource is unreadable: {e}"))
                .and_then(|source| {
                    let (verifier, sns) = match source.mode().map_err(|e| e.to_string())? {
                        S3Mode::Webhook(push) => (
                            match &push.verify {
                                Some(verify) => Some(Arc::new(
                                    webhook::compile_verifier(verify, &mut webhook::read_secret)
                                        .map_err(|e| e.to_string())?,
                                )),
                                None => None,
                            },
                            push.sns.as_ref().map(|sns| {
                                Arc::new(SnsVerifier::new(
                                    sns.topic_arns.clone(),
                                    self.sns_certificates.clone(),
                                ))
                            }),
                        ),
                        S3Mode::Sqs(sqs) => {
                            let mode = Pull::Sqs(sqs.queue_url.clone());
                            let sink = self.target(
                                "S3Source",
                                &stored.namespace,
                                &stored.name,
                                &source.spec.sink,
                            )?;
                            return Ok(S3Task::Pull {
                                spec: Arc::new(source.spec),
                                sink,
                                mode,
                            });
                        }
                        S3Mode::Poll(poll) => {
                            let mode = Pull::Poll(poll.clone());
                            let sink = self.target(
                                "S3Source",
                                &stored.namespace,
                                &stored.name,
                                &source.spec.sink,
                            )?;
                            return Ok(S3Task::Pull {
                                spec: Arc::new(source.spec),
                                sink,
                                mode,
                            });
                        }
                    };
                    let sink = self.target(
                        "S3Source",
                        &stored.namespace,
                        &stored.name,
                        &source.spec.sink,
                    )?;
                    Ok(S3Task::Push(Bucket {
                        spec: Arc::new(source.spec),
                        verifier,
                        sns,
                        sink,
                    }))
                });
            match bucket {
                Ok(S3Task::Push(bucket)) => {
                    self.update(&key, |s| {
                        s.ready = true;
                        s.sink = Some(bucket.sink.url.clone());
                        if s.last_error
                            .as_deref()
                            .is_some_and(|e| e.starts_with("not ready"))
                        {
                            s.last_error = None;
                        }
                    });
                    buckets.insert(id, bucket);
                }
                Ok(S3Task::Pull { spec, sink, mode }) => {
                    self.update(&key, |s| {
                        s.ready = true;
                        s.sink = Some(sink.url.clone());
                        s.last_error = None;
                    });
                    let cancel = self.cancel.child_token();
                    match mode {
                        Pull::Sqs(queue_url) => {
                            self.tracker.spawn(s3::sqs::run(
                                self.clone(),
                                key,
                                spec,
                                queue_url,
                                sink,
                                cancel.clone(),
                            ));
                        }
                        Pull::Poll(poll) => {
                            self.tracker.spawn(s3::poll::run(
                                self.clone(),
                                key,
                                spec,
                                poll,
                                stored.uid.clone(),
                                sink,
                                cancel.clone(),
                            ));
                        }
                    }
                    self.pulls.started(stored, cancel);
                }
                Err(problem) => self.update(&key, |s| {
                    s.ready = false;
                    s.last_error = Some(format!("not ready: {problem}"));
                }),
            }
        }
        *lock(&self.buckets) = buckets;
        Ok(())
    }
}

/// One push from a bucket (S3, MinIO, COS, or SNS wrapping them): every selected object becomes an
/// event; `202` once the sink accepted all of them, so the store sends the notification again
/// otherwise (a resent event keeps its id and dedupes at the broker).
pub(super) async fn notified(
    State(sources): State<Arc<Sources>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key: Key = ("S3Source".into(), namespace.clone(), name.clone());
    let id = (namespace.clone(), name.clone());
    let find = |sources: &Sources| {
        lock(&sources.buckets).get(&id).map(|b| {
            (
                b.spec.clone(),
                b.verifier.clone(),
                b.sns.clone(),
                b.sink.clone(),
            )
        })
    };
    let mut bucket = find(&sources);
    if bucket.is_none() && sources.catch_up(&key, |s| find(s).is_some()).await {
        bucket = find(&sources);
    }
    let Some((spec, verifier, sns, sink)) = bucket else {
        return if lock(&sources.status).contains_key(&key) {
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                &format!("S3Source {namespace}/{name} is not ready; see `kinetic get sources`"),
            )
        } else {
            answer(
                StatusCode::NOT_FOUND,
                "unknown-source",
                &format!(
                    "no S3Source {namespace}/{name} with `notifications.webhook`; check the URL (`/sources/NAMESPACE/NAME`)"
                ),
            )
        };
    };
    let arrived = Utc::now();
    if let Some(verifier) = &verifier
        && let Err(error) = verifier.verify(&headers, &body, arrived)
    {
        sources.update(&key, |s| s.last_error = Some(error.to_string()));
        return answer(StatusCode::UNAUTHORIZED, "unauthorized", &error.to_string());
    }
    if let Some(sns) = &sns
        && let Err(error) = sns.verify(&body, arrived).await
    {
        sources.update(&key, |s| s.last_error = Some(error.to_string()));
        return if error.is_transient() {
            retry_later(&error.to_string())
        } else {
            answer(StatusCode::UNAUTHORIZED, "unauthorized", &error.to_string())
        };
    }
    let events = match s3::to_events(&spec, &body) {
        Ok(s3::Parsed::Events(events)) => events,
        // Only a signed message from a topic of the source's `sns` is acted on: it makes kinetic
        // fetch a URL.
        Ok(s3::Parsed::SubscriptionConfirmation { subscribe_url }) if sns.is_some() => {
            return confirm_subscription(&sources, &key, &subscribe_url).await;
        }
        Ok(s3::Parsed::SubscriptionConfirmation { .. }) => {
            let why = "an SNS subscription confirmation is only acted on by an S3Source with `notifications.webhook.sns` (its topicArns), which checks the message's signature";
            sources.update(&key, |s| s.last_error = Some(why.to_owned()));
            return answer(StatusCode::BAD_REQUEST, "invalid", why);
        }
        Err(error) => {
            sources.update(&key, |s| s.last_error = Some(error.to_string()));
            return answer(StatusCode::BAD_REQUEST, "invalid", &error.to_string());
        }
    };
    let accepted = json!({ "events": events.len() });
    super::push_to_sink(
        &sources,
        &key,
        &sink,
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
