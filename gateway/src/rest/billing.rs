//! REST billing: usage ingestion (one event or a batch), usage totals, and the raw
//! event export for billing systems (NDJSON or CSV, streamed page by page).

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use keel_commands::billing::{BatchResult, EventResult, Outcome};
use keel_commands::bus::{CommandContext, CommandError};
use keel_domain::access::{Action, Principal, Target};
use keel_domain::ids::{AppId, TenantId};
use keel_domain::usage::{MAX_BATCH, UsageInput};
use keel_projections::billing_ledger::{self, ExportRange, Granularity, LedgerEvent, UsageTotal};
use keel_projections::billing_rollups::{self, Reader, RollupRow, Width};
use keel_projections::tenant_registry::Scope;

use super::csv_cell;
use super::extract::{
    Caller, CorrelationId, Query, authorize_request, json_body, scope, time_param, wait_for_position,
};
use super::openapi::{ApiDoc, body, errors, min_position, ok, problem};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;

/// Rows fetched per export page (the most an export holds in memory).
const EXPORT_PAGE: i64 = 1000;
/// The largest batch body: 1,000 events with 4 KiB of properties each, and room.
const MAX_BATCH_BODY: usize = 8 * 1024 * 1024;

/// The billing routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/billing/events", post(record_one).get(export))
        .route("/v1/billing/events:batch", post(record_batch).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route("/v1/billing/usage", get(usage))
        .route("/v1/control-plane/billing/rollups", get(rollups))
}

