//! `keel app`: managed apps, their API keys and their OpenID Connect client settings
//! (prints JSON).

use keel_commands::apps::AppCommands;
use keel_commands::bus::CommandContext;
use keel_domain::app::{AppCommand as Change, ClientSettings, ClientType};
use keel_domain::envelope::Actor;
use keel_domain::ids::{ApiKeyId, AppId};
use serde_json::{Value, json};

use super::CliError;
use super::args::MigrationDbArgs;

/// The subcommands of `keel app`.
#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Register a managed app; prints {"app_id", "position"} and, for a confidential
    /// app, "client_secret" (shown this once).
    Register(RegisterArgs),
    /// Replace a confidential app's client secret; prints {"app_id", "client_secret",
    /// "position"}. The previous secret stops working; the new one is shown this once.
    RotateClientSecret(RotateArgs),
    /// Issue an API key; prints {"key_id", "secret", …}. The secret is shown this once.
    IssueKey(IssueKeyArgs),
    /// Revoke an API key for good.
    RevokeKey(RevokeKeyArgs),
    /// Block an app and all its keys.
    Disable(AppArgs),
    /// Lift a disable.
    Enable(AppArgs),
}

/// Arguments of `keel app register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Display name.
    #[arg(long)]
    name: String,
    /// Environment, e.g. production.
    #[arg(long)]
    environment: String,
    /// Where sign-in may send the app's users back (repeatable; exact match).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// Where sign-out may send them (repeatable; exact match).
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// A confidential client, which authenticates with a client secret (else public: PKCE alone).
    #[arg(long)]
    confidential: bool,
    /// Makes a retry safe (a fresh one by default).
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Arguments of `keel app rotate-client-secret`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The app.
    app_id: String,
    /// Makes a retry safe (a fresh one by default).
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Arguments of `keel app issue-key`.
#[derive(Debug, clap::Args)]
pub struct IssueKeyArgs {
    /// The app.
    #[arg(long)]
    app: String,
    /// flags:read, billing:write, billing:read, audit:write or fleet:write (repeatable).
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// RFC 3339 time after which the key stops working.
    #[arg(long)]
    expires_at: Option<String>,
    /// Makes a retry safe (a fresh one by default).
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Arguments of `keel app revoke-key`.
#[derive(Debug, clap::Args)]
pub struct RevokeKeyArgs {
    /// The app.
    #[arg(long)]
    app: String,
    /// The key.
    #[arg(long)]
    key: String,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Arguments of `keel app disable` and `keel app enable`.
#[derive(Debug, clap::Args)]
pub struct AppArgs {
    /// The app.
    #[arg(long)]
    app: String,
    #[command(flatten)]
    db: MigrationDbArgs,
}

/// Runs a `keel app` subcommand and prints its result as JSON.
pub async fn run(command: AppCommand) -> Result<(), CliError> {
    let out = match command {
        AppCommand::Register(RegisterArgs {
            name,
            environment,
            redirect_uris,
            post_logout_redirect_uris,
            confidential,
            idempotency_key,
            db,
        }) => {
            let client_type = if confidential { ClientType::Confidential } else { ClientType::Public };
            let client = ClientSettings { redirect_uris, post_logout_redirect_uris, client_type };
            let done = commands(&db).await?.register(&context(idempotency_key), &name, &environment, client).await?;
            serde_json::to_value(&done)?
        }
        AppCommand::RotateClientSecret(RotateArgs { app_id: app, idempotency_key, db }) => {
            let id = app_id(&app)?;
            let done = commands(&db).await?.rotate_client_secret(&context(idempotency_key), &id).await?;
            json!({ "app_id": id.as_str(), "client_secret": done.client_secret, "position": done.position })
        }
        AppCommand::IssueKey(IssueKeyArgs { app, scopes, expires_at, idempotency_key, db }) => {
            let id = app_id(&app)?;
            let expires_at = expires_at
                .map(|raw| chrono::DateTime::parse_from_rfc3339(&raw).map(|t| t.with_timezone(&chrono::Utc)))
                .transpose()
                .map_err(|_| CliError::BadExpiresAt)?;
            let key = commands(&db).await?.issue_key(&context(idempotency_key), &id, &scopes, expires_at).await?;
            serde_json::to_value(&key)?
        }
        AppCommand::RevokeKey(RevokeKeyArgs { app, key, db }) => {
            let id = app_id(&app)?;
            let key_id: ApiKeyId = key.trim().parse()?;
            let ctx = context(None);
            let change = Change::RevokeKey { key_id, at: ctx.received_at };
            let done = commands(&db).await?.execute(&ctx, &id, change).await?;
            json!({ "app_id": id.as_str(), "key_id": key.trim(), "position": done.position })
        }
        AppCommand::Disable(AppArgs { app, db }) => simple(&app, &db, Change::Disable).await?,
        AppCommand::Enable(AppArgs { app, db }) => simple(&app, &db, Change::Enable).await?,
    };
    println!("{out}");
    Ok(())
}

/// The command context of the CLI, with `key` (a fresh one by default) as idempotency key.
fn context(key: Option<String>) -> CommandContext {
    let key = key.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    CommandContext::new(Actor::system("keel-cli"), uuid::Uuid::now_v7().to_string(), key)
}

/// Parses an app id given on the command line.
fn app_id(raw: &str) -> Result<AppId, CliError> {
    Ok(raw.trim().parse::<AppId>()?)
}

/// The app commands, as the migration role.
async fn commands(db: &MigrationDbArgs) -> Result<AppCommands, CliError> {
    let kek = db.kek.open()?;
    Ok(AppCommands::new(db.connect().await?, kek.as_ref()).await?)
}

/// Runs `change` (which needs no arguments) on `app`; returns {"app_id", "position"}.
async fn simple(app: &str, db: &MigrationDbArgs, change: Change) -> Result<Value, CliError> {
    let id = app_id(app)?;
    let done = commands(db).await?.execute(&context(None), &id, change).await?;
    Ok(json!({ "app_id": id.as_str(), "position": done.position }))
}
