-- The tenant registry: one row per tenant, its current lifecycle state.
CREATE TABLE {schema}.tenants (
    tenant_id             text        PRIMARY KEY,
    name                  text,
    domain                text,
    plan                  text        NOT NULL,
    industry              text,
    region                text,
    status                text        NOT NULL,
    suspended_reason      text,
    deletion_requested_at timestamptz,
    purge_after           timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    version               bigint      NOT NULL
);
CREATE INDEX ON {schema}.tenants (status, tenant_id);
CREATE INDEX ON {schema}.tenants (plan, tenant_id);
CREATE INDEX ON {schema}.tenants (purge_after) WHERE status = 'pending_deletion';
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.tenants TO {runtime_role};

-- A tenant scope reads its own row; only the platform scope (projectors) writes.
ALTER TABLE {schema}.tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.tenants FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}.tenants FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
