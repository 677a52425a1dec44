//! A managed app as an OpenID Connect client (ADR 0025): where it may be sent back
//! after sign-in and sign-out, and whether it authenticates with a secret. The
//! secret itself never reaches the domain; events name it by id only.

use serde::{Deserialize, Serialize};

use super::AppError;

/// Most URIs in each of an app's two lists.
pub const MAX_URIS: usize = 20;

/// Longest URI accepted.
pub const MAX_URI_LEN: usize = 2000;

/// Hosts on which plain `http://` is accepted (development).
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// How an app authenticates at the token endpoint.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    /// No secret: PKCE alone (browser and native apps). Apps registered before ADR 0025 are public.
    #[default]
    Public,
    /// Authenticates with its client secret (server-side apps).
    Confidential,
}

impl ClientType {
    /// `public` or `confidential`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientType::Public => "public",
            ClientType::Confidential => "confidential",
        }
    }
}

/// An app's OpenID Connect client settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientSettings {
    /// Where the authorization endpoint may send the app's users back (exact match).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where the end-session endpoint may send them after sign-out (exact match).
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Public or confidential.
    #[serde(default)]
    pub client_type: ClientType,
}

impl ClientSettings {
    /// The settings with both lists checked (duplicates dropped, order kept), or why not.
    pub fn validated(
        redirect_uris: Vec<String>,
        post_logout_redirect_uris: Vec<String>,
        client_type: ClientType,
    ) -> Result<Self, AppError> {
        Ok(Self {
            redirect_uris: uri_list(redirect_uris).ok_or(AppError::InvalidRedirectUris)?,
            post_logout_redirect_uris: uri_list(post_logout_redirect_uris)
                .ok_or(AppError::InvalidPostLogoutRedirectUris)?,
            client_type,
        })
    }
}

/// The list without duplicates, if it is short enough and every URI is acceptable.
fn uri_list(uris: Vec<String>) -> Option<Vec<String>> {
    let mut kept: Vec<String> = Vec::with_capacity(uris.len().min(MAX_URIS));
    for uri in uris {
        if !is_acceptable_uri(&uri) {
            return None;
        }
        if !kept.contains(&uri) {
            kept.push(uri);
        }
    }
    (kept.len() <= MAX_URIS).then_some(kept)
}

/// Whether `uri` may be registered: an absolute `https://` URI, or `http://` on a
/// loopback host; printable ASCII, at most [`MAX_URI_LEN`] characters, with a host,
/// no user info, no fragment and no wildcard. It is stored exactly as given, since
/// clients must send it back byte for byte.
pub fn is_acceptable_uri(uri: &str) -> bool {
    if uri.is_empty() || uri.len() > MAX_URI_LEN || !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    if uri.contains(['#', '*', '\\']) {
        return false;
    }
    let (rest, https) = match (uri.strip_prefix("https://"), uri.strip_prefix("http://")) {
        (Some(rest), _) => (rest, true),
        (None, Some(rest)) => (rest, false),
        _ => return false,
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return false;
    }
    let Some(host) = host_of(authority) else { return false };
    https || LOOPBACK_HOSTS.iter().any(|loopback| host.eq_ignore_ascii_case(loopback))
}

/// The host of `host[:port]` if both parts are well formed.
fn host_of(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']')?;
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        let port = if after.is_empty() { None } else { Some(after.strip_prefix(':')?) };
        (&authority[..inner.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0));
    let label_ok =
        |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let host_ok = host.starts_with('[') || (host.len() <= 253 && host.split('.').all(label_ok));
    (port_ok && host_ok).then_some(host)
}
