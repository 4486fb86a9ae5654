//! One delivery attempt over HTTP: encode the event (binary or structured mode), sign it when the
//! trigger signs, POST it with a timeout, and read what came back: the status, `Retry-After`, the
//! start of the body for dead letters, and a reply event if the answer carries one.
//!
//! Two HTTP clients: kinetic's own destinations (the broker ingress a Broker ref resolves to,
//! Services behind the gateway) are reached directly; every other URL goes through the egress guard
//! ([`crate::egress`]), which refuses addresses inside the network unless the process allows them.
//!
//! Deliveries go through hyper's pooled HTTP/1.1 client with rustls, to URLs parsed once per
//! trigger ([`Target`]): this is the dispatcher's hot path, and a general-purpose client (reqwest)
//! spent about as much work again per request on URL re-parsing and redirect bookkeeping that a
//! delivery, which never follows redirects, does not need. Sources reach their sinks with reqwest
//! clients that follow the same routing ([`Sender::client_for`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cloudevents::AttributesReader as _;
use cloudevents::Event;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kinetic_api::cloudevent;
use kinetic_api::event::BROKER_TTL;
use kinetic_api::eventing::DeliveryFormat;

use crate::egress::{BoxError, Egress, Refused};
use crate::limit::{Limits, Outcome};
use crate::retry::{self, Verdict};
use crate::signing::Signer;

/// Most bytes of a response body kept for the dead letter (`knativeerrordata` uses at most 768).
pub const RESPONSE_KEEP: usize = 4096;
/// Largest reply read back from a subscriber, unless configured ([`Sender::with_max_reply_bytes`]).
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Idle connections kept per destination.
const IDLE_PER_HOST: usize = 512;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const USER_AGENT: &str = concat!("kinetic/", env!("CARGO_PKG_VERSION"));
/// The binary-mode header of the broker's TTL, which is not sent.
const TTL_HEADER: &str = "ce-knativebrokerttl";

type Delivery = Client<hyper_rustls::HttpsConnector<HttpConnector<Resolve>>, Full<Bytes>>;

/// A destination URL, parsed once (when a trigger's plan is built) for every attempt to it.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    /// The URL as the client takes it, or why it is not a valid URL.
    uri: Result<Uri, String>,
    /// The destination's audience and the sender's identity: each attempt carries a token for
    /// them (Knative's `Destination.audience`; a Broker ref's audience).
    identity: Option<(String, String)>,
    /// PEM CA certificates trusted for this destination besides the system's
    /// (`Destination.CACerts`).
    ca_certs: Option<Arc<str>>,
    /// Whether an answer's CloudEvent is a reply (asked for with `Prefer: reply`).
    replies: bool,
    /// `scheme://host:port`: the key of the destination's concurrency limit.
    origin: Option<Arc<str>>,
}

impl Target {
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let uri = url::Url::parse(&url)
            .map_err(|error| error.to_string())
            .and_then(|parsed| match parsed.scheme() {
                "http" | "https" => Uri::try_from(parsed.as_str()).map_err(|e| e.to_string()),
                other => Err(format!("the scheme `{other}` is not http or https")),
            })
            .map_err(|error| format!("`{url}` is not a valid URL: {error}"));
        let origin = uri
            .as_ref()
            .ok()
            .and_then(crate::limit::origin_of)
            .map(Arc::from);
        Self {
            url,
            uri,
            identity: None,
            ca_certs: None,
            replies: true,
            origin,
        }
    }

    /// Whether this destination's answers may carry a reply; without, no `Prefer: reply` is sent
    /// and an answer's body is only kept for dead letters.
    pub fn with_replies(mut self, replies: bool) -> Self {
        self.replies = replies;
        self
    }

    /// Attempts carry a token for `audience` signed for `sender` (see [`Sender::with_tokens`]).
    pub fn with_identity(mut self, audience: Option<String>, sender: &str) -> Self {
        self.identity = audience.map(|audience| (audience, sender.to_owned()));
        self
    }

    /// Trusts the PEM certificates `ca_certs` (besides the system's roots); they are checked now.
    pub fn with_ca_certs(mut self, ca_certs: Option<&str>) -> Result<Self, String> {
        if let Some(pem) = ca_certs {
            roots_with(pem)?;
            self.ca_certs = Some(Arc::from(pem));
        }
        Ok(self)
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// `scheme://host:port`, the key of the destination's concurrency limit.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

/// The URL as logs and status show it: secrets in it masked ([`kinetic_api::meta::redact_url`]).
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&kinetic_api::meta::redact_url(&self.url))
    }
}

