//! The `keel` command line: the command tree, one module per subcommand group, and
//! [`run`], which dispatches a parsed [`Cli`]. `main.rs` only calls [`parse`] and [`run`].

mod app;
mod args;
mod audit;
mod bootstrap;
pub mod db_env;
mod dlq;
mod error;
mod keys;
mod log;
mod migrate;
mod operator;
mod read_model;
mod replay;
mod schemas;
mod serve;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Settings;

pub use app::AppCommand;
pub use args::{KafkaArgs, MigrationDbArgs};
pub use audit::AuditCommand;
pub use bootstrap::BootstrapArgs;
pub use dlq::DlqCommand;
pub use error::CliError;
pub use keys::KeysCommand;
pub use log::LogCommand;
pub use operator::OperatorCommand;
pub use replay::ReplayArgs;
pub use schemas::SchemasArgs;

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about = "Keel, the control plane for B2B SaaS")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands of `keel`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC and REST APIs, the relay, the projectors and the schedulers.
    Serve(Settings),
    /// Create or upgrade the database schema (as the migration role).
    Migrate(MigrationDbArgs),
    /// Create the bootstrap operator credential if none exists; write it to --out and print it once.
    BootstrapToken(BootstrapArgs),
    /// Rebuild a read model from Kafka offset 0 and swap it in atomically; or, with
    /// --tenant, print one tenant's state at --until as JSON, rebuilt from the log alone.
    Replay(ReplayArgs),
    /// The event log as a whole.
    #[command(subcommand)]
    Log(LogCommand),
    /// Dead letters of a read model.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Platform accounts.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Managed apps and their API keys (prints JSON).
    #[command(subcommand)]
    App(AppCommand),
    /// Access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit trail, for auditors.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write the JSON Schemas of the events to a directory (or check they are current).
    Schemas(SchemasArgs),
}

/// Parses the process's arguments (exiting with clap's message on a usage error). With no
/// database URL in the environment, the values of `.keel/db.env` stand in for it (see [`db_env`]).
pub fn parse() -> Cli {
    let cwd = std::env::current_dir().unwrap_or_default();
    let defaults = db_env::defaults(|name| std::env::var_os(name), &cwd);
    let mut command = db_env::apply(Cli::command(), &defaults);
    let matches = command.get_matches_mut();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.format(&mut command).exit())
}

/// Starts logging (JSON on stdout for `serve`, text on stderr for the tools) and runs the command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    init_logging(matches!(cli.command, Command::Serve(_)));
    match cli.command {
        Command::Serve(settings) => serve::run(settings).await,
        Command::Migrate(db) => migrate::run(db).await,
        Command::BootstrapToken(args) => bootstrap::run(args).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Log(command) => log::run(command).await,
        Command::Dlq(command) => dlq::run(command).await,
        Command::Operator(command) => operator::run(command).await,
        Command::App(command) => app::run(command).await,
        Command::Keys(command) => keys::run(command).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Schemas(args) => schemas::run(args),
    }
}

/// Logs by `KEEL_LOG` (default `info,sqlx=warn,rdkafka=warn`): JSON on stdout, or text on stderr.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    if json {
        tracing_subscriber::fmt().json().with_current_span(true).with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    }
}
