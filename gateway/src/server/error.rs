//! Why a Keel process could not start.

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Postgres could not be reached.
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// The Kafka client could not be configured.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A listener could not be bound.
    #[error("listen: {0}")]
    Listen(#[from] std::io::Error),
    /// gRPC reflection could not be set up.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The mailer could not be set up.
    #[error("mail: {0}")]
    Mail(keel_commands::mail::MailError),
    /// A setting is out of range.
    #[error("settings: {0}")]
    Limits(#[from] keel_domain::limits::MessageLimitTooSmall),
    /// The key-encryption key could not be opened (missing, loose file mode, HSM refused).
    #[error("key-encryption key: {0}")]
    Kek(#[from] keel_commands::kek::KekError),
    /// The stored secrets could not be wrapped under the key-encryption key.
    #[error("stored secrets: {0}")]
    Secrets(#[from] keel_commands::wrapped_secrets::SecretsError),
    /// The database has not been migrated (a read model's schema is missing).
    #[error("read model {0} has no schema yet: run `keel migrate` first")]
    NotMigrated(&'static str),
}
