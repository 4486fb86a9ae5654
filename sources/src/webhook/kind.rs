//! WebhookSource in the controller: each source is an endpoint at
//! `POST /webhooks/{namespace}/{name}`, compiled again on every pass so a rotated secret takes
//! effect without applying the source again.

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::Response;
use chrono::Utc;
use cloudevents::AttributesReader as _;
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use kinetic_api::sources::WebhookSource;
use kinetic_store::StoredResource;
use serde_json::json;

use super::Webhook;
use crate::controller::kind::{self, Endpoint, Kind, Prepared, Route};
use crate::controller::{Key, Sources, answer, push_to_sink};
use crate::sink::Target;

pub(crate) struct WebhookKind;

impl Kind for WebhookKind {
    fn kind(&self) -> &'static str {
        "WebhookSource"
    }

    fn prepare(&self, sources: &Arc<Sources>, stored: &StoredResource) -> Result<Prepared, String> {
        let source: WebhookSource = kind::read(stored)?;
        let webhook =
            Webhook::compile(&source.spec, super::read_secret).map_err(|e| e.to_string())?;
        let sink = kind::sink_of(sources, self, stored, &source.spec.sink)?;
        Ok(Prepared::Endpoint {
            sink: sink.clone(),
            endpoint: Arc::new(Hook { webhook, sink }),
        })
    }

    fn route(&self) -> Option<Route> {
        Some(Route {
            prefix: "/webhooks",
            unknown: |namespace, name| {
                format!(
                    "no WebhookSource {namespace}/{name}; apply one, or check the URL (`/webhooks/NAMESPACE/NAME`)"
                )
            },
        })
    }
}

struct Hook {
    webhook: Webhook,
    sink: Target,
}

impl Endpoint for Hook {
    /// One webhook delivery: verify, build the event, hand it to the sink; 202 only once the sink
    /// accepted it, so the sender retries anything not accepted.
    fn receive<'a>(
        &'a self,
        sources: &'a Arc<Sources>,
        key: &'a Key,
        headers: &'a HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'a, Response> {
        Box::pin(async move {
            let (_, namespace, name) = key;
            let arrived = Utc::now();
            let event = match super::to_event(
                &self.webhook,
                namespace,
                name,
                headers,
                &body,
                arrived,
            ) {
                Ok(event) => event,
                Err(error) => {
                    let status = error.status();
                    if status == StatusCode::UNAUTHORIZED {
                        tracing::info!(%namespace, %name, %error, "Refused an unauthenticated webhook request.");
                    }
                    sources.update(key, |s| s.last_error = Some(error.to_string()));
                    let reason = if status == StatusCode::UNAUTHORIZED {
                        "unauthorized"
                    } else {
                        "invalid"
                    };
                    return answer(status, reason, &error.to_string());
                }
            };
            let id = event.id().to_owned();
            push_to_sink(
                sources,
                key,
                &self.sink,
                &[event],
                arrived,
                json!({ "id": id }),
                "send it again",
            )
            .await
        })
    }
}
