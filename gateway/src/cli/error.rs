//! Why a `keel` command failed: `main` prints it as `keel: <message>` and exits non-zero.

use std::path::PathBuf;

use keel_commands::bus::CommandError;
use keel_commands::migrate::MigrateError;
use keel_domain::ids::MalformedId;
use keel_projections::replay::ReplayError;

use crate::offline::audit_verify::VerifyError;
use crate::offline::event_log::LogError;
use crate::server::StartError;

/// Why a `keel` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `keel serve` could not start.
    #[error("{0}")]
    Start(#[from] StartError),
    /// The migration role's connection failed.
    #[error("cannot connect as the migration role: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("{0}")]
    Migrate(#[from] MigrateError),
    /// Creating a read model's schema failed.
    #[error("read model schema: {0}")]
    ReadModelSchema(#[source] sqlx::Error),
    /// A database statement failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// The key-encryption key could not be opened or used.
    #[error("key-encryption key: {0}")]
    Kek(#[from] keel_commands::kek::KekError),
    /// The stored secrets could not be re-wrapped.
    #[error("stored secrets: {0}")]
    Secrets(#[from] keel_commands::wrapped_secrets::SecretsError),
    /// `keel keys check` found the key-encryption key not working as it must.
    #[error("key-encryption key check failed: {0}")]
    KekCheck(&'static str),
    /// A secret could not be written to its file.
    #[error("cannot write {}: {source}", path.display())]
    WriteSecret {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An input file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `keel replay` got `--until` or `--file` without `--tenant`.
    #[error("--until and --file go with --tenant")]
    ReplayOptionsWithoutTenant,
    /// `keel replay` got both a read model and `--tenant`.
    #[error("give either a read model to rebuild or --tenant <id>, not both")]
    ReplayReadModelAndTenant,
    /// `keel replay` got neither a read model nor `--tenant`.
    #[error(
        "give a read model to rebuild (e.g. `keel replay tenant_registry`) or \
         `--tenant <id> [--until TIME] [--file EXPORT]` to print a tenant's state"
    )]
    ReplayNothing,
    /// Rebuilding a read model without the migration role's URL.
    #[error("rebuilding a read model needs --migration-database-url or KEEL_MIGRATION_DATABASE_URL")]
    ReplayNeedsDatabase,
    /// A read model name this build does not know.
    #[error("unknown read model {name:?}; known: {known}")]
    UnknownReadModel {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// Rebuilding a read model failed.
    #[error("{0}")]
    Replay(#[from] ReplayError),
    /// Reading or exporting the event log failed.
    #[error("{0}")]
    Log(#[from] LogError),
    /// `--tenant` is not a tenant id.
    #[error("--tenant: {0}")]
    MalformedTenant(#[source] MalformedId),
    /// An app or key id is malformed.
    #[error("{0}")]
    MalformedId(#[from] MalformedId),
    /// `--until` is not an RFC 3339 time.
    #[error("--until must be an RFC 3339 time, e.g. 2026-05-01T12:00:00Z")]
    BadUntil,
    /// `--expires-at` is not an RFC 3339 time.
    #[error("--expires-at must be an RFC 3339 time")]
    BadExpiresAt,
    /// `keel dlq discard` named no parked event.
    #[error("no parked event {0}")]
    NoParkedEvent(i64),
    /// The platform account could not be created.
    #[error("{0}")]
    CreateOperator(String),
    /// A command was refused or failed.
    #[error("{0}")]
    Command(#[from] CommandError),
    /// The trusted keys or the log could not be read for verification.
    #[error("{0}")]
    Verify(#[from] VerifyError),
    /// The checkpoints file is not a JSON list of checkpoints.
    #[error("{}: not a list of checkpoints: {source}", path.display())]
    Checkpoints {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `keel audit verify` found a break in the audit trail.
    #[error("audit trail broken: {0}")]
    AuditBroken(String),
    /// The schemas directory or a schema file could not be written.
    #[error("{0}")]
    WriteSchemas(#[source] std::io::Error),
    /// `keel schemas --check` found missing or stale files.
    #[error("stale schemas (run `keel schemas`): {}", .0.join(", "))]
    StaleSchemas(Vec<String>),
    /// A value could not be rendered as JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}