/// Where a URL is reached from: kinetic's own destinations directly, the rest through the guard.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Route {
    Internal,
    Outside,
}

/// The HTTP clients of the dispatcher. Redirects are not followed: a subscriber is an exact URL.
#[derive(Clone)]
pub struct Sender {
    /// Deliveries to kinetic's own destinations.
    internal: Delivery,
    /// Deliveries everywhere else, resolved through the egress guard.
    outside: Delivery,
    /// The sources' clients (kinetic's own, guarded), built when first asked for.
    sources: Arc<OnceLock<Result<(reqwest::Client, reqwest::Client), String>>>,
    gateway: Option<GatewayAddress>,
    egress: Arc<Egress>,
    /// The broker ingress (scheme, host, port): Broker refs resolve under it.
    ingress: Option<(String, String, u16)>,
    /// `.{domain}`: Services, reached through the gateway.
    service_suffix: Option<String>,
    /// Signs the token of a [`Target`] with an identity: (sender, audience) → token.
    tokens: Option<TokenSigner>,
    /// Clients that trust a destination's `CACerts`, by (certificates, route); made when first used.
    trusting: Arc<Mutex<Trusting>>,
    /// Largest reply read back.
    max_reply_bytes: usize,
    /// How many deliveries may be in flight to each outside origin.
    limits: Arc<Limits>,
}

/// The clients that trust a destination's own CA certificates, by (certificates, route).
type Trusting = HashMap<(Arc<str>, Route), Delivery>;

/// (sender, audience) → a token.
type Sign = dyn Fn(&str, &str) -> Option<String> + Send + Sync;

/// Signs a token for a sender and an audience; kinetic's own issuer, given by the wiring.
#[derive(Clone)]
pub struct TokenSigner(Arc<Sign>);

impl TokenSigner {
    pub fn new(sign: impl Fn(&str, &str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(sign))
    }

    fn sign(&self, sender: &str, audience: &str) -> Option<String> {
        (self.0)(sender, audience)
    }
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner")
    }
}

/// The system's roots and the PEM certificates `pem`, or why `pem` holds none.
fn roots_with(pem: &str) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::pem::PemObject as _;
    let extra = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("CACerts is not PEM certificates: {error}"))?;
    if extra.is_empty() {
        return Err(
            "CACerts holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)".into(),
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let (added, _) = roots.add_parsable_certificates(extra);
    if added == 0 {
        return Err("CACerts holds no usable CA certificate".into());
    }
    Ok(roots)
}

/// kinetic's reqwest clients connect to destinations themselves: a proxy from `HTTP(S)_PROXY`
/// would be what the egress guard checks while it reaches anything.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .tcp_nodelay(true)
        .user_agent(USER_AGENT)
}

/// kinetic's outbound HTTP client for its own destinations: no redirects, pooled, and, given the
/// gateway, resolving `*.{domain}` (Services) to it. Fails rather than fall back to a client
/// without these rules.
fn http_client(gateway: Option<&GatewayAddress>) -> Result<reqwest::Client, String> {
    let mut builder = client_builder();
    if let Some(gateway) = gateway {
        builder = builder.dns_resolver(Resolve::Internal(Some(GatewayDns::new(gateway))));
    }
    builder
        .build()
        .map_err(|error| format!("kinetic's HTTP client could not be built: {error}"))
}

/// Where Services are served: names under `domain` resolve to the gateway's `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddress {
    pub domain: String,
    pub address: SocketAddr,
}

/// Service host names (`{service}.{namespace}.{domain}`), which resolve to the gateway.
#[derive(Clone)]
struct GatewayDns {
    suffix: String,
    address: SocketAddr,
}

impl GatewayDns {
    fn new(gateway: &GatewayAddress) -> Self {
        Self {
            suffix: format!(".{}", gateway.domain.to_ascii_lowercase()),
            address: gateway.address,
        }
    }
}

/// How kinetic's HTTP clients (hyper for deliveries, reqwest for the sources) resolve names: one
/// resolver for both, so a name is treated alike whichever client asks. A trailing dot is
/// removed and the name lower-cased first.
#[derive(Clone)]
enum Resolve {
    /// Services to the gateway (when there is one), the rest through the system resolver.
    Internal(Option<GatewayDns>),
    /// Through the egress guard.
    Guarded(Arc<Egress>),
}

