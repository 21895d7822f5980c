//! The HTTP integration API (`/api/v1/…`) for the platform: JSON, service/admin tokens, the
//! same command path and validation as the WebSocket.
//!
//! This module owns the REST surface: authentication of `Authorization: Bearer` tokens (role
//! `service` or `admin`), turning request bodies into [`Command`]s through the protocol's own
//! decoder (so every field error is named exactly as on the WebSocket, minus the `command.`
//! prefix), submitting them to the single writer and mapping its answer like `conn.rs` does,
//! the read endpoints (state, state at a seq, event pages as JSON or NDJSON, contact search)
//! and the OpenAPI document describing all of it.
//!
//! Never: panic on a request, hold a lock across an `.await`, read a body past
//! [`BODY_LIMIT`], or reach a stream outside the token's company.

use super::conn::{command_reply, store_error};
use super::App;
use crate::auth::{AuthError, Claims};
use crate::domain::{self, Principal};
use crate::store::{StoreError, StreamId};
use crate::writer::{CommandError, CommandRequest};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use copanel_protocol::{
    ClientFrame, Command, ErrorCode, QueryKind, Role, ServerFrame, StreamName, StreamState,
};
use dashmap::DashMap;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Largest request body, bytes; larger ones get `413 too_large`.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The media type of newline-delimited JSON event pages.
const NDJSON: &str = "application/x-ndjson";
/// Largest `Idempotency-Key`, characters (as the WebSocket's `command_id`).
const COMMAND_ID_CHARS: usize = 128;
/// Callers tracked by the rate limiter before idle ones are forgotten.
const LIMITER_CALLERS: usize = 10_000;

/// A token bucket per caller (company and token subject) for the HTTP API: `per_sec` sustained,
/// `burst` at once. Bounded: above [`LIMITER_CALLERS`] callers, the full buckets (callers idle
/// long enough to have refilled) are dropped, which changes nobody's budget.
pub(crate) struct RateLimiter {
    buckets: DashMap<String, (f64, Instant)>,
    per_sec: f64,
    burst: f64,
}

impl RateLimiter {
    /// A limiter of `per_sec` requests per second with bursts of `burst`.
    pub(crate) fn new(per_sec: f64, burst: f64) -> Self {
        RateLimiter {
            buckets: DashMap::new(),
            per_sec,
            burst,
        }
    }

    /// Takes one request from `caller`'s bucket, or says how long until one is there.
    pub(crate) fn take(&self, caller: &str) -> Result<(), Duration> {
        let now = Instant::now();
        if self.buckets.len() > LIMITER_CALLERS && !self.buckets.contains_key(caller) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        // The guard lives only inside this block; nothing here awaits.
        let mut entry = self
            .buckets
            .entry(caller.to_owned())
            .or_insert((self.burst, now));
        let (tokens, at) = *entry;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.per_sec).min(self.burst);
        if tokens < 1.0 {
            *entry = (tokens, now);
            let wait = (1.0 - tokens) / self.per_sec.max(f64::MIN_POSITIVE);
            return Err(Duration::from_secs_f64(wait.min(3600.0)));
        }
        *entry = (tokens - 1.0, now);
        Ok(())
    }

    /// [`RateLimiter::take`] for a verified caller, as the API's error: `429 rate_limited`
    /// with `Retry-After`.
    pub(crate) fn check(&self, claims: &Claims) -> Result<(), ApiError> {
        let key = format!("{}\u{0}{}", claims.company, claims.sub);
        self.take(&key).map_err(|wait| {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "over the HTTP API's limit of {} requests/s (burst {}) for this token; retry in {secs} s",
                        self.per_sec, self.burst
                    ),
                )
            }
        })
    }
}

/// The API's routes.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/sessions", post(open_session))
        .route("/api/v1/sessions/{id}", get(session_state))
        .route("/api/v1/sessions/{id}/messages", post(post_message))
        .route("/api/v1/sessions/{id}/close", post(close_session))
        .route("/api/v1/sessions/{id}/state", get(session_state_at))
        .route("/api/v1/sessions/{id}/events", get(session_events))
        .route("/api/v1/catalog/tags/{tag}", put(define_tag))
        .route("/api/v1/catalog/autotag-rules", post(add_autotag_rule))
        .route("/api/v1/catalog/templates", post(create_template))
        .route("/api/v1/contacts", get(contacts))
        .route("/api/v1/openapi.json", get(openapi))
}

