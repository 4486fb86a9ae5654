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
use crate::route::{Route, host_key, key_of};

/// Everything the gateway routes by, replaced as a whole when resources change.
#[derive(Default)]
pub struct RouteTable {
    /// By `(namespace, service)`.
    pub routes: HashMap<(String, String), Route>,
    /// By `(namespace, revision)`.
    pub revisions: HashMap<(String, String), Arc<RevisionProxy>>,
}

/// Where one host sends requests: revisions with cumulative percentages (a tag has one, at 100).
struct Destination {
    namespace: String,
    service: String,
    /// `(cumulative percent, data path)`; `None` while the revision cannot run.
    split: Vec<(u32, Option<Arc<RevisionProxy>>)>,
}

/// The route table compiled for lookups by the borrowed Host key, without allocating per request.
#[derive(Default)]
struct Compiled {
    /// By `{service}.{namespace}` and `{tag}-{service}.{namespace}`.
    hosts: HashMap<String, Destination>,
    /// Every served revision's data path, by `(namespace, revision)`.
    revisions: HashMap<(String, String), Arc<RevisionProxy>>,
}

impl Compiled {
    fn of(table: &RouteTable) -> Compiled {
        let proxy = |namespace: &str, revision: &str| {
            table
                .revisions
                .get(&(namespace.to_owned(), revision.to_owned()))
                .cloned()
        };
        let mut hosts = HashMap::new();
        // Tags first: a service whose name looks like `{tag}-{service}` wins over the tag.
        for route in table.routes.values() {
            for (tag, revision) in &route.tags {
                hosts.insert(
                    key_of(&route.namespace, &route.service, Some(tag)),
                    Destination {
                        namespace: route.namespace.clone(),
                        service: route.service.clone(),
                        split: vec![(100, proxy(&route.namespace, revision))],
                    },
                );
            }
        }
        for route in table.routes.values() {
            let mut total = 0;
            let split = route
                .split
                .iter()
                .map(|(revision, percent)| {
                    total += percent;
                    (total, proxy(&route.namespace, revision))
                })
                .collect();
            hosts.insert(
                key_of(&route.namespace, &route.service, None),
                Destination {
                    namespace: route.namespace.clone(),
                    service: route.service.clone(),
                    split,
                },
            );
        }
        Compiled {
            hosts,
            revisions: table.revisions.clone(),
        }
    }
}

/// Shared by the gateway's handlers and the controller that updates its table.
pub struct Gateway {
    domain: String,
    /// Further domains Services answer under, e.g. `svc.cluster.local` on Kubernetes, where a
    /// Service's cluster-local name points at the gateway.
    also: Vec<String>,
    table: RwLock<Arc<Compiled>>,
}

impl Gateway {
    pub fn new(domain: impl Into<String>) -> Arc<Gateway> {
        Self::with_domains(domain, Vec::new())
    }

