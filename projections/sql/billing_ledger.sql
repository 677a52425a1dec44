-- The billing ledger (ADR 0013): every accepted usage event, and totals per tenant ×
-- event type × hour and day (UTC buckets of the usage's own timestamp).
-- Retention: usage is kept at least 5 years after it was recorded (`retain_until`,
-- CON-DATA-003); the purge job that honours it comes later.
CREATE TABLE {schema}.usage_events (
    tenant_id     text        NOT NULL,
    app_id        text        NOT NULL,
    event_id      text        NOT NULL,
    event_type    text        NOT NULL,
    quantity      bigint      NOT NULL,
    occurred_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    late          boolean     NOT NULL,
    tenant_status text        NOT NULL,
    properties    jsonb       NOT NULL,
    keel_event_id uuid        NOT NULL,
    txid          bigint      NOT NULL,
    position      bigint      NOT NULL,
    retain_until  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, app_id, event_id)
);
-- The export's order and cursor: the log's global order within the tenant.
CREATE UNIQUE INDEX ON {schema}.usage_events (tenant_id, txid, position);

CREATE TABLE {schema}.usage_hourly (
    tenant_id  text        NOT NULL,
    bucket     timestamptz NOT NULL,
    event_type text        NOT NULL,
    quantity   numeric     NOT NULL,
    events     bigint      NOT NULL,
    PRIMARY KEY (tenant_id, bucket, event_type)
);

CREATE TABLE {schema}.usage_daily (
    tenant_id  text        NOT NULL,
    bucket     timestamptz NOT NULL,
    event_type text        NOT NULL,
    quantity   numeric     NOT NULL,
    events     bigint      NOT NULL,
    PRIMARY KEY (tenant_id, bucket, event_type)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.usage_events, {schema}.usage_hourly, {schema}.usage_daily
    TO {runtime_role};

-- A tenant scope reads its own rows; only the platform scope (projectors) writes.
ALTER TABLE {schema}.usage_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.usage_events FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}.usage_events FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
ALTER TABLE {schema}.usage_hourly ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.usage_hourly FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}.usage_hourly FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
ALTER TABLE {schema}.usage_daily ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}.usage_daily FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}.usage_daily FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
