//! Serving split across processes: `kinetic autoscaler` decides, gateways and activators carry
//! the requests, a queue-proxy stands in front of every instance.
//!
//! - The autoscaler runs the same controller and KPA loop as `kinetic up` ([`crate::Serving`]), with
//!   a [`Hub`] for its data path. The hub publishes one [`Table`]: every Service's routes, and per
//!   served revision its ready instances (their queue-proxies), whether the activator is in its
//!   path, and its failed starts. It takes the activators' per-second [`Report`]s and [`Poke`]s, and
//!   scrapes every instance's queue-proxy for its own ([`QueueProxyStats`]).
//! - Gateways and activators are [`Follower`]s of that table: the same [`crate::Gateway`] and
//!   [`crate::activator::RevisionProxy`] as in `kinetic up`, fed from the table instead of from
//!   resources and a runtime in their own process.
//!
//! The wire is plain HTTP/1.1 with JSON bodies, on the autoscaler's listener:
//! - `GET /v1/table?after=VERSION`: the table once its version is past `VERSION` (at once when it
//!   is already), else the same table after [`LONG_POLL`]; without `after`, the table now;
//! - `POST /v1/stats` with a [`Report`], every [`REPORT_INTERVAL`] from each activator;
//! - `POST /v1/poke` with a [`Poke`], at once when a request finds a revision with no instance.
//!
//! Requests are counted once, as Knative counts them: an activator reports every request it
//! handles, and marks those it forwards (`K-Proxy-Request: activator`); a queue-proxy reports the
//! marked ones apart, and the autoscaler subtracts them.

mod follower;
mod hub;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

pub use follower::{Follower, FollowerConfig, Role, activator_router, gateway_router};
pub use hub::{Hub, RemoteRevision, router as hub_router};

use crate::route::Route;

/// How long a `GET /v1/table` waits for a newer table before it answers with the same one.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// How often activators report their requests per revision.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The header that names the revision a gateway sends a request to an activator for.
pub const REVISION_HEADER: &str = "knative-serving-revision";
/// The header that names that revision's namespace.
pub const NAMESPACE_HEADER: &str = "knative-serving-namespace";

/// Everything gateways and activators route by, published by the autoscaler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Grows with every change; a follower asks for the table after the version it has.
    pub version: u64,
    pub routes: Vec<Route>,
    pub revisions: Vec<RevisionEntry>,
}

/// One served revision as its data path needs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionEntry {
    pub namespace: String,
    pub revision: String,
    /// Its Service (Knative's labels on the activator's metrics); empty from an older autoscaler.
    #[serde(default)]
    pub service: String,
    /// A revision created again under its name gets a new data path.
    pub uid: String,
    /// containerConcurrency; 0 = no limit.
    pub container_concurrency: usize,
    /// `timeoutSeconds`, in milliseconds.
    pub timeout_ms: u64,
    /// How long a request waits for an instance, in milliseconds.
    pub activation_timeout_ms: u64,
    /// Requests one activator may hold for the revision.
    pub capacity: usize,
    /// Its ready instances: their queue-proxies' addresses.
    pub endpoints: Vec<Endpoint>,
    /// Whether requests go through an activator (the revision is at zero, or has too little burst
    /// capacity), rather than from the gateway straight to its queue-proxies.
    pub in_path: bool,
    /// Starts that failed so far.
    pub failed_starts: u64,
    /// Why the last start failed, when starting again cannot help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent_failure: Option<String>,
}

/// One ready instance: where its queue-proxy takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Stable for the instance's life, never reused by the autoscaler.
    pub id: u64,
    pub address: SocketAddr,
}

/// One activator's (or gateway's, when it has no activators) numbers for the last period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Who reports: a later report of the same reporter replaces the earlier one.
    pub reporter: String,
    pub revisions: Vec<RevisionReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionReport {
    pub namespace: String,
    pub revision: String,
    /// Requests in flight (waiting or forwarded), averaged over the period weighted by time.
    pub average_concurrency: f64,
    /// Requests that arrived during the period.
    pub requests: u64,
    /// Requests in flight at the end of the period.
    pub in_flight: u64,
    /// Requests waiting for an instance at the end of the period.
    pub waiting: u64,
    /// Requests that arrived at zero ready instances, since the reporter started.
    pub cold_starts: u64,
}

/// A request found a revision without an instance to take it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Poke {
    pub namespace: String,
    pub revision: String,
    /// Requests in flight for the revision at the poker now.
    pub in_flight: u64,
}