/// The billing part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<UsageEventBody>()
        .schema::<UsageBatchBody>()
        .schema::<Recorded>()
        .schema::<BatchAnswer>()
        .schema::<UsageReport>()
        .schema::<Rollups>()
        .schema::<LedgerEvent>();
    doc.operation(
        "/v1/billing/events",
        "post",
        json!({
            "summary": "Report one usage event (API keys with billing:write); durable before the answer",
            "requestBody": body("UsageEventBody"),
            "responses": errors([
                ("201", ok("Recorded")),
                ("200", ok("Recorded")),
                ("404", problem("unknown_tenant or tenant_purged")),
                ("409", problem("event_id_conflict: the id was used for a different event")),
            ])
        }),
    );
    doc.operation("/v1/billing/events", "get", json!({
        "summary": "Export a tenant's raw usage events in log order (billing:read keys, operators, auditors, the tenant's owner), streamed; each row carries its cursor",
        "parameters": [
            { "name": "tenant_id", "in": "query", "required": true, "schema": { "type": "string" } },
            { "name": "from", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Usage at or after this time" },
            { "name": "to", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Usage before this time" },
            { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "The cursor of the last row you have: the export resumes after it" },
            { "name": "format", "in": "query", "schema": { "enum": ["ndjson", "csv"] }, "description": "Default ndjson, or csv with Accept: text/csv" },
            min_position()
        ],
        "responses": errors([
            ("200", json!({ "description": "application/x-ndjson (one LedgerEvent plus cursor per line) or text/csv",
                "content": {
                    "application/x-ndjson": { "schema": { "$ref": "#/components/schemas/LedgerEvent" } },
                    "text/csv": { "schema": { "type": "string" } }
                } })),
            ("404", problem("Another tenant's ledger")),
        ])
    }));
    doc.operation("/v1/billing/events:batch", "post", json!({
        "summary": "Report up to 1,000 usage events; each is answered accepted, duplicate or rejected (with its reason)",
        "requestBody": body("UsageBatchBody"),
        "responses": errors([("200", ok("BatchAnswer"))])
    }));
    doc.operation("/v1/billing/usage", "get", json!({
        "summary": "A tenant's usage totals per event type and hour or day (UTC buckets of the usage time)",
        "parameters": [
            { "name": "tenant_id", "in": "query", "required": true, "schema": { "type": "string" } },
            { "name": "from", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Default: a day before to" },
            { "name": "to", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Default: now" },
            { "name": "granularity", "in": "query", "schema": { "enum": ["hour", "day"], "default": "hour" }, "description": "hour: at most 31 days; day: at most 5 years" },
            min_position()
        ],
        "responses": errors([("200", ok("UsageReport"))])
    }));
    doc.operation("/v1/control-plane/billing/rollups", "get", json!({
        "summary": "Cross-tenant usage totals by event type × plan × industry × region (operators only; allowlisted event types only)",
        "parameters": [
            { "name": "granularity", "in": "query", "schema": { "enum": ["minute", "hour"], "default": "minute" }, "description": "minute: at most 1 day; hour: at most 31 days" },
            { "name": "from", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Default: an hour before to" },
            { "name": "to", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Default: now" },
            { "name": "event_type", "in": "query", "schema": { "type": "string" } },
            min_position()
        ],
        "responses": errors([("200", ok("Rollups"))])
    }));
}

/// The answer for one recorded event.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Recorded {
    /// `accepted` or `duplicate`.
    pub status: String,
    /// The app's event id.
    pub event_id: String,
    /// Log position (for `X-Keel-Min-Position`).
    pub position: i64,
}

/// One usage event as an app reports it (the body of `POST /v1/billing/events`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UsageEventBody {
    /// The app's id for the event (1 to 128 printable ASCII, no spaces); unique per app,
    /// the idempotency key.
    pub event_id: String,
    /// The tenant (`tnt_…`).
    pub tenant_id: String,
    /// What was used: 1 to 100 of `A-Z a-z 0-9 . _ : -`, e.g. `api.call`.
    pub event_type: String,
    /// How much: an integer from 0 to 2^53 − 1.
    pub quantity: i64,
    /// When it happened (RFC 3339); at most 5 minutes ahead of Keel's clock.
    pub timestamp: DateTime<Utc>,
    /// Free-form details: a JSON object of at most 4 KiB.
    pub properties: Option<serde_json::Map<String, Value>>,
}

/// The body of `POST /v1/billing/events:batch`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UsageBatchBody {
    /// 1 to 1,000 events; each is answered on its own.
    pub events: Vec<UsageEventBody>,
}

/// The answer for a batch.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct BatchAnswer {
    /// Events recorded now.
    pub accepted: usize,
    /// Events recorded before (not counted again).
    pub duplicates: usize,
    /// Events refused.
    pub rejected: usize,
    /// The highest log position of the recorded events (for `X-Keel-Min-Position`).
    pub position: i64,
    /// One result per event, in batch order.
    pub results: Vec<EventResult>,
}

impl From<BatchResult> for BatchAnswer {
    fn from(batch: BatchResult) -> Self {
        Self {
            accepted: batch.count(|o| matches!(o, Outcome::Accepted)),
            duplicates: batch.count(|o| matches!(o, Outcome::Duplicate)),
            rejected: batch.count(|o| matches!(o, Outcome::Rejected { .. })),
            position: batch.position,
            results: batch.results,
        }
    }
}

/// The app behind a usage report: authenticated, with `billing:write`.
fn reporting_app(state: &AppState, principal: &Principal) -> Result<AppId, Problem> {
    authorize_request(state, principal, Action::RecordUsage, Target::default())?;
    match principal {
        Principal::App { id, .. } => id.parse().map_err(|e: keel_domain::ids::MalformedId| Problem::internal(&e)),
        _ => Err(Problem::new(StatusCode::FORBIDDEN, "apps_only", "usage is reported by managed apps (API keys)")),
    }
}

fn context(principal: &Principal, correlation: CorrelationId) -> CommandContext {
    CommandContext::new(principal.actor(), correlation.0, String::new())
}

async fn record_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Extension(correlation): Extension<CorrelationId>,
    body: Bytes,
) -> Result<Response, Problem> {
    let app = reporting_app(&state, &principal)?;
    let raw = json_body(&body)?;
    let ctx = context(&principal, correlation);
    let mut done = state.billing.record(&app, &ctx, vec![UsageInput::from_json(&raw)]).await?;
    let position = done.position;
    let result = done.results.pop().ok_or_else(|| Problem::internal(&"empty batch result"))?;
    let event_id = result.event_id.unwrap_or_default();
    let (status, word) = match result.outcome {
        Outcome::Accepted => (StatusCode::CREATED, "accepted"),
        Outcome::Duplicate => (StatusCode::OK, "duplicate"),
        Outcome::Rejected { reason, detail, failure } => {
            return Err(Problem::from(CommandError::new(failure, reason, detail)));
        }
    };
    Ok((status, Json(Recorded { status: word.into(), event_id, position })).into_response())
}

