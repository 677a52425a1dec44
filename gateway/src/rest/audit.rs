//! REST audit: apps send their own records; auditors, operators and tenant owners list
//! and export the trail (CSV, streamed, in chain order so it can be verified offline);
//! the signed checkpoints and the public keys that verify them. No API changes or
//! deletes a record.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use keel_commands::audit::AppRecord;
use keel_domain::access::{Action, Principal, Target};
use keel_domain::audit::{AuditInput, Outcome};
use keel_domain::ids::TenantId;
use keel_domain::limits;
use keel_projections::audit_trail::{self, AuditFilter, ListedRecord};
use keel_projections::tenant_registry::Scope;

use super::extract::{Caller, authorize_request, json_body, scope, time_param, wait_for_position};
use super::openapi::{ApiDoc, body, errors, min_position, ok};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// Rows per query of the export (the most it holds in memory).
const EXPORT_PAGE: i64 = 1000;
/// Most records in one batch.
const MAX_BATCH: usize = 1000;

/// The audit routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/audit/events", get(list).post(record_one))
        .route(
            "/v1/audit/events:batch",
            axum::routing::post(record_batch).layer(DefaultBodyLimit::max(8 * 1024 * 1024)),
        )
        .route("/v1/audit/export.csv", get(export))
        .route("/v1/audit/checkpoints", get(checkpoints))
        .route("/v1/audit/keys", get(keys))
}

/// The audit part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<AuditPage>().schema::<AppAuditEvent>().schema::<keel_domain::audit::Checkpoint>();
    let filters = json!([
        { "name": "tenant_id", "in": "query", "schema": { "type": "string" } },
        { "name": "actor_id", "in": "query", "schema": { "type": "string" } },
        { "name": "action", "in": "query", "schema": { "type": "string" }, "description": "e.g. tenant.suspend, session.login" },
        { "name": "resource", "in": "query", "schema": { "type": "string" } },
        { "name": "outcome", "in": "query", "schema": { "enum": ["success", "failure"] } },
        { "name": "from", "in": "query", "schema": { "type": "string", "format": "date-time" } },
        { "name": "to", "in": "query", "schema": { "type": "string", "format": "date-time" } },
        min_position()
    ]);
    let mut listing = filters.as_array().cloned().unwrap_or_default();
    listing.push(json!({ "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "next_cursor of the previous page" }));
    listing.push(json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }));
    doc.operation(
        "/v1/audit/events",
        "get",
        json!({
            "summary": "Audit records, oldest first (auditors and operators: every tenant; a tenant's owner: its own)",
            "parameters": listing,
            "responses": errors([("200", ok("AuditPage"))])
        }),
    );
    doc.operation(
        "/v1/audit/events",
        "post",
        json!({
            "summary": "An app's own audit record (API keys with audit:write); idempotent by event_id",
            "requestBody": body("AppAuditEvent"),
            "responses": errors([
                ("201", json!({ "description": "Recorded" })),
                ("200", json!({ "description": "Recorded before (duplicate)" })),
            ])
        }),
    );
    doc.operation("/v1/audit/events:batch", "post", json!({
        "summary": "Up to 1,000 app audit records ({\"events\": [...]}); each answered accepted, duplicate or rejected",
        "responses": errors([("200", json!({ "description": "Per-record results" }))])
    }));
    doc.operation("/v1/audit/export.csv", "get", json!({
        "summary": "The audit records as CSV, streamed in chain order (verifiable offline with keel audit verify --csv)",
        "parameters": filters,
        "responses": errors([("200", json!({ "description": "text/csv" }))])
    }));
    doc.operation("/v1/audit/checkpoints", "get", json!({
        "summary": "Every signed checkpoint of the chain heads (auditors and operators)",
        "responses": errors([("200", json!({ "description": "A list of Checkpoint",
            "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Checkpoint" } } } } }))])
    }));
    doc.operation(
        "/v1/audit/keys",
        "get",
        json!({
            "summary": "The Ed25519 public keys that verify checkpoints (public)",
            "security": [],
            "responses": { "200": { "description": "{algorithm, keys: [{key_id, public_key}]}" } }
        }),
    );
}

