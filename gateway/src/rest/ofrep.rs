//! The OpenFeature Remote Evaluation Protocol (OFREP) for managed apps (ADR 0011):
//! bulk and single evaluation from the gateway's flag cache, with ETags, and an SSE
//! stream that pushes `refetchEvaluation` when the tenant's snapshot changes. The
//! tenant is the evaluation context's `targetingKey`. These routes skip the
//! per-request logging middleware: they are the hot path.
//!
//! Errors follow OFREP: `400 {errorCode, errorDetails}` (with `key` on the single
//! endpoint), `404 FLAG_NOT_FOUND`; authentication and permission errors are
//! problem+json 401 / 403. A tenant that is not active answers `400 GENERAL` whose
//! `errorDetails` starts with `tenant_suspended`, `tenant_pending_deletion` or
//! `tenant_purged` (also in the `Keel-Error-Code` header), never stale flags.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use keel_domain::access::{Action, Denied, Principal, Target, authorize};
use keel_domain::ids::TenantId;

use keel_projections::flag_snapshots;
use keel_projections::tenant_registry::Scope;

use super::extract::{Path, Query, denied_problem, scope};
use super::flag_cache::Served;
use super::openapi::{ApiDoc, problem};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;
use crate::limits::streams::StreamRefused;

/// How long a stream token in an advertised SSE URL stays valid.
const STREAM_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The SSE inactivity delay advertised to clients.
const INACTIVITY_DELAY_SEC: u64 = 120;

/// The OFREP routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/ofrep/v1/evaluate/flags", post(bulk))
        .route("/ofrep/v1/evaluate/flags/{key}", post(single))
        .route("/ofrep/v1/events", get(events))
}

/// The OFREP part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    let refusals = |ofrep: &[(&str, &str)]| {
        let mut responses = serde_json::Map::new();
        responses.insert("401".into(), problem("Missing or invalid credential"));
        responses.insert("403".into(), problem("Not permitted (missing_scope)"));
        responses.insert("503".into(), problem("Unavailable: overloaded or timed out (Retry-After)"));
        for (status, description) in ofrep {
            responses.insert((*status).into(), ofrep_error(description));
        }
        responses
    };
    let mut bulk = refusals(&[("400", "OFREP error (errorCode, errorDetails; keel-error-code header)")]);
    bulk.insert("200".into(), json!({ "description": "OFREP bulk response" }));
    bulk.insert("304".into(), json!({ "description": "Not modified" }));
    doc.operation("/ofrep/v1/evaluate/flags", "post", json!({
        "summary": "OFREP bulk evaluation (OpenFeature Remote Evaluation Protocol); context.targetingKey is the tenant id; ETag / If-None-Match; advertises an SSE stream (eventStreams)",
        "responses": bulk
    }));
    let mut single = refusals(&[("400", "OFREP error"), ("404", "FLAG_NOT_FOUND")]);
    single.insert("200".into(), json!({ "description": "OFREP evaluation" }));
    doc.operation(
        "/ofrep/v1/evaluate/flags/{key}",
        "post",
        json!({
            "summary": "OFREP single-flag evaluation",
            "parameters": [ { "name": "key", "in": "path", "required": true, "schema": { "type": "string" } } ],
            "responses": single
        }),
    );
    let mut events = refusals(&[]);
    events.insert(
        "200".into(),
        json!({ "description": "text/event-stream; ends when the credential stops working (revoked key, ended session)" }),
    );
    events.insert("429".into(), problem("Too many open streams for this caller, or in all (Retry-After)"));
    events.insert(
        "400".into(),
        json!({ "description": "invalid_tenant_id (problem+json), or an OFREP error for a tenant not served",
        "content": {
            "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } },
            "application/json": ofrep_error("")["content"]["application/json"].clone()
        } }),
    );
    doc.operation(
        "/ofrep/v1/events",
        "get",
        json!({
            "summary": "SSE stream of refetchEvaluation events for one tenant (the URL advertised in eventStreams)",
            "parameters": [
                { "name": "tenant", "in": "query", "required": true, "schema": { "type": "string" } },
                { "name": "token", "in": "query", "required": false, "schema": { "type": "string" } }
            ],
            "responses": events
        }),
    );
}

