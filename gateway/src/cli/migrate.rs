//! `keel migrate`: creates or upgrades the schema.

use super::CliError;
use super::args::MigrationDbArgs;

/// Applies pending migrations and creates missing read-model schemas.
pub async fn run(db: MigrationDbArgs) -> Result<(), CliError> {
    let pool = db.connect().await?;
    let applied = keel_commands::migrate::run(&pool, keel_commands::migrate::MIGRATIONS, &db.runtime_role).await?;
    for name in &applied {
        println!("applied {name}");
    }
    let created = keel_projections::ensure_schemas(&pool, &db.runtime_role).await.map_err(CliError::ReadModelSchema)?;
    for name in created {
        println!("created read model {name}");
    }
    println!("schema is current");
    Ok(())
}