/// Query parameters of the views.
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    tenant_id: Option<String>,
    actor_id: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

fn text(raw: &Option<String>) -> Option<String> {
    raw.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// The filter a caller may use, and the scope it reads in: a tenant owner sees only its
/// own tenant (row-level security enforces it too); auditors and operators see all.
fn filter_for(state: &AppState, principal: &Principal, params: &AuditParams) -> Result<(AuditFilter, Scope), Problem> {
    let tenant: Option<TenantId> = match text(&params.tenant_id) {
        None => None,
        Some(raw) => {
            Some(raw.parse().map_err(|_| Problem::bad_request("invalid_tenant_id", "tenant_id is not a tenant id"))?)
        }
    };
    let own = match principal {
        Principal::TenantUser { tenant_id, .. } => Some(tenant_id.clone()),
        _ => None,
    };
    let target = tenant.clone().or(own.clone());
    authorize_request(state, principal, Action::ReadAudit, Target { tenant: target.as_ref(), plan: None })?;
    let outcome = match text(&params.outcome).as_deref() {
        None => None,
        Some(o @ ("success" | "failure")) => Some(o.to_string()),
        Some(_) => return Err(Problem::bad_request("invalid_outcome", "outcome must be success or failure")),
    };
    let filter = AuditFilter {
        tenant_id: target.map(|t| t.to_string()),
        actor_id: text(&params.actor_id),
        action: text(&params.action),
        resource: text(&params.resource),
        outcome,
        from: time_param(params.from.as_deref(), "from")?,
        to: time_param(params.to.as_deref(), "to")?,
        after: None,
    };
    Ok((filter, scope(principal)))
}

/// A page of audit records.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AuditPage {
    /// The records, oldest first.
    pub items: Vec<ListedRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: axum::http::HeaderMap,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>, Problem> {
    let (mut filter, scope) = filter_for(&state, &principal, &params)?;
    filter.after = match text(&params.cursor) {
        None => None,
        Some(c) => Some(c.parse().map_err(|_| Problem::bad_request("invalid_cursor", "cursor is not valid"))?),
    };
    let limit =
        match text(&params.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => l.parse::<i64>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                Problem::bad_request("invalid_limit", format!("limit must be between 1 and {MAX_LIMIT}"))
            })?,
        };
    wait_for_position(&state, &headers, audit_trail::NAME).await?;
    let mut rows = audit_trail::page(&state.pool, &scope, &filter, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|(id, _)| id.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage { items: rows.into_iter().map(|(_, r)| r).collect(), next_cursor }))
}

/// The CSV columns: every field a record's hash covers, then the hash.
pub const CSV_HEADER: [&str; 16] = [
    "id",
    "chain",
    "seq",
    "timestamp",
    "tenant_id",
    "actor_type",
    "actor_id",
    "action",
    "resource",
    "outcome",
    "reason",
    "source",
    "source_event_id",
    "metadata",
    "prev_hash",
    "hash",
];

/// One record as a CSV row (the inverse of `keel audit verify`'s reader).
pub fn csv_row(record: &Value, hash: &str) -> [String; 16] {
    let field = |k: &str| match &record[k] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    [
        field("id"),
        field("chain"),
        field("seq"),
        field("timestamp"),
        field("tenant_id"),
        field("actor_type"),
        field("actor_id"),
        field("action"),
        field("resource"),
        field("outcome"),
        field("reason"),
        field("source"),
        field("source_event_id"),
        record["metadata"].to_string(),
        field("prev_hash"),
        hash.to_string(),
    ]
}

struct ExportState {
    state: AppState,
    scope: Scope,
    filter: AuditFilter,
    after: (String, i64),
    first: bool,
    done: bool,
}