/// An error answer: `{code, message, field?, head?}` with the status that fits the code.
#[derive(Debug)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<String>,
    head: Option<u64>,
    /// Seconds for `Retry-After` (rate limiting).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            head: None,
            retry_after: None,
        }
    }

    fn field(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::new(code, message)
        }
    }

    /// From a WebSocket error frame; field paths lose their `command.` prefix (the body is
    /// the command here).
    fn from_frame(f: ServerFrame) -> Self {
        match f {
            ServerFrame::Error {
                code,
                message,
                field,
                head,
                ..
            } => ApiError {
                code,
                message: strip_command(&message),
                field: field.map(|f| strip_command(&f)),
                head,
                retry_after: None,
            },
            other => {
                tracing::error!(frame = ?other, "http: unexpected frame where an error was due");
                ApiError::new(ErrorCode::Internal, "unexpected internal answer")
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::Invalid => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict | ErrorCode::Closed => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(f) = &self.field {
            body["field"] = json!(f);
        }
        if let Some(h) = self.head {
            body["head"] = json!(h);
        }
        let mut r = (self.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

fn strip_command(s: &str) -> String {
    s.strip_prefix("command.").unwrap_or(s).to_owned()
}

/// The caller: a valid token of role `service` or `admin`.
pub(super) fn caller(app: &App, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = super::bearer(headers).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "no token: send Authorization: Bearer <token>",
        )
    })?;
    let claims = app
        .auth
        .verify(token)
        .map_err(|e: AuthError| ApiError::new(ErrorCode::Unauthorized, e.to_string()))?;
    if !matches!(claims.role, Role::Service | Role::Admin) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "the HTTP API is for the platform: the token's role must be service or admin, not {}",
                claims.role.as_str()
            ),
        ));
    }
    app.http_limiter.check(&claims)?;
    Ok(claims)
}

/// The `expected_seq` of a command: the `If-Match` header, a seq with or without quotes
/// (`If-Match: "12"`). The command is refused with `409 conflict` unless the stream's head is
/// exactly that seq, as with the WebSocket's `expected_seq`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::field(
            ErrorCode::Invalid,
            "If-Match",
            "If-Match must be the stream's expected head seq, e.g. If-Match: \"12\"",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    s.parse::<u64>().map(Some).map_err(|_| bad())
}

/// The command id: the `Idempotency-Key` header, or a random one.
fn command_id(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(format!("http-{:032x}", rand::random::<u128>()));
    };
    let bad = || {
        ApiError::field(
            ErrorCode::Invalid,
            "Idempotency-Key",
            format!(
                "Idempotency-Key must be 1 to {COMMAND_ID_CHARS} characters without control characters"
            ),
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let n = s.chars().count();
    if n == 0 || n > COMMAND_ID_CHARS || s.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// Reads the whole body (at most [`BODY_LIMIT`]) as a JSON object; an empty body is `{}`.
async fn json_object(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("the body is over the limit of {BODY_LIMIT} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    // The only error of a limited read that a client can still see is the limit.
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            ErrorCode::BadFrame,
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::BadFrame,
            format!("the body is not a JSON document: {e}"),
        )),
    }
}

/// Turns a body into a command of `kind` with the protocol's decoder (the WebSocket's
/// validation, field for field).
fn decode_command(
    stream: &StreamName,
    kind: &str,
    mut body: Map<String, Value>,
) -> Result<Command, ApiError> {
    if body.contains_key("kind") {
        return Err(ApiError::field(
            ErrorCode::Invalid,
            "kind",
            "unknown field `kind`: the endpoint decides the command",
        ));
    }
    body.insert("kind".into(), Value::String(kind.into()));
    let frame = json!({
        "type": "command",
        "stream": stream.as_str(),
        "command_id": "http",
        "command": Value::Object(body),
    });
    match copanel_protocol::codec::decode_value(frame) {
        Ok(ClientFrame::Command { command, .. }) => Ok(command),
        Ok(_) => Err(ApiError::new(
            ErrorCode::Internal,
            "the command did not decode as a command",
        )),
        Err(e) => Err(ApiError {
            code: e.code,
            message: strip_command(&e.message),
            field: e.field.map(|f| strip_command(&f)),
            head: None,
            retry_after: None,
        }),
    }
}

