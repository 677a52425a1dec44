//! `keel keys`: access-token signing keys.

use std::time::Duration;

use super::CliError;
use super::args::MigrationDbArgs;

/// The subcommands of `keel keys`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Add a signing key: published in the JWKS at once, signing after --publish-ahead;
    /// the older keys keep verifying for --retire-after more, then leave the JWKS.
    Rotate(RotateArgs),
}

/// Arguments of `keel keys rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// Seconds between publishing the key and signing with it (let verifiers fetch the JWKS).
    #[arg(long, default_value_t = 60)]
    publish_ahead: u64,
    /// Seconds the old keys stay published once the new one signs (at least the access-token lifetime).
    #[arg(long, default_value_t = 900)]
    retire_after: u64,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Runs a `keel keys` subcommand.
pub async fn run(command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Rotate(RotateArgs { publish_ahead, retire_after, db }) => {
            let pool = db.connect().await?;
            let kid = crate::auth::tokens::rotate_keys(
                &pool,
                Duration::from_secs(publish_ahead),
                Duration::from_secs(retire_after),
            )
            .await?;
            println!("{kid}");
            Ok(())
        }
    }
}
