-- The event store: postgres-es writes (aggregate_type .. metadata); Keel adds a
-- global order. `txid` is the writing transaction (assigned at its first write),
-- `position` an identity. Readers follow (txid, position) and read only rows
-- whose txid is below the oldest transaction still open, so an event committed
-- late by a concurrent writer is never skipped (ADR 0001).
CREATE TABLE IF NOT EXISTS events (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 0),
    event_type     text   NOT NULL,
    event_version  text   NOT NULL,
    payload        jsonb  NOT NULL,
    metadata       jsonb  NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    txid           xid8   NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid   GENERATED ALWAYS AS ((metadata ->> 'event_id')::uuid) STORED,
    tenant_id      text   GENERATED ALWAYS AS (metadata ->> 'tenant_id') STORED,
    command_id     uuid   GENERATED ALWAYS AS ((metadata ->> 'command_id')::uuid) STORED,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CHECK (event_id IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_position ON events (position);
CREATE UNIQUE INDEX IF NOT EXISTS events_global_order ON events (txid, position);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_command_id ON events (command_id);
CREATE INDEX IF NOT EXISTS events_tenant ON events (tenant_id, txid, position);

-- Required by postgres-es; Keel does not snapshot yet.
CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Events are immutable: the runtime role may append and read, never change or delete.
GRANT SELECT, INSERT ON events TO {runtime_role};
GRANT SELECT, INSERT, UPDATE ON snapshots TO {runtime_role};
