-- One row per (caller scope, idempotency key): the first request's fingerprint,
-- and once done its response (or its refusal), returned to every retry.
CREATE TABLE IF NOT EXISTS command_idempotency (
    scope          text        NOT NULL,
    key            text        NOT NULL,
    request_hash   text        NOT NULL,
    state          text        NOT NULL CHECK (state IN ('pending', 'done')),
    resource_id    text,
    response       jsonb,
    locked_until   timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS command_idempotency_created ON command_idempotency (created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON command_idempotency TO {runtime_role};