async fn record_batch(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Extension(correlation): Extension<CorrelationId>,
    body: Bytes,
) -> Result<Json<BatchAnswer>, Problem> {
    let app = reporting_app(&state, &principal)?;
    let raw = json_body(&body)?;
    let events = raw
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| Problem::bad_request("invalid_body", "the body must be {\"events\": [ … ]}"))?;
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(Problem::bad_request("invalid_batch_size", format!("a batch has 1 to {MAX_BATCH} events")));
    }
    let inputs = events.iter().map(UsageInput::from_json).collect();
    let ctx = context(&principal, correlation);
    let done = state.billing.record(&app, &ctx, inputs).await?;
    Ok(Json(BatchAnswer::from(done)))
}

/// Query parameters shared by the usage and export reads (all text, checked here so
/// that a bad value gets a problem document).
#[derive(Debug, Default, Deserialize)]
pub struct BillingParams {
    tenant_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
    cursor: Option<String>,
    format: Option<String>,
}

/// The buckets `[from, to)` asked for: `to` defaults to now, `from` to `default_span`
/// before it; at most `longest` apart.
fn bucket_range(
    from: Option<&str>,
    to: Option<&str>,
    default_span: Duration,
    longest: Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Problem> {
    let to = time_param(to, "to")?.unwrap_or_else(Utc::now);
    let from = time_param(from, "from")?.unwrap_or(to - default_span);
    if from >= to || to - from > longest {
        return Err(Problem::bad_request(
            "invalid_range",
            format!("from must be before to, at most {} days apart at this granularity", longest.num_days()),
        ));
    }
    Ok((from, to))
}

/// The tenant of a billing read, authorized for `principal`; and the scope to read in.
fn billing_tenant(state: &AppState, principal: &Principal, raw: Option<&str>) -> Result<(TenantId, Scope), Problem> {
    let raw = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Problem::bad_request("tenant_id_required", "tenant_id is required"))?;
    let tenant: TenantId =
        raw.parse().map_err(|_| Problem::bad_request("invalid_tenant_id", "tenant_id is not a tenant id"))?;
    authorize_request(state, principal, Action::ReadBilling, Target { tenant: Some(&tenant), plan: None })?;
    Ok((tenant, scope(principal)))
}

/// A tenant's usage totals.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UsageReport {
    /// The tenant.
    pub tenant_id: String,
    /// `hour` or `day`.
    pub granularity: String,
    /// Buckets starting at or after this time.
    pub from: DateTime<Utc>,
    /// Buckets starting before this time.
    pub to: DateTime<Utc>,
    /// The totals, by bucket and event type.
    pub totals: Vec<UsageTotal>,
}

async fn usage(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Query(params): Query<BillingParams>,
) -> Result<Json<UsageReport>, Problem> {
    let (tenant, scope) = billing_tenant(&state, &principal, params.tenant_id.as_deref())?;
    let (granularity, longest) = match params.granularity.as_deref().map(str::trim) {
        None | Some("") | Some("hour") => (Granularity::Hour, Duration::days(31)),
        Some("day") => (Granularity::Day, Duration::days(5 * 366)),
        Some(_) => return Err(Problem::bad_request("invalid_granularity", "granularity must be hour or day")),
    };
    let (from, to) = bucket_range(params.from.as_deref(), params.to.as_deref(), Duration::days(1), longest)?;
    wait_for_position(&state, &headers, billing_ledger::NAME).await?;
    let totals = billing_ledger::totals(&state.pool, &scope, tenant.as_str(), from, to, granularity).await?;
    let granularity = if granularity == Granularity::Hour { "hour" } else { "day" };
    Ok(Json(UsageReport { tenant_id: tenant.to_string(), granularity: granularity.into(), from, to, totals }))
}

