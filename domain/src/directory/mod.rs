//! The user directory: one aggregate per tenant holding all its users (aggregate id =
//! the tenant id; platform operators and auditors live in the directory [`PLATFORM`]).
//! It is the consistency boundary for e-mail uniqueness, the last-owner guard, and
//! invitation and password-reset tokens. Tokens and passwords reach it already hashed.
//!
//! Read it in this order: `roles` (who a user is, who acts on it), `commands`, `events`
//! (and the tokens they carry), `errors`, `password_policy`, then `aggregate` (the state,
//! how it decides and how it changes). Everything is re-exported here, so callers write
//! `keel_domain::directory::…`.

mod aggregate;
mod commands;
mod errors;
mod events;
mod password_policy;
mod roles;

#[cfg(test)]
mod tests;

pub use aggregate::{AGGREGATE_TYPE, DEFAULT_INVITATION_TTL_DAYS, Directory, DirectoryUser, PLATFORM};
pub use commands::DirectoryCommand;
pub use errors::DirectoryError;
pub use events::{DirectoryEvent, PasswordChangeReason, PendingToken};
pub use password_policy::{MAX_PASSWORD_CHARS, PasswordPolicy};
pub use roles::{Acting, UserRole, UserStatus};
