-- Events the relay could never publish (the broker refused them for good, e.g. as
-- too large): recorded here, loudly logged, and skipped, so one event never stops
-- the relay (ADR 0017). The event itself stays in `events`.
CREATE TABLE IF NOT EXISTS relay_parked (
    topic          text        NOT NULL,
    position       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    size_bytes     bigint      NOT NULL,
    error          text        NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, position)
);
GRANT SELECT, INSERT ON relay_parked TO {runtime_role};