    /// A gateway whose Services also answer at `SERVICE.NAMESPACE.{each of also}`.
    pub fn with_domains(domain: impl Into<String>, also: Vec<String>) -> Arc<Gateway> {
        Arc::new(Gateway {
            domain: domain.into(),
            also,
            table: RwLock::new(Arc::new(Compiled::default())),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The URL of a service (or of one of its tags).
    pub fn url(&self, namespace: &str, service: &str, tag: Option<&str>, port: u16) -> String {
        kinetic_api::meta::service_url(service, namespace, tag, &self.domain, port)
    }

    fn compiled(&self) -> Arc<Compiled> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the routes.
    pub fn set_table(&self, table: RouteTable) {
        let compiled = Arc::new(Compiled::of(&table));
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = compiled;
    }

    /// The data path of a served revision.
    pub fn revision(&self, namespace: &str, revision: &str) -> Option<Arc<RevisionProxy>> {
        self.compiled()
            .revisions
            .get(&(namespace.to_owned(), revision.to_owned()))
            .cloned()
    }

    /// The revision's data path a request for `host` goes to, or why there is none.
    pub(crate) fn select(&self, host: &str) -> Result<Arc<RevisionProxy>, Response<Body>> {
        let table = self.compiled();
        // Which services exist is not told to whoever asks: the admin API lists them.
        let not_found = |why: String| {
            let hint = format!(
                "send requests with `Host: SERVICE.NAMESPACE.{}`; list the services with `kinetic get services`",
                self.domain
            );
            refusal(
                StatusCode::NOT_FOUND,
                "unknown-host",
                &format!("{why}; {hint}"),
            )
        };
        // Host names are case-insensitive; only an unusual one pays for lower-casing.
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let key = host_key(host, &self.domain)
            .or_else(|| self.also.iter().find_map(|domain| host_key(host, domain)));
        let Some(key) = key else {
            return Err(not_found(format!(
                "Host `{host}` is not under the serving domain `{}`",
                self.domain
            )));
        };
        let Some(destination) = table.hosts.get(key) else {
            return Err(not_found(format!("no service or tag answers at `{host}`")));
        };
        let chosen = match destination.split.as_slice() {
            [(_, only)] => only.as_ref(),
            split => {
                let roll = rand::rng().random_range(0..100);
                split
                    .iter()
                    .find(|(cumulative, _)| roll < *cumulative)
                    .or(split.last())
                    .and_then(|(_, proxy)| proxy.as_ref())
            }
        };
        match chosen {
            Some(proxy) => Ok(proxy.clone()),
            None => Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                &format!(
                    "service `{}/{}` has no revision ready to serve; see `kinetic get services`",
                    destination.namespace, destination.service
                ),
            )),
        }
    }
}

/// The gateway's router: every path of every host.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gateway)
}

/// The host a request was sent to: its `Host` header, else its URI's.
pub(crate) fn host_of(request: &Request<Body>) -> String {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("")
        .to_owned()
}

async fn handle(State(gateway): State<Arc<Gateway>>, request: Request<Body>) -> Response<Body> {
    let host = host_of(&request);
    let proxy = match gateway.select(&host) {
        Ok(proxy) => proxy,
        Err(response) => return response,
    };
    match proxy.serve(request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activator::RevisionSettings;
    use crate::metrics::Metrics;
    use crate::queue_proxy::Forward;

    #[test]
    fn services_also_answer_under_further_domains() {
        let gateway =
            Gateway::with_domains("kinetic.example.com", vec!["svc.cluster.local".into()]);
        let proxy = RevisionProxy::new(
            RevisionSettings {
                namespace: "team".into(),
                revision: "hello-00001".into(),
                service: "hello".into(),
                container_concurrency: 0,
                timeout: std::time::Duration::from_secs(300),
                activation_timeout: std::time::Duration::from_secs(60),
                capacity: 10,
                mark_proxied: false,
            },
            Forward::new(),
            Metrics::new(&mut prometheus_client::registry::Registry::default()),
        );
        gateway.set_table(RouteTable {
            routes: [(
                ("team".to_owned(), "hello".to_owned()),
                Route {
                    namespace: "team".into(),
                    service: "hello".into(),
                    split: vec![("hello-00001".into(), 100)],
                    tags: HashMap::new(),
                },
            )]
            .into(),
            revisions: [(("team".to_owned(), "hello-00001".to_owned()), proxy)].into(),
        });
        for host in [
            "hello.team.kinetic.example.com",
            "hello.team.svc.cluster.local",
            "HELLO.team.svc.cluster.local:80",
        ] {
            assert!(gateway.select(host).is_ok(), "{host}");
        }
        for host in [
            "hello.team.svc",
            "hello.team.other.example",
            "hello.kinetic.example.com",
        ] {
            let refused = gateway.select(host).err().expect("refused");
            assert_eq!(refused.status(), StatusCode::NOT_FOUND, "{host}");
        }
    }
}
