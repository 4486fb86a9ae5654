-- Progress of sources (a PingSource's last fired tick, a poller's listing state, consumer offsets).
-- Advanced only by compare-and-set on `version`, so processes sharing the database agree on who moved it.
CREATE TABLE checkpoints (
    key         TEXT   PRIMARY KEY,
    value       JSONB  NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
