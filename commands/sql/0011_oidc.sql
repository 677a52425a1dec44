-- OpenID Provider (ADR 0024). Kept by commands: the identity index folds the parent
-- of a client's session (opened by an authorization code exchange) into
-- auth_sessions, and ends it with its browser session in the same transaction.
ALTER TABLE auth_sessions ADD COLUMN IF NOT EXISTS parent_session_id text;
ALTER TABLE auth_sessions ADD COLUMN IF NOT EXISTS client_id text;
CREATE INDEX IF NOT EXISTS auth_sessions_parent ON auth_sessions (parent_session_id)
    WHERE parent_session_id IS NOT NULL;

-- Authorization codes: single use, short-lived, stored as SHA-256 digests, bound to
-- the client, the redirect URI, the PKCE challenge and the browser session.
-- `issued_session_id` is the client's session the exchange opened (a replayed code
-- ends it); `replayed_at` marks a code presented again.
CREATE TABLE IF NOT EXISTS auth_codes (
    code_hash         text        PRIMARY KEY,
    client_id         text        NOT NULL,
    redirect_uri      text        NOT NULL,
    code_challenge    text        NOT NULL,
    scope             text        NOT NULL,
    nonce             text,
    session_id        text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    consumed_at       timestamptz,
    issued_session_id text,
    replayed_at       timestamptz
);
CREATE INDEX IF NOT EXISTS auth_codes_expires ON auth_codes (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON auth_codes TO {runtime_role};
