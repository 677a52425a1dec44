-- Identity's write-side index (ADR 0009). The tables below auth_credentials are
-- kept by `identity_index.rs` inside the very transaction that appends the events
-- they are derived from, so a committed revocation is visible at once and no crash
-- can separate the two. They are rebuildable from the events, except the secrets:
-- credentials (argon2id hashes, referenced from events by id only), signing keys,
-- the refresh-token key and login throttles never enter the event log.

CREATE TABLE IF NOT EXISTS auth_tenants (
    tenant_id text PRIMARY KEY,
    domain    text NOT NULL UNIQUE,
    status    text NOT NULL
);

CREATE TABLE IF NOT EXISTS auth_users (
    user_id               text        PRIMARY KEY,
    tenant_id             text,                 -- NULL for platform users
    email                 text        NOT NULL,
    email_key             text        NOT NULL, -- lowercase, for lookups
    role                  text        NOT NULL,
    status                text        NOT NULL,
    credential_id         uuid,
    invitation_hash       text,
    invitation_expires_at timestamptz,
    reset_hash            text,
    reset_expires_at      timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS auth_users_email ON auth_users (COALESCE(tenant_id, ''), email_key);
CREATE INDEX IF NOT EXISTS auth_users_tenant ON auth_users (tenant_id, user_id);
CREATE INDEX IF NOT EXISTS auth_users_invitation ON auth_users (invitation_hash) WHERE invitation_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS auth_users_reset ON auth_users (reset_hash) WHERE reset_hash IS NOT NULL;

CREATE TABLE IF NOT EXISTS auth_sessions (
    session_id         text        PRIMARY KEY,
    user_id            text        NOT NULL,
    tenant_id          text,
    role               text        NOT NULL,
    opened_at          timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    revoked_at         timestamptz,
    revoke_reason      text,
    refresh_generation bigint      NOT NULL DEFAULT 0,
    refreshed_at       timestamptz
);
CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS auth_sessions_tenant ON auth_sessions (tenant_id) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS auth_sessions_revoked ON auth_sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Password hashes (PHC strings). Written before the event that references them;
-- a row no event references is never used.
CREATE TABLE IF NOT EXISTS auth_credentials (
    credential_id uuid        PRIMARY KEY,
    user_id       text        NOT NULL,
    hash          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Ed25519 signing keys for access tokens; published in the JWKS until retired.
CREATE TABLE IF NOT EXISTS auth_signing_keys (
    kid           text        PRIMARY KEY,
    private_pkcs8 bytea       NOT NULL,
    public_x      text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    signing_from  timestamptz NOT NULL,
    retires_at    timestamptz
);

-- Other server secrets (the refresh-token MAC key).
CREATE TABLE IF NOT EXISTS auth_secrets (
    name       text        PRIMARY KEY,
    secret     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Failed-login counters per account and per client address (hashed subjects).
CREATE TABLE IF NOT EXISTS login_throttle (
    subject         text        PRIMARY KEY,
    failures        integer     NOT NULL,
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz
);
CREATE INDEX IF NOT EXISTS login_throttle_last ON login_throttle (last_failure_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON auth_tenants, auth_users, auth_sessions, auth_credentials,
    auth_signing_keys, auth_secrets, login_throttle TO {runtime_role};

-- Operator accounts replace the bootstrap credential: it can now be retired.
ALTER TABLE operator_credentials ADD COLUMN IF NOT EXISTS retired_reason text;
GRANT UPDATE ON operator_credentials TO {runtime_role};