/// An OFREP error response (`{errorCode, errorDetails, key?}`) described by `description`.
fn ofrep_error(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": {
        "type": "object", "required": ["errorCode", "errorDetails"],
        "properties": { "errorCode": { "type": "string" }, "errorDetails": { "type": "string" }, "key": { "type": "string" } }
    } } } })
}

/// An OFREP error answer.
struct OfrepError {
    status: StatusCode,
    code: &'static str,
    details: String,
    keel_code: Option<&'static str>,
}

impl OfrepError {
    fn new(status: StatusCode, code: &'static str, details: impl Into<String>) -> Self {
        Self { status, code, details: details.into(), keel_code: None }
    }

    fn respond(self, key: Option<&str>) -> Response {
        let mut body = json!({ "errorCode": self.code, "errorDetails": self.details });
        if let Some(key) = key {
            body["key"] = key.into();
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(code) = self.keel_code {
            response.headers_mut().insert("keel-error-code", HeaderValue::from_static(code));
        }
        response
    }
}

/// Why an evaluation cannot proceed: an OFREP error, or an auth problem.
enum Refusal {
    Ofrep(OfrepError),
    Problem(Problem),
}

impl Refusal {
    fn respond(self, key: Option<&str>) -> Response {
        match self {
            Refusal::Ofrep(e) => e.respond(key),
            Refusal::Problem(p) => p.into_response(),
        }
    }
}

impl From<OfrepError> for Refusal {
    fn from(e: OfrepError) -> Self {
        Refusal::Ofrep(e)
    }
}

/// The credential: `Authorization: Bearer <key>`, or `X-API-Key: <key>`.
async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, Refusal> {
    let credential = credential(headers);
    state.auth.authenticate(credential.as_deref()).await.map_err(|e| Refusal::Problem(e.into()))
}

/// The request's credential as an `authorization` value: the header, or `X-API-Key` as a bearer.
fn credential(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    authorization
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(|k| format!("Bearer {}", k.trim())))
}

/// What an open stream re-checks: an API key by id (however it was presented), else the
/// credential it was opened with (a user's access token, an operator token).
enum Recheck {
    Key(String),
    Credential(Option<String>),
}

impl Recheck {
    /// Whether the stream's credential still works.
    async fn still_works(&self, state: &AppState) -> bool {
        match self {
            Recheck::Key(key_id) => state.auth.api_keys().active(key_id).is_some(),
            Recheck::Credential(credential) => state.auth.authenticate(credential.as_deref()).await.is_ok(),
        }
    }
}

#[derive(Deserialize)]
struct EvaluationRequest {
    #[serde(default)]
    context: Option<Value>,
}

/// The tenant named by the request body's `context.targetingKey`.
fn targeting_key(body: &Bytes) -> Result<TenantId, OfrepError> {
    let request: EvaluationRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EvaluationRequest { context: None }
    } else {
        serde_json::from_slice(body).map_err(|_| {
            OfrepError::new(StatusCode::BAD_REQUEST, "PARSE_ERROR", "the body is not an evaluation request")
        })?
    };
    let key = request
        .context
        .as_ref()
        .and_then(|c| c.get("targetingKey"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            OfrepError::new(
                StatusCode::BAD_REQUEST,
                "TARGETING_KEY_MISSING",
                "context.targetingKey (the tenant id) is required",
            )
        })?;
    key.parse().map_err(|_| {
        OfrepError::new(StatusCode::BAD_REQUEST, "INVALID_CONTEXT", "targetingKey is not a tenant id (tnt_…)")
    })
}

fn unknown_tenant() -> OfrepError {
    OfrepError {
        keel_code: Some("tenant_not_found"),
        ..OfrepError::new(StatusCode::BAD_REQUEST, "INVALID_CONTEXT", "targetingKey names no tenant")
    }
}