impl Resolve {
    async fn resolve(&self, name: &str) -> Result<Vec<SocketAddr>, BoxError> {
        let host = name.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Resolve::Internal(Some(gateway)) if host.ends_with(&gateway.suffix) => {
                Ok(vec![gateway.address])
            }
            Resolve::Internal(_) => {
                Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect())
            }
            Resolve::Guarded(egress) => egress.resolve(&host).await,
        }
    }
}

impl tower::Service<Name> for Resolve {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolve = self.clone();
        Box::pin(async move { Ok(resolve.resolve(name.as_str()).await?.into_iter()) })
    }
}

impl reqwest::dns::Resolve for Resolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolve = self.clone();
        Box::pin(async move {
            let found = Resolve::resolve(&resolve, name.as_str()).await?;
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The TLS settings of the delivery clients: the system's root certificates (none when the system
/// has none, and then every https delivery fails its certificate check, saying so).
fn tls_config() -> rustls::ClientConfig {
    static CONFIG: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(errors = ?found.errors, "No root certificates were found on this system; deliveries to https URLs will fail their certificate check.");
        }
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|error| {
                panic!("rustls refuses its own default protocol versions: {error}")
            })
    });
    CONFIG.clone()
}

fn delivery_client(resolve: Resolve) -> Delivery {
    delivery_client_with(resolve, tls_config())
}

fn delivery_client_with(resolve: Resolve, tls: rustls::ClientConfig) -> Delivery {
    let mut http = HttpConnector::new_with_resolver(resolve);
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

/// Nothing was sent: the destination had no room under its concurrency limit in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub verdict: Verdict,
    pub status: Option<u16>,
    /// Why it failed, for people: `HTTP 503`, `timed out after 1s`, `connection refused`.
    pub error: Option<String>,
    /// Start of the response body (at most [`RESPONSE_KEEP`] bytes).
    pub body: Vec<u8>,
    pub retry_after: Option<Duration>,
    /// A CloudEvent the subscriber answered with.
    pub reply: Option<Event>,
}

/// The parts of an answer an attempt looks at.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Result<Bytes, hyper::Error>,
    /// The body was longer than what is read of it.
    cut: bool,
}

