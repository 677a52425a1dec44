-- Secrets under the key-encryption key (ADR 0028). Every stored secret is wrapped with
-- AES-256-GCM under a KEK held outside the database; `kek_id` names the KEK version
-- that wrapped it. A row whose `kek_id` is NULL still holds the plaintext of an older
-- deployment: `keel serve` wraps such rows at start-up (in place, idempotently), and no
-- reader accepts them. The columns are renamed so that no older binary can mistake a
-- wrapped value for a key.
ALTER TABLE auth_signing_keys RENAME COLUMN private_pkcs8 TO private_wrapped;
ALTER TABLE auth_signing_keys ADD COLUMN kek_id text;
ALTER TABLE auth_secrets RENAME COLUMN secret TO secret_wrapped;
ALTER TABLE auth_secrets ADD COLUMN kek_id text;
ALTER TABLE audit_signing_keys RENAME COLUMN secret TO secret_wrapped;
ALTER TABLE audit_signing_keys ADD COLUMN kek_id text;

-- The KEK versions Keel has used: when each became current (the yearly rotation reads
-- it) and when it was destroyed (once no row names it).
CREATE TABLE IF NOT EXISTS kek_versions (
    key_id       text        PRIMARY KEY,
    current_from timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);

-- Re-wrapping runs as the runtime role (start-up, yearly rotation).
GRANT UPDATE (secret_wrapped, kek_id) ON audit_signing_keys TO {runtime_role};
GRANT SELECT, INSERT, UPDATE ON kek_versions TO {runtime_role};
