//! REST `GET /metrics` (Prometheus text format; public like `/readyz`: it holds only
//! route templates, method names, read model and pool names and counts — ADR 0020), and
//! the middleware that records every REST request by its matched route template.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use serde_json::json;

use super::openapi::ApiDoc;
use super::routes::Routes;
use super::state::AppState;
use crate::metrics::{UNMATCHED_ROUTE, method_label};

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// The metrics route.
pub fn routes() -> Routes {
    Routes::new().route(METRICS_PATH, get(metrics))
}

/// The metrics part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.operation(
        METRICS_PATH,
        "get",
        json!({
            "summary": "Metrics in the Prometheus text format (no credential needed: counts by route template, method, read model and pool; never an id, address or path)",
            "security": [],
            "responses": { "200": { "description": "Prometheus text format 0.0.4",
                "content": { "text/plain": { "schema": { "type": "string" } } } } }
        }),
    );
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render().await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], text).into_response()
}

/// Records each request's method, matched route template (never the path itself),
/// status and latency. Add it with `Router::layer`, so each route has its template.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
    state.metrics.record_rest(method, route, response.status().as_u16(), started.elapsed());
    response
}
