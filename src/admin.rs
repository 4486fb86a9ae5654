//! Who may use the admin listener (`/api/v1/*`, `/metrics`), and the checks that keep a web page in
//! the user's browser from driving it.
//!
//! Every request passes, in order:
//! 1. **Host**: the listener's own address, `localhost`, or a name given with `--admin-host`;
//!    anything else is 421. A DNS-rebinding page reaches the listener under its own name, so it is
//!    refused here before it can read an answer.
//! 2. **Origin**: a browser's cross-origin request (an `Origin` other than the listener's own, or
//!    `Sec-Fetch-Site: cross-site`/`same-site`) is 403.
//! 3. **Token**: `Authorization: Bearer TOKEN`, compared by SHA-256 hash in constant time; none or
//!    an unknown one is 401 with `WWW-Authenticate: Bearer`.
//! 4. **Role**: viewer reads, operator also replays dead letters, admin does everything; too low a
//!    role is 403 naming the role needed.
//! 5. **Content type**: a request that changes state carries JSON or YAML (415 otherwise), so no
//!    HTML form or `no-cors` fetch can send one.
//!
//! Only hashes are kept in memory and in `--admin-tokens` files; the state directory's
//! `admin-token` holds the local admin token itself (mode 0600), for the CLI on the same machine.
//!
//! The console (`/console`) passes the same Host and Origin checks. Its token comes from the
//! session cookie its login form sets (HttpOnly, SameSite=Strict) or a bearer header; without one
//! a page redirects to the login form. Its role rules are [`console_required_role`], its forms
//! are `application/x-www-form-urlencoded` (SameSite=Strict keeps other sites' forms from
//! carrying the cookie, and the Origin check refuses them anyway), and its refusals are pages.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The file in the state directory that holds the local admin token.
pub const TOKEN_FILE: &str = "admin-token";
/// Every token kinetic makes starts with this, so secret scanners can find leaked ones.
const TOKEN_PREFIX: &str = "kinetic_";

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read everything, including `/metrics`.
    Viewer,
    /// Also replay (and delete) dead letters.
    Operator,
    /// Also apply and delete resources.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "`{other}` is not a role; use admin, operator or viewer"
            )),
        }
    }
}

/// The role a request needs.
pub fn required_role(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD {
        return Role::Viewer;
    }
    let dead_letters = path == "/api/v1/deadletters/replay"
        || (method == Method::DELETE
            && (path == "/api/v1/deadletters" || path.starts_with("/api/v1/deadletters/")));
    if dead_letters {
        Role::Operator
    } else {
        Role::Admin
    }
}

/// The role a console request needs: viewer reads (and logs in and out), operator replays and
/// deletes dead letters, admin applies resources.
pub fn console_required_role(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD {
        return Role::Viewer;
    }
    match path {
        "/console/login" | "/console/logout" => Role::Viewer,
        "/console/dead-letters/replay" | "/console/dead-letters/delete" => Role::Operator,
        _ => Role::Admin,
    }
}

/// The console's session cookie: the token the user logged in with.
pub const CONSOLE_COOKIE: &str = "kinetic_console";

/// Whether `path` is the console's.
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// Who a console request comes from; the guard adds it to the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// One known token: its name (for messages and logs), role and SHA-256.
#[derive(Clone)]
struct Known {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The tokens the admin listener accepts.
#[derive(Clone, Default)]
pub struct Tokens {
    known: Vec<Known>,
    /// Where a user finds a token, for the 401 message.
    hint: String,
}

impl Tokens {
    /// The one admin token of `{state_dir}/admin-token`, created (256 random bits, mode 0600) when
    /// it does not exist yet.
    pub fn local(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(TOKEN_FILE);
        let token = ensure_local_token(&path)?;
        let absolute = std::path::absolute(&path).unwrap_or(path);
        Ok(Self {
            known: vec![Known {
                name: "local".to_owned(),
                role: Role::Admin,
                hash: sha256(&token),
            }],
            hint: format!(
                "the local admin token is in {} (kinetic's CLI reads it by itself; other clients send it as `Authorization: Bearer TOKEN`)",
                absolute.display()
            ),
        })
    }