async fn export(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: axum::http::HeaderMap,
    Query(params): Query<AuditParams>,
) -> Result<Response, Problem> {
    let (filter, scope) = filter_for(&state, &principal, &params)?;
    wait_for_position(&state, &headers, audit_trail::NAME).await?;
    let start = ExportState { state, scope, filter, after: (String::new(), 0), first: true, done: false };
    let pages = futures::stream::unfold(start, |mut export| async move {
        if export.done {
            return None;
        }
        let rows = match audit_trail::chain_page(
            &export.state.pool,
            &export.scope,
            &export.filter,
            &export.after,
            EXPORT_PAGE,
        )
        .await
        {
            Ok(rows) => rows,
            Err(err) => {
                tracing::error!(error = %err, "audit export interrupted");
                export.done = true;
                return Some((Err(std::io::Error::other("export interrupted")), export));
            }
        };
        export.done = (rows.len() as i64) < EXPORT_PAGE;
        if let Some((chain, seq, _)) = rows.last() {
            export.after = (chain.clone(), *seq);
        }
        let mut writer = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 400));
        let mut chunk = Ok(());
        if export.first {
            chunk = writer.write_record(CSV_HEADER);
        }
        for (_, _, row) in &rows {
            chunk = chunk.and_then(|_| writer.write_record(csv_row(&row.record, &row.hash)));
        }
        export.first = false;
        let bytes = chunk
            .map_err(std::io::Error::other)
            .and_then(|_| writer.into_inner().map_err(|e| e.into_error()))
            .map(Bytes::from);
        Some((bytes, export))
    });
    let mut response = Response::new(Body::from_stream(pages));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn checkpoints(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Json<Vec<keel_domain::audit::Checkpoint>>, Problem> {
    authorize_request(&state, &principal, Action::ReadAudit, Target::default())?;
    if matches!(principal, Principal::TenantUser { .. }) {
        // Checkpoints name every tenant's chain.
        return Err(Problem::new(StatusCode::FORBIDDEN, "permission_denied", "checkpoints are for platform auditors"));
    }
    Ok(Json(audit_trail::checkpoints(&state.pool).await?))
}

async fn keys(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let keys = keel_commands::audit::public_keys(&state.pool).await?;
    Ok(Json(serde_json::json!({ "algorithm": "Ed25519", "keys": keys })))
}

/// An app's audit record (API-LOG): timestamp, actor, event type, resource, outcome and
/// client address, with the app's own id for idempotency.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct AppAuditEvent {
    /// The app's id for the record (1 to 128 printable ASCII characters).
    pub event_id: String,
    /// When it happened (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// The tenant concerned, if any.
    pub tenant_id: Option<String>,
    /// Who acted (the app's own user id, for instance).
    pub actor_id: String,
    /// `user` (default), `app` or `system`.
    pub actor_type: Option<String>,
    /// What happened, e.g. `document.delete`: 1 to 100 of `a-z 0-9 . _ : -`.
    pub event_type: String,
    /// On what.
    pub resource_id: String,
    /// `success` or `failure`.
    pub outcome: Outcome,
    /// Why it failed, for failures (at most 2,000 characters).
    pub reason: Option<String>,
    /// The client's IP address.
    pub client_address: Option<String>,
    /// Anything else (a JSON object; no secrets, please).
    pub metadata: Option<Map<String, Value>>,
}

