//! Arguments shared by several subcommands.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::CliError;

/// Where the event log is: the Kafka brokers and the event topic.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KEEL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// The event topic.
    #[arg(long, env = "KEEL_EVENTS_TOPIC", default_value = "keel.events")]
    pub events_topic: String,
}

/// The database as the migration role, for the operator tools.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrationDbArgs {
    /// Postgres URL of the migration role (owner of the schema).
    #[arg(long, env = "KEEL_MIGRATION_DATABASE_URL")]
    pub migration_database_url: String,
    /// The runtime role that gets grants.
    #[arg(long, env = "KEEL_RUNTIME_ROLE", default_value = "keel_app")]
    pub runtime_role: String,
    /// The key-encryption key (tools that read or write stored secrets need it).
    #[command(flatten)]
    pub kek: crate::config::KekSettings,
}

impl MigrationDbArgs {
    /// A small pool connected as the migration role.
    pub async fn connect(&self) -> Result<PgPool, CliError> {
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.migration_database_url)
            .await
            .map_err(CliError::Connect)
    }
}
