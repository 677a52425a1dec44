//! The purge sweeper: purges tenants whose 30-day deletion grace period has ended,
//! and forgets idempotency keys past their retention.

use std::sync::Arc;
use std::time::Duration;

use keel_commands::bus::CommandContext;
use keel_commands::tenants::TenantCommands;
use keel_domain::envelope::Actor;
use keel_domain::ids::TenantId;
use keel_domain::tenant::TenantCommand;
use sqlx::PgPool;

/// Purges due tenants every `every`, until `shutdown` fires.
pub async fn run(
    pool: PgPool,
    commands: Arc<TenantCommands>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = sweep(&pool, &commands).await {
            tracing::warn!(error = %err, "purge sweep failed");
        }
        if let Err(err) = keel_commands::idempotency::purge_expired(&pool).await {
            tracing::warn!(error = %err, "idempotency cleanup failed");
        }
    }
}

/// One sweep; returns how many tenants were purged.
pub async fn sweep(pool: &PgPool, commands: &TenantCommands) -> Result<usize, sqlx::Error> {
    let now = chrono::Utc::now();
    let due = keel_projections::tenant_registry::due_for_purge(pool, now, 100).await?;
    let mut purged = 0;
    for raw in due {
        let Ok(id) = raw.parse::<TenantId>() else { continue };
        let ctx = CommandContext::new(
            Actor::system("purge-sweeper"),
            uuid::Uuid::now_v7().to_string(),
            format!("purge:{id}"),
        );
        match commands.execute(&ctx, &id, TenantCommand::Purge { at: now }).await {
            Ok(_) => purged += 1,
            Err(err) => tracing::warn!(tenant_id = %id, code = %err.code, "purge refused"),
        }
    }
    Ok(purged)
}