/// Query parameters of the rollups.
#[derive(Debug, Default, Deserialize)]
pub struct RollupParams {
    granularity: Option<String>,
    from: Option<String>,
    to: Option<String>,
    event_type: Option<String>,
}

/// Cross-tenant usage totals (internal operations).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Rollups {
    /// `minute` or `hour`.
    pub granularity: String,
    /// Buckets starting at or after this time.
    pub from: DateTime<Utc>,
    /// Buckets starting before this time.
    pub to: DateTime<Utc>,
    /// The totals by bucket, event type, plan, industry and region.
    pub rows: Vec<RollupRow>,
}

async fn rollups(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Query(params): Query<RollupParams>,
) -> Result<Json<Rollups>, Problem> {
    authorize_request(&state, &principal, Action::ReadRollups, Target::default())?;
    let reader = if matches!(principal, Principal::Operator { .. }) { Reader::Operator } else { Reader::OtherPlatform };
    let (width, name, longest) = match params.granularity.as_deref().map(str::trim) {
        None | Some("") | Some("minute") => (Width::Minute, "minute", Duration::days(1)),
        Some("hour") => (Width::Hour, "hour", Duration::days(31)),
        Some(_) => return Err(Problem::bad_request("invalid_granularity", "granularity must be minute or hour")),
    };
    let (from, to) = bucket_range(params.from.as_deref(), params.to.as_deref(), Duration::hours(1), longest)?;
    let event_type = params.event_type.as_deref().map(str::trim).filter(|t| !t.is_empty());
    wait_for_position(&state, &headers, billing_rollups::NAME).await?;
    let rows = billing_rollups::rows(&state.pool, reader, width, from, to, event_type).await?;
    Ok(Json(Rollups { granularity: name.into(), from, to, rows }))
}

/// An export cursor: the log order of the last event a client has.
fn encode_cursor(event: &LedgerEvent) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}.{}", event.txid, event.position))
}

fn decode_cursor(raw: &str) -> Option<(i64, i64)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (txid, position) = text.split_once('.')?;
    Some((txid.parse().ok()?, position.parse().ok()?))
}

/// The export's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

const CSV_HEADER: [&str; 13] = [
    "cursor",
    "tenant_id",
    "app_id",
    "event_id",
    "event_type",
    "quantity",
    "timestamp",
    "received_at",
    "late",
    "tenant_status",
    "properties",
    "keel_event_id",
    "position",
];

/// One page of the export in `format`.
fn render(rows: &[LedgerEvent], format: Format, header: bool) -> Result<Bytes, std::io::Error> {
    match format {
        Format::Ndjson => {
            let mut out = Vec::with_capacity(rows.len() * 400);
            for row in rows {
                let mut line = serde_json::to_value(row)?;
                if let Some(map) = line.as_object_mut() {
                    map.insert("cursor".into(), encode_cursor(row).into());
                }
                serde_json::to_writer(&mut out, &line)?;
                out.push(b'\n');
            }
            Ok(Bytes::from(out))
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 300));
            if header {
                writer.write_record(CSV_HEADER)?;
            }
            for row in rows {
                let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                let cells = [
                    encode_cursor(row),
                    row.tenant_id.clone(),
                    row.app_id.clone(),
                    row.event_id.clone(),
                    row.event_type.clone(),
                    row.quantity.to_string(),
                    time(row.occurred_at),
                    time(row.received_at),
                    row.late.to_string(),
                    row.tenant_status.clone(),
                    row.properties.to_string(),
                    row.keel_event_id.to_string(),
                    row.position.to_string(),
                ];
                writer.write_record(cells.map(csv_cell::escape))?;
            }
            writer.into_inner().map(Bytes::from).map_err(|e| e.into_error())
        }
    }
}

/// Where a running export is.
struct ExportState {
    state: AppState,
    scope: Scope,
    range: ExportRange,
    format: Format,
    first: bool,
    done: bool,
}

