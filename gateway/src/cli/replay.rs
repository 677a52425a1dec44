//! `keel replay`: rebuild a read model from the log, or print one tenant's state at a moment.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use keel_projections::kafka::ConsumerSettings;

use crate::offline::event_log::{self, LogSource};

use super::CliError;
use super::args::{KafkaArgs, MigrationDbArgs};
use super::read_model;

/// Arguments of `keel replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The read model to rebuild (tenant_registry, flag_snapshots, …); not with --tenant.
    read_model: Option<String>,
    /// Instead: rebuild this tenant's registry entry, users, flags and entitlements from
    /// the log and print them (no database needed).
    #[arg(long)]
    tenant: Option<String>,
    /// With --tenant: the moment (RFC 3339, e.g. 2026-05-01T12:00:00Z); default now.
    #[arg(long)]
    until: Option<String>,
    /// With --tenant: read this export (`keel log export`) instead of Kafka (offline).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Postgres URL of the migration role (to rebuild a read model).
    #[arg(long, env = "KEEL_MIGRATION_DATABASE_URL")]
    migration_database_url: Option<String>,
    /// The runtime role that gets grants.
    #[arg(long, env = "KEEL_RUNTIME_ROLE", default_value = "keel_app")]
    runtime_role: String,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Rebuilds the read model, or prints the tenant's state (`--tenant`).
pub async fn run(args: ReplayArgs) -> Result<(), CliError> {
    let ReplayArgs { read_model, tenant, until, file, migration_database_url, runtime_role, kafka } = args;
    match (read_model, tenant) {
        (Some(read_model), None) if until.is_none() && file.is_none() => {
            let migration_database_url = migration_database_url.ok_or(CliError::ReplayNeedsDatabase)?;
            rebuild(
                &read_model,
                MigrationDbArgs { migration_database_url, runtime_role, kek: Default::default() },
                kafka,
            )
            .await
        }
        (Some(_), None) => Err(CliError::ReplayOptionsWithoutTenant),
        (None, Some(tenant)) => replay_tenant(&tenant, until, file, kafka).await,
        (Some(_), Some(_)) => Err(CliError::ReplayReadModelAndTenant),
        (None, None) => Err(CliError::ReplayNothing),
    }
}

/// `keel replay <read model>`: rebuilds it from offset 0 in a shadow schema and swaps it in.
async fn rebuild(read_model: &str, db: MigrationDbArgs, kafka: KafkaArgs) -> Result<(), CliError> {
    let model = read_model::by_name(read_model)?;
    let pool = db.connect().await?;
    let settings = ConsumerSettings { brokers: kafka.kafka_brokers, session_timeout_ms: 6000 };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} replay [{bar:40}] {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = model.replay(&pool, &settings, &kafka.events_topic, &db.runtime_role, &bar).await?;
    println!(
        "replayed {read_model}: {} events in {:.2}s ({:.0} events/s); swapped in",
        report.messages,
        report.elapsed.as_secs_f64(),
        report.rate()
    );
    Ok(())
}

/// `keel replay --tenant`: prints the tenant's state at `until` (default now) as JSON.
async fn replay_tenant(
    tenant: &str,
    until: Option<String>,
    file: Option<PathBuf>,
    kafka: KafkaArgs,
) -> Result<(), CliError> {
    let tenant_id: keel_domain::ids::TenantId = tenant.trim().parse().map_err(CliError::MalformedTenant)?;
    let until = match until {
        Some(raw) => chrono::DateTime::parse_from_rfc3339(raw.trim())
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| CliError::BadUntil)?,
        None => chrono::Utc::now(),
    };
    let source = match file {
        Some(path) => LogSource::File(path),
        None => LogSource::Kafka { brokers: kafka.kafka_brokers, topic: kafka.events_topic },
    };
    let bar = event_log::progress_bar(&source);
    let state = crate::offline::tenant_replay::replay_tenant(&source, tenant_id.as_str(), until, &bar).await?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}
