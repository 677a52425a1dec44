-- Billing (ADR 0013). Usage events go straight into `events` (aggregate type
-- `usage`, aggregate id `<app id>:<event id>`): the primary key is the idempotency
-- key, so no table is needed for it.
--
-- The rollup allowlist's write-side index, folded from `rollup_allowlist` events in
-- the transaction that appends them; ingestion reads it to stamp each usage event.
CREATE TABLE IF NOT EXISTS billing_rollup_allowlist (
    event_type text        PRIMARY KEY,
    added_by   text        NOT NULL,
    added_at   timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON billing_rollup_allowlist TO {runtime_role};
