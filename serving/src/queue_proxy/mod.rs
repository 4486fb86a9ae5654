//! The queue-proxy: what stands in front of every instance. One concern per layer:
//! [`stats`] (concurrency and request counts for the autoscaler), [`breaker`] (containerConcurrency
//! with a bounded queue), a request timeout (`timeoutSeconds`, tower's), and [`drain`] (finish what is
//! in flight on shutdown); [`Forward`] sends the request to the instance.
//!
//! In `kinetic up` these pieces run inside the gateway process, so a request crosses one proxy.
//! [`sidecar`] runs the same stack as its own process (`kinetic queue-proxy`) beside an instance
//! that kinetic does not start itself, as Knative's sidecar does.

pub mod breaker;
pub mod drain;
pub mod sidecar;
pub mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Sends requests to instances over pooled HTTP/1.1 connections.
#[derive(Clone, Debug)]
pub struct Forward {
    client: Client<HttpConnector, Body>,
}

impl Default for Forward {
    fn default() -> Self {
        Forward::new()
    }
}

impl Forward {
    pub fn new() -> Forward {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Forward { client }
    }

    /// Sends `request` to the instance at `authority` (its `host:port`, see [`authority`]),
    /// keeping the request's Host header, path and query.
    ///
    /// Cancellation safe: dropping the future closes the exchange.
    pub async fn send(
        &self,
        authority: &Authority,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(
            request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        // Scheme, authority and path are all set, so the parts always make a URI.
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = http::Version::HTTP_11;
        strip_hop_by_hop(request.headers_mut());
        let mut response = self.client.request(request).await?;
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}

/// The URI authority of an instance's address, built once per instance.
pub fn authority(address: SocketAddr) -> Authority {
    Authority::try_from(address.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("127.0.0.1"))
}

/// Removes headers that describe one connection, not the message (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        for name in named {
            headers.remove(name.as_str());
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        if headers.contains_key(&name) {
            headers.remove(name);
        }
    }
    for name in ["keep-alive", "proxy-connection"] {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// The last service of a stack: forwards every request to one fixed instance.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub forward: Forward,
    pub authority: Authority,
}

impl tower::Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let forward = self.forward.clone();
        let authority = self.authority.clone();
        Box::pin(async move { Ok(forward.send(&authority, request).await?.map(Body::new)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("ce-id", "1".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("ce-id"));
    }
}
