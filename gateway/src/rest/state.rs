//! What every REST handler can reach (axum's `State`).

use std::sync::Arc;

use sqlx::PgPool;

use super::flag_cache::FlagCache;
use super::ready::ReadyCheck;
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::metrics::Metrics;

/// What every REST handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Runtime-role pool (row-level security applies).
    pub pool: PgPool,
    /// Credential checks.
    pub auth: Arc<Authenticator>,
    /// Dependency checks for /readyz.
    pub ready: Arc<ReadyCheck>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// User commands (invitations, password resets).
    pub users: Arc<keel_commands::users::UserCommands>,
    /// Sessions (login, refresh, logout).
    pub sessions: Arc<keel_commands::sessions::Sessions>,
    /// Every tenant's flag snapshot, kept current.
    pub flags: Arc<FlagCache>,
    /// The key of OFREP stream tokens (shared by all gateways).
    pub stream_key: Arc<[u8; 32]>,
    /// Deployment and routing commands (fleet health reports).
    pub routing: Arc<keel_commands::routing::RoutingCommands>,
    /// Usage recording.
    pub billing: Arc<keel_commands::billing::BillingCommands>,
    /// Request metrics, and the probes `/metrics` and the system health API read.
    pub metrics: Arc<Metrics>,
    /// Fires when the process stops (ends open event streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The open long-lived streams (per caller and in all).
    pub streams: Arc<crate::limits::streams::StreamSlots>,
    /// Places for requests waiting for `X-Keel-Min-Position`.
    pub position_waiters: Arc<tokio::sync::Semaphore>,
    /// Managed apps as OpenID Connect clients (ADR 0025).
    pub oidc_clients: keel_commands::oidc_clients::OidcClients,
}
