-- Where the relay has got to: the last published (txid, position), and for each
-- Kafka partition the offset of the last message it published there.
CREATE TABLE IF NOT EXISTS relay_checkpoint (
    topic      text        PRIMARY KEY,
    txid       xid8        NOT NULL,
    position   bigint      NOT NULL,
    offsets    jsonb       NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON relay_checkpoint TO {runtime_role};
