//! What the controller needs of a source kind, and the kinds it runs. A kind reads its stored
//! sources and says how each one runs: as a task of this process (a PingSource's ticks, an SQS
//! reader, a Kafka consumer) or as an endpoint that serves pushed requests (a WebhookSource, an
//! S3Source its bucket notifies). The controller does the rest for every kind alike: starting,
//! restarting on a new generation, stopping, status, routes.
//!
//! Adding a kind: its spec in `kinetic_api::sources` (with its entry in `kinetic_api::Kind::SOURCES`), then a
//! module here with a [`Kind`], listed in [`registry`].

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::response::Response;
use futures::future::BoxFuture;
use http::HeaderMap;
use kinetic_store::StoredResource;
use tokio_util::sync::CancellationToken;

use super::{Key, Sources};
use crate::sink::Target;

/// A source kind the controller runs.
pub(crate) trait Kind: Send + Sync + 'static {
    /// Its `kind`, as in `kinetic_api::Kind::SOURCES`.
    fn kind(&self) -> &'static str;

    /// Reads a stored source and readies what runs it, with its sink resolved
    /// ([`Sources::target`]). The error is what the source's status shows as why it is not ready;
    /// the source is prepared again at the next pass.
    fn prepare(&self, sources: &Arc<Sources>, stored: &StoredResource) -> Result<Prepared, String>;

    /// The store key under which a source of this kind keeps state (a checkpoint), removed when
    /// the source is deleted so that one created again under its name starts afresh.
    fn state_key(&self, _namespace: &str, _name: &str) -> Option<String> {
        None
    }

    /// The route its endpoints are served at, for kinds that take pushed requests.
    fn route(&self) -> Option<Route> {
        None
    }
}

/// `POST {prefix}/{namespace}/{name}` on the main listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// E.g. `/webhooks`.
    pub prefix: &'static str,
    /// What a request for a source this route does not serve is told: how to find the right URL.
    pub unknown: fn(namespace: &str, name: &str) -> String,
}

/// How one source runs.
pub(crate) enum Prepared {
    /// A task of this process, running until its token is cancelled (the source deleted or
    /// changed, or kinetic stopping). Started once per generation.
    Task { sink: Target, run: Task },
    /// Requests pushed to the kind's [`Route`]. Prepared again on every pass, so a rotated secret
    /// (a file replaced, as Kubernetes does with mounted secrets) takes effect within a pass.
    Endpoint {
        sink: Target,
        endpoint: Arc<dyn Endpoint>,
    },
}

impl Prepared {
    /// A task that runs `run(sources, key, sink, cancel)`.
    pub(crate) fn task<F, R>(sink: Target, run: F) -> Prepared
    where
        F: FnOnce(Arc<Sources>, Key, Target, CancellationToken) -> R + Send + 'static,
        R: Future<Output = ()> + Send + 'static,
    {
        let task_sink = sink.clone();
        Prepared::Task {
            sink,
            run: Box::new(move |sources, key, cancel| {
                Box::pin(run(sources, key, task_sink, cancel))
            }),
        }
    }
}

/// A source's task, given the controller, the source's key and its cancellation token.
pub(crate) type Task =
    Box<dyn FnOnce(Arc<Sources>, Key, CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// One source's handler of pushed requests.
pub(crate) trait Endpoint: Send + Sync {
    /// Answers one request to the source `key`: `202` only once the sink accepted what it
    /// carried, so its sender sends anything else again.
    fn receive<'a>(
        &'a self,
        sources: &'a Arc<Sources>,
        key: &'a Key,
        headers: &'a HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'a, Response>;
}

/// Every kind the controller runs.
pub(crate) fn registry() -> Vec<Box<dyn Kind>> {
    vec![
        Box::new(crate::webhook::kind::WebhookKind),
        Box::new(crate::ping::kind::PingKind),
        Box::new(crate::s3::kind::S3Kind),
        Box::new(crate::kafka::kind::KafkaKind),
    ]
}

/// Where the stored source of `kind` sends: its `sink` resolved ([`Sources::target`]).
pub(crate) fn sink_of(
    sources: &Sources,
    kind: &dyn Kind,
    stored: &StoredResource,
    sink: &kinetic_api::Destination,
) -> Result<Target, String> {
    sources.target(kind.kind(), &stored.namespace, &stored.name, sink)
}

/// Reads a stored source's body as its kind's resource.
pub(crate) fn read<T: serde::de::DeserializeOwned>(stored: &StoredResource) -> Result<T, String> {
    serde_json::from_value(stored.body.clone())
        .map_err(|e| format!("stored resource is unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_kind_of_the_api_runs_and_nothing_else() {
        let mut running: Vec<&str> = registry().iter().map(|k| k.kind()).collect();
        let mut listed: Vec<&str> = kinetic_api::Kind::SOURCES
            .iter()
            .map(|k| k.as_str())
            .collect();
        running.sort_unstable();
        listed.sort_unstable();
        assert_eq!(running, listed);
    }

    #[test]
    fn routes_do_not_overlap() {
        let mut prefixes: Vec<&str> = registry()
            .iter()
            .filter_map(|k| k.route())
            .map(|r| r.prefix)
            .collect();
        let count = prefixes.len();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), count);
    }
}