/// What an applied command returned.
struct Applied {
    seq: u64,
    created: Option<String>,
}

/// Submits a command through the writer, as the WebSocket does, and maps its answer.
async fn submit(
    app: &App,
    claims: &Claims,
    stream: StreamName,
    command_id: String,
    expected_seq: Option<u64>,
    command: Command,
) -> Result<Applied, ApiError> {
    let (tx, rx) = oneshot::channel();
    let kind = command.kind();
    app.writer
        .submit(CommandRequest {
            company: Arc::from(claims.company.as_str()),
            principal: claims.principal(),
            stream: stream.clone(),
            command_id: command_id.clone(),
            expected_seq,
            command,
            reply: tx,
        })
        .await;
    let res = rx
        .await
        .unwrap_or_else(|_| Err(CommandError::Unavailable("the writer stopped".into())));
    match command_reply(0, None, stream, command_id, kind, res) {
        ServerFrame::Ack { seq, created, .. } => Ok(Applied { seq, created }),
        other => {
            let mut e = ApiError::from_frame(other);
            // Here the expectation came from the If-Match header.
            if e.field.as_deref() == Some("expected_seq") {
                e.field = Some("If-Match".into());
            }
            Err(e)
        }
    }
}

fn session_stream(id: &str) -> Result<StreamName, ApiError> {
    StreamName::session(id).map_err(|e| {
        ApiError::field(
            ErrorCode::Invalid,
            "session_id",
            format!("bad session id: {e}"),
        )
    })
}

fn catalog_stream() -> Result<StreamName, ApiError> {
    StreamName::parse("catalog")
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("catalog stream name: {e}")))
}

/// A stable 16-hex session id from the company and the idempotency key, so that a retried
/// `POST /sessions` without `session_id` lands on the same session (FNV-1a, 64 bits).
fn derived_session_id(company: &str, key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in company.bytes().chain([0u8]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

async fn open_session(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let keyed = headers.contains_key("idempotency-key");
    let cid = command_id(&headers)?;
    let mut body = json_object(&headers, body).await?;
    let session_id = match body.remove("session_id") {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None if keyed => derived_session_id(&claims.company, &cid),
        Some(Value::Null) | None => format!("{:016x}", rand::random::<u64>()),
        Some(_) => {
            return Err(ApiError::field(
                ErrorCode::Invalid,
                "session_id",
                "session_id must be a string",
            ))
        }
    };
    let stream = session_stream(&session_id)?;
    let command = decode_command(&stream, "open_session", body)?;
    let done = submit(&app, &claims, stream, cid, if_match(&headers)?, command).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "session_id": session_id, "seq": done.seq })),
    )
        .into_response())
}

async fn post_message(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    session_command(app, id, headers, body, "post_message").await
}

async fn close_session(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    session_command(app, id, headers, body, "close_session").await
}

async fn session_command(
    app: Arc<App>,
    id: String,
    headers: HeaderMap,
    body: Body,
    kind: &str,
) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let cid = command_id(&headers)?;
    let stream = session_stream(&id)?;
    let body = json_object(&headers, body).await?;
    let command = decode_command(&stream, kind, body)?;
    let done = submit(&app, &claims, stream, cid, if_match(&headers)?, command).await?;
    Ok(Json(json!({ "seq": done.seq })).into_response())
}

async fn define_tag(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let cid = command_id(&headers)?;
    let stream = catalog_stream()?;
    let mut body = json_object(&headers, body).await?;
    if body.contains_key("tag") {
        return Err(ApiError::field(
            ErrorCode::Invalid,
            "tag",
            "unknown field `tag`: the tag is named in the path",
        ));
    }
    body.insert("tag".into(), Value::String(tag));
    let command = decode_command(&stream, "define_tag", body)?;
    let done = submit(&app, &claims, stream, cid, if_match(&headers)?, command).await?;
    Ok(Json(json!({ "seq": done.seq })).into_response())
}

