-- Managed apps as OpenID Connect clients (ADR 0025). `oidc_clients` is folded from app
-- events by `oidc_clients.rs` in the transaction that appends them; apps registered
-- before it have no row and are public clients without URIs. `oidc_client_secrets`
-- holds SHA-256 hashes of client secrets, written before the event that names them
-- by id; a row no app references (`oidc_clients.secret_id`) is never used. Secrets
-- and hashes never enter the event log.
CREATE TABLE IF NOT EXISTS oidc_clients (
    app_id                    text        PRIMARY KEY REFERENCES auth_apps (app_id),
    confidential              boolean     NOT NULL DEFAULT false,
    redirect_uris             text[]      NOT NULL DEFAULT '{}',
    post_logout_redirect_uris text[]      NOT NULL DEFAULT '{}',
    secret_id                 uuid,
    updated_at                timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS oidc_client_secrets (
    secret_id  uuid        PRIMARY KEY,
    app_id     text        NOT NULL,
    hash       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS oidc_client_secrets_app ON oidc_client_secrets (app_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON oidc_clients, oidc_client_secrets TO {runtime_role};
