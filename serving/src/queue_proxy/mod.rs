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
use http::{HeaderMap, Request, Response, Uri, header};
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

    /// Sends `request` to the instance at `address`, keeping its Host header, path and query.
    ///
    /// Cancellation safe: dropping the future closes the exchange.
    pub async fn send(
        &self,
        address: SocketAddr,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, hyper_util::client::legacy::Error> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let host = request.headers().get(header::HOST).cloned();
        let uri: Uri = format!("http://{address}{path}")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_11;
        strip_hop_by_hop(request.headers_mut());
        if let Some(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
        let response = self.client.request(request).await?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// Removes headers that describe one connection, not the message (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// The last service of a stack: forwards every request to one fixed instance.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub forward: Forward,
    pub address: SocketAddr,
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
        let address = self.address;
        Box::pin(async move { Ok(forward.send(address, request).await?) })
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
