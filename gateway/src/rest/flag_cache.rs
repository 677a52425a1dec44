//! Every gateway's in-memory copy of the flag snapshots (ADR 0011). It loads the
//! `flag_snapshots` read model once, then follows the projector's `NOTIFY keel_flags`
//! (sent in the batch's own transaction, so a notice means the row is committed) and
//! recomputes just the tenants named. Each snapshot is kept ready to serve: its ETag,
//! its OFREP bulk `flags` array and its REST body are serialized once per change.
//! SSE subscribers of a tenant are woken only after its new snapshot is in place, so
//! their re-fetch never meets the old ETag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use keel_projections::flag_snapshots::{self, DefinitionRow, FlagSnapshot, TenantFlagsRow};

/// How often the cache checks, besides notices, whether it missed a change. A change
/// it has not seen counts as missed only when it is still unseen at the next check:
/// under a steady flow of changes a check often runs between a commit and its notice,
/// and reloading every tenant then (as it did) cost the gateway a few % of its CPU.
const RESYNC_EVERY: Duration = Duration::from_secs(2);

/// One tenant's snapshot, ready to serve.
#[derive(Debug)]
pub struct Served {
    /// The snapshot.
    pub snapshot: FlagSnapshot,
    /// Its strong ETag (quoted).
    pub etag: String,
    /// The OFREP bulk `flags` array, serialized.
    pub ofrep_flags: Bytes,
    /// `GET /v1/tenants/{id}/flags`, serialized.
    pub rest_body: Bytes,
}

impl Served {
    /// Prepares `snapshot` for serving.
    pub fn new(snapshot: FlagSnapshot) -> Self {
        let flags: Vec<serde_json::Value> = snapshot
            .flags
            .iter()
            .map(|(key, flag)| {
                json!({
                    "key": key,
                    "value": flag.value,
                    "reason": if flag.source == "default" { "DEFAULT" } else { "TARGETING_MATCH" },
                    "variant": flag.source,
                    "metadata": { "source": flag.source, "version": snapshot.version },
                })
            })
            .collect();
        Self {
            etag: format!("\"{}\"", &snapshot.checksum[..32]),
            ofrep_flags: Bytes::from(serde_json::to_vec(&flags).unwrap_or_default()),
            rest_body: Bytes::from(serde_json::to_vec(&snapshot).unwrap_or_default()),
            snapshot,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    definitions: Arc<Vec<DefinitionRow>>,
    rows: HashMap<String, TenantFlagsRow>,
    served: HashMap<String, Arc<Served>>,
    /// The newest position seen in the read model (to detect missed notices).
    high_water: i64,
}

/// The flag snapshots of every tenant, kept current.
#[derive(Debug)]
pub struct FlagCache {
    pool: PgPool,
    state: RwLock<State>,
    subscribers: Mutex<HashMap<String, watch::Sender<String>>>,
}

impl FlagCache {
    /// An empty cache on `pool`; call [`FlagCache::reload`] before serving.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, state: RwLock::new(State::default()), subscribers: Mutex::new(HashMap::new()) }
    }

    /// The tenant's snapshot, if the read model knows the tenant.
    pub fn get(&self, tenant_id: &str) -> Option<Arc<Served>> {
        self.state.read().ok()?.served.get(tenant_id).cloned()
    }

    /// How many tenants are cached.
    pub fn len(&self) -> usize {
        self.state.read().map(|s| s.served.len()).unwrap_or(0)
    }

    /// Whether no tenant is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver woken with the new ETag whenever the tenant's snapshot changes.
    pub fn subscribe(&self, tenant_id: &str) -> watch::Receiver<String> {
        let current = self.get(tenant_id).map(|s| s.etag.clone()).unwrap_or_default();
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|_, tx| tx.receiver_count() > 0);
        subscribers.entry(tenant_id.to_string()).or_insert_with(|| watch::channel(current).0).subscribe()
    }

