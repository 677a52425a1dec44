//! Form-encoded answers of the password APIs the pages post to (ADR 0026):
//! `POST /v1/auth/invitations/accept`, `/v1/auth/password-reset` and
//! `/v1/auth/password-reset/confirm` take `application/x-www-form-urlencoded` as well as
//! JSON. A form is turned into the API's JSON body, the API runs unchanged, and its answer
//! becomes a 303 back to the page: `done=1` on success, `error=<code>` (and `retry_after`)
//! on a refusal. JSON requests pass through untouched. The CSRF guard has checked the
//! form before this runs.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{see_other, with_query};
use crate::rest::openapi::problem;
use crate::rest::problem::Problem;

/// The largest form body read (the sign-in form with an `interaction` is far smaller).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// `POST /v1/auth/invitations/accept`.
const ACCEPT: &str = "/v1/auth/invitations/accept";
/// `POST /v1/auth/password-reset`.
const REQUEST_RESET: &str = "/v1/auth/password-reset";
/// `POST /v1/auth/password-reset/confirm`.
const CONFIRM_RESET: &str = "/v1/auth/password-reset/confirm";

/// A form-taking API and the page its form lives on.
#[derive(Debug)]
pub struct FormPage {
    /// The API's path.
    pub api: &'static str,
    /// The page's path.
    pub page: &'static str,
    /// The form fields a way back to the page carries (to show the same form again).
    pub carried: &'static [&'static str],
    /// Whether this module answers the API's forms (`/v1/auth/session` answers its own).
    pub adapted: bool,
}

/// Every API a page's form posts to.
const FORM_PAGES: [FormPage; 4] = [
    FormPage {
        api: "/v1/auth/session",
        page: "/login",
        carried: &["interaction", "workspace", "lang"],
        adapted: false,
    },
    FormPage { api: ACCEPT, page: "/invitation", carried: &["token", "lang"], adapted: true },
    FormPage { api: REQUEST_RESET, page: "/forgot-password", carried: &["workspace", "lang"], adapted: true },
    FormPage { api: CONFIRM_RESET, page: "/reset-password", carried: &["token", "lang"], adapted: true },
];

/// The page whose form posts to `api`, if any.
pub fn page_of(api: &str) -> Option<&'static FormPage> {
    FORM_PAGES.iter().find(|p| p.api == api)
}

impl FormPage {
    /// The page again, with the carried `fields` of the form and `extra` parameters.
    pub fn back(&self, fields: &[(String, String)], extra: &[(&str, &str)]) -> String {
        self.back_with(self.carried, fields, extra)
    }

    /// The page with the `keep` fields of the form and `extra` parameters.
    fn back_with(&self, keep: &[&str], fields: &[(String, String)], extra: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(&str, &str)> = keep
            .iter()
            .filter_map(|name| fields.iter().find(|(k, _)| k == name).map(|(k, v)| (k.as_str(), v.as_str())))
            .filter(|(_, v)| v.len() <= super::MAX_QUERY_VALUE)
            .collect();
        pairs.extend_from_slice(extra);
        with_query(self.page, &pairs)
    }
}

/// A form body's fields (a malformed body has none).
pub fn fields(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// The middleware: answers the adapted APIs' forms with 303s.
pub async fn answer(request: Request, next: Next) -> Response {
    const FORM: &str = "application/x-www-form-urlencoded";
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().get(..FORM.len()))
        .is_some_and(|v| v.eq_ignore_ascii_case(FORM));
    let page = page_of(request.uri().path()).filter(|p| p.adapted);
    let (Some(page), true) = (page, is_form) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return Problem::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the form is too large")
            .into_response();
    };
    let fields = fields(&bytes);
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str());
    let json = if page.api == REQUEST_RESET {
        let workspace = field("workspace").trim();
        let mut body = json!({ "email": field("email").trim() });
        if !workspace.is_empty() {
            body["tenant"] = workspace.into();
        }
        body
    } else {
        if fields.iter().any(|(k, _)| k == "confirm") && field("confirm") != field("password") {
            return see_other(&page.back(&fields, &[("error", "password_mismatch")]));
        }
        json!({ "token": field("token"), "password": field("password") })
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&json).unwrap_or_default();
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if response.status().is_success() {
        // The used token stays out of the URL; the forgot page keeps its workspace.
        return see_other(&page.back_with(&["workspace", "lang"], &fields, &[("done", "1")]));
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let problem: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = match problem["code"].as_str().unwrap_or("unavailable") {
        "invalid_body" => "invalid_request",
        code => code,
    };
    let mut extra = vec![("error", code)];
    if let Some(seconds) = retry_after.as_deref() {
        extra.push(("retry_after", seconds));
    }
    see_other(&page.back(&fields, &extra))
}

/// Adds the form media type, the 303 and the CSRF refusal to the adapted operations of
/// the OpenAPI document.
pub fn document(doc: &mut Value) {
    let token_form = json!({
        "type": "object", "required": ["token", "password", "csrf"],
        "properties": {
            "token": { "type": "string", "description": "The token from the e-mail" },
            "password": { "type": "string", "description": "The new password" },
            "confirm": { "type": "string", "description": "The password again; must equal `password`" },
            "csrf": { "type": "string", "description": "Equal to the `keel_csrf` cookie (ADR 0026)" },
            "lang": { "type": "string", "enum": ["en", "ja"] }
        }
    });
    let reset_form = json!({
        "type": "object", "required": ["email", "csrf"],
        "properties": {
            "workspace": { "type": "string", "description": "The tenant's domain (the JSON body's `tenant`); empty for platform users" },
            "email": { "type": "string" },
            "csrf": { "type": "string", "description": "Equal to the `keel_csrf` cookie (ADR 0026)" },
            "lang": { "type": "string", "enum": ["en", "ja"] }
        }
    });
    for page in FORM_PAGES.iter().filter(|p| p.adapted) {
        let operation = &mut doc["paths"][page.api]["post"];
        let Some(operation) = operation.as_object_mut() else { continue };
        let schema = if page.api == REQUEST_RESET { reset_form.clone() } else { token_form.clone() };
        operation["requestBody"]["content"]["application/x-www-form-urlencoded"] = json!({ "schema": schema });
        let see_other = format!(
            "Form in (from the page {}): back to the page with `done=1`, or with `error=<code>` (and `retry_after`) when refused",
            page.page
        );
        operation["responses"]["303"] = json!({
            "description": see_other,
            "headers": { "Location": { "required": true, "schema": { "type": "string" } } }
        });
        operation["responses"]["403"] =
            problem("csrf: a form without the `csrf` field equal to the `keel_csrf` cookie, or from another site");
        operation["responses"]["413"] = problem("too_large: a form over 64 KiB");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_way_back_carries_only_the_pages_fields() {
        let fields = fields(b"token=keel_inv_x&password=secret&csrf=c&lang=ja");
        let page = page_of(ACCEPT).unwrap();
        assert_eq!(
            page.back(&fields, &[("error", "weak_password")]),
            "/invitation?token=keel_inv_x&lang=ja&error=weak_password"
        );
        assert_eq!(page.back_with(&["workspace", "lang"], &fields, &[("done", "1")]), "/invitation?lang=ja&done=1");
        assert!(page_of("/v1/auth/login").is_none());
    }
}
