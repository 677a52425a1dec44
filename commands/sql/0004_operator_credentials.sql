-- Operator credentials. Until identity lands only the bootstrap credential
-- exists; only a SHA-256 hash of the token is kept.
CREATE TABLE IF NOT EXISTS operator_credentials (
    id          text        PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('bootstrap')),
    token_hash  text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS operator_credentials_one_bootstrap
    ON operator_credentials (kind) WHERE kind = 'bootstrap';
GRANT SELECT ON operator_credentials TO {runtime_role};
