//! Why a caller is not authenticated (shared by every credential kind).

/// Why a caller is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer …` was sent.
    #[error("missing bearer credential")]
    Missing,
    /// The credential is unknown, malformed or revoked.
    #[error("invalid credential")]
    Invalid,
    /// The access token's session has ended (logout, revocation, role change, …).
    #[error("session has ended; sign in again")]
    SessionEnded,
    /// The credential store could not be asked.
    #[error("authentication is temporarily unavailable")]
    Unavailable,
    /// The API key was revoked.
    #[error("API key has been revoked")]
    KeyRevoked,
    /// The API key is past its expiry.
    #[error("API key has expired")]
    KeyExpired,
    /// The API key's app is disabled.
    #[error("the app is disabled")]
    AppDisabled,
}

impl AuthError {
    /// The stable code callers see for API-key refusals.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Invalid => "unauthenticated",
            AuthError::SessionEnded => "session_expired",
            AuthError::Unavailable => "unavailable",
            AuthError::KeyRevoked => "key_revoked",
            AuthError::KeyExpired => "key_expired",
            AuthError::AppDisabled => "app_disabled",
        }
    }
}
