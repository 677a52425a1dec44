//! `keel operator`: platform accounts.

use super::CliError;
use super::args::MigrationDbArgs;

/// The subcommands of `keel operator`.
#[derive(Debug, clap::Subcommand)]
pub enum OperatorCommand {
    /// Create a platform operator (or auditor) who signs in with e-mail and password at
    /// `POST /v1/auth/login` (no tenant). The first one retires the bootstrap credential.
    Create(CreateArgs),
}

/// Arguments of `keel operator create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The account's e-mail.
    #[arg(long)]
    email: String,
    /// The password (or set KEEL_OPERATOR_PASSWORD, which stays out of process lists).
    #[arg(long, env = "KEEL_OPERATOR_PASSWORD", hide_env_values = true)]
    password: String,
    /// operator or auditor.
    #[arg(long, default_value = "operator")]
    role: String,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Runs a `keel operator` subcommand.
pub async fn run(command: OperatorCommand) -> Result<(), CliError> {
    match command {
        OperatorCommand::Create(CreateArgs { email, password, role, db }) => {
            let pool = db.connect().await?;
            let user_id = crate::auth::create_platform_user(&pool, &email, &password, &role)
                .await
                .map_err(CliError::CreateOperator)?;
            println!("{user_id}");
            if crate::auth::retire_bootstrap_credential(&pool).await? {
                eprintln!("the bootstrap operator credential is retired; sign in with the new account");
            }
            Ok(())
        }
    }
}
