-- Routing: every routing snapshot version, and per tenant its deployment target and
-- the last fleet health report. Drift (registry vs report) is computed when read.
CREATE TABLE {schema}.snapshots (
    version        bigint      PRIMARY KEY,
    entries        jsonb       NOT NULL,
    checksum       text        NOT NULL,
    generated_at   timestamptz NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('published', 'rolled_back')),
    rolled_back_to bigint,
    tenant_id      text,       -- always NULL: a snapshot spans all tenants
    position       bigint      NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.snapshots TO {runtime_role};

-- Snapshots are platform-wide routing data that edge routers read whole, not tenant
-- data: every scope may read them (the gateway's `authorize` decides who reaches them).
ALTER TABLE {schema}.snapshots ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.snapshots FOR SELECT USING (true);
CREATE POLICY platform_writes ON {schema}.snapshots FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');

CREATE TABLE {schema}.deployments (
    tenant_id         text        PRIMARY KEY,
    environment       text,                 -- the registry's target: NULL until one is set
    cluster           text,
    namespace         text,
    routing_target    text,
    state             text,
    updated_at        timestamptz,          -- when the target was last set
    last_report_at    timestamptz,          -- the last fleet report: NULL until one arrives
    last_report_agent text,
    observed_target   text,
    observed_state    text,
    healthy           boolean,
    position          bigint      NOT NULL
);
CREATE INDEX ON {schema}.deployments (last_report_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.deployments TO {runtime_role};

-- A tenant scope reads its own row; only the platform scope (projectors) writes.
ALTER TABLE {schema}.deployments ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.deployments FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}.deployments FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
