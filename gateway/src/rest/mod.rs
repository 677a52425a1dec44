//! The REST query API: one file per resource — each exporting its routes and its part
//! of the OpenAPI document — and what they share: the state (`state`), extractors and
//! helpers (`extract`), paging (`pagination`), CSV cells (`csv_cell`), problem documents (`problem`), the
//! OpenAPI builder (`openapi`) and the flag cache (`flag_cache`). This module only
//! composes the resources into one router and one document. It reads read models
//! only (and records usage, audit records and health reports).

pub mod audit;
pub mod auth;
pub mod billing;
pub mod csv_cell;
pub mod extract;
pub mod flag_cache;
pub mod flags;
pub mod health;
pub mod health_system;
pub mod limits;
pub mod metrics;
pub mod ofrep;
pub mod oidc;
pub mod openapi;
pub mod pagination;
pub mod password_policy;
pub mod problem;
pub mod ready;
pub mod routes;
pub mod routing;
pub mod state;
pub mod tenants;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tracing::Instrument;

use extract::{CORRELATION_HEADER, CorrelationId};
use openapi::ApiDoc;
use problem::Problem;
use routes::Routes;
use state::AppState;

/// Where the OpenAPI document is served.
const OPENAPI_PATH: &str = "/v1/openapi.json";

/// A resource: its routes, and its part of the OpenAPI document.
type Resource = (fn() -> Routes, fn(&mut ApiDoc));

/// Every resource.
const RESOURCES: [Resource; 16] = [
    (health::routes, health::openapi),
    (metrics::routes, metrics::openapi),
    (health_system::routes, health_system::openapi),
    (auth::routes, auth::openapi),
    (password_policy::routes, password_policy::openapi),
    (oidc::authorize::routes, oidc::authorize::openapi),
    (oidc::session::routes, oidc::session::openapi),
    (oidc::token::routes, oidc::token::openapi),
    (oidc::userinfo::routes, oidc::userinfo::openapi),
    (oidc::end_session::routes, oidc::end_session::openapi),
    (tenants::routes, tenants::openapi),
    (flags::routes, flags::openapi),
    (ofrep::routes, ofrep::openapi),
    (routing::routes, routing::openapi),
    (billing::routes, billing::openapi),
    (audit::routes, audit::openapi),
];

/// The REST router.
pub fn router(state: AppState) -> Router {
    // `start` refuses settings without valid limits.
    let body_limit = state.settings.message_limits().unwrap_or_default().request_body_bytes();
    let limits = crate::limits::rest::RestLimits::new(
        state.settings.limits.max_concurrent_requests,
        state.settings.limits.request_timeout(),
    );
    Router::new()
        .route(OPENAPI_PATH, get(|| async { Json(document()) }))
        .merge(health::routes())
        .merge(tenants::routes())
        .merge(auth::routes())
        .merge(password_policy::routes())
        .merge(crate::pages::routes())
        .merge(oidc::authorize::routes())
        .merge(oidc::session::routes())
        .merge(oidc::token::routes())
        .merge(oidc::userinfo::routes())
        .merge(oidc::end_session::routes())
        .merge(flags::routes())
        .merge(routing::routes())
        .merge(billing::routes())
        .merge(audit::routes())
        .merge(health_system::routes())
        .merge(metrics::routes())
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(limits::too_large_as_problem))
        .layer(axum::middleware::from_fn(correlation))
        // Every form post: the CSRF check, then the password APIs' form answers (ADR 0026);
        // not on OFREP, which takes no form.
        .layer(axum::middleware::from_fn(crate::pages::forms::answer))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::<str>::from(crate::pages::issuer_origin(&state)),
            crate::pages::csrf::guard,
        ))
        // The hot path: no per-request span or log line.
        .merge(Router::from(ofrep::routes()).method_not_allowed_fallback(method_not_allowed))
        // Outermost, on every route (each knows its template then) and the fallback.
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(axum::middleware::from_fn_with_state(limits, crate::limits::rest::limit))
        .with_state(state)
}

/// `405` for a routed path and another method (axum adds the `Allow` header).
async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this path does not answer this method")
}

/// Any error not already a problem document (a rejection by axum itself, e.g. of a body
/// over its size limit, which answers `text/plain`) as one, keeping status and headers.
fn as_problem(response: Response) -> Response {
    let status = response.status();
    // Only axum's own answers: plain text or no body type (a handler's JSON, e.g. the
    // readiness report with its 503, is the handler's documented answer).
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.starts_with("text/plain")));
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let code = status.canonical_reason().unwrap_or("error").to_lowercase().replace([' ', '-'], "_");
    let detail = status.canonical_reason().unwrap_or("error").to_string();
    let body = serde_json::to_vec(&Problem::new(status, &code, detail)).unwrap_or_default();
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    Response::from_parts(parts, Body::from(body))
}

