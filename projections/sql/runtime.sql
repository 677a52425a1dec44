-- Tables the projector runtime keeps in every read model's schema, so they are
-- rebuilt and swapped together with the read model itself (ADR 0003).
CREATE SCHEMA {schema};
GRANT USAGE ON SCHEMA {schema} TO {runtime_role};

-- Next Kafka offset to apply, per partition: advanced in the same transaction as the effects.
CREATE TABLE {schema}._offsets (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
GRANT SELECT, INSERT, UPDATE ON {schema}._offsets TO {runtime_role};

-- Per tenant (Kafka key), the global order of the last applied event: anything at
-- or below it is a repeat (e.g. republished by the relay after a crash) and is ignored.
CREATE TABLE {schema}._applied (
    tenant_id text   PRIMARY KEY,
    txid      bigint NOT NULL,
    position  bigint NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON {schema}._applied TO {runtime_role};

-- Dead letters: an event the read model could not apply, and every later event of
-- the same tenant (held back so that tenant's view stays consistent), until retried.
CREATE TABLE {schema}._parked (
    id           bigserial   PRIMARY KEY,
    tenant_id    text        NOT NULL,
    topic        text        NOT NULL,
    partition    int         NOT NULL,
    kafka_offset bigint      NOT NULL,
    event_id     text,
    event_type   text,
    message      bytea       NOT NULL,
    error        text        NOT NULL,
    attempts     int         NOT NULL DEFAULT 0,
    parked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {schema}._parked (tenant_id, id);
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}._parked TO {runtime_role};
GRANT USAGE ON SEQUENCE {schema}._parked_id_seq TO {runtime_role};

ALTER TABLE {schema}._applied ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}._applied FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}._applied FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
ALTER TABLE {schema}._parked ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON {schema}._parked FOR SELECT
    USING (tenant_id = current_setting('keel.tenant_id', true) OR current_setting('keel.scope', true) = 'platform');
CREATE POLICY platform_writes ON {schema}._parked FOR ALL
    USING (current_setting('keel.scope', true) = 'platform')
    WITH CHECK (current_setting('keel.scope', true) = 'platform');
