-- The audit trail (ADR 0014): every audit record as written (the exact record and its
-- hash, so that an export can be verified offline), and the signed checkpoints.
-- Retention: at least 7 years (CON-DATA-002); the purge job comes later.
CREATE TABLE {schema}.records (
    chain           text        NOT NULL,
    seq             bigint      NOT NULL,
    id              uuid        NOT NULL UNIQUE,
    occurred_at     timestamptz NOT NULL,
    tenant_id       text,
    actor_type      text        NOT NULL,
    actor_id        text        NOT NULL,
    action          text        NOT NULL,
    resource        text        NOT NULL,
    outcome         text        NOT NULL,
    reason          text,
    record          jsonb       NOT NULL,
    hash            text        NOT NULL,
    position        bigint      NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX ON {schema}.records (id);
CREATE INDEX ON {schema}.records (tenant_id, id);
CREATE INDEX ON {schema}.records (actor_id, id);
CREATE INDEX ON {schema}.records (action, id);

CREATE TABLE {schema}.checkpoints (
    number     bigint      PRIMARY KEY,
    checkpoint jsonb       NOT NULL,
    position   bigint      NOT NULL
);

-- Append-only for the runtime role: no UPDATE, no DELETE.
GRANT SELECT, INSERT ON {schema}.records, {schema}.checkpoints TO {runtime_role};

-- A tenant scope reads its own tenant's records; platform records and checkpoints
-- are for the platform scope (operators, auditors, the projector).
ALTER TABLE {schema}.records ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.records FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_inserts ON {schema}.records FOR INSERT
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
ALTER TABLE {schema}.checkpoints ENABLE ROW LEVEL SECURITY;
-- Checkpoints name every tenant's chain: the platform scope only.
CREATE POLICY platform_reads ON {schema}.checkpoints FOR SELECT
    USING (current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_inserts ON {schema}.checkpoints FOR INSERT
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
