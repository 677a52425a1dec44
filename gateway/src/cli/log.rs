//! `keel log`: the event log as a whole.

use std::path::PathBuf;

use crate::offline::event_log::{self, LogSource};

use super::CliError;
use super::args::KafkaArgs;

/// The subcommands of `keel log`.
#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Write the whole event log (every partition from offset 0 to its end when the export
    /// starts) to an NDJSON file, one envelope per line, each partition in order: the export
    /// that `keel replay --tenant … --file` reads offline.
    Export(ExportArgs),
}

/// Arguments of `keel log export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The file to write (it appears only once complete).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Runs a `keel log` subcommand.
pub async fn run(command: LogCommand) -> Result<(), CliError> {
    match command {
        LogCommand::Export(ExportArgs { out, kafka }) => {
            let source = LogSource::Kafka { brokers: kafka.kafka_brokers, topic: kafka.events_topic };
            let bar = event_log::progress_bar(&source);
            let events = event_log::export(&source, &out, &bar).await?;
            println!("exported {events} events to {}", out.display());
            Ok(())
        }
    }
}