    /// Tokens of an `--admin-tokens` file: `ROLE NAME sha256:HEX` per line, `#` comments.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--admin-tokens: reading {}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    fn parse(file: &str, text: &str) -> anyhow::Result<Self> {
        let mut known: Vec<Known> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("--admin-tokens {file}:{}", index + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hash] = fields[..] else {
                anyhow::bail!(
                    "{at}: expected `ROLE NAME sha256:HEX`, e.g. `viewer grafana sha256:…` (`kinetic admin-token create --role viewer --name grafana` prints a token and its line)"
                );
            };
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            let hash = hash
                .strip_prefix("sha256:")
                .and_then(|hex| hex::decode(hex).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{at}: `{hash}` is not `sha256:` and 64 hex digits; write the token's hash, never the token itself"
                    )
                })?;
            if known.iter().any(|k| k.name == name) {
                anyhow::bail!("{at}: the name `{name}` is given twice; names must be unique");
            }
            known.push(Known {
                name: name.to_owned(),
                role,
                hash,
            });
        }
        if known.is_empty() {
            anyhow::bail!(
                "--admin-tokens {file}: holds no token, so nobody could use the admin API; add a line `admin NAME sha256:HEX` (`kinetic admin-token create --role admin --name NAME` prints one)"
            );
        }
        Ok(Self {
            known,
            hint: format!("tokens are listed in --admin-tokens {file}; ask its owner for one"),
        })
    }

    /// The name and role of `token`, if it is known. Every known hash is compared, in constant
    /// time, so the answer's timing says nothing about which bytes matched.
    fn find(&self, token: &str) -> Option<&Known> {
        let hash = sha256(token);
        let mut found = None;
        for known in &self.known {
            if bool::from(known.hash.ct_eq(&hash)) {
                found = Some(known);
            }
        }
        found
    }
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new token: 256 random bits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The `--admin-tokens` line of `token`.
pub fn token_line(role: Role, name: &str, token: &str) -> String {
    format!(
        "{} {name} sha256:{}",
        role.as_str(),
        hex::encode(sha256(token))
    )
}

