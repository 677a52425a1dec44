//! CSRF protection for every form post on the whole router (ADR 0026): a double-submit
//! token. Each page that renders a form sets a random `keel_csrf` cookie (HttpOnly,
//! SameSite=Strict) and repeats it in a hidden `csrf` field; a form-encoded `POST` must
//! carry both, equal, and must not come from another site (`Origin`, `Sec-Fetch-Site`).
//!
//! Refusals: a post from one of our own pages whose token is missing or stale (an old tab,
//! a cookie that expired) goes back to its page with `error=csrf` (303), so the person
//! sees a sentence and a fresh form; anything else is a 403 problem document. JSON
//! requests are unaffected (a browser cannot send them cross-site without CORS).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::forms;
use crate::rest::problem::Problem;

/// The cookie holding the token.
pub const COOKIE: &str = "keel_csrf";

/// The form field repeating it.
pub const FIELD: &str = "csrf";

/// Form posts that carry their own credential and never act on a browser's cookies, so a
/// forged one gains nothing: the token endpoint (client authentication, RFC 6749),
/// userinfo and introspection (bearer tokens), and RP-initiated logout, which OpenID
/// Connect lets a client send as a GET anyway (a forged sign-out is possible by link).
const EXEMPT: [&str; 4] = ["/v1/auth/token", "/v1/auth/userinfo", "/v1/auth/introspect", "/v1/auth/end-session"];

/// The token of the request's cookie if it is well formed, else a fresh one and the
/// `Set-Cookie` that stores it.
pub fn token_for(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    if let Some(token) = super::cookie(headers, COOKIE).filter(|t| well_formed(t)) {
        return (token.to_string(), None);
    }
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let cookie = super::set_cookie(COOKIE, &token, "HttpOnly; SameSite=Strict", secure);
    (token, cookie)
}

/// 32 random bytes, base64url without padding.
fn well_formed(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a `POST`'s content type means for CSRF.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// `application/x-www-form-urlencoded`: checked.
    Form,
    /// `multipart/form-data`: no Keel API takes it, so none can carry a checked token.
    Multipart,
    /// `text/plain` (a browser sends it cross-site without asking): only same-site.
    Plain,
    /// Anything else (JSON …): a browser asks first (CORS), so unaffected.
    Other,
}

fn kind(headers: &HeaderMap) -> Kind {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let is = |name: &str| essence.eq_ignore_ascii_case(name);
    if is("application/x-www-form-urlencoded") {
        Kind::Form
    } else if is("multipart/form-data") {
        Kind::Multipart
    } else if is("text/plain") {
        Kind::Plain
    } else {
        Kind::Other
    }
}

/// Where the request comes from, as the browser tells.
#[derive(Debug, PartialEq, Eq)]
enum Site {
    /// One of our pages (`Origin` is the issuer's, or `Sec-Fetch-Site: same-origin`).
    Ours,
    /// Not said at all (no `Origin`, no `Sec-Fetch-Site`: a client that is not a browser).
    Unsaid,
    /// Hidden: `Origin: null` (a page under `Referrer-Policy: no-referrer`, ours or not).
    Hidden,
    /// Another site.
    Foreign,
}

fn site(headers: &HeaderMap, issuer_origin: &str) -> Site {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (origin, fetch_site) = (value("origin"), value("sec-fetch-site"));
    let named = origin.filter(|o| *o != "null");
    if named.is_some_and(|o| o != issuer_origin) || fetch_site.is_some_and(|s| s != "same-origin" && s != "none") {
        return Site::Foreign;
    }
    match (named, fetch_site, origin) {
        (Some(_), _, _) | (_, Some("same-origin"), _) => Site::Ours,
        (None, None, None) => Site::Unsaid,
        _ => Site::Hidden,
    }
}

