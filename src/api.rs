//! The control-plane HTTP API on the admin listener (behind [`crate::admin`]'s tokens), used by the
//! CLI:
//!
//! - `POST /api/v1/apply?file=NAME` with YAML or JSON documents → the applied resources
//! - `GET /api/v1/{brokers|triggers|services|revisions}` (`?namespace=`),
//!   `GET|DELETE /api/v1/{kind}/{namespace}/{name}`; services, revisions and triggers carry a live
//!   `status`
//! - `GET /api/v1/services/{namespace}/{name}/logs?limit=N` → recent output of its instances
//! - `GET /api/v1/deadletters` (`?trigger=NS/NAME&unreplayed=true&limit=N&continue=TOKEN`, pages of
//!   500 by default, `metadata.continue` for the next), `GET /api/v1/deadletters/{id}`
//! - `DELETE /api/v1/deadletters/{id}`, `DELETE /api/v1/deadletters?trigger=NS/NAME` or `?all=true`
//! - `POST /api/v1/deadletters/replay` with `{"ids": [...]}` or `{"trigger": "NS/NAME", "all": true}`
//!   (at most `limit`, default 1,000, per request; `more` says whether any are left)
//! - `/metrics` (Prometheus)
//!
//! `/healthz` and `/readyz` ([`health_router`]) are served on the public listener.
//!
//! Errors are JSON `{"error": "..."}` (with `file`, `document`, `path`, `hint` for resource errors).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use kinetic_api::Kind;
use kinetic_store::{DeadLetter, DeadLetterFilter, DeadLetterSelection, TriggerRef};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};

use kinetic_control::{ApplyError, Control, DeleteError};

#[derive(Clone)]
pub struct ApiState {
    /// What applying, listing and deleting resources do in this process.
    pub control: Control,
    pub registry: Arc<Mutex<Registry>>,
    /// kinetic's own token issuer; present in processes that serve brokers.
    pub issuer: Option<Arc<kinetic_auth::Issuer>>,
}