/// Reads the local admin token at `path`, creating it first when missing. Creation is atomic
/// (written to a temporary file, then linked without replacing), so processes starting together on
/// one state directory agree on one token.
fn ensure_local_token(path: &Path) -> anyhow::Result<String> {
    if let Some(token) = read_token(path)? {
        return Ok(token);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing a token into {}", dir.display()))?;
    // NamedTempFile is created with mode 0600.
    writeln!(file, "{}", new_token()).context("writing the admin token")?;
    file.as_file()
        .sync_all()
        .context("writing the admin token")?;
    match file.persist_noclobber(path) {
        Ok(_) => {}
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => {
            return Err(error.error).with_context(|| format!("creating {}", path.display()));
        }
    }
    read_token(path)?.ok_or_else(|| anyhow::anyhow!("{} is empty", path.display()))
}

/// The token in a token file (its first line), `None` when the file does not exist.
pub fn read_token(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.lines().next().unwrap_or("").trim().to_owned();
            if token.is_empty() {
                anyhow::bail!(
                    "{} is empty; delete it and kinetic makes a new token on its next start",
                    path.display()
                );
            }
            Ok(Some(token))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Where the admin listener listens, as far as the Host check cares.
#[derive(Debug, Clone)]
pub enum Bound {
    Tcp(SocketAddr),
    /// Browsers cannot reach a unix socket: no Host or Origin check.
    Unix(PathBuf),
}

/// The admin listener's checks.
pub struct Guard {
    pub tokens: Tokens,
    pub bound: Bound,
    /// Names given with `--admin-host`, lower-case, without a port.
    pub hosts: Vec<String>,
    /// `/metrics` without a token.
    pub metrics_public: bool,
    /// `https` when the listener serves TLS (for the same-origin check).
    pub scheme: &'static str,
}

impl Guard {
    pub fn new(tokens: Tokens, bound: Bound, hosts: &[String], metrics_public: bool) -> Self {
        Self {
            tokens,
            bound,
            hosts: hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            metrics_public,
            scheme: "http",
        }
    }

    /// Whether `host` (a Host header's value) names this listener.
    fn host_allowed(&self, host: &str) -> bool {
        let Bound::Tcp(bound) = &self.bound else {
            return true;
        };
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if self.hosts.contains(&name) {
            return true;
        }
        if port.is_some_and(|p| p != bound.port()) {
            return false;
        }
        if name == "localhost" {
            return bound.ip().is_loopback() || bound.ip().is_unspecified();
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An address is never a rebinding name; an unspecified bind answers on all of them.
            Ok(ip) => {
                ip == bound.ip()
                    || bound.ip().is_unspecified()
                    || (ip.is_loopback() && bound.ip().is_loopback())
            }
            Err(_) => false,
        }
    }

    /// The refusal of a request, if it is refused; else who a console request comes from.
    fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Caller>, Refused> {
        if self.metrics_public && path == "/metrics" {
            return Ok(None);
        }
        if matches!(self.bound, Bound::Tcp(_)) {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !self.host_allowed(host) {
                return Err(Refused::Host(host.to_owned()));
            }
            if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
                && (site == "cross-site" || site == "same-site")
            {
                return Err(Refused::Origin(format!("Sec-Fetch-Site: {site}")));
            }
            if let Some(origin) = headers.get(header::ORIGIN) {
                let own = format!("{}://{host}", self.scheme);
                if !origin.as_bytes().eq_ignore_ascii_case(own.as_bytes()) {
                    return Err(Refused::Origin(format!(
                        "Origin: {}",
                        String::from_utf8_lossy(origin.as_bytes())
                    )));
                }
            }
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        if is_console(path) {
            return self.check_console(method, path, headers, bearer);
        }
        let presented = bearer;
        let Some(presented) = presented else {
            return Err(Refused::NoToken(self.tokens.hint.clone()));
        };
        let Some(known) = self.tokens.find(presented) else {
            return Err(Refused::BadToken(self.tokens.hint.clone()));
        };
        let needed = required_role(method, path);
        if known.role < needed {
            return Err(Refused::Role {
                request: format!("{method} {path}"),
                needed,
                name: known.name.clone(),
                has: known.role,
            });
        }
        let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::DELETE);
        if changes_state {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let accepted = matches!(
                essence.as_str(),
                "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml"
            );
            if !accepted {
                return Err(Refused::ContentType {
                    request: format!("{method} {path}"),
                    got: content_type.to_owned(),
                });
            }
        }
        Ok(None)
    }

    /// The console's part of [`Guard::check`], after the Host and Origin checks.
    fn check_console(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        bearer: Option<&str>,
    ) -> Result<Option<Caller>, Refused> {
        let changes_state = !matches!(*method, Method::GET | Method::HEAD);
        if changes_state {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                return Err(Refused::ContentType {
                    request: format!("{method} {path}"),
                    got: content_type.to_owned(),
                });
            }
        }
        // The login form and the console's own files need no token.
        if path == "/console/login" || path.starts_with("/console/static/") {
            return Ok(None);
        }
        let presented = bearer.or_else(|| cookie(headers, CONSOLE_COOKIE));
        let Some(known) = presented.and_then(|token| self.tokens.find(token)) else {
            return Err(Refused::Login {
                stale: presented.is_some(),
            });
        };
        let needed = console_required_role(method, path);
        if known.role < needed {
            return Err(Refused::ConsoleRole {
                needed,
                name: known.name.clone(),
                has: known.role,
            });
        }
        Ok(Some(Caller {
            name: known.name.clone(),
            role: known.role,
        }))
    }
}

/// The value of the cookie `name` in a request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name && !value.is_empty()).then_some(value)
        })
}

/// `host[:port]` → (host, port); IPv6 in brackets.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    if host.is_empty() {
        return None;
    }
    if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if rest.is_empty() => None,
            None => return None,
        };
        return Some((&host[..=end], port));
    }
    match host.rsplit_once(':') {
        Some((name, port)) => Some((name, Some(port.parse().ok()?))),
        None => Some((host, None)),
    }
}