async fn add_autotag_rule(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    catalog_create(app, headers, body, "add_autotag_rule", "rule_id").await
}

async fn create_template(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> ApiResult {
    catalog_create(app, headers, body, "create_template", "template_id").await
}

/// A catalog command that creates something: answers `{<id_name>, seq}`.
async fn catalog_create(
    app: Arc<App>,
    headers: HeaderMap,
    body: Body,
    kind: &str,
    id_name: &str,
) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let cid = command_id(&headers)?;
    let stream = catalog_stream()?;
    let body = json_object(&headers, body).await?;
    let command = decode_command(&stream, kind, body)?;
    let done = submit(&app, &claims, stream, cid, if_match(&headers)?, command).await?;
    let mut out = Map::new();
    out.insert(id_name.into(), json!(done.created));
    out.insert("seq".into(), json!(done.seq));
    Ok((StatusCode::CREATED, Json(Value::Object(out))).into_response())
}

/// Query parameters, parsed by hand so that every refusal is our JSON error.
fn params(
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::new(ErrorCode::BadFrame, format!("bad query string: {e}")))
}

fn number(p: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            let shown: String = v.chars().take(32).collect();
            ApiError::field(
                ErrorCode::Invalid,
                name,
                format!("{name} must be an unsigned integer, not {shown:?}"),
            )
        }),
    }
}

/// Loads the stream, checks read access on the committed state and that it exists; returns
/// the head and, with `want_state`, the state.
async fn readable(
    app: &App,
    claims: &Claims,
    stream: &StreamName,
    want_state: bool,
) -> Result<(u64, Option<StreamState>), ApiError> {
    let sid = StreamId::new(Arc::from(claims.company.as_str()), stream.clone());
    let principal: Principal = claims.principal();
    if app.hub.read(&sid, |_| ()).is_none() {
        app.writer
            .load(sid.clone())
            .await
            .map_err(|e| ApiError::from_frame(store_error(None, stream, e)))?;
    }
    let checked = app.hub.read(&sid, |c| {
        domain::can_read(stream, &c.state, &principal)
            .map(|()| (c.head, want_state.then(|| c.state.clone())))
    });
    match checked {
        Some(Ok((0, _))) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{stream} does not exist"),
        )),
        Some(Ok(v)) => Ok(v),
        Some(Err(r)) => Err(ApiError {
            code: r.code,
            message: r.message,
            field: r.field,
            head: None,
            retry_after: None,
        }),
        None => Err(ApiError::new(
            ErrorCode::Unavailable,
            "the stream was being reloaded; retry",
        )),
    }
}

async fn session_state(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let stream = session_stream(&id)?;
    let (seq, state) = readable(&app, &claims, &stream, true).await?;
    Ok(Json(json!({ "seq": seq, "state": state })).into_response())
}

async fn session_state_at(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let stream = session_stream(&id)?;
    let p = params(q)?;
    let at = number(&p, "at")?.ok_or_else(|| {
        ApiError::field(
            ErrorCode::Invalid,
            "at",
            "at (the seq to fold up to) is required",
        )
    })?;
    let (head, _) = readable(&app, &claims, &stream, false).await?;
    if at > head {
        return Err(ApiError::field(
            ErrorCode::Invalid,
            "at",
            format!("at {at} is beyond the stream's head {head}"),
        ));
    }
    let sid = StreamId::new(Arc::from(claims.company.as_str()), stream.clone());
    // The latest snapshot at or before `at`, then the events after it; off the async workers
    // (sled reads block).
    let store = app.store.clone();
    let loaded =
        tokio::task::spawn_blocking(move || crate::snapshot::load(store.as_ref(), &sid, Some(at)))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(format!("the read task failed: {e}"))));
    let state = match loaded {
        Ok(l) => l.state,
        Err(e) => return Err(ApiError::from_frame(store_error(None, &stream, e))),
    };
    Ok(Json(json!({ "seq": at, "state": state })).into_response())
}

