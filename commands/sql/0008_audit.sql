-- The audit trail (ADR 0014). Records are `audit.recorded` events in `events`
-- (aggregate type `audit`, aggregate id = chain, sequence = place in the chain), so
-- the event store's primary key keeps every chain gapless and single-valued.
--
-- Each chain's head, locked while a record is appended: the next place and the hash
-- the next record links to. A head moved back cannot rewrite history: the next
-- append would collide with the stored record at that place.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    chain text   PRIMARY KEY,
    seq   bigint NOT NULL,
    hash  text   NOT NULL
);

-- The ids of the records apps sent, so that a retry is recorded once.
CREATE TABLE IF NOT EXISTS audit_app_events (
    app_id    text NOT NULL,
    event_id  text NOT NULL,
    record_id uuid NOT NULL,
    PRIMARY KEY (app_id, event_id)
);

-- Ed25519 keys that sign checkpoints; the public halves are published.
CREATE TABLE IF NOT EXISTS audit_signing_keys (
    key_id        text        PRIMARY KEY,
    secret        bytea       NOT NULL,
    public_key    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- What the last checkpoint signed, per chain (to sign only the chains that moved).
CREATE TABLE IF NOT EXISTS audit_checkpointed (
    chain text   PRIMARY KEY,
    seq   bigint NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON audit_chain_heads, audit_app_events, audit_checkpointed TO {runtime_role};
GRANT SELECT, INSERT ON audit_signing_keys TO {runtime_role};
