//! `keel keys`: the key-encryption key (ADR 0028) and the access-token signing keys.

use std::time::Duration;

use serde_json::json;

use keel_commands::kek::KekError;
use keel_commands::wrapped_secrets::{self, WRAPPED_COLUMNS};

use super::CliError;
use super::args::MigrationDbArgs;

/// The subcommands of `keel keys`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Rotate keys (prints JSON). The key-encryption key: a new version becomes current,
    /// every stored secret is re-wrapped under it while running gateways keep working, and
    /// retired versions nothing names are destroyed. The signing key: a new key is
    /// published in the JWKS at once and signs after --publish-ahead; the older keys keep
    /// verifying for --retire-after more, then leave the JWKS. Both by default.
    Rotate(RotateArgs),
    /// Check the key-encryption key: wrap and unwrap a random value, refuse it under other
    /// associated data, and count the stored secrets under each version (prints JSON).
    Check(MigrationDbArgs),
}

/// Which keys `keel keys rotate` rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// The key-encryption key alone.
    Kek,
    /// The access-token signing key alone.
    SigningKey,
}

/// Arguments of `keel keys rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// Rotate only this key (default: both).
    #[arg(long, value_enum)]
    only: Option<Only>,
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
        KeysCommand::Rotate(RotateArgs { only, publish_ahead, retire_after, db }) => {
            let kek = db.kek.open()?;
            let pool = db.connect().await?;
            let mut out = json!({});
            if only != Some(Only::SigningKey) {
                let rotation = wrapped_secrets::rotate(&pool, kek.as_ref()).await?;
                out["kek"] = serde_json::to_value(rotation).unwrap_or_default();
            }
            if only != Some(Only::Kek) {
                let kid = crate::auth::tokens::rotate_keys(
                    &pool,
                    kek.as_ref(),
                    Duration::from_secs(publish_ahead),
                    Duration::from_secs(retire_after),
                )
                .await?;
                out["signing_key"] = json!({ "kid": kid });
            }
            println!("{out}");
            Ok(())
        }
        KeysCommand::Check(db) => {
            let kek = db.kek.open()?;
            let pool = db.connect().await?;
            let value = keel_commands::secret::random_bytes();
            let wrapped = kek.wrap(&value, b"keel-keys-check:1")?;
            if kek.unwrap(&wrapped.key_id, &wrapped.bytes, b"keel-keys-check:1")? != value {
                return Err(CliError::KekCheck("an unwrapped value differs from what was wrapped"));
            }
            if wrapped.bytes.windows(value.len()).any(|w| w == value) {
                return Err(CliError::KekCheck("a wrapped value holds its plaintext"));
            }
            match kek.unwrap(&wrapped.key_id, &wrapped.bytes, b"keel-keys-check:2") {
                Err(KekError::Unwrap) => {}
                _ => return Err(CliError::KekCheck("a value unwrapped under other associated data")),
            }
            let mut stored = serde_json::Map::new();
            for column in WRAPPED_COLUMNS {
                let counts: Vec<(Option<String>, i64)> = sqlx::query_as(&format!(
                    "SELECT kek_id, count(*) FROM {} GROUP BY kek_id ORDER BY kek_id",
                    column.table
                ))
                .fetch_all(&pool)
                .await?;
                let counts: serde_json::Map<String, serde_json::Value> = counts
                    .into_iter()
                    .map(|(kek_id, n)| (kek_id.unwrap_or_else(|| "plaintext".into()), json!(n)))
                    .collect();
                stored.insert(column.table.to_string(), counts.into());
            }
            let out = json!({
                "current": kek.current()?,
                "versions": kek.versions()?,
                "round_trip": true,
                "other_associated_data_refused": true,
                "stored": stored,
            });
            println!("{out}");
            Ok(())
        }
    }
}