/// Reads events from the log off the async workers (sled reads block).
async fn read_page(
    app: &App,
    sid: &StreamId,
    from: u64,
    limit: usize,
) -> Result<Vec<copanel_protocol::Envelope>, ApiError> {
    let store = app.store.clone();
    let id = sid.clone();
    match tokio::task::spawn_blocking(move || store.read(&id, from, limit)).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(e)) => Err(ApiError::from_frame(store_error(None, &sid.stream, e))),
        Err(e) => {
            tracing::error!(error = %e, "http: log read task failed");
            Err(ApiError::new(ErrorCode::Internal, "reading the log failed"))
        }
    }
}

async fn session_events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let stream = session_stream(&id)?;
    let p = params(q)?;
    let max = app.edge.history_page;
    let from = number(&p, "from")?.unwrap_or(1).max(1);
    let limit = number(&p, "limit")?.unwrap_or(max);
    if limit == 0 {
        return Err(ApiError::field(
            ErrorCode::Invalid,
            "limit",
            format!("limit must be 1 to {max}"),
        ));
    }
    if limit > max {
        return Err(ApiError::field(
            ErrorCode::TooLarge,
            "limit",
            format!("limit is {limit}; at most {max} events per page"),
        ));
    }
    let (head, _) = readable(&app, &claims, &stream, false).await?;
    let sid = StreamId::new(Arc::from(claims.company.as_str()), stream.clone());
    // Never past the committed head: the log may hold a batch that is not durable yet.
    let events = if from > head {
        Vec::new()
    } else {
        read_page(&app, &sid, from, (head - from + 1).min(limit) as usize).await?
    };
    let last = events.last().map(|e| e.seq).unwrap_or(head);
    let next = (!events.is_empty() && last < head).then_some(last + 1);
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON));
    if ndjson {
        let mut out = Vec::new();
        for env in &events {
            let line = serde_json::to_vec(env).map_err(|e| {
                ApiError::new(ErrorCode::Internal, format!("encoding an event: {e}"))
            })?;
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        let mut resp = (StatusCode::OK, out).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        if let Some(n) = next {
            if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
                resp.headers_mut().insert("x-next-from", v);
            }
        }
        return Ok(resp);
    }
    Ok(Json(json!({ "events": events, "next": next })).into_response())
}

async fn contacts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let claims = caller(&app, &headers)?;
    let p = params(q)?;
    let limit = number(&p, "limit")?;
    let query = super::query::Query {
        id: None,
        what: QueryKind::Contacts,
        q: p.get("q").cloned(),
        limit,
        prefix: None,
        status: None,
    };
    let company: Arc<str> = Arc::from(claims.company.as_str());
    match super::query::answer(&app, &company, &claims.principal(), query).await {
        ServerFrame::Result {
            contacts: Some(hits),
            ..
        } => Ok(Json(json!({ "contacts": hits })).into_response()),
        other => Err(ApiError::from_frame(other)),
    }
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

