//! The gateway: Host-based routing on the serving listener. `{service}.{namespace}.{domain}` goes to
//! the Service's traffic split, `{tag}-{service}.{namespace}.{domain}` to the tagged revision; then
//! the revision's activator and queue-proxy pieces take the request to an instance.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use http::{Request, Response, StatusCode, header};
use rand::Rng;

use crate::activator::RevisionProxy;
use crate::refusal::{error_response, refusal};
use crate::route::{Route, lookup, parse_host};

/// Everything the gateway routes by, replaced as a whole when resources change.
#[derive(Default)]
pub struct RouteTable {
    /// By `(namespace, service)`.
    pub routes: HashMap<(String, String), Route>,
    /// By `(namespace, revision)`.
    pub revisions: HashMap<(String, String), Arc<RevisionProxy>>,
}

/// Shared by the gateway's handlers and the controller that updates its table.
pub struct Gateway {
    domain: String,
    table: RwLock<Arc<RouteTable>>,
}

impl Gateway {
    pub fn new(domain: impl Into<String>) -> Arc<Gateway> {
        Arc::new(Gateway {
            domain: domain.into(),
            table: RwLock::new(Arc::new(RouteTable::default())),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The URL of a service (or of one of its tags).
    pub fn url(&self, namespace: &str, service: &str, tag: Option<&str>, port: u16) -> String {
        let label = match tag {
            Some(tag) => format!("{tag}-{service}"),
            None => service.to_owned(),
        };
        format!("http://{label}.{namespace}.{}:{port}", self.domain)
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_table(&self, table: RouteTable) {
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
    }

    /// The revision's data path a request for `host` goes to, or why there is none.
    fn select(&self, host: &str) -> Result<Arc<RevisionProxy>, Response<Body>> {
        let table = self.table();
        let not_found = |why: String| {
            let mut known: Vec<String> = table
                .routes
                .keys()
                .map(|(namespace, service)| format!("{service}.{namespace}.{}", self.domain))
                .collect();
            known.sort();
            known.truncate(20);
            let hint = if known.is_empty() {
                "no services exist yet; apply one with `kinetic apply -f service.yaml`".to_owned()
            } else {
                format!(
                    "send requests with `Host: SERVICE.NAMESPACE.{}` (known: {}); list them with `kinetic get services`",
                    self.domain,
                    known.join(", ")
                )
            };
            refusal(
                StatusCode::NOT_FOUND,
                "unknown-host",
                &format!("{why}; {hint}"),
            )
        };
        let Some(name) = parse_host(host, &self.domain) else {
            return Err(not_found(format!(
                "Host `{host}` is not under the serving domain `{}`",
                self.domain
            )));
        };
        let Some((route, tagged)) = lookup(&table.routes, &name) else {
            return Err(not_found(format!("no service or tag answers at `{host}`")));
        };
        let revision = match tagged {
            Some(revision) => Some(revision),
            None => route.pick(rand::rng().random_range(0..100)),
        };
        let proxy = revision.and_then(|revision| {
            table
                .revisions
                .get(&(route.namespace.clone(), revision.to_owned()))
        });
        match proxy {
            Some(proxy) => Ok(proxy.clone()),
            None => Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                &format!(
                    "service `{}/{}` has no revision ready to serve; see `kinetic get services`",
                    route.namespace, route.service
                ),
            )),
        }
    }
}

/// The gateway's router: every path of every host.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gateway)
}

async fn handle(State(gateway): State<Arc<Gateway>>, request: Request<Body>) -> Response<Body> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("")
        .to_owned();
    let proxy = match gateway.select(&host) {
        Ok(proxy) => proxy,
        Err(response) => return response,
    };
    match proxy.serve(request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}