impl Sender {
    /// A sender that reaches `*.{domain}` (Services) through the serving `gateway` and the broker
    /// ingress at `ingress_url` directly, and every other URL within `egress`.
    pub fn new(
        gateway: Option<&GatewayAddress>,
        ingress_url: Option<&str>,
        egress: Egress,
    ) -> Self {
        let egress = Arc::new(egress);
        Self {
            internal: delivery_client(Resolve::Internal(gateway.map(GatewayDns::new))),
            outside: delivery_client(Resolve::Guarded(egress.clone())),
            sources: Arc::new(OnceLock::new()),
            gateway: gateway.cloned(),
            egress,
            ingress: ingress_url
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| {
                    let host = u.host_str()?.to_ascii_lowercase();
                    Some((u.scheme().to_owned(), host, u.port_or_known_default()?))
                }),
            service_suffix: gateway.map(|g| format!(".{}", g.domain.to_ascii_lowercase())),
            tokens: None,
            trusting: Arc::default(),
            max_reply_bytes: MAX_REPLY_BYTES,
            limits: Arc::default(),
        }
    }

    /// Keeps the concurrency limits of outside origins in `limits` (shared with what reports
    /// them).
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// The concurrency limits of the outside origins this sender delivers to.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Replies longer than `bytes` are not read (and so not published).
    pub fn with_max_reply_bytes(mut self, bytes: usize) -> Self {
        self.max_reply_bytes = bytes;
        self
    }

    /// Targets with an identity get a token from `signer` on every attempt.
    pub fn with_tokens(mut self, signer: TokenSigner) -> Self {
        self.tokens = Some(signer);
        self
    }

    /// The client for a route that also trusts `ca_certs`.
    fn trusting(&self, ca_certs: &Arc<str>, route: Route) -> Result<Delivery, String> {
        let mut clients = self
            .trusting
            .lock()
            .map_err(|_| "the client table is poisoned".to_owned())?;
        if let Some(client) = clients.get(&(ca_certs.clone(), route)) {
            return Ok(client.clone());
        }
        let roots = roots_with(ca_certs)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let resolve = match route {
            Route::Internal => Resolve::Internal(self.gateway.as_ref().map(GatewayDns::new)),
            Route::Outside => Resolve::Guarded(self.egress.clone()),
        };
        let client = delivery_client_with(resolve, tls);
        clients.insert((ca_certs.clone(), route), client.clone());
        Ok(client)
    }

    /// Whether a URL of `scheme`, `host` and `port` is one of kinetic's own destinations: the
    /// broker ingress, or a Service.
    /// Whether a URL is one of kinetic's own destinations: a broker's ingress (`/{namespace}/{name}`
    /// on the ingress origin, nothing else served there), or a Service.
    fn is_internal(&self, scheme: &str, host: &str, port: Option<u16>, path: &str) -> bool {
        if let Some((ingress_scheme, ingress_host, ingress_port)) = &self.ingress
            && scheme.eq_ignore_ascii_case(ingress_scheme)
            && host.eq_ignore_ascii_case(ingress_host)
            && port.or_else(|| default_port(scheme)) == Some(*ingress_port)
        {
            return is_broker_path(path);
        }
        match &self.service_suffix {
            Some(suffix) if host.parse::<IpAddr>().is_err() && !host.starts_with('[') => host
                .trim_end_matches('.')
                .to_ascii_lowercase()
                .ends_with(suffix.as_str()),
            _ => false,
        }
    }

    /// Whether `url` is a broker's path on kinetic's own ingress, which takes CloudEvents batch
    /// mode (several events in one POST, committed together).
    pub fn is_broker_ingress(&self, url: &url::Url) -> bool {
        self.ingress
            .as_ref()
            .is_some_and(|(ingress_scheme, ingress_host, ingress_port)| {
                url.scheme().eq_ignore_ascii_case(ingress_scheme)
                    && url
                        .host_str()
                        .is_some_and(|host| host.eq_ignore_ascii_case(ingress_host))
                    && url.port_or_known_default() == Some(*ingress_port)
                    && is_broker_path(url.path())
            })
    }

    /// Which client reaches `uri`, or why the guard refuses it.
    fn route(&self, uri: &Uri) -> Result<Route, Refused> {
        let host = uri.host().unwrap_or("");
        if self.is_internal(
            uri.scheme_str().unwrap_or(""),
            host,
            uri.port_u16(),
            uri.path(),
        ) {
            return Ok(Route::Internal);
        }
        // Names are checked when resolved; an IP literal is never resolved, so here.
        if let Ok(address) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            self.egress.check_ip(address)?;
        }
        Ok(Route::Outside)
    }

    /// Builds the reqwest clients [`Self::client_for`] hands out, so that a process that will
    /// need them fails at start-up, not at its first request, when they cannot be built.
    pub fn ready_clients(&self) -> Result<(), String> {
        self.reqwest_clients().map(|_| ())
    }

    fn reqwest_clients(&self) -> Result<&(reqwest::Client, reqwest::Client), String> {
        let clients = self.sources.get_or_init(|| {
            let outside = client_builder()
                .dns_resolver(Resolve::Guarded(self.egress.clone()))
                .build()
                .map_err(|error| format!("kinetic's HTTP client could not be built: {error}"))?;
            Ok((http_client(self.gateway.as_ref())?, outside))
        });
        clients.as_ref().map_err(Clone::clone)
    }

    /// The reqwest client that may reach `url`: kinetic's own for its destinations, the guarded
    /// one for the rest, or why the guard refuses it. Sources reach their sinks through it.
    pub fn client_for(&self, url: &url::Url) -> Result<&reqwest::Client, String> {
        let (internal, outside) = self.reqwest_clients()?;
        if self.is_internal(
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port(),
            url.path(),
        ) {
            return Ok(internal);
        }
        self.egress.check_url(url).map_err(|r| r.to_string())?;
        Ok(outside)
    }

    /// Posts `event` to `target`, signed by `signer` if given. As in Knative, the broker's TTL
    /// (`knativebrokerttl`) stays inside kinetic: it is not sent. Never fails: a transport error
    /// is an [`Attempt`] without a status.
    pub async fn send(
        &self,
        target: &Target,
        event: &Event,
        format: DeliveryFormat,
        timeout: Duration,
        signer: Option<&Signer>,
    ) -> Attempt {
        self.send_within(target, event, format, timeout, signer, None)
            .await
            .unwrap_or_else(|Busy| {
                Attempt::failed(Verdict::Retryable, "the subscriber had no room".into())
            })
    }

    /// [`Sender::send`], waiting at most `wait` (when given) for room under the destination's
    /// concurrency limit: past it nothing is sent ([`Busy`]).
    pub async fn send_within(
        &self,
        target: &Target,
        event: &Event,
        format: DeliveryFormat,
        timeout: Duration,
        signer: Option<&Signer>,
        wait: Option<Duration>,
    ) -> Result<Attempt, Busy> {
        let uri = match &target.uri {
            Ok(uri) => uri.clone(),
            Err(error) => return Ok(Attempt::failed(Verdict::Permanent, error.clone())),
        };
        let route = match self.route(&uri) {
            Ok(route) => route,
            Err(refused) => return Ok(Attempt::refused(&refused)),
        };
        let trusting;
        let client = match (&target.ca_certs, route) {
            (Some(ca_certs), route) => match self.trusting(ca_certs, route) {
                Ok(client) => {
                    trusting = client;
                    &trusting
                }
                Err(error) => return Ok(Attempt::failed(Verdict::Permanent, error)),
            },
            (None, Route::Internal) => &self.internal,
            (None, Route::Outside) => &self.outside,
        };
        // Outside subscribers get as many attempts in flight as their answers show they take
        // (kinetic's own destinations have their own admission: the ingress's, the activator's).
        let permit = match (route, &target.origin) {
            (Route::Outside, Some(origin)) => {
                let limit = self.limits.of(origin);
                match wait {
                    Some(wait) => Some(
                        tokio::time::timeout(wait, limit.acquire())
                            .await
                            .map_err(|_| Busy)?,
                    ),
                    None => Some(limit.acquire().await),
                }
            }
            _ => None,
        };
        let (mut headers, body) = match format {
            DeliveryFormat::Binary => {
                let (mut headers, body) = cloudevent::encode_binary(event);
                headers.remove(TTL_HEADER);
                (headers, body)
            }
            DeliveryFormat::Json => {
                let mut headers = HeaderMap::with_capacity(4);
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/cloudevents+json; charset=utf-8"),
                );
                let body = if event.extension(BROKER_TTL).is_some() {
                    let mut outgoing = event.clone();
                    outgoing.remove_extension(BROKER_TTL);
                    cloudevent::encode_structured_inline(&outgoing)
                } else {
                    cloudevent::encode_structured_inline(event)
                };
                (headers, body)
            }
        };
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        // The trace of the current span (the attempt's) continues at the subscriber.
        kinetic_telemetry::inject(&mut headers);
        if target.replies {
            headers.insert("prefer", HeaderValue::from_static("reply"));
        }
        if let (Some((audience, sender)), Some(tokens)) = (&target.identity, &self.tokens) {
            match tokens
                .sign(sender, audience)
                .and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok())
            {
                Some(mut value) => {
                    value.set_sensitive(true);
                    headers.insert(http::header::AUTHORIZATION, value);
                }
                None => {
                    return Ok(Attempt::failed(
                        Verdict::Retryable,
                        format!("no token could be signed for audience `{audience}`"),
                    ));
                }
            }
        }
        if let Some(signer) = signer {
            let timestamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            for (name, value) in signer.headers(event.id(), timestamp, &body) {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::try_from(name), HeaderValue::try_from(value))
                {
                    headers.insert(name, value);
                }
            }
        }
        let mut request = Request::post(uri);
        if let Some(slot) = request.headers_mut() {
            *slot = headers;
        }
        let Ok(request) = request.body(Full::new(body)) else {
            return Ok(Attempt::failed(
                Verdict::Permanent,
                "the request could not be built".into(),
            ));
        };
        let exchange = async {
            let response = client.request(request).await?;
            let status = response.status().as_u16();
            let (parts, body) = response.into_parts();
            let limit = if target.replies
                && retry::classify(Some(status)) == Verdict::Delivered
                && status != 202
            {
                self.max_reply_bytes
            } else {
                RESPONSE_KEEP
            };
            // One byte more than the limit tells a body that was cut from one that fits.
            let body = read_body(body, limit.saturating_add(1)).await;
            let cut = body.as_ref().is_ok_and(|body| body.len() > limit);
            Ok::<_, hyper_util::client::legacy::Error>(Answer {
                status,
                headers: parts.headers,
                body,
                cut,
            })
        };
        let (attempt, outcome) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => (
                Attempt::failed(
                    Verdict::Retryable,
                    format!("timed out after {}", kinetic_api::duration::format(timeout)),
                ),
                Outcome::Overloaded,
            ),
            Ok(Err(error)) => transport_failure(&error),
            Ok(Ok(answer)) => {
                let outcome = match answer.status {
                    429 | 503 => Outcome::Overloaded,
                    _ => Outcome::Answered,
                };
                (answered(answer, target), outcome)
            }
        };
        if let Some(permit) = permit {
            permit.finish(outcome);
        }
        Ok(attempt)
    }
}