    /// Reloads everything from the read model.
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let definitions = Arc::new(flag_snapshots::definitions(&self.pool).await?);
        let rows = flag_snapshots::tenants(&self.pool, None).await?;
        let rows: HashMap<String, TenantFlagsRow> = rows.into_iter().map(|r| (r.tenant_id.clone(), r)).collect();
        let changed = self.replace(|state| {
            state.definitions = definitions;
            state.rows = rows;
            None
        });
        self.wake(changed);
        Ok(())
    }

    /// Reloads the definitions and recomputes every tenant.
    async fn reload_definitions(&self) -> Result<(), sqlx::Error> {
        let definitions = Arc::new(flag_snapshots::definitions(&self.pool).await?);
        let changed = self.replace(|state| {
            state.definitions = definitions;
            None
        });
        self.wake(changed);
        Ok(())
    }

    /// Reloads the named tenants.
    async fn reload_tenants(&self, ids: Vec<String>) -> Result<(), sqlx::Error> {
        let rows = flag_snapshots::tenants(&self.pool, Some(&ids)).await?;
        let changed = self.replace(|state| {
            for row in rows {
                state.rows.insert(row.tenant_id.clone(), row);
            }
            Some(ids)
        });
        self.wake(changed);
        Ok(())
    }

    /// Applies `update` to the state and recomputes the tenants it names (all if `None`);
    /// returns the tenants whose ETag changed, with the new ETag.
    fn replace(&self, update: impl FnOnce(&mut State) -> Option<Vec<String>>) -> Vec<(String, String)> {
        let Ok(mut state) = self.state.write() else { return Vec::new() };
        let only = update(&mut state);
        let ids: Vec<String> = match only {
            Some(ids) => ids,
            None => state.rows.keys().cloned().collect(),
        };
        let definitions = state.definitions.clone();
        let mut changed = Vec::new();
        for id in ids {
            let Some(row) = state.rows.get(&id) else { continue };
            let served = Served::new(flag_snapshots::snapshot(row, &definitions));
            let before = state.served.get(&id).map(|s| s.etag.clone());
            if before.as_deref() != Some(served.etag.as_str()) {
                changed.push((id.clone(), served.etag.clone()));
            }
            state.served.insert(id, Arc::new(served));
        }
        state.high_water =
            state.rows.values().map(|r| r.position).chain(definitions.iter().map(|d| d.position)).max().unwrap_or(0);
        changed
    }

    fn wake(&self, changed: Vec<(String, String)>) {
        let subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for (id, etag) in changed {
            if let Some(tx) = subscribers.get(&id) {
                tx.send_replace(etag);
            }
        }
    }

    /// Follows the read model until `shutdown` fires: notices first, and a periodic
    /// check of the newest position in case a notice was missed (a reconnect).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut listener = loop {
            match self.listen().await {
                Ok(listener) => break listener,
                Err(e) => {
                    tracing::warn!(error = %e, "flag cache cannot listen yet");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "flag cache reload failed");
        }
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        let mut unseen_at_last_check = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = resync.tick() => self.resync(&mut unseen_at_last_check).await,
                notice = listener.try_recv() => match notice {
                    Ok(Some(first)) => {
                        let mut payloads = vec![first.payload().to_string()];
                        // Take whatever else has arrived: one reload for a burst.
                        while let Ok(Some(more)) =
                            tokio::time::timeout(Duration::ZERO, listener.try_recv()).await.unwrap_or(Ok(None))
                        {
                            payloads.push(more.payload().to_string());
                        }
                        self.apply_notices(payloads).await;
                    }
                    // The connection dropped: notices may be lost, so reload everything.
                    Ok(None) => {
                        if let Err(e) = self.reload().await {
                            tracing::warn!(error = %e, "flag cache reload failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "flag cache listener failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(flag_snapshots::CHANNEL).await?;
        Ok(listener)
    }

    async fn apply_notices(&self, mut payloads: Vec<String>) {
        payloads.sort();
        payloads.dedup();
        let result = if payloads.iter().any(|p| p == "*") {
            let tenants: Vec<String> = payloads.into_iter().filter(|p| p != "*").collect();
            match self.reload_definitions().await {
                Ok(()) if !tenants.is_empty() => self.reload_tenants(tenants).await,
                other => other,
            }
        } else {
            self.reload_tenants(payloads).await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "flag cache refresh failed; reloading at the next check");
            if let Ok(mut state) = self.state.write() {
                state.high_water = -1;
            }
        }
    }

    /// Reloads everything if a change newer than the cache was already unseen at the
    /// last check (`unseen_at_last_check`: the newest position then, if it was).
    async fn resync(&self, unseen_at_last_check: &mut Option<i64>) {
        let newest = flag_snapshots::newest_position(&self.pool).await;
        let known = self.state.read().map(|s| s.high_water).unwrap_or(-1);
        match newest {
            Ok(newest) if newest <= known => *unseen_at_last_check = None,
            Ok(newest) => match *unseen_at_last_check {
                Some(earlier) if known < earlier => {
                    *unseen_at_last_check = None;
                    if let Err(e) = self.reload().await {
                        tracing::warn!(error = %e, "flag cache reload failed");
                    }
                }
                _ => *unseen_at_last_check = Some(newest),
            },
            Err(e) => tracing::warn!(error = %e, "flag cache check failed"),
        }
    }
}