async fn export(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Query(params): Query<BillingParams>,
) -> Result<Response, Problem> {
    let (tenant, scope) = billing_tenant(&state, &principal, params.tenant_id.as_deref())?;
    let wants_csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    let format = match params.format.as_deref().map(str::trim) {
        Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        None | Some("") if wants_csv => Format::Csv,
        None | Some("") => Format::Ndjson,
        Some(_) => return Err(Problem::bad_request("invalid_format", "format must be ndjson or csv")),
    };
    let from = time_param(params.from.as_deref(), "from")?;
    let to = time_param(params.to.as_deref(), "to")?;
    let after = match params.cursor.as_deref().map(str::trim) {
        None | Some("") => (0, 0),
        Some(c) => decode_cursor(c).ok_or_else(|| Problem::bad_request("invalid_cursor", "cursor is not valid"))?,
    };
    wait_for_position(&state, &headers, billing_ledger::NAME).await?;
    // The export ends at the newest event now: a long export is a consistent prefix.
    let upto = billing_ledger::newest(&state.pool, &scope, tenant.as_str()).await?.unwrap_or((0, 0));
    let range = ExportRange { tenant_id: tenant.to_string(), from, to, after, upto };
    let start = ExportState { state, scope, range, format, first: true, done: false };
    let pages = futures::stream::unfold(start, |mut export| async move {
        if export.done {
            return None;
        }
        let rows = match billing_ledger::page(&export.state.pool, &export.scope, &export.range, EXPORT_PAGE).await {
            Ok(rows) => rows,
            Err(err) => {
                // The body is under way: the client sees a cut-off stream and resumes from its last cursor.
                tracing::error!(error = %err, "billing export interrupted");
                export.done = true;
                return Some((Err(std::io::Error::other("export interrupted")), export));
            }
        };
        export.done = (rows.len() as i64) < EXPORT_PAGE;
        if let Some(last) = rows.last() {
            export.range.after = (last.txid, last.position);
        }
        let chunk = render(&rows, export.format, export.first);
        export.first = false;
        Some((chunk, export))
    });
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let mut response = Response::new(Body::from_stream(pages));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let event = LedgerEvent {
            tenant_id: "t".into(),
            app_id: "a".into(),
            event_id: "e".into(),
            event_type: "x".into(),
            quantity: 1,
            occurred_at: Utc::now(),
            received_at: Utc::now(),
            late: false,
            tenant_status: "active".into(),
            properties: Value::Null,
            keel_event_id: uuid::Uuid::nil(),
            position: 42,
            txid: 7,
        };
        assert_eq!(decode_cursor(&encode_cursor(&event)), Some((7, 42)));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("7")), None);
    }

    #[test]
    fn csv_escapes_app_supplied_text() {
        let event = LedgerEvent {
            tenant_id: "t".into(),
            app_id: "a".into(),
            event_id: "has,comma\"quote".into(),
            event_type: "x".into(),
            quantity: 1,
            occurred_at: Utc::now(),
            received_at: Utc::now(),
            late: true,
            tenant_status: "suspended".into(),
            properties: serde_json::json!({ "k": "v,w" }),
            keel_event_id: uuid::Uuid::nil(),
            position: 1,
            txid: 1,
        };
        let text = String::from_utf8(render(&[event], Format::Csv, true).unwrap().to_vec()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[3], "has,comma\"quote");
        assert_eq!(&record[10], r#"{"k":"v,w"}"#);
        assert_eq!((&record[8], &record[9]), ("true", "suspended"));
    }

    #[test]
    fn csv_cells_an_app_chose_are_never_formulas() {
        let event = LedgerEvent {
            tenant_id: "t".into(),
            app_id: "@app".into(),
            event_id: "=HYPERLINK(\"http://evil\",\"x\")".into(),
            event_type: "+cmd".into(),
            quantity: -3,
            occurred_at: Utc::now(),
            received_at: Utc::now(),
            late: false,
            tenant_status: "active".into(),
            properties: Value::Null,
            keel_event_id: uuid::Uuid::nil(),
            position: 1,
            txid: 1,
        };
        let text = String::from_utf8(render(&[event], Format::Csv, true).unwrap().to_vec()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[3], "'=HYPERLINK(\"http://evil\",\"x\")");
        assert_eq!((&record[2], &record[4]), ("'@app", "'+cmd"));
        assert_eq!(&record[5], "-3", "a number stays a number");
    }
}