/// `/{namespace}/{name}`: two DNS labels, the path of a broker's ingress.
fn is_broker_path(path: &str) -> bool {
    let label = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
        Some((namespace, name)) => label(namespace) && label(name),
        None => false,
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The attempt an answer makes: its verdict, `Retry-After`, the kept body and the reply.
fn answered(answer: Answer, target: &Target) -> Attempt {
    let Answer {
        status,
        headers,
        body,
        cut,
    } = answer;
    // The URL as logs show it (parsed and redacted) only when something is logged.
    let verdict = retry::classify(Some(status));
    let retry_after = if status == 429 || status == 503 {
        headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
    } else {
        None
    };
    let wants_reply = target.replies && verdict == Verdict::Delivered && status != 202;
    let body = match body {
        Ok(body) => body,
        Err(error) if verdict == Verdict::Delivered => {
            tracing::warn!(url = %target, %error, "Reading the subscriber's answer failed; the reply is lost.");
            Bytes::new()
        }
        Err(_) => Bytes::new(),
    };
    let reply = if wants_reply && cut {
        tracing::warn!(url = %target, bytes = body.len() - 1, "The subscriber's answer is longer than the largest reply kinetic reads (--max-body-bytes); it is not published as a reply.");
        None
    } else if wants_reply {
        reply_of(&headers, &body, target)
    } else {
        None
    };
    Attempt {
        verdict,
        status: Some(status),
        error: (verdict != Verdict::Delivered).then(|| format!("HTTP {status}")),
        body: body[..body.len().min(RESPONSE_KEEP)].to_vec(),
        retry_after,
        reply,
    }
}

impl Attempt {
    fn failed(verdict: Verdict, error: String) -> Attempt {
        Attempt {
            verdict,
            status: None,
            error: Some(error),
            body: Vec::new(),
            retry_after: None,
            reply: None,
        }
    }

    /// The egress guard stopped it: nothing was sent, and trying again would not help.
    fn refused(refused: &Refused) -> Attempt {
        Attempt::failed(Verdict::Permanent, refused.to_string())
    }
}

/// The attempt a transport error makes, and what it says of the subscriber's load: a broken or
/// failed connection is a sign of overload (a full accept queue, a server shedding connections),
/// the egress guard's refusal is not.
fn transport_failure(error: &hyper_util::client::legacy::Error) -> (Attempt, Outcome) {
    // A name whose every address the guard refused fails to "connect" with the guard's reason.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut root: &dyn std::error::Error = error;
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return (Attempt::refused(refused), Outcome::Ignored);
        }
        root = current;
        cause = current.source();
    }
    let message = if error.is_connect() {
        format!("connection failed: {root}")
    } else if std::ptr::addr_eq(root, error) {
        format!("request failed: {error}")
    } else {
        format!("request failed: {error}: {root}")
    };
    (
        Attempt::failed(Verdict::Retryable, message),
        Outcome::Overloaded,
    )
}

