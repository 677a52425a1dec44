//! gRPC `keel.v1.AppService`: managed apps, their API keys and their OpenID Connect
//! client settings (ADR 0025).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use keel_commands::apps::{AppCommands, AppUpdate};
use keel_domain::access::Action;
use keel_domain::app::{AppCommand, ClientSettings, ClientType};
use keel_domain::ids::{ApiKeyId, AppId};

use super::fields::rfc3339;
use super::status::{coded, invalid_argument, status};
use crate::auth::Authenticator;
use crate::proto::app_service_server::AppService;
use crate::proto::{
    ApiKeyInfo, AppCommandResponse, AppInfo, AppRequest, IssueApiKeyRequest, IssueApiKeyResponse, ListApiKeysRequest,
    ListApiKeysResponse, ListAppsRequest, ListAppsResponse, RegisterAppRequest, RegisterAppResponse,
    RevokeApiKeyRequest, RotateClientSecretResponse, UpdateAppRequest, UpdateAppResponse,
};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

/// The managed-app command API.
pub struct AppApi {
    commands: Arc<AppCommands>,
    auth: Arc<Authenticator>,
}

impl AppApi {
    /// The API over `commands`, authenticating with `auth`.
    pub fn new(commands: Arc<AppCommands>, auth: Arc<Authenticator>) -> Self {
        Self { commands, auth }
    }

    async fn execute(
        &self,
        rpc: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        raw_app_id: &str,
        idempotency_key: &str,
        command: impl FnOnce(DateTime<Utc>) -> AppCommand,
    ) -> Result<Response<AppCommandResponse>, Status> {
        let id = app_id(raw_app_id)?;
        super::run(&self.auth, rpc, metadata, Action::ManageApps, None, idempotency_key, |ctx, _| async move {
            let command = command(ctx.received_at);
            let done = self.commands.execute(&ctx, &id, command).await.map_err(|e| status(&e))?;
            self.refresh_keys().await;
            Ok(AppCommandResponse { position: done.position })
        })
        .await
    }

    /// Puts an app change in force on this gateway at once; the others poll within 200 ms.
    async fn refresh_keys(&self) {
        if let Err(e) = self.auth.api_keys().refresh().await {
            tracing::warn!(error = %e, "API key index refresh failed");
        }
    }
}

/// The client type a `confidential` flag asks for.
fn client_type(confidential: bool) -> ClientType {
    if confidential { ClientType::Confidential } else { ClientType::Public }
}

/// Parses an app id argument.
fn app_id(raw: &str) -> Result<AppId, Status> {
    raw.trim().parse().map_err(|_| invalid_argument("invalid_app_id", "app_id is not an app id (app_…)"))
}

fn optional_time(raw: &str, field: &str) -> Result<Option<DateTime<Utc>>, Status> {
    match raw.trim() {
        "" => Ok(None),
        raw => DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| invalid_argument(&format!("invalid_{field}"), &format!("{field} must be an RFC 3339 time"))),
    }
}