/// `/healthz` and `/readyz`, for the public listener (and the dispatcher's).
pub fn health_router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/metrics` alone, for the dispatcher's listener.
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The admin API and `/metrics`; the caller puts [`crate::admin::guard`] in front.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/apply", post(apply_documents))
        .route(
            "/api/v1/deadletters",
            get(list_dead_letters).delete(delete_dead_letters),
        )
        .route("/api/v1/deadletters/replay", post(replay))
        .route(
            "/api/v1/deadletters/{id}",
            get(get_dead_letter).delete(delete_dead_letter),
        )
        .route("/api/v1/services/{namespace}/{name}/logs", get(logs))
        .route("/api/v1/sources", get(list_sources))
        .route("/api/v1/tokens", post(create_token))
        .route("/api/v1/{plural}", get(list))
        .route(
            "/api/v1/{plural}/{namespace}/{name}",
            get(get_one).delete(delete_one),
        )
        .with_state(state)
}

/// A failed API call.
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

impl From<kinetic_store::Error> for ApiError {
    fn from(error: kinetic_store::Error) -> Self {
        tracing::warn!(%error, source = ?std::error::Error::source(&error), "Store call failed.");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the store is unavailable; retry later"}),
        )
    }
}

fn not_found(message: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, json!({ "error": message }))
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, json!({ "error": message }))
}

async fn readyz(State(state): State<ApiState>) -> Response {
    match state
        .control
        .store
        .list_resources("Broker", Some("kinetic-readiness-probe"))
        .await
    {
        Ok(_) => "ready".into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response(),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut text = String::new();
    let encoded = state
        .registry
        .lock()
        .map_err(|_| std::fmt::Error)
        .and_then(|registry| prometheus_client::encoding::text::encode(&mut text, &registry));
    match encoded {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Deserialize)]
struct ApplyQuery {
    file: Option<String>,
}

async fn apply_documents(
    State(state): State<ApiState>,
    Query(query): Query<ApplyQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let file = query.file.unwrap_or_else(|| "request body".to_owned());
    let text = std::str::from_utf8(&body)
        .map_err(|_| bad_request(format!("{file}: is not UTF-8 text")))?;
    let applied = state
        .control
        .apply_text(&file, text)
        .await
        .map_err(|error| match error {
            ApplyError::Invalid(error) => ApiError(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": error.to_string(),
                    "file": error.file,
                    "document": error.document,
                    "resource": error.resource,
                    "path": error.path,
                    "hint": error.hint,
                }),
            ),
            ApplyError::WrittenElsewhere(_) => {
                ApiError(StatusCode::CONFLICT, json!({"error": error.to_string()}))
            }
            ApplyError::Store(error) => error.into(),
        })?;
    Ok(axum::Json(json!({ "applied": applied })).into_response())
}

/// The resource types `kinetic get` and `/api/v1/{type}` accept, for hints.
pub fn resource_types() -> String {
    let mut types: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
    types.push("sources");
    let last = types.pop().unwrap_or_default();
    format!("{} or {last}", types.join(", "))
}

/// The kind a user names (`brokers`, `trigger`, `ksvc`, …; see [`Kind::named`]), or a 404 that lists
/// the types there are.
fn require_kind(plural: &str) -> Result<Kind, ApiError> {
    Kind::named(plural).ok_or_else(|| {
        not_found(format!(
            "unknown resource type `{plural}`; use {}",
            resource_types()
        ))
    })
}

#[derive(Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

async fn list(
    State(state): State<ApiState>,
    Path(plural): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let kind = require_kind(&plural)?;
    let listed = state.control.list(kind, query.namespace.as_deref()).await?;
    Ok(axum::Json(json!({ "items": listed })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sub: String,
    audience: String,
    /// ISO-8601 (e.g. PT1H); one hour when absent.
    #[serde(default)]
    ttl: Option<String>,
}

/// Longest a token kinetic signs may live.
const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// `POST /api/v1/tokens`: a token signed by kinetic's issuer (the admin role).
async fn create_token(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let Some(issuer) = &state.issuer else {
        return Err(not_found(
            "this process signs no tokens; ask the kinetic that serves the brokers".into(),
        ));
    };
    let request: TokenRequest = serde_json::from_slice(&body).map_err(|error| {
        bad_request(format!(
            "the body must be JSON {{\"sub\": SUBJECT, \"audience\": AUDIENCE, \"ttl\": \"PT1H\"}}: {error}"
        ))
    })?;
    if request.sub.trim().is_empty() || request.audience.trim().is_empty() {
        return Err(bad_request(
            "`sub` and `audience` must not be empty; a broker's audience is shown by `kinetic get brokers`".into(),
        ));
    }
    let ttl = match &request.ttl {
        Some(text) => kinetic_api::duration::parse(text)
            .map_err(|error| bad_request(format!("ttl: {error}")))?,
        None => std::time::Duration::from_secs(3600),
    };
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(bad_request(format!(
            "ttl `{}` must be more than zero and at most 30 days",
            request.ttl.unwrap_or_default()
        )));
    }
    let token = issuer
        .sign(&request.sub, &request.audience, ttl)
        .map_err(|error| {
            tracing::error!(%error, "Signing a token failed.");
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "signing the token failed; see kinetic's log"}),
            )
        })?;
    let expires = chrono::Utc::now() + ttl;
    Ok(axum::Json(json!({
        "token": token,
        "issuer": issuer.url(),
        "sub": request.sub,
        "audience": request.audience,
        "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response())
}

/// Every source with its state: sink, events sent, failures, last event and error.
async fn list_sources(State(state): State<ApiState>) -> Response {
    let items = state
        .control
        .sources
        .as_ref()
        .map(|sources| sources.status())
        .unwrap_or_default();
    axum::Json(json!({ "items": items })).into_response()
}

#[derive(Deserialize)]
struct LogsQuery {
    limit: Option<usize>,
}

async fn logs(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let Some(serving) = &state.control.serving else {
        return Err(not_found("this process does not run functions".to_owned()));
    };
    if state
        .control
        .store
        .get_resource("Service", &namespace, &name)
        .await?
        .is_none()
    {
        return Err(not_found(format!(
            "Service {namespace}/{name} does not exist"
        )));
    }
    let lines = serving
        .runtime()
        .logs(&namespace, &name, query.limit.unwrap_or(200).min(10_000));
    Ok(axum::Json(log_lines(lines)).into_response())
}

/// A service's output lines as the API answers them: `{"lines": [{revision, instance, stream,
/// time, text}]}`, oldest first.
pub fn log_lines(lines: Vec<kinetic_serving::runtime::LogLine>) -> Value {
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|line| {
            json!({
                "revision": &*line.revision,
                "instance": line.instance,
                "stream": line.stream.as_str(),
                "time": chrono::DateTime::<chrono::Utc>::from(line.time).to_rfc3339(),
                "text": line.text,
            })
        })
        .collect();
    json!({ "lines": lines })
}

async fn get_one(
    State(state): State<ApiState>,
    Path((plural, namespace, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let kind = require_kind(&plural)?;
    let shown = state.control.get(kind, &namespace, &name).await?;
    let shown =
        shown.ok_or_else(|| not_found(format!("{kind} {namespace}/{name} does not exist")))?;
    Ok(axum::Json(shown).into_response())
}

async fn delete_one(
    State(state): State<ApiState>,
    Path((plural, namespace, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let kind = require_kind(&plural)?;
    let deleted = state
        .control
        .delete(kind, &namespace, &name)
        .await
        .map_err(|error| match error {
            DeleteError::Revision => bad_request(error.to_string()),
            DeleteError::WrittenElsewhere(_) => {
                ApiError(StatusCode::CONFLICT, json!({"error": error.to_string()}))
            }
            DeleteError::Store(error) => error.into(),
        })?;
    if deleted {
        Ok(axum::Json(
            json!({"deleted": {"kind": kind.as_str(), "namespace": namespace, "name": name}}),
        )
        .into_response())
    } else {
        Err(not_found(format!(
            "{kind} {namespace}/{name} does not exist"
        )))
    }
}

/// Dead letters per page unless `limit` says otherwise, and the most a page holds.
const PAGE_DEFAULT: usize = 500;
const PAGE_MOST: usize = 1000;

#[derive(Deserialize)]
struct DeadLetterQuery {
    trigger: Option<String>,
    #[serde(default)]
    unreplayed: bool,
    limit: Option<usize>,
    /// The `metadata.continue` of the previous page.
    #[serde(rename = "continue")]
    after: Option<String>,
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(PAGE_DEFAULT) {
        0 => Err(bad_request("`limit` must be at least 1".to_owned())),
        limit if limit > PAGE_MOST => Err(bad_request(format!(
            "`limit` is at most {PAGE_MOST}; follow `metadata.continue` for the next page"
        ))),
        limit => Ok(limit),
    }
}

/// The continue token after `letter`: where the next page starts.
fn continue_token(letter: &DeadLetter) -> String {
    format!("{}.{}", letter.dead_at, letter.id)
}

fn parse_continue(token: &str) -> Result<(i64, String), ApiError> {
    token
        .split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(|| {
            bad_request(format!(
                "`continue` `{token}` is not a token of this API; pass `metadata.continue` of the previous page as it is"
            ))
        })
}

fn parse_trigger(text: &str) -> Result<(String, String), ApiError> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(bad_request(format!(
            "trigger `{text}` must be written NAMESPACE/NAME, e.g. default/orders"
        ))),
    }
}

async fn list_dead_letters(
    State(state): State<ApiState>,
    Query(query): Query<DeadLetterQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query.limit)?;
    let filter = DeadLetterFilter {
        trigger: query.trigger.as_deref().map(parse_trigger).transpose()?,
        unreplayed_only: query.unreplayed,
        limit: Some(limit),
        after: query.after.as_deref().map(parse_continue).transpose()?,
    };
    let letters = state.control.store.list_dead_letters(&filter).await?;
    let items: Vec<Value> = letters.iter().map(dead_letter_json).collect();
    // A full page may have a next one.
    let next = (letters.len() == limit)
        .then(|| letters.last().map(continue_token))
        .flatten();
    Ok(axum::Json(json!({ "items": items, "metadata": {"continue": next} })).into_response())
}

#[derive(Deserialize)]
struct DeleteQuery {
    trigger: Option<String>,
    #[serde(default)]
    all: bool,
}

/// `DELETE /api/v1/deadletters?trigger=NS/NAME` or `?all=true`.
async fn delete_dead_letters(
    State(state): State<ApiState>,
    Query(query): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let which = match (query.trigger.as_deref(), query.all) {
        (Some(trigger), false) => {
            let (namespace, name) = parse_trigger(trigger)?;
            DeadLetterSelection::Trigger(namespace, name)
        }
        (None, true) => DeadLetterSelection::All,
        _ => {
            return Err(bad_request(
                "say which dead letters to delete: `?trigger=NAMESPACE/NAME`, or `?all=true` for every one (one id: DELETE /api/v1/deadletters/ID)".to_owned(),
            ));
        }
    };
    let deleted = state.control.store.delete_dead_letters(&which).await?;
    Ok(axum::Json(json!({ "deleted": deleted })).into_response())
}

/// `DELETE /api/v1/deadletters/{id}`.
async fn delete_dead_letter(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state
        .control
        .store
        .delete_dead_letters(&DeadLetterSelection::Ids(vec![id.clone()]))
        .await?
    {
        0 => Err(not_found(format!("dead letter `{id}` does not exist"))),
        deleted => Ok(axum::Json(json!({ "deleted": deleted })).into_response()),
    }
}

async fn get_dead_letter(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let letter = state.control.store.get_dead_letter(&id).await?;
    let letter = letter.ok_or_else(|| not_found(format!("dead letter `{id}` does not exist")))?;
    Ok(axum::Json(dead_letter_json(&letter)).into_response())
}

/// Puts the dead letters `ids` back into delivery to their triggers (as they are now); returns
/// those replayed (not: unknown ids, or a trigger that no longer exists).
pub async fn replay_dead_letters(
    control: &Control,
    ids: &[String],
) -> Result<Vec<String>, kinetic_store::Error> {
    let triggers: Vec<TriggerRef> = control
        .store
        .list_resources("Trigger", None)
        .await?
        .into_iter()
        .filter_map(|stored| {
            let broker = stored.body.pointer("/spec/broker")?.as_str()?.to_owned();
            Some(TriggerRef {
                uid: stored.uid,
                broker: format!("{}/{broker}", stored.namespace),
                namespace: stored.namespace,
                name: stored.name,
            })
        })
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    control.store.replay_dead_letters(ids, &triggers, now).await
}

/// A dead letter as the API shows it: the event itself, and why it gave up.
pub fn dead_letter_json(letter: &DeadLetter) -> Value {
    let millis = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
    // JSON data is shown as JSON, not as the base64 it is stored as.
    let event: Value = kinetic_api::cloudevent::from_json(&letter.payload)
        .map(|event| kinetic_api::cloudevent::encode_structured_inline(&event))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .or_else(|| serde_json::from_slice(&letter.payload).ok())
        .unwrap_or(Value::Null);
    json!({
        "id": letter.id,
        "trigger": format!("{}/{}", letter.trigger.namespace, letter.trigger.name),
        "broker": letter.trigger.broker,
        "attempts": letter.attempts,
        "lastStatus": letter.last_status,
        "lastError": letter.last_error,
        "lastResponse": letter.last_response.as_ref().map(|b| String::from_utf8(b.clone()).unwrap_or_else(|_| base64::prelude::BASE64_STANDARD.encode(b))),
        "firstAttemptAt": letter.first_attempt_at.and_then(millis),
        "deadAt": millis(letter.dead_at),
        "deadLetterSink": letter.sink_state.as_str(),
        "deadLetterSinkError": letter.sink_error,
        "replayedAt": letter.replayed_at.and_then(millis),
        "replayCount": letter.replay_count,
        "event": event,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<String>,
    trigger: Option<String>,
    #[serde(default)]
    all: bool,
    /// With `trigger`: the most replayed by this request (default and most: 1,000); the answer's
    /// `more` says whether unreplayed ones are left.
    limit: Option<usize>,
}

async fn replay(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let request: ReplayRequest = serde_json::from_slice(&body).map_err(|error| {
        bad_request(format!("the body must be {{\"ids\": [...]}} or {{\"trigger\": \"NS/NAME\", \"all\": true}}: {error}"))
    })?;
    let mut more = false;
    let ids = match (&request.trigger, request.all, request.ids.is_empty()) {
        (None, false, false) => request.ids,
        (Some(trigger), true, true) => {
            let limit = request.limit.unwrap_or(PAGE_MOST);
            let limit = page_limit(Some(limit))?;
            // One more than the page tells whether another page is left.
            let filter = DeadLetterFilter {
                trigger: Some(parse_trigger(trigger)?),
                unreplayed_only: true,
                limit: Some(limit + 1),
                after: None,
            };
            let mut ids: Vec<String> = state
                .control
                .store
                .list_dead_letters(&filter)
                .await?
                .into_iter()
                .map(|l| l.id)
                .collect();
            more = ids.len() > limit;
            ids.truncate(limit);
            ids
        }
        (Some(_), false, _) => {
            return Err(bad_request(
                "replaying by trigger needs `\"all\": true`".to_owned(),
            ));
        }
        _ => {
            return Err(bad_request(
                "give either `ids` or `trigger` with `all: true`".to_owned(),
            ));
        }
    };
    let replayed = replay_dead_letters(&state.control, &ids).await?;
    let skipped: Vec<&String> = ids.iter().filter(|id| !replayed.contains(id)).collect();
    Ok(
        axum::Json(json!({ "replayed": replayed, "notReplayed": skipped, "more": more }))
            .into_response(),
    )
}