/// The middleware; its state is the issuer's origin ([`super::issuer_origin`]), so that
/// a request that is no form pays for no clone of the whole application state.
pub async fn guard(State(issuer_origin): State<Arc<str>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if request.method() != Method::POST || EXEMPT.contains(&path) {
        return next.run(request).await;
    }
    let kind = kind(request.headers());
    if kind == Kind::Other {
        return next.run(request).await;
    }
    let site = site(request.headers(), &issuer_origin);
    match kind {
        Kind::Other => return next.run(request).await,
        Kind::Plain if matches!(site, Site::Ours | Site::Unsaid) => return next.run(request).await,
        Kind::Plain | Kind::Multipart => return refused(),
        Kind::Form if site == Site::Foreign => return refused(),
        Kind::Form => {}
    }
    let cookie = super::cookie(request.headers(), COOKIE).map(str::to_string);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, forms::MAX_FORM_BYTES).await else {
        return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the form is too large").into_response();
    };
    let fields = forms::fields(&bytes);
    let field = fields.iter().find(|(k, _)| k == FIELD).map(|(_, v)| v.as_str());
    let matches = match (cookie.as_deref(), field) {
        (Some(cookie), Some(field)) => well_formed(cookie) && bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
        _ => false,
    };
    if matches {
        return next.run(Request::from_parts(parts, Body::from(Bytes::clone(&bytes)))).await;
    }
    match (site, forms::page_of(parts.uri.path())) {
        (Site::Ours, Some(page)) => super::see_other(&page.back(&fields, &[("error", "csrf")])),
        _ => refused(),
    }
}

/// 403: the form did not come from a Keel page.
fn refused() -> Response {
    Problem::new(StatusCode::FORBIDDEN, "csrf", "the form was not sent from a Keel page; reload the page and try again")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_request_is_ours_only_when_the_browser_says_so() {
        let ours = "http://127.0.0.1:8080";
        assert_eq!(site(&headers(&[("origin", "http://127.0.0.1:8080")]), ours), Site::Ours);
        assert_eq!(site(&headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]), ours), Site::Ours);
        assert_eq!(site(&headers(&[("origin", "null")]), ours), Site::Hidden);
        assert_eq!(site(&headers(&[]), ours), Site::Unsaid);
        assert_eq!(site(&headers(&[("origin", "https://evil.example")]), ours), Site::Foreign);
        assert_eq!(site(&headers(&[("origin", "http://127.0.0.1:8080.evil")]), ours), Site::Foreign);
        assert_eq!(site(&headers(&[("sec-fetch-site", "cross-site")]), ours), Site::Foreign);
        assert_eq!(site(&headers(&[("sec-fetch-site", "same-site")]), ours), Site::Foreign);
    }

    #[test]
    fn content_types_are_compared_by_essence() {
        assert_eq!(kind(&headers(&[("content-type", "Application/X-WWW-Form-Urlencoded; charset=utf-8")])), Kind::Form);
        assert_eq!(kind(&headers(&[("content-type", "multipart/form-data; boundary=x")])), Kind::Multipart);
        assert_eq!(kind(&headers(&[("content-type", "text/plain")])), Kind::Plain);
        assert_eq!(kind(&headers(&[("content-type", "application/json")])), Kind::Other);
        assert_eq!(kind(&headers(&[])), Kind::Other);
    }

    #[test]
    fn a_fresh_token_is_set_once_and_then_reused() {
        let (token, cookie) = token_for(&HeaderMap::new(), true);
        assert!(well_formed(&token));
        let cookie = cookie.expect("a cookie is set").to_str().unwrap().to_string();
        assert_eq!(cookie, format!("keel_csrf={token}; Path=/; HttpOnly; SameSite=Strict; Secure"));
        let mut again = HeaderMap::new();
        again.insert(header::COOKIE, HeaderValue::from_str(&format!("keel_csrf={token}")).unwrap());
        assert_eq!(token_for(&again, true), (token, None));
        let bad = headers(&[("cookie", "keel_csrf=short")]);
        assert!(token_for(&bad, false).1.is_some(), "a malformed cookie is replaced");
    }
}