#[tonic::async_trait]
impl AppService for AppApi {
    async fn register_app(
        &self,
        request: Request<RegisterAppRequest>,
    ) -> Result<Response<RegisterAppResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        super::run(&self.auth, "RegisterApp", &metadata, Action::ManageApps, None, &req.idempotency_key, {
            |ctx, _| async move {
                let client = ClientSettings {
                    redirect_uris: req.redirect_uris,
                    post_logout_redirect_uris: req.post_logout_redirect_uris,
                    client_type: client_type(req.confidential),
                };
                let done =
                    self.commands.register(&ctx, &req.name, &req.environment, client).await.map_err(|e| status(&e))?;
                Ok(RegisterAppResponse {
                    app_id: done.app_id,
                    position: done.position,
                    client_secret: done.client_secret.unwrap_or_default(),
                })
            }
        })
        .await
    }

    async fn update_app(&self, request: Request<UpdateAppRequest>) -> Result<Response<UpdateAppResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let id = app_id(&req.app_id)?;
        let update = AppUpdate {
            name: req.name,
            environment: req.environment,
            redirect_uris: req.redirect_uris,
            post_logout_redirect_uris: req.post_logout_redirect_uris,
            client_type: req.confidential.map(client_type),
        };
        super::run(&self.auth, "UpdateApp", &metadata, Action::ManageApps, None, &req.idempotency_key, {
            |ctx, _| async move {
                let done = self.commands.update(&ctx, &id, update).await.map_err(|e| status(&e))?;
                self.refresh_keys().await;
                Ok(UpdateAppResponse { position: done.position, client_secret: done.client_secret.unwrap_or_default() })
            }
        })
        .await
    }

    async fn rotate_client_secret(
        &self,
        request: Request<AppRequest>,
    ) -> Result<Response<RotateClientSecretResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let id = app_id(&req.app_id)?;
        super::run(&self.auth, "RotateClientSecret", &metadata, Action::ManageApps, None, &req.idempotency_key, {
            |ctx, _| async move {
                let done = self.commands.rotate_client_secret(&ctx, &id).await.map_err(|e| status(&e))?;
                Ok(RotateClientSecretResponse {
                    client_secret: done.client_secret.unwrap_or_default(),
                    position: done.position,
                })
            }
        })
        .await
    }

    async fn disable_app(&self, request: Request<AppRequest>) -> Result<Response<AppCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        self.execute("DisableApp", &metadata, &req.app_id, &req.idempotency_key, |_| AppCommand::Disable).await
    }

    async fn enable_app(&self, request: Request<AppRequest>) -> Result<Response<AppCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        self.execute("EnableApp", &metadata, &req.app_id, &req.idempotency_key, |_| AppCommand::Enable).await
    }

    async fn issue_api_key(
        &self,
        request: Request<IssueApiKeyRequest>,
    ) -> Result<Response<IssueApiKeyResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let id = app_id(&req.app_id)?;
        let expires_at = optional_time(&req.expires_at, "expires_at")?;
        super::run(&self.auth, "IssueApiKey", &metadata, Action::ManageApps, None, &req.idempotency_key, {
            |ctx, _| async move {
                let key = self.commands.issue_key(&ctx, &id, &req.scopes, expires_at).await.map_err(|e| status(&e))?;
                if let Err(e) = self.auth.api_keys().refresh().await {
                    tracing::warn!(error = %e, "API key index refresh failed");
                }
                Ok(IssueApiKeyResponse {
                    key_id: key.key_id,
                    secret: key.secret,
                    prefix: key.prefix,
                    scopes: key.scopes,
                    expires_at: key.expires_at.map(rfc3339).unwrap_or_default(),
                    position: key.position,
                })
            }
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<AppCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let key_id: ApiKeyId = req
            .key_id
            .trim()
            .parse()
            .map_err(|_| invalid_argument("invalid_key_id", "key_id is not a key id (key_…)"))?;
        let command = |at| AppCommand::RevokeKey { key_id, at };
        self.execute("RevokeApiKey", &metadata, &req.app_id, &req.idempotency_key, command).await
    }

    async fn list_apps(&self, request: Request<ListAppsRequest>) -> Result<Response<ListAppsResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let after = match req.page_token.trim() {
            "" => None,
            raw => Some(
                raw.parse::<AppId>()
                    .map_err(|_| invalid_argument("invalid_page_token", "page_token is malformed"))?
                    .to_string(),
            ),
        };
        let limit = i64::from(if req.page_size == 0 { DEFAULT_PAGE } else { req.page_size.min(MAX_PAGE) });
        super::run(&self.auth, "ListApps", &metadata, Action::ReadApps, None, "", |_, _| async move {
            let mut rows = self.commands.list_apps(after.as_deref(), limit + 1).await.map_err(|e| status(&e))?;
            let next = if rows.len() as i64 > limit {
                rows.truncate(limit as usize);
                rows.last().map(|r| r.app_id.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            let apps = rows
                .into_iter()
                .map(|r| AppInfo {
                    app_id: r.app_id,
                    name: r.name,
                    environment: r.environment,
                    disabled: r.disabled,
                    registered_at: rfc3339(r.registered_at),
                    client_type: client_type(r.confidential).as_str().to_string(),
                    redirect_uris: r.redirect_uris,
                    post_logout_redirect_uris: r.post_logout_redirect_uris,
                })
                .collect();
            Ok(ListAppsResponse { apps, next_page_token: next })
        })
        .await
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let id = app_id(&req.app_id)?;
        super::run(&self.auth, "ListApiKeys", &metadata, Action::ReadApps, None, "", |_, _| async move {
            if self.commands.app(&id).await.map_err(|e| status(&e))?.is_none() {
                return Err(coded(tonic::Code::NotFound, "app_not_found", "app not found"));
            }
            let now = Utc::now();
            let keys = self
                .commands
                .list_keys(&id)
                .await
                .map_err(|e| status(&e))?
                .into_iter()
                .map(|k| ApiKeyInfo {
                    active: k.revoked_at.is_none() && k.expires_at.is_none_or(|end| now < end),
                    key_id: k.key_id,
                    prefix: k.prefix,
                    scopes: k.scopes,
                    expires_at: k.expires_at.map(rfc3339).unwrap_or_default(),
                    issued_at: rfc3339(k.issued_at),
                    revoked_at: k.revoked_at.map(rfc3339).unwrap_or_default(),
                })
                .collect();
            Ok(ListApiKeysResponse { keys })
        })
        .await
    }
}