/// The OpenAPI 3.0 description of every endpoint of this module.
pub fn openapi_document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let err = |what: &str| json!({"description": what, "content": {"application/json": {"schema": error}}});
    let std_errors = json!({
        "400": err("invalid or bad_frame: the field is named in `field`"),
        "401": err("unauthorized: missing, forged or expired token"),
        "403": err("forbidden: the token's role is not service or admin, or the domain refuses"),
        "404": err("not_found: no such session in the token's company"),
        "409": err("conflict or closed"),
        "413": err("too_large: the body is over 64 KiB, or a value is over its limit"),
        "429": err("rate_limited: over the per-token request rate (200/s, burst 400 by default); see Retry-After"),
        "500": err("internal"),
        "503": err("unavailable: the outcome is unknown; retry with the same Idempotency-Key"),
    });
    let with = |mut ok: Map<String, Value>| {
        if let Value::Object(e) = std_errors.clone() {
            ok.extend(e);
        }
        Value::Object(ok)
    };
    let ok = |status: &str, schema: Value| {
        let mut m = Map::new();
        m.insert(
            status.into(),
            json!({"description": "done", "content": {"application/json": {"schema": schema}}}),
        );
        m
    };
    let seq = json!({"type": "object", "required": ["seq"], "properties": {"seq": {"type": "integer", "minimum": 1}}});
    let body = |schema: Value| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let key = json!({"$ref": "#/components/parameters/IdempotencyKey"});
    let if_match = json!({"$ref": "#/components/parameters/IfMatch"});
    let sid = json!({"$ref": "#/components/parameters/SessionId"});
    let state = json!({"type": "object", "required": ["seq", "state"], "properties": {
        "seq": {"type": "integer"}, "state": {"type": "object", "description": "the session state, as in a WebSocket snapshot"}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "copanel integration API",
            "version": "1",
            "description": "The platform's HTTP API. Every request needs `Authorization: Bearer <token>` with role service or admin; the token's company scopes everything. Commands take the WebSocket's path and validation; `Idempotency-Key` is the command id (a retry with the same key returns the same seq and appends nothing)."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/sessions": {"post": {
                "summary": "Open a session (open_session)",
                "parameters": [key, if_match],
                "requestBody": body(json!({"type": "object", "required": ["channel", "owner"], "properties": {
                    "session_id": {"type": "string", "description": "defaults to 16 hex digits (derived from the Idempotency-Key when one is sent)"},
                    "channel": {"type": "string"},
                    "client": {"type": "object", "properties": {"name": {"type": "string"}, "phone": {"type": "string"}, "email": {"type": "string"}}},
                    "parameters": {"type": "object", "additionalProperties": {"type": "object", "required": ["value"], "properties": {"value": {"type": "string"}, "read_only": {"type": "boolean"}}}},
                    "owner": {"oneOf": [
                        {"type": "object", "required": ["operator_id"], "properties": {"operator_id": {"type": "string"}}},
                        {"type": "object", "required": ["group"], "properties": {"group": {"type": "string"}}}]}
                }})),
                "responses": with(ok("201", json!({"type": "object", "required": ["session_id", "seq"], "properties": {"session_id": {"type": "string"}, "seq": {"type": "integer"}}})))
            }},
            "/api/v1/sessions/{id}": {"get": {
                "summary": "The session's committed state",
                "parameters": [sid],
                "responses": with(ok("200", state.clone()))
            }},
            "/api/v1/sessions/{id}/messages": {"post": {
                "summary": "Post a transcript message (post_message)",
                "parameters": [sid, key, if_match],
                "requestBody": body(json!({"type": "object", "required": ["from"], "properties": {
                    "from": {"type": "string", "enum": ["client", "operator"]},
                    "text": {"type": "string"},
                    "template_id": {"type": "string", "description": "post this catalog template's text instead"}}})),
                "responses": with(ok("200", seq.clone()))
            }},
            "/api/v1/sessions/{id}/close": {"post": {
                "summary": "Close the session (close_session); the body may be empty",
                "parameters": [sid, key, if_match],
                "responses": with(ok("200", seq.clone()))
            }},
            "/api/v1/sessions/{id}/state": {"get": {
                "summary": "The session's state after event `at` (events 1..at folded)",
                "parameters": [sid, {"name": "at", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 0}}],
                "responses": with(ok("200", state))
            }},
            "/api/v1/sessions/{id}/events": {"get": {
                "summary": "A page of the session's events; NDJSON (one envelope a line, next page in X-Next-From) with Accept: application/x-ndjson",
                "parameters": [sid,
                    {"name": "from", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}}],
                "responses": with({
                    let mut m = ok("200", json!({"type": "object", "required": ["events", "next"], "properties": {
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Envelope"}},
                        "next": {"type": "integer", "nullable": true, "description": "`from` of the next page; null at the head"}}}));
                    if let Some(Value::Object(r)) = m.get_mut("200") {
                        if let Some(Value::Object(c)) = r.get_mut("content") {
                            c.insert(NDJSON.into(), json!({"schema": {"type": "string"}}));
                        }
                    }
                    m
                })
            }},
            "/api/v1/catalog/tags/{tag}": {"put": {
                "summary": "Define or recolour a tag (define_tag)",
                "parameters": [{"name": "tag", "in": "path", "required": true, "schema": {"type": "string"}}, key, if_match],
                "requestBody": body(json!({"type": "object", "required": ["background", "text"], "properties": {
                    "background": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                    "text": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}}})),
                "responses": with(ok("200", seq))
            }},
            "/api/v1/catalog/autotag-rules": {"post": {
                "summary": "Add an auto-tag rule (add_autotag_rule)",
                "parameters": [key, if_match],
                "requestBody": body(json!({"type": "object", "required": ["keywords", "tag"], "properties": {
                    "keywords": {"type": "array", "items": {"type": "string"}}, "tag": {"type": "string"}}})),
                "responses": with(ok("201", json!({"type": "object", "required": ["rule_id", "seq"], "properties": {"rule_id": {"type": "string"}, "seq": {"type": "integer"}}})))
            }},
            "/api/v1/catalog/templates": {"post": {
                "summary": "Create a message template (create_template)",
                "parameters": [key, if_match],
                "requestBody": body(json!({"type": "object", "required": ["title", "text"], "properties": {
                    "title": {"type": "string"}, "text": {"type": "string"}}})),
                "responses": with(ok("201", json!({"type": "object", "required": ["template_id", "seq"], "properties": {"template_id": {"type": "string"}, "seq": {"type": "integer"}}})))
            }},
            "/api/v1/contacts": {"get": {
                "summary": "Search the company's contact directory",
                "parameters": [
                    {"name": "q", "in": "query", "required": true, "schema": {"type": "string", "maxLength": 256}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}],
                "responses": with(ok("200", json!({"type": "object", "required": ["contacts"], "properties": {"contacts": {"type": "array", "items": {"type": "object"}}}})))
            }},
            "/api/v1/webhooks": {
                "post": {
                    "summary": "Register a webhook: full change events of the given kinds (all when empty), in stream order, HMAC-SHA256 signed with `secret`",
                    "requestBody": body(json!({"type": "object", "required": ["url", "secret"], "properties": {
                        "url": {"type": "string", "description": "http:// URL the events are POSTed to"},
                        "kinds": {"type": "array", "items": {"type": "string"}, "description": "event kinds, e.g. tag_added; empty for all"},
                        "secret": {"type": "string", "description": "HMAC key for the X-Copanel-Signature header"}}})),
                    "responses": with(ok("201", json!({"type": "object", "required": ["webhook_id"], "properties": {"webhook_id": {"type": "string"}}})))
                },
                "get": {
                    "summary": "The company's webhooks and their delivery positions",
                    "responses": with(ok("200", json!({"type": "object", "required": ["webhooks"], "properties": {"webhooks": {"type": "array", "items": {"type": "object"}}}})))
                }
            },
            "/api/v1/webhooks/{id}": {"delete": {
                "summary": "Remove a webhook; its deliveries stop",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with({
                    let mut m = Map::new();
                    m.insert("204".into(), json!({"description": "removed"}));
                    m
                })
            }},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {}}}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "parameters": {
                "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": false,
                    "description": "the command id, 1 to 128 characters; random when absent",
                    "schema": {"type": "string", "maxLength": 128}},
                "IfMatch": {"name": "If-Match", "in": "header", "required": false,
                    "description": "the stream's expected head seq (the WebSocket's expected_seq), e.g. \"12\"; 409 conflict with `head` otherwise",
                    "schema": {"type": "string"}},
                "SessionId": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "enum": ["bad_frame", "unknown_type", "invalid", "unauthorized", "forbidden", "not_found", "conflict", "closed", "too_large", "rate_limited", "unavailable", "internal"]},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the offending field"},
                    "head": {"type": "integer", "description": "conflict: the stream's head"}}},
                "Envelope": {"type": "object", "required": ["stream", "seq", "at", "actor", "event"], "properties": {
                    "stream": {"type": "string"}, "seq": {"type": "integer"}, "at": {"type": "integer", "description": "ms since the Unix epoch"},
                    "actor": {"type": "object"}, "command_id": {"type": "string"}, "event": {"type": "object"}}}
            }
        }
    })
}