/// What a queue-proxy's `/stats` answers: its last one-second period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueProxyStats {
    pub average_concurrency: f64,
    pub request_count: u64,
    pub in_flight: u64,
    /// The part of `average_concurrency` that came through an activator.
    #[serde(default)]
    pub average_proxied_concurrency: f64,
    /// The part of `request_count` that came through an activator.
    #[serde(default)]
    pub proxied_request_count: u64,
}

/// Why talking to the autoscaler failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot reach {uri}: {source}")]
    Unreachable {
        uri: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{uri} answered {status}: {body}")]
    Status {
        uri: String,
        status: StatusCode,
        body: String,
    },
    #[error("{uri} did not answer within {0:?}", .timeout)]
    Timeout { uri: String, timeout: Duration },
    #[error("{uri} sent a body that is not what kinetic sends: {source}")]
    Body {
        uri: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A small JSON client over pooled HTTP/1.1 connections, for the wire above.
#[derive(Clone, Debug)]
pub struct Wire {
    client: Client<HttpConnector, Body>,
    base: String,
}

impl Wire {
    /// A client of the autoscaler at `base` (`http://HOST:PORT`).
    pub fn new(base: &str) -> Result<Wire, String> {
        let uri: Uri = base
            .parse()
            .map_err(|error| format!("`{base}` is not a URL: {error}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "`{base}` is not an http:// URL with a host, e.g. http://127.0.0.1:8090"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Ok(Wire {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connector),
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `body` (JSON, or nothing) and decodes the JSON answer, within `timeout`.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Option<T>, WireError> {
        let uri = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&uri);
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, Body::from))
            .map_err(|error| WireError::Body {
                uri: uri.clone(),
                source: error.into(),
            })?;
        let exchange =
            async {
                let response = self.client.request(request).await.map_err(|source| {
                    WireError::Unreachable {
                        uri: uri.clone(),
                        source,
                    }
                })?;
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|error| WireError::Body {
                        uri: uri.clone(),
                        source: error.into(),
                    })?
                    .to_bytes();
                if !status.is_success() {
                    return Err(WireError::Status {
                        uri: uri.clone(),
                        status,
                        body: String::from_utf8_lossy(&bytes).into_owned(),
                    });
                }
                if bytes.is_empty() {
                    return Ok(None);
                }
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| WireError::Body {
                        uri: uri.clone(),
                        source: error.into(),
                    })
            };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| WireError::Timeout {
                uri: uri.clone(),
                timeout,
            })?
    }

    /// POSTs `value` as JSON; the answer is not read beyond its status.
    pub async fn post<T: Serialize>(
        &self,
        path: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<(), WireError> {
        let body = serde_json::to_vec(value).map_err(|error| WireError::Body {
            uri: format!("{}{path}", self.base),
            source: error.into(),
        })?;
        self.call::<serde_json::Value>(Method::POST, path, Some(body), timeout)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_back_what_was_written() {
        let table = Table {
            version: 7,
            routes: vec![Route {
                namespace: "default".into(),
                service: "hello".into(),
                split: vec![("hello-00002".into(), 80), ("hello-00001".into(), 20)],
                tags: [("old".to_owned(), "hello-00001".to_owned())].into(),
            }],
            revisions: vec![RevisionEntry {
                namespace: "default".into(),
                revision: "hello-00002".into(),
                service: "hello".into(),
                uid: "u".into(),
                container_concurrency: 1,
                timeout_ms: 300_000,
                activation_timeout_ms: 60_000,
                capacity: 1000,
                endpoints: vec![Endpoint {
                    id: 3,
                    address: "127.0.0.1:9000".parse().unwrap(),
                }],
                in_path: true,
                failed_starts: 0,
                permanent_failure: None,
            }],
        };
        let text = serde_json::to_string(&table).unwrap();
        assert!(text.contains("\"inPath\":true"), "{text}");
        assert_eq!(serde_json::from_str::<Table>(&text).unwrap(), table);
    }

    #[test]
    fn a_base_that_is_not_an_http_url_is_refused_with_an_example() {
        for bad in ["127.0.0.1:8090", "https://x:1", "nope"] {
            let error = Wire::new(bad).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
        assert_eq!(
            Wire::new("http://127.0.0.1:8090/").unwrap().base(),
            "http://127.0.0.1:8090"
        );
    }
}
