-- Flag snapshots: flag definitions (platform-wide) and each tenant's plan, status,
-- own flag values and entitlement overrides. A tenant's snapshot is computed from its
-- row and the definitions (`flag_snapshots::snapshot`); its version is the larger of
-- their positions. Every batch that changes a row sends NOTIFY keel_flags (payload: the
-- tenant id, or '*' for a definition) so that gateways refresh at once.
CREATE TABLE {schema}.flag_definitions (
    key           text        PRIMARY KEY,
    flag_type     text        NOT NULL,
    default_value jsonb       NOT NULL,
    plan_defaults jsonb       NOT NULL,
    description   text        NOT NULL,
    updated_at    timestamptz NOT NULL,
    position      bigint      NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.flag_definitions TO {runtime_role};
-- Definitions are platform configuration, not tenant data: every scope reads them.
ALTER TABLE {schema}.flag_definitions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.flag_definitions FOR SELECT USING (true);
CREATE POLICY platform_writes ON {schema}.flag_definitions FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');

CREATE TABLE {schema}.tenant_flags (
    tenant_id       text        PRIMARY KEY,
    plan            text,
    status          text        NOT NULL,
    plan_changed_by text,
    plan_changed_at timestamptz,
    flag_values     jsonb       NOT NULL,
    overrides       jsonb       NOT NULL,
    updated_at      timestamptz NOT NULL,
    position        bigint      NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.tenant_flags TO {runtime_role};
ALTER TABLE {schema}.tenant_flags ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.tenant_flags FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}.tenant_flags FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