fn app_record(app_id: &str, raw: &Value) -> Result<AppRecord, Problem> {
    let event: AppAuditEvent = serde_json::from_value(raw.clone())
        .map_err(|e| Problem::bad_request("invalid_audit_event", format!("not an audit event: {e}")))?;
    let bad = |code: &str, detail: &str| Problem::bad_request(code, detail.to_string());
    if event.event_id.is_empty() || event.event_id.len() > 128 || !event.event_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad("invalid_event_id", "event_id must be 1 to 128 printable ASCII characters"));
    }
    let valid_type = !event.event_type.is_empty()
        && event.event_type.len() <= 100
        && event.event_type.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".:_-".contains(&b));
    if !valid_type {
        return Err(bad("invalid_event_type", "event_type must be 1 to 100 of a-z 0-9 . _ : -"));
    }
    if event.actor_id.is_empty() || event.actor_id.len() > 200 || event.resource_id.len() > 500 {
        return Err(bad("invalid_actor_or_resource", "actor_id (1 to 200) and resource_id (at most 500) are required"));
    }
    let tenant_id = match event.tenant_id.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(t.parse::<TenantId>().map_err(|_| bad("invalid_tenant_id", "tenant_id is not a tenant id"))?),
    };
    let actor_type = match event.actor_type.as_deref() {
        None => "user",
        Some(t @ ("user" | "app" | "system")) => t,
        Some(_) => return Err(bad("invalid_actor_type", "actor_type must be user, app or system")),
    };
    let mut metadata = event.metadata.unwrap_or_default();
    if let Some(address) = event.client_address {
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("invalid_client_address", "client_address must be an IP address"));
        }
        metadata.insert("client_address".into(), address.into());
    }
    if event.reason.as_deref().is_some_and(|r| !limits::text_fits(r)) {
        let detail = format!("reason must be at most {} characters", limits::MAX_TEXT_CHARS);
        return Err(Problem::bad_request("invalid_reason", detail));
    }
    if Value::Object(metadata.clone()).to_string().len() > limits::MAX_METADATA_BYTES {
        return Err(bad("invalid_metadata", "metadata must be at most 8 KiB"));
    }
    Ok(AppRecord {
        event_id: event.event_id.clone(),
        input: AuditInput {
            timestamp: event.timestamp,
            tenant_id: tenant_id.map(|t| t.to_string()),
            actor_type: actor_type.into(),
            actor_id: event.actor_id,
            action: event.event_type,
            resource: event.resource_id,
            outcome: event.outcome,
            reason: event.reason,
            source: format!("app:{app_id}"),
            source_event_id: Some(event.event_id),
            metadata,
        },
    })
}

fn sending_app(state: &AppState, principal: &Principal) -> Result<String, Problem> {
    authorize_request(state, principal, Action::RecordAudit, Target::default())?;
    match principal {
        Principal::App { id, .. } => Ok(id.clone()),
        _ => Err(Problem::new(StatusCode::FORBIDDEN, "apps_only", "audit events are sent by managed apps (API keys)")),
    }
}

async fn record_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    body: Bytes,
) -> Result<Response, Problem> {
    let app = sending_app(&state, &principal)?;
    let record = app_record(&app, &json_body(&body)?)?;
    let event_id = record.event_id.clone();
    let (new, position) = state.auth.audit().append_from_app(&app, vec![record]).await?;
    let (status, word) =
        if new.first() == Some(&true) { (StatusCode::CREATED, "accepted") } else { (StatusCode::OK, "duplicate") };
    Ok((status, Json(serde_json::json!({ "status": word, "event_id": event_id, "position": position })))
        .into_response())
}

async fn record_batch(
    State(state): State<AppState>,
    Caller(principal): Caller,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let app = sending_app(&state, &principal)?;
    let raw = json_body(&body)?;
    let events =
        raw.get("events").and_then(Value::as_array).filter(|e| !e.is_empty() && e.len() <= MAX_BATCH).ok_or_else(
            || Problem::bad_request("invalid_batch_size", format!("the body is {{\"events\": [1 to {MAX_BATCH}]}}")),
        )?;
    let mut results: Vec<Value> = Vec::with_capacity(events.len());
    let mut records = Vec::new();
    let mut indexes = Vec::new();
    for (index, raw) in events.iter().enumerate() {
        match app_record(&app, raw) {
            Ok(record) => {
                indexes.push(index);
                results.push(serde_json::json!({ "index": index, "event_id": record.event_id }));
                records.push(record);
            }
            Err(problem) => {
                results.push(serde_json::json!({ "index": index, "status": "rejected", "reason": problem.code, "detail": problem.detail }))
            }
        }
    }
    let (new, position) = state.auth.audit().append_from_app(&app, records).await?;
    for (index, new) in indexes.into_iter().zip(new) {
        results[index]["status"] = if new { "accepted" } else { "duplicate" }.into();
    }
    Ok(Json(serde_json::json!({ "position": position, "results": results })))
}
