//! `keel audit`: the audit trail, for auditors.

use std::path::{Path, PathBuf};

use crate::offline::audit_verify;
use crate::offline::event_log::{self, LogSource};

use super::CliError;
use super::args::KafkaArgs;

/// The subcommands of `keel audit`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute every audit chain and check every signed checkpoint; report the first
    /// broken link (exit status 1). Reads the Kafka log, a log export (`--file`, from
    /// `keel log export`) or a CSV export (`--csv`, from GET /v1/audit/export.csv, with
    /// `--checkpoints` from GET /v1/audit/checkpoints). Needs no database.
    Verify(VerifyArgs),
}

/// Arguments of `keel audit verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The public keys to trust (the JSON of GET /v1/audit/keys, kept by the auditor).
    #[arg(long)]
    keys: PathBuf,
    /// A log export (NDJSON envelopes) instead of Kafka.
    #[arg(long, conflicts_with = "csv")]
    file: Option<PathBuf>,
    /// A CSV export of the audit trail instead of the log.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The checkpoints (JSON array) for a CSV export.
    #[arg(long, requires = "csv")]
    checkpoints: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Runs a `keel audit` subcommand.
pub async fn run(command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Verify(args) => verify(args).await,
    }
}

/// `keel audit verify`: prints the report; a break is an error (exit status 1).
async fn verify(VerifyArgs { keys, file, csv, checkpoints, kafka }: VerifyArgs) -> Result<(), CliError> {
    let keys = audit_verify::keys_from_json(&read(&keys)?)?;
    let report = match csv {
        Some(csv) => {
            let checkpoints: Vec<keel_domain::audit::Checkpoint> = match checkpoints {
                Some(path) => serde_json::from_str(&read(&path)?)
                    .map_err(|source| CliError::Checkpoints { path: path.clone(), source })?,
                None => Vec::new(),
            };
            let bar = event_log::progress_bar(&LogSource::File(csv.clone()));
            audit_verify::verify_csv(&csv, &checkpoints, &keys, &bar)
        }
        None => {
            let source = match file {
                Some(path) => LogSource::File(path),
                None => LogSource::Kafka { brokers: kafka.kafka_brokers, topic: kafka.events_topic },
            };
            let bar = event_log::progress_bar(&source);
            audit_verify::verify_log(&source, &keys, &bar).await
        }
    }?;
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    match &report.broken {
        None => Ok(()),
        Some(broken) => Err(CliError::AuditBroken(broken.to_string())),
    }
}

/// The text of `path`.
fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })
}
