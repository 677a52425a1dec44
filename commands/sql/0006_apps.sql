-- The API-key index (ADR 0010): managed apps and their keys, folded from app events in
-- the transaction that appends them, so that a disable or a revocation is in force the
-- moment its event commits. Gateways hold a copy in memory and reload it whenever
-- `auth_key_state.version` moves (it is bumped in the same transaction).
CREATE TABLE IF NOT EXISTS auth_apps (
    app_id        text        PRIMARY KEY,
    name          text        NOT NULL,
    environment   text        NOT NULL,
    disabled      boolean     NOT NULL DEFAULT false,
    registered_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS auth_api_keys (
    key_id      text        PRIMARY KEY,
    app_id      text        NOT NULL REFERENCES auth_apps (app_id),
    prefix      text        NOT NULL,
    secret_hash text        NOT NULL,
    scopes      text[]      NOT NULL,
    expires_at  timestamptz,
    issued_at   timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS auth_api_keys_app ON auth_api_keys (app_id, issued_at);

CREATE TABLE IF NOT EXISTS auth_key_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint  NOT NULL
);
INSERT INTO auth_key_state (singleton, version) VALUES (true, 0) ON CONFLICT DO NOTHING;

GRANT SELECT, INSERT, UPDATE, DELETE ON auth_apps, auth_api_keys, auth_key_state TO {runtime_role};
