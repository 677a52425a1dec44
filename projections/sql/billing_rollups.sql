-- Cross-tenant usage rollups for internal operations (ADR 0013; spec 002,
-- "Cross-tenant rollup invariants"): per minute and per hour, totals by usage event
-- type × plan × industry × region. Only usage whose type was on the operator-managed
-- allowlist when it arrived is counted. Breakdowns use the tenant attributes kept in
-- `tenant_dims` (plan, industry, region) as of the usage's place in the log; an
-- unknown industry or region is ''.
CREATE TABLE {schema}.tenant_dims (
    tenant_id text PRIMARY KEY,
    plan      text NOT NULL,
    industry  text NOT NULL,
    region    text NOT NULL
);

CREATE TABLE {schema}.rollup_minute (
    bucket     timestamptz NOT NULL,
    event_type text        NOT NULL,
    plan       text        NOT NULL,
    industry   text        NOT NULL,
    region     text        NOT NULL,
    quantity   numeric     NOT NULL,
    events     bigint      NOT NULL,
    PRIMARY KEY (bucket, event_type, plan, industry, region)
);

CREATE TABLE {schema}.rollup_hour (
    bucket     timestamptz NOT NULL,
    event_type text        NOT NULL,
    plan       text        NOT NULL,
    industry   text        NOT NULL,
    region     text        NOT NULL,
    quantity   numeric     NOT NULL,
    events     bigint      NOT NULL,
    PRIMARY KEY (bucket, event_type, plan, industry, region)
);

GRANT SELECT, INSERT, UPDATE ON {schema}.tenant_dims, {schema}.rollup_minute, {schema}.rollup_hour TO {runtime_role};

-- Denied in the database, not only in code: no tenant scope reads a row of these
-- tables, and neither does the platform scope of auditors. Reads need the platform
-- scope with `keel.platform_role` = operator (or projector, which also writes).
ALTER TABLE {schema}.tenant_dims ENABLE ROW LEVEL SECURITY;
CREATE POLICY internal_ops_reads ON {schema}.tenant_dims FOR SELECT
    USING (current_setting('keel.scope', true) = 'platform'
           AND current_setting('keel.platform_role', true) IN ('operator', 'projector'));
CREATE POLICY projector_inserts ON {schema}.tenant_dims FOR INSERT
    WITH CHECK (current_setting('keel.scope', true) = 'platform' AND current_setting('keel.platform_role', true) = 'projector');
CREATE POLICY projector_updates ON {schema}.tenant_dims FOR UPDATE
    USING (current_setting('keel.scope', true) = 'platform' AND current_setting('keel.platform_role', true) = 'projector');

ALTER TABLE {schema}.rollup_minute ENABLE ROW LEVEL SECURITY;
CREATE POLICY internal_ops_reads ON {schema}.rollup_minute FOR SELECT
    USING (current_setting('keel.scope', true) = 'platform'
           AND current_setting('keel.platform_role', true) IN ('operator', 'projector'));
CREATE POLICY projector_inserts ON {schema}.rollup_minute FOR INSERT
    WITH CHECK (current_setting('keel.scope', true) = 'platform' AND current_setting('keel.platform_role', true) = 'projector');
CREATE POLICY projector_updates ON {schema}.rollup_minute FOR UPDATE
    USING (current_setting('keel.scope', true) = 'platform' AND current_setting('keel.platform_role', true) = 'projector');

ALTER TABLE {schema}.rollup_hour ENABLE ROW LEVEL SECURITY;
CREATE POLICY internal_ops_reads ON {schema}.rollup_hour FOR SELECT
    USING (current_setting('keel.scope', true) = 'platform'
           AND current_setting('keel.platform_role', true) IN ('operator', 'projector'));
CREATE POLICY projector_inserts ON {schema}.rollup_hour FOR INSERT
    WITH CHECK (current_setting('keel.scope', true) = 'platform' AND current_setting('keel.platform_role', true) = 'projector');
CREATE POLICY projector_updates ON {schema}.rollup_hour FOR UPDATE
    USING (current_setting('keel.scope', true) = 'platform' AND current_setting('keel.platform_role', true) = 'projector');
