//! REST `/v1/control-plane/tenants`: the tenant registry read model.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use base64::Engine;
use serde::{Deserialize, Serialize};

use keel_domain::access::{Action, Principal, Target, authorize};
use keel_domain::ids::TenantId;
use keel_domain::plan::Plan;
use keel_projections::tenant_registry::{self, ListFilter, Scope, TenantRow};

use crate::errors::Problem;
use crate::rest::{AppState, Caller, wait_for_position};

/// Largest page.
pub const MAX_LIMIT: i64 = 200;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;
const STATUSES: [&str; 4] = ["active", "suspended", "pending_deletion", "purged"];

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/control-plane/tenants", get(list))
        .route("/v1/control-plane/tenants/{tenant_id}", get(get_one))
}

/// Query parameters of the list.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    plan: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// A page of tenants.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TenantPage {
    /// The tenants, oldest first.
    pub items: Vec<TenantRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub fn scope(principal: &Principal) -> Scope {
    match principal {
        // An app reaches a read only through `authorize`, which limits it to its key's scopes.
        Principal::Operator { .. } | Principal::Auditor { .. } | Principal::App { .. } => Scope::Platform,
        Principal::TenantUser { tenant_id, .. } => Scope::Tenant(tenant_id.to_string()),
    }
}

/// A page cursor naming the last tenant id of a page.
pub fn encode_cursor(tenant_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tenant_id)
}

/// The tenant id a cursor names, if it is one.
pub fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let id = String::from_utf8(bytes).ok()?;
    id.parse::<TenantId>().ok().map(|t| t.to_string())
}

async fn list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<TenantPage>, Problem> {
    authorize(&principal, Action::ListTenants, Target::default())?;
    let status = match params.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) if STATUSES.contains(&s) => Some(s.to_string()),
        Some(_) => {
            return Err(Problem::bad_request(
                "invalid_status",
                "status must be one of active, suspended, pending_deletion, purged",
            ));
        }
    };
    let plan = match params.plan.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => {
            Some(p.parse::<Plan>().map_err(|e| Problem::bad_request("invalid_plan", e.to_string()))?.to_string())
        }
    };
    let after = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| Problem::bad_request("invalid_cursor", "cursor is not valid"))?),
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad_request("invalid_limit", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    wait_for_position(&state, &headers, tenant_registry::NAME).await?;
    let filter = ListFilter { status, plan, after, limit };
    let mut items = tenant_registry::list(&state.pool, &scope(&principal), &filter).await?;
    let next_cursor = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        encode_cursor(&items[items.len() - 1].tenant_id)
    });
    Ok(Json(TenantPage { items, next_cursor }))
}

async fn get_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<TenantRow>, Problem> {
    let id: TenantId = raw.parse().map_err(|_| Problem::not_found())?;
    authorize(&principal, Action::ReadTenant, Target { tenant: Some(&id), plan: None })?;
    wait_for_position(&state, &headers, tenant_registry::NAME).await?;
    let row =
        tenant_registry::get(&state.pool, &scope(&principal), id.as_str()).await?.ok_or_else(Problem::not_found)?;
    if row.status == "purged" {
        return Err(Problem::new(StatusCode::GONE, "tenant_purged", "the tenant was deleted"));
    }
    Ok(Json(row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = TenantId::from_ulid(ulid::Ulid::new()).to_string();
        assert_eq!(decode_cursor(&encode_cursor(&id)), Some(id));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(decode_cursor(&encode_cursor("'; DROP TABLE x")), None);
    }
}
