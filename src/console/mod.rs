//! The web console on the admin listener (`/console`): server-rendered pages that answer a
//! user's everyday questions (is it ready, what is the rate and the backlog, is the function
//! scaling, what is in the dead letters), readable without JavaScript. With JavaScript the
//! overview refreshes itself in place every 2 s (`static/console.js`, kinetic's own, no library).
//!
//! Who may do what is decided by the admin listener's guard ([`crate::admin`]): the login form
//! keeps the token in a session cookie (HttpOnly, SameSite=Strict), viewers read, operators also
//! replay and delete dead letters, admins also apply resources. Rates, ratios, percentiles and
//! the instance graphs come from the process's own metrics, sampled every 2 s for 15 minutes
//! ([`history`]); nothing is added to the path of an event.

mod history;
mod html;
mod pages;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Extension, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kinetic_control::Control;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::admin::{CONSOLE_COOKIE, Caller, Role};
pub use history::History;
use html::{Nav, esc, page};

/// What the console's pages read.
#[derive(Clone)]
pub struct ConsoleState {
    pub control: Control,
    pub history: History,
    /// The admin listener serves TLS: the session cookie is `Secure`.
    pub secure: bool,
}

impl ConsoleState {
    /// Starts sampling `registry` for the console's history.
    pub fn new(control: Control, registry: Arc<Mutex<Registry>>, secure: bool) -> Self {
        Self {
            control,
            history: History::start(registry),
            secure,
        }
    }
}

/// The console's routes; the admin listener's guard is put in front by the caller.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/events", get(pages::events))
        .route("/console/dead-letters", get(pages::dead_letters))
        .route("/console/dead-letters/replay", post(pages::replay))
        .route("/console/dead-letters/delete", post(pages::delete))
        .route("/console/resources", get(pages::resources))
        .route("/console/resources/apply", post(pages::apply))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .with_state(state)
}

/// The page of a console action the caller's role does not allow.
pub fn refused_page(needed: Role, name: &str, has: Role) -> Response {
    html_response(StatusCode::FORBIDDEN, html::refused(needed, name, has))
}

/// What a console page may load and who may frame it: its own files only, no inline script, no
/// framing (a page of another site cannot put the console under the user's clicks). The referrer
/// policy is `same-origin`, not `no-referrer`: with the latter browsers send `Origin: null` on the
/// console's own form posts, which the admin guard refuses as cross-origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// The `<main>` alone when the page's script asks for it (live refresh), else the whole page.
fn page_or_fragment(
    headers: &HeaderMap,
    title: &str,
    nav: Nav,
    caller: &Caller,
    live: bool,
    main: String,
) -> Response {
    if headers.contains_key("x-console-fragment") {
        return html_response(StatusCode::OK, main);
    }
    html_response(StatusCode::OK, page(title, nav, Some(caller), live, &main))
}

#[derive(Deserialize)]
struct LoginQuery {
    expired: Option<String>,
    failed: Option<String>,
}

async fn login_form(Query(query): Query<LoginQuery>) -> Response {
    let message = if query.failed.is_some() {
        "<p class=\"error\" role=\"alert\">That is not a kinetic token: tokens are letters, digits, <code>-</code> and <code>_</code>.</p>"
    } else if query.expired.is_some() {
        "<p class=\"error\" role=\"alert\">This kinetic does not know that token (or it was removed). Log in with another.</p>"
    } else {
        ""
    };
    let main = format!(
        "<h1>Log in</h1>{message}<form method=\"post\" action=\"/console/login\" class=\"login\"><label for=\"token\">Admin token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required><p class=\"hint\" id=\"token-hint\">The local admin token is in the state directory's <code>admin-token</code> file; others are in <code>--admin-tokens</code>.</p><button type=\"submit\">Log in</button></form>"
    );
    html_response(
        StatusCode::OK,
        page("Log in", Nav::None, None, false, &main),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Keeps the token in the session cookie; whether it is known is checked on every page, like a
/// bearer token (a removed token logs the user out).
async fn login(State(state): State<ConsoleState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let well_formed = !token.is_empty()
        && token.len() <= 512
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if !well_formed {
        return see_other("/console/login?failed=1");
    }
    let secure = if state.secure { "; Secure" } else { "" };
    let cookie =
        format!("{CONSOLE_COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict{secure}");
    let mut response = see_other("/console");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(state): State<ConsoleState>, _caller: Extension<Caller>) -> Response {
    let secure = if state.secure { "; Secure" } else { "" };
    let cookie =
        format!("{CONSOLE_COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    let mut response = see_other("/console/login");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("static/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("static/console.js"),
    )
        .into_response()
}

/// An error page (the store is unavailable, say) inside the shell.
fn error_page(caller: &Caller, status: StatusCode, message: &str) -> Response {
    let main = format!(
        "<h1>Something went wrong</h1><p class=\"error\" role=\"alert\">{}</p>",
        esc(message)
    );
    html_response(status, page("Error", Nav::None, Some(caller), false, &main))
}