/// `GET /v1/openapi.json`: the REST API described as OpenAPI 3.1, gathered from the
/// resources' parts.
pub fn document() -> Value {
    let mut doc = ApiDoc::new();
    doc.operation(
        OPENAPI_PATH,
        "get",
        json!({ "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } }),
    );
    for (_, part) in RESOURCES {
        part(&mut doc);
    }
    let mut doc = doc.finish();
    crate::pages::forms::document(&mut doc);
    doc
}

/// Takes or creates the correlation id, runs the request in a span carrying it,
/// echoes it in the response and writes it into problem documents.
async fn correlation(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(CorrelationId(id.clone()));
    // The route's template, never the raw path: a path can carry an e-mail address or a token.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let span = tracing::info_span!("http", method = %request.method(), route = %route, correlation_id = %id);
    async move {
        let mut response = as_problem(next.run(request).await);
        tracing::info!(status = response.status().as_u16(), "request served");
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
        let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json");
        if !is_problem {
            return response;
        }
        let (parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
            return Response::from_parts(parts, Body::empty());
        };
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(map) = doc.as_object_mut() {
            map.insert("correlation_id".into(), id.clone().into());
        }
        let mut parts = parts;
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(serde_json::to_vec(&doc).unwrap_or_default()))
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use axum::routing::{MethodFilter, on};

    use super::*;

    const METHODS: [(&str, MethodFilter); 5] = [
        ("get", MethodFilter::GET),
        ("post", MethodFilter::POST),
        ("put", MethodFilter::PUT),
        ("patch", MethodFilter::PATCH),
        ("delete", MethodFilter::DELETE),
    ];

    /// Whether `router` routes `method` of `path`: axum refuses (panics) to route it twice.
    fn routes_method(router: &Router<AppState>, path: &str, method: MethodFilter) -> bool {
        let probe = router.clone();
        catch_unwind(AssertUnwindSafe(|| probe.route(path, on(method, || async {})))).is_err()
    }

    #[test]
    fn the_document_describes_the_form_answers_of_the_password_apis() {
        let doc = document();
        for api in ["/v1/auth/invitations/accept", "/v1/auth/password-reset", "/v1/auth/password-reset/confirm"] {
            let operation = &doc["paths"][api]["post"];
            assert!(operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"].is_object());
            assert!(operation["requestBody"]["content"]["application/json"]["schema"].is_object(), "JSON stays");
            assert!(operation["responses"]["303"]["headers"]["Location"].is_object());
            assert!(operation["responses"]["403"]["content"]["application/problem+json"].is_object());
        }
    }

    #[test]
    fn each_resource_documents_exactly_the_operations_it_routes() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut mismatches = Vec::new();
        for (routes, part) in RESOURCES {
            let routes = routes();
            let mut doc = ApiDoc::new();
            part(&mut doc);
            let documented: BTreeSet<(String, String)> = doc.operations().into_iter().collect();
            let paths: Vec<&str> = routes.paths().to_vec();
            let router = Router::from(routes);
            let mut routed = BTreeSet::new();
            for path in paths {
                for (name, method) in METHODS {
                    if routes_method(&router, path, method) {
                        routed.insert((path.to_string(), name.to_string()));
                    }
                }
            }
            mismatches.extend(routed.symmetric_difference(&documented).cloned());
        }
        std::panic::set_hook(hook);
        assert!(mismatches.is_empty(), "routed but not documented, or documented but not routed: {mismatches:?}");
    }

    #[test]
    fn every_operation_documents_its_refusals_as_problem_documents() {
        let doc = document();
        let mut missing = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("operations") {
                let responses = operation["responses"].as_object().expect("responses");
                let anonymous = operation["security"] == json!([]);
                let takes_input = operation["parameters"].as_array().is_some_and(|p| !p.is_empty())
                    || operation.get("requestBody").is_some();
                let mut needed: Vec<&str> = Vec::new();
                if takes_input {
                    needed.push("400");
                }
                if !anonymous {
                    needed.push("401");
                }
                for status in needed {
                    if !responses.contains_key(status) {
                        missing.push(format!("{method} {path}: no {status}"));
                    }
                }
                // Every refusal has a body schema: a problem document (OFREP's own errors, and
                // the OpenID Provider's HTML error page for browsers, excepted: ADR 0024).
                for (status, response) in responses {
                    let refusal = status.starts_with('4') || status.starts_with('5');
                    let content = &response["content"];
                    let described = content["application/problem+json"]["schema"].is_object()
                        || (path.starts_with("/ofrep/") && content["application/json"]["schema"].is_object())
                        || (path.starts_with("/v1/auth/") && content["text/html"]["schema"].is_object());
                    if refusal && !described && path != "/readyz" {
                        missing.push(format!("{method} {path}: {status} is not a problem document"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn the_document_lists_every_routed_path() {
        let doc = document();
        let documented: BTreeSet<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        let mut routed: BTreeSet<&str> = RESOURCES.iter().flat_map(|(routes, _)| routes().paths().to_vec()).collect();
        routed.insert(OPENAPI_PATH);
        assert_eq!(routed, documented);
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