/// The tenant's snapshot, if the caller may read it and the tenant is active. Apps and
/// the platform's principals read the platform-wide cache; a tenant user reads the read
/// model under its tenant's row-level security, like every other read of a tenant user.
async fn served(state: &AppState, principal: &Principal, tenant: &TenantId) -> Result<Arc<Served>, Refusal> {
    authorize(principal, Action::ReadFlags, Target { tenant: Some(tenant), plan: None }).map_err(
        |denied| match denied {
            Denied::Hidden => unknown_tenant().into(),
            denied => Refusal::Problem(denied_problem(state, principal, denied)),
        },
    )?;
    let served = match scope(principal) {
        Scope::Platform => state.flags.get(tenant.as_str()).ok_or_else(unknown_tenant)?,
        scope => {
            let unavailable = |e: sqlx::Error| Refusal::Problem(Problem::from(e));
            let row = flag_snapshots::tenant_row(&state.pool, &scope, tenant.as_str()).await.map_err(unavailable)?;
            let row = row.ok_or_else(unknown_tenant)?;
            let definitions = flag_snapshots::definitions(&state.pool).await.map_err(unavailable)?;
            Arc::new(Served::new(flag_snapshots::snapshot(&row, &definitions)))
        }
    };
    let keel_code = match served.snapshot.status.as_str() {
        "active" => return Ok(served),
        "suspended" => "tenant_suspended",
        "pending_deletion" => "tenant_pending_deletion",
        "purged" => "tenant_purged",
        _ => "tenant_not_found",
    };
    Err(OfrepError {
        keel_code: Some(keel_code),
        ..OfrepError::new(StatusCode::BAD_REQUEST, "GENERAL", format!("{keel_code}: the tenant's flags are not served"))
    }
    .into())
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    let Some(value) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else { return false };
    value.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn bulk(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let principal = match principal(&state, &headers).await {
        Ok(p) => p,
        Err(refusal) => return refusal.respond(None),
    };
    let tenant = match targeting_key(&body) {
        Ok(tenant) => tenant,
        Err(refusal) => return Refusal::from(refusal).respond(None),
    };
    let served = match served(&state, &principal, &tenant).await {
        Ok(served) => served,
        Err(refusal) => return refusal.respond(None),
    };
    let etag = HeaderValue::from_str(&served.etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    if matches_etag(&headers, &served.etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().insert(header::ETAG, etag);
        return response;
    }
    let mut out = Vec::with_capacity(served.ofrep_flags.len() + 512);
    out.extend_from_slice(b"{\"flags\":");
    out.extend_from_slice(&served.ofrep_flags);
    let metadata = json!({
        "tenantId": tenant.as_str(),
        "version": served.snapshot.version,
        "checksum": served.snapshot.checksum,
    });
    let streams = json!([{
        "type": "sse",
        "endpoint": { "requestUri": stream_uri(&state, &principal, &tenant) },
        "inactivityDelaySec": INACTIVITY_DELAY_SEC,
    }]);
    out.extend_from_slice(format!(",\"metadata\":{metadata},\"eventStreams\":{streams}}}").as_bytes());
    let mut response = json_response(StatusCode::OK, out);
    response.headers_mut().insert(header::ETAG, etag);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn single(State(state): State<AppState>, Path(key): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let principal = match principal(&state, &headers).await {
        Ok(p) => p,
        Err(refusal) => return refusal.respond(Some(&key)),
    };
    let tenant = match targeting_key(&body) {
        Ok(tenant) => tenant,
        Err(refusal) => return Refusal::from(refusal).respond(Some(&key)),
    };
    let served = match served(&state, &principal, &tenant).await {
        Ok(served) => served,
        Err(refusal) => return refusal.respond(Some(&key)),
    };
    let Some(flag) = served.snapshot.flags.get(&key) else {
        return OfrepError::new(StatusCode::NOT_FOUND, "FLAG_NOT_FOUND", format!("no flag {key}")).respond(Some(&key));
    };
    let body = json!({
        "key": key,
        "value": flag.value,
        "reason": if flag.source == "default" { "DEFAULT" } else { "TARGETING_MATCH" },
        "variant": flag.source,
        "metadata": { "source": flag.source, "version": served.snapshot.version },
    });
    json_response(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default())
}

/// The advertised stream's path: with a stream token for an API key (browsers'
/// `EventSource` cannot send headers), else bare (send the credential as a header).
fn stream_uri(state: &AppState, principal: &Principal, tenant: &TenantId) -> String {
    match principal {
        Principal::App { key_id, .. } => {
            let expires = chrono::Utc::now().timestamp() + STREAM_TOKEN_TTL.as_secs() as i64;
            let claim = format!("{tenant}.{key_id}.{expires}");
            let token = format!("{}.{}", b64(claim.as_bytes()), b64(&mac(&state.stream_key, &claim)));
            format!("/ofrep/v1/events?tenant={tenant}&token={token}")
        }
        _ => format!("/ofrep/v1/events?tenant={tenant}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(key: &[u8; 32], claim: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(claim.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The key id a valid, unexpired stream token for `tenant` was issued to.
fn stream_token_key(state: &AppState, tenant: &TenantId, token: &str) -> Option<String> {
    let (claim, tag) = token.split_once('.')?;
    let claim = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claim).ok()?).ok()?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut verifier = Hmac::<Sha256>::new_from_slice(state.stream_key.as_ref()).ok()?;
    verifier.update(claim.as_bytes());
    verifier.verify_slice(&tag).ok()?;
    let mut parts = claim.splitn(3, '.');
    let (for_tenant, key_id, expires) = (parts.next()?, parts.next()?, parts.next()?.parse::<i64>().ok()?);
    (for_tenant == tenant.as_str() && chrono::Utc::now().timestamp() < expires).then(|| key_id.to_string())
}

#[derive(Deserialize)]
struct StreamQuery {
    tenant: String,
    #[serde(default)]
    token: Option<String>,
}

async fn events(State(state): State<AppState>, headers: HeaderMap, Query(query): Query<StreamQuery>) -> Response {
    let Ok(tenant) = query.tenant.trim().parse::<TenantId>() else {
        return Problem::bad_request("invalid_tenant_id", "tenant is not a tenant id (tnt_…)").into_response();
    };
    let has_header = headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key");
    let (principal, recheck) = match (has_header, query.token.as_deref()) {
        (false, Some(token)) => {
            let Some(key_id) = stream_token_key(&state, &tenant, token) else {
                return Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "the stream token is not valid")
                    .into_response();
            };
            match state.auth.api_keys().active(&key_id) {
                Some(principal) => (principal, Recheck::Key(key_id)),
                None => {
                    return Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "the API key no longer works")
                        .into_response();
                }
            }
        }
        _ => match principal(&state, &headers).await {
            Ok(principal) => {
                let recheck = match &principal {
                    Principal::App { key_id, .. } => Recheck::Key(key_id.clone()),
                    _ => Recheck::Credential(credential(&headers)),
                };
                (principal, recheck)
            }
            Err(refusal) => return refusal.respond(None),
        },
    };
    if let Err(refusal) = served(&state, &principal, &tenant).await {
        return refusal.respond(None);
    }
    let slot = match state.streams.open(&principal) {
        Ok(slot) => slot,
        Err(refused) => {
            let code = match refused {
                StreamRefused::CallerFull => "too_many_streams",
                StreamRefused::Full => "streams_full",
            };
            let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, code, refused.to_string());
            problem.retry_after = Some(1);
            return problem.into_response();
        }
    };
    let rx = state.flags.subscribe(tenant.as_str());
    let shutdown = state.shutdown.clone();
    let period = state.settings.limits.stream_recheck();
    let every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    enum Wake {
        Changed,
        Recheck,
        Stop,
    }
    // The slot lives in the stream's state: it is freed when the stream ends or the client goes.
    let open = (rx, shutdown, state, recheck, every, slot);
    let stream = futures::stream::unfold(open, |(mut rx, mut shutdown, state, recheck, mut every, slot)| async move {
        loop {
            let wake = tokio::select! {
                // First: a busy stream still re-checks on time.
                biased;
                _ = every.tick() => Wake::Recheck,
                _ = shutdown.wait_for(|stop| *stop) => Wake::Stop,
                changed = rx.changed() => if changed.is_ok() { Wake::Changed } else { Wake::Stop },
            };
            match wake {
                Wake::Stop => return None,
                // A revoked, expired or disabled key, or an ended session, ends the stream.
                Wake::Recheck => {
                    if !recheck.still_works(&state).await {
                        return None;
                    }
                }
                Wake::Changed => {
                    let etag = rx.borrow_and_update().clone();
                    let data = json!({
                        "type": "refetchEvaluation",
                        "etag": etag,
                        "lastModified": chrono::Utc::now().timestamp(),
                    });
                    let event = Event::default().event("message").data(data.to_string());
                    return Some((Ok::<_, Infallible>(event), (rx, shutdown, state, recheck, every, slot)));
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
