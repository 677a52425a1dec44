//! How a domain error is classified for callers, independent of transport.

/// The class of a refusal; the gateway maps it to a gRPC status or an HTTP problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed or out of range.
    InvalidArgument,
    /// The target does not exist (or must not be revealed).
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The target exists but is not in a state that allows the operation.
    FailedPrecondition,
    /// The caller may not do this.
    PermissionDenied,
    /// The target existed but has been permanently removed.
    Gone,
}

/// Every aggregate error tells its class and a stable machine-readable code.
pub trait DomainError: std::error::Error {
    /// The class of the refusal.
    fn kind(&self) -> ErrorKind;
    /// A stable, snake_case reason code (used in problem documents and audit records).
    fn code(&self) -> &'static str;
}
