//! gRPC errors: the status of a failed command, a refused credential or a refused
//! authorization, with Keel's stable code in `x-keel-error-code`. They never carry
//! SQL, stack traces or internal names.

use keel_commands::bus::{CommandError, Failure};
use keel_domain::access::Denied;

use crate::auth::AuthError;

/// The gRPC status for a failed command; its stable code travels in `x-keel-error-code`.
pub fn status(err: &CommandError) -> tonic::Status {
    use tonic::Code;
    let code = match err.failure {
        Failure::InvalidArgument => Code::InvalidArgument,
        Failure::NotFound | Failure::Gone => Code::NotFound,
        Failure::AlreadyExists => Code::AlreadyExists,
        Failure::FailedPrecondition => Code::FailedPrecondition,
        Failure::PermissionDenied => Code::PermissionDenied,
        Failure::ResourceExhausted => Code::ResourceExhausted,
        Failure::Aborted => Code::Aborted,
        Failure::Unavailable => Code::Unavailable,
        Failure::Internal => Code::Internal,
    };
    let mut status = with_code(tonic::Status::new(code, err.message.clone()), &err.code);
    if code == Code::Unavailable {
        // When to retry, like REST's `Retry-After`.
        status.metadata_mut().insert(RETRY_AFTER_KEY, tonic::metadata::MetadataValue::from(1u32));
    }
    status
}

/// The metadata key of an UNAVAILABLE answer telling when to retry (seconds).
pub const RETRY_AFTER_KEY: &str = "retry-after";

/// The gRPC status for an authentication failure.
pub fn auth_status(err: AuthError) -> tonic::Status {
    match err {
        AuthError::Missing | AuthError::Invalid => {
            with_code(tonic::Status::unauthenticated(err.to_string()), "unauthenticated")
        }
        AuthError::SessionEnded => with_code(tonic::Status::unauthenticated(err.to_string()), "session_expired"),
        AuthError::Unavailable => with_code(tonic::Status::unavailable(err.to_string()), "unavailable"),
        AuthError::KeyRevoked | AuthError::KeyExpired | AuthError::AppDisabled => {
            with_code(tonic::Status::unauthenticated(err.to_string()), err.code())
        }
    }
}

/// The gRPC status for a refused authorization.
pub fn denied_status(denied: Denied) -> tonic::Status {
    match denied {
        Denied::Hidden => with_code(tonic::Status::not_found("tenant not found"), "not_found"),
        Denied::NotPermitted => with_code(tonic::Status::permission_denied("you may not do this"), "permission_denied"),
    }
}

/// The stable code a status carries (`x-keel-error-code`), if any.
pub fn keel_code(status: &tonic::Status) -> Option<String> {
    status.metadata().get("x-keel-error-code").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A status of `code` with a stable `keel_code`.
pub fn coded(code: tonic::Code, keel_code: &str, message: &str) -> tonic::Status {
    with_code(tonic::Status::new(code, message), keel_code)
}

/// INVALID_ARGUMENT with a stable `code`.
pub fn invalid_argument(code: &str, message: &str) -> tonic::Status {
    with_code(tonic::Status::invalid_argument(message), code)
}

fn with_code(mut status: tonic::Status, code: &str) -> tonic::Status {
    if let Ok(value) = code.parse() {
        status.metadata_mut().insert("x-keel-error-code", value);
    }
    status
}