/// Why a request was refused; each maps to one answer.
#[derive(Debug)]
enum Refused {
    Host(String),
    Origin(String),
    NoToken(String),
    BadToken(String),
    Role {
        request: String,
        needed: Role,
        name: String,
        has: Role,
    },
    ContentType {
        request: String,
        got: String,
    },
    /// A console page without a (known) token: to the login form.
    Login {
        stale: bool,
    },
    /// A console action the caller's role does not allow: a page saying so.
    ConsoleRole {
        needed: Role,
        name: String,
        has: Role,
    },
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let challenge = |error: Option<&str>| {
            let value = match error {
                Some(error) => format!("Bearer realm=\"kinetic-admin\", error=\"{error}\""),
                None => "Bearer realm=\"kinetic-admin\"".to_owned(),
            };
            HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
        };
        let (status, body, www) = match self {
            Self::Login { stale } => {
                let to = if stale {
                    "/console/login?expired=1"
                } else {
                    "/console/login"
                };
                return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
            }
            Self::ConsoleRole { needed, name, has } => {
                return crate::console::refused_page(needed, &name, has);
            }
            Self::Host(host) => (
                StatusCode::MISDIRECTED_REQUEST,
                json!({
                    "error": format!("the Host `{host}` does not name this admin listener; requests under other names are refused (DNS rebinding)"),
                    "hint": "reach it by its address or localhost, or start kinetic with --admin-host NAME for the name you use",
                }),
                None,
            ),
            Self::Origin(what) => (
                StatusCode::FORBIDDEN,
                json!({
                    "error": format!("cross-origin requests to the admin API are refused ({what})"),
                    "hint": "call the admin API from the kinetic CLI or a server-side client, not from a web page of another origin",
                }),
                None,
            ),
            Self::NoToken(hint) => (
                StatusCode::UNAUTHORIZED,
                json!({
                    "error": "the admin API needs a token: send `Authorization: Bearer TOKEN`",
                    "hint": hint,
                }),
                Some(challenge(None)),
            ),
            Self::BadToken(hint) => (
                StatusCode::UNAUTHORIZED,
                json!({
                    "error": "the token is not known to this kinetic",
                    "hint": hint,
                }),
                Some(challenge(Some("invalid_token"))),
            ),
            Self::Role {
                request,
                needed,
                name,
                has,
            } => (
                StatusCode::FORBIDDEN,
                json!({
                    "error": format!("`{request}` needs the {} role; the token `{name}` has the {} role", needed.as_str(), has.as_str()),
                    "required_role": needed.as_str(),
                }),
                Some(challenge(Some("insufficient_scope"))),
            ),
            Self::ContentType { request, got } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({
                    "error": format!(
                        "`{request}` needs Content-Type application/yaml or application/json, not `{}`",
                        if got.is_empty() { "(none)" } else { got.as_str() }
                    ),
                }),
                None,
            ),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(www) = www {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, www);
        }
        response
    }
}

