//! `keel dlq`: dead letters of a read model.

use super::CliError;
use super::args::MigrationDbArgs;
use super::read_model;

/// The subcommands of `keel dlq`.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List parked events.
    List(ListArgs),
    /// Discard one parked event for good (the events held behind it stay parked until retried).
    Discard(DiscardArgs),
    /// Retry a tenant's parked events, in order.
    Retry(RetryArgs),
}

/// Arguments of `keel dlq list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The read model.
    read_model: String,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Arguments of `keel dlq discard`.
#[derive(Debug, clap::Args)]
pub struct DiscardArgs {
    /// The read model.
    read_model: String,
    /// The parked event's id (from `keel dlq list`).
    #[arg(long)]
    id: i64,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Arguments of `keel dlq retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// The read model.
    read_model: String,
    /// The tenant.
    #[arg(long)]
    tenant: String,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Runs a `keel dlq` subcommand.
pub async fn run(command: DlqCommand) -> Result<(), CliError> {
    match command {
        DlqCommand::List(ListArgs { read_model, tenant, db }) => {
            let model = read_model::by_name(&read_model)?;
            let pool = db.connect().await?;
            let parked = model.list_dead_letters(&pool, tenant.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&parked).unwrap_or_default());
        }
        DlqCommand::Discard(DiscardArgs { read_model, id, db }) => {
            let model = read_model::by_name(&read_model)?;
            let pool = db.connect().await?;
            if !model.discard_dead_letter(&pool, id).await? {
                return Err(CliError::NoParkedEvent(id));
            }
            println!("discarded parked event {id}");
        }
        DlqCommand::Retry(RetryArgs { read_model, tenant, db }) => {
            let model = read_model::by_name(&read_model)?;
            let pool = db.connect().await?;
            let outcome = model.retry_dead_letters(&pool, &tenant).await?;
            println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
        }
    }
    Ok(())
}
