//! What both APIs share: the command services, sessions, access tokens, the
//! authenticator with its API-key index, the flag cache and the open streams' slots;
//! with the tasks that keep the tokens, the key index and the cache current.

use std::sync::Arc;

use keel_commands::pools::Pools;

use keel_commands::apps::AppCommands;
use keel_commands::billing::BillingCommands;
use keel_commands::flags::FlagCommands;
use keel_commands::kek::Kek;
use keel_commands::mail::Mailer;
use keel_commands::passwords::Passwords;
use keel_commands::routing::RoutingCommands;
use keel_commands::sessions::Sessions;
use keel_commands::tenants::TenantCommands;
use keel_commands::throttle::ThrottlePolicy;
use keel_commands::users::UserCommands;

use super::error::StartError;
use super::tasks::Tasks;
use crate::auth::Authenticator;
use crate::auth::tokens::TokenService;
use crate::config::Settings;
use crate::limits::streams::StreamSlots;
use crate::rest::flag_cache::FlagCache;

/// The services of one process.
pub struct Services {
    /// User commands.
    pub users: Arc<UserCommands>,
    /// Sessions (login, refresh, logout).
    pub sessions: Arc<Sessions>,
    /// Access tokens.
    pub tokens: Arc<TokenService>,
    /// Tenant commands.
    pub tenants: Arc<TenantCommands>,
    /// Credential checks.
    pub auth: Arc<Authenticator>,
    /// Managed-app commands.
    pub apps: Arc<AppCommands>,
    /// Deployment and routing commands.
    pub routing: Arc<RoutingCommands>,
    /// Flag commands.
    pub flags: Arc<FlagCommands>,
    /// Usage recording and the rollup allowlist.
    pub billing: Arc<BillingCommands>,
    /// Every tenant's flag snapshot, kept current.
    pub flag_cache: Arc<FlagCache>,
    /// The password-hashing threads (users and sessions share them).
    pub passwords: Passwords,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// The open long-lived streams of both APIs (SSE, `IngestEvents`).
    pub streams: Arc<StreamSlots>,
    /// The key-encryption key the stored secrets are wrapped under.
    pub kek: Kek,
}

impl Services {
    /// Builds the services (`public_url` starts the links in e-mails and names the
    /// token issuer) and spawns the tasks that keep them current.
    pub async fn start(
        settings: &Settings,
        pools: &Pools,
        kek: &Kek,
        public_url: &str,
        tasks: &mut Tasks,
    ) -> Result<Self, StartError> {
        let pool = &pools.durable;
        let passwords = Passwords::with_capacity(keel_commands::passwords::cores(), settings.hash_queue_capacity);
        let mailer = Mailer::new(&settings.mail_from, &settings.mail_transport()).map_err(StartError::Mail)?;
        let users = Arc::new(UserCommands::new(pools.clone(), passwords.clone(), Some(mailer.clone()), public_url));
        let sessions = Arc::new(
            Sessions::new(
                pools.clone(),
                kek.as_ref(),
                passwords.clone(),
                chrono::Duration::hours(settings.session_ttl_hours.max(1)),
                ThrottlePolicy::default(),
            )
            .await?,
        );
        let tokens = Arc::new(
            TokenService::new(
                pool.clone(),
                kek.clone(),
                public_url,
                &settings.token_audience,
                chrono::Duration::seconds(settings.access_token_ttl_seconds.clamp(10, 3600)),
            )
            .await?,
        );
        tasks.spawn(tokens.clone().run(tasks.stop.clone()));
        let tenants = Arc::new(TenantCommands::new(pools.clone()).inviting_owners(users.clone()));
        let auth = Arc::new(Authenticator::new(pool.clone(), tokens.clone()));
        tasks.spawn(auth.refusals().clone().run(tasks.stop.clone()));
        let apps = Arc::new(AppCommands::new(pools.clone(), kek.as_ref()).await?);
        auth.api_keys().refresh().await?;
        tasks.spawn(auth.api_keys().clone().run(apps.clone(), tasks.stop.clone()));
        let routing = Arc::new(RoutingCommands::new(pools.clone()));
        let flags = Arc::new(FlagCommands::new(pools.clone()));
        let billing = Arc::new(BillingCommands::new(pools.clone(), settings.usage_policy()));
        let flag_cache = Arc::new(FlagCache::new(pool.clone()));
        flag_cache.reload().await?;
        tasks.spawn(flag_cache.clone().run(tasks.stop.clone()));
        let streams = StreamSlots::new(settings.limits.max_streams, settings.limits.max_streams_per_caller);
        Ok(Self {
            users,
            sessions,
            tokens,
            tenants,
            auth,
            apps,
            routing,
            flags,
            billing,
            flag_cache,
            passwords,
            mailer,
            streams,
            kek: kek.clone(),
        })
    }
}