/// The middleware of the admin router.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    match guard.check(request.method(), request.uri().path(), request.headers()) {
        Ok(caller) => {
            let mut request = request;
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        }
        Err(refused) => {
            tracing::debug!(method = %request.method(), path = %request.uri().path(), refused = ?refused, "Admin request refused.");
            refused.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bound: &str) -> Guard {
        let tokens = Tokens::parse(
            "tokens",
            &[
                token_line(Role::Admin, "root", "a-token"),
                token_line(Role::Operator, "ops", "o-token"),
                token_line(Role::Viewer, "grafana", "v-token"),
            ]
            .join("\n"),
        )
        .unwrap();
        Guard::new(
            tokens,
            Bound::Tcp(bound.parse().unwrap()),
            &["kinetic.example.com".to_owned()],
            false,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hosts_other_than_the_listeners_own_are_refused() {
        let g = guard("127.0.0.1:8070");
        for ok in [
            "127.0.0.1:8070",
            "127.0.0.1",
            "localhost:8070",
            "LOCALHOST",
            "kinetic.example.com",
            "kinetic.example.com:443",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for refused in [
            "",
            "evil.example:8070",
            "127.0.0.1:9999",
            "localhost:80",
            "10.0.0.1:8070",
            "127.0.0.1.nip.io:8070",
            "[::1",
            "127.0.0.1:x",
        ] {
            assert!(!g.host_allowed(refused), "{refused}");
        }
        let any = guard("0.0.0.0:8070");
        assert!(any.host_allowed("192.0.2.7:8070"));
        assert!(any.host_allowed("[2001:db8::1]:8070"));
        assert!(!any.host_allowed("rebind.example:8070"));
    }

    #[test]
    fn roles_are_ordered_and_routes_need_the_right_one() {
        assert_eq!(
            required_role(&Method::GET, "/api/v1/triggers"),
            Role::Viewer
        );
        assert_eq!(required_role(&Method::GET, "/metrics"), Role::Viewer);
        assert_eq!(
            required_role(&Method::POST, "/api/v1/deadletters/replay"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/deadletters/abc"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/deadletters"),
            Role::Operator
        );
        assert_eq!(required_role(&Method::POST, "/api/v1/apply"), Role::Admin);
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/triggers/default/t"),
            Role::Admin
        );
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn the_checks_refuse_in_order() {
        let g = guard("127.0.0.1:8070");
        let post = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("host", "127.0.0.1:8070")];
            pairs.extend_from_slice(extra);
            g.check(&Method::POST, "/api/v1/apply", &headers(&pairs))
        };
        assert!(matches!(post(&[]), Err(Refused::NoToken(_))));
        assert!(matches!(
            post(&[("authorization", "Bearer nope")]),
            Err(Refused::BadToken(_))
        ));
        assert!(matches!(
            post(&[("authorization", "Bearer v-token")]),
            Err(Refused::Role {
                needed: Role::Admin,
                has: Role::Viewer,
                ..
            })
        ));
        assert!(matches!(
            post(&[
                ("authorization", "Bearer a-token"),
                ("content-type", "text/plain")
            ]),
            Err(Refused::ContentType { .. })
        ));
        assert!(
            post(&[
                ("authorization", "bearer a-token"),
                ("content-type", "application/yaml; charset=utf-8")
            ])
            .is_ok()
        );
        assert!(matches!(
            post(&[
                ("authorization", "Bearer a-token"),
                ("content-type", "application/json"),
                ("origin", "http://evil.example")
            ]),
            Err(Refused::Origin(_))
        ));
        assert!(
            post(&[
                ("authorization", "Bearer a-token"),
                ("content-type", "application/json"),
                ("origin", "http://127.0.0.1:8070")
            ])
            .is_ok()
        );
        assert!(matches!(
            post(&[
                ("authorization", "Bearer a-token"),
                ("content-type", "application/json"),
                ("sec-fetch-site", "cross-site")
            ]),
            Err(Refused::Origin(_))
        ));
        let rebound = g.check(
            &Method::GET,
            "/api/v1/triggers",
            &headers(&[
                ("host", "rebind.example:8070"),
                ("authorization", "Bearer a-token"),
            ]),
        );
        assert!(matches!(rebound, Err(Refused::Host(_))));
    }

    #[test]
    fn token_files_say_what_is_wrong_and_where() {
        let error = |text: &str| Tokens::parse("t.txt", text).err().unwrap().to_string();
        assert!(error("admin root").contains("t.txt:1"));
        assert!(error("# c\nboss root sha256:00").contains("t.txt:2: `boss` is not a role"));
        assert!(error("admin root kinetic_secret").contains("never the token itself"));
        assert!(error("# nothing\n").contains("holds no token"));
        let line = token_line(Role::Viewer, "a", "x");
        assert!(error(&format!("{line}\n{line}")).contains("given twice"));
    }

    #[test]
    fn the_local_token_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = Tokens::local(dir.path()).unwrap();
        let token = read_token(&dir.path().join(TOKEN_FILE)).unwrap().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 43);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Tokens::local(dir.path()).unwrap();
        assert_eq!(first.known[0].hash, second.known[0].hash);
        assert!(second.find(&token).is_some_and(|k| k.role == Role::Admin));
        assert!(second.find("kinetic_other").is_none());
    }
}