/// At most `limit` bytes of `body`; the rest is not read.
async fn read_body(mut body: hyper::body::Incoming, limit: usize) -> Result<Bytes, hyper::Error> {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&data[..data.len().min(room)]);
        if kept.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(kept))
}

/// Subscribers already warned about answering with a body that is not a CloudEvent. Many functions
/// answer every event with some JSON; one warning per URL says it, the rest are debug lines.
static WARNED_NOT_EVENT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
/// Most URLs remembered; past it (a trigger per tenant...) the set starts over.
const WARNED_MOST: usize = 10_000;

fn warn_not_event(url: &str, bytes: usize) {
    let first = {
        let mut warned = WARNED_NOT_EVENT
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned.contains(url) {
            false
        } else {
            if warned.len() >= WARNED_MOST {
                warned.clear();
            }
            warned.insert(url.to_owned())
        }
    };
    if first {
        tracing::warn!(%url, bytes, "The subscriber answered with a body that is not a CloudEvent; it is not a reply and is ignored (this subscriber's next ones are logged at debug level).");
    } else {
        tracing::debug!(%url, bytes, "The subscriber answered with a body that is not a CloudEvent; ignoring it.");
    }
}

/// A reply event in the answer, if there is one; a non-empty body that is not a CloudEvent is ignored
/// with a warning (once per subscriber).
fn reply_of(headers: &HeaderMap, body: &Bytes, url: &Target) -> Option<Event> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let looks_like_event = headers.contains_key("ce-specversion")
        || content_type.starts_with("application/cloudevents");
    if !looks_like_event {
        if !body.is_empty() {
            warn_not_event(&url.to_string(), body.len());
        }
        return None;
    }
    match cloudevent::decode(headers, body) {
        Ok((_, mut events)) if events.len() == 1 => events.pop(),
        Ok(_) => {
            tracing::warn!(%url, "The subscriber replied with a batch; only single events are replies. Ignoring it.");
            None
        }
        Err(error) => {
            tracing::warn!(%url, %error, "The subscriber's reply is not a valid CloudEvent; ignoring it.");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use cloudevents::{EventBuilder as _, EventBuilderV10};

    use super::*;
    use crate::egress::{AddressClass, Allow};

    type Seen = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

    /// An HTTP server on loopback that records what it gets and answers 200.
    async fn receiver() -> (std::net::SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(move |headers: http::HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push((headers, body));
                "ok"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, seen)
    }

    fn event() -> Event {
        EventBuilderV10::new()
            .id("evt-1")
            .source("/shop")
            .ty("com.example.order")
            .data("application/json", serde_json::json!({"order": 7}))
            .build()
            .unwrap()
    }

    fn loopback() -> Egress {
        Egress::new(&[Allow::Class(AddressClass::Loopback)])
    }

    /// One unsigned binary-mode attempt with a 5 s timeout.
    async fn post(sender: &Sender, url: &str, event: &Event) -> Attempt {
        let timeout = Duration::from_secs(5);
        sender
            .send(
                &Target::new(url),
                event,
                DeliveryFormat::Binary,
                timeout,
                None,
            )
            .await
    }

    #[tokio::test]
    async fn signed_deliveries_carry_the_standard_webhooks_headers_over_the_body_sent() {
        let (address, seen) = receiver().await;
        let sender = Sender::new(None, None, loopback());
        let signer = Signer::from_secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        let url = format!("http://{address}/hook");
        let timeout = Duration::from_secs(5);
        for format in [DeliveryFormat::Binary, DeliveryFormat::Json] {
            let attempt = sender
                .send(
                    &Target::new(url.as_str()),
                    &event(),
                    format,
                    timeout,
                    Some(&signer),
                )
                .await;
            assert_eq!(attempt.verdict, Verdict::Delivered, "{:?}", attempt.error);
        }
        let attempt = post(&sender, &url, &event()).await;
        assert_eq!(attempt.verdict, Verdict::Delivered);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for (headers, body) in &seen[..2] {
            let header = |name: &str| headers.get(name).unwrap().to_str().unwrap();
            assert_eq!(header("webhook-id"), "evt-1");
            let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
            let now = chrono::Utc::now().timestamp();
            assert!((now - 5..=now).contains(&timestamp), "{timestamp} vs {now}");
            assert_eq!(
                header("webhook-signature"),
                signer.signature("evt-1", timestamp, body)
            );
        }
        assert_eq!(seen[0].1.as_ref(), br#"{"order":7}"#, "binary: the data");
        let structured: serde_json::Value = serde_json::from_slice(&seen[1].1).unwrap();
        assert_eq!(structured["id"], "evt-1", "structured: the event");
        assert!(seen[2].0.get("webhook-signature").is_none(), "unsigned");
    }

    #[tokio::test]
    async fn the_broker_ttl_is_not_sent_and_bad_urls_are_not_retried() {
        let (address, seen) = receiver().await;
        let sender = Sender::new(None, None, loopback());
        let target = Target::new(format!("http://{address}/in"));
        let mut event = event();
        event.set_extension(BROKER_TTL, 254_i64);
        event.set_extension("tenant", "acme");
        let timeout = Duration::from_secs(5);
        for format in [DeliveryFormat::Binary, DeliveryFormat::Json] {
            let attempt = sender.send(&target, &event, format, timeout, None).await;
            assert_eq!(attempt.verdict, Verdict::Delivered, "{:?}", attempt.error);
        }
        {
            let seen = seen.lock().unwrap();
            let (binary, _) = &seen[0];
            assert!(binary.get("ce-knativebrokerttl").is_none(), "{binary:?}");
            assert_eq!(binary["ce-tenant"], "acme");
            assert_eq!(binary["ce-id"], "evt-1");
            assert_eq!(binary["user-agent"], USER_AGENT);
            assert_eq!(binary["prefer"], "reply");
            let structured: serde_json::Value = serde_json::from_slice(&seen[1].1).unwrap();
            assert!(structured.get("knativebrokerttl").is_none(), "{structured}");
            assert_eq!(structured["tenant"], "acme");
        }
        for (url, expected) in [
            (
                "not a url",
                "`not a url` is not a valid URL: relative URL without a base",
            ),
            (
                "ftp://example.com/x",
                "`ftp://example.com/x` is not a valid URL: the scheme `ftp` is not http or https",
            ),
        ] {
            let attempt = post(&sender, url, &event).await;
            assert_eq!(attempt.verdict, Verdict::Permanent);
            assert_eq!(attempt.error.as_deref(), Some(expected));
        }
        // Nothing listens here: a connection failure, retried.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let attempt = post(&sender, &format!("http://127.0.0.1:{port}/"), &event).await;
        assert_eq!(attempt.verdict, Verdict::Retryable);
        let error = attempt.error.unwrap();
        assert!(error.starts_with("connection failed: "), "{error}");
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_guard_refuses_names_and_literals_before_anything_is_sent() {
        let (address, seen) = receiver().await;
        let sender = Sender::new(None, None, Egress::default());
        let port = address.port();
        let send = |url: String| {
            let sender = sender.clone();
            async move { post(&sender, &url, &event()).await }
        };
        let literal = send(format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(literal.verdict, Verdict::Permanent);
        assert_eq!(literal.status, None);
        assert_eq!(
            literal.error.as_deref(),
            Some("refused: 127.0.0.1 is a loopback address; allow it with --egress-allow loopback")
        );
        let mapped = send(format!("http://[::ffff:127.0.0.1]:{port}/")).await;
        assert_eq!(mapped.verdict, Verdict::Permanent);
        let named = send(format!("http://localhost:{port}/")).await;
        assert_eq!(named.verdict, Verdict::Permanent, "{:?}", named.error);
        let error = named.error.unwrap();
        assert!(
            error.starts_with("refused: localhost resolves to ")
                && error.ends_with(", a loopback address; allow it with --egress-allow loopback"),
            "{error}"
        );
        assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
        // Allowed, the same name is reached.
        let allowed = post(
            &Sender::new(None, None, loopback()),
            &format!("http://localhost:{port}/"),
            &event(),
        )
        .await;
        assert_eq!(allowed.verdict, Verdict::Delivered, "{:?}", allowed.error);
    }

    #[tokio::test]
    async fn the_ingress_and_services_are_reached_whatever_the_guard_says() {
        let (address, seen) = receiver().await;
        let (other, _) = receiver().await;
        let gateway = GatewayAddress {
            domain: "kinetic.localhost".into(),
            address,
        };
        let ingress = format!("http://{address}");
        let sender = Sender::new(Some(&gateway), Some(&ingress), Egress::default());
        for url in [
            format!("{ingress}/default/replies"),
            format!("http://hello.default.kinetic.localhost:{}/", address.port()),
        ] {
            let attempt = post(&sender, &url, &event()).await;
            assert_eq!(
                attempt.verdict,
                Verdict::Delivered,
                "{url}: {:?}",
                attempt.error
            );
        }
        assert_eq!(seen.lock().unwrap().len(), 2);
        // Another port on the same address is not the ingress.
        let attempt = post(&sender, &format!("http://{other}/"), &event()).await;
        assert_eq!(attempt.verdict, Verdict::Permanent, "{:?}", attempt.error);
        // Nor is anything but a broker's path on the ingress origin: the guard decides.
        for path in [
            "/webhooks/default/hook",
            "/healthz",
            "/default/a/b",
            "/Default/b",
            "/default/../../x",
        ] {
            let attempt = post(&sender, &format!("{ingress}{path}"), &event()).await;
            assert_eq!(attempt.verdict, Verdict::Permanent, "{path}");
            assert!(attempt.error.unwrap().starts_with("refused: "), "{path}");
        }
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_sources_clients_follow_the_same_routes() {
        let ingress = "http://127.0.0.1:8080";
        let sender = Sender::new(None, Some(ingress), Egress::default());
        let route = |url: &str| {
            sender
                .client_for(&url::Url::parse(url).unwrap())
                .map(|_| ())
        };
        route(&format!("{ingress}/default/orders")).unwrap();
        let refused = route(&format!("{ingress}/sources/default/s3")).unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        let refused = route("http://169.254.169.254/latest/meta-data").unwrap_err();
        assert!(
            refused.contains("metadata") || refused.contains("link-local"),
            "{refused}"
        );
    }
}
