-- kinetic's state on PostgreSQL (scale-out: many processes share it). Times are Unix milliseconds.

-- Applied resources (Broker, Trigger, Service, sources): the JSON the API crate serializes.
CREATE TABLE resources (
    kind        TEXT   NOT NULL,
    namespace   TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    uid         TEXT   NOT NULL UNIQUE,
    generation  BIGINT NOT NULL,
    body        JSONB  NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);

-- The last position handed out in each broker's log. Positions are never reused, even after every
-- event of a broker was pruned, so a cursor's position stays meaningful. Appends to one broker
-- serialize on an advisory lock and on this row, so positions are assigned in commit order.
CREATE TABLE log_heads (
    broker  TEXT   PRIMARY KEY,
    head    BIGINT NOT NULL
);

CREATE TABLE events (
    broker       TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    payload      BYTEA  NOT NULL,
    accepted_at  BIGINT NOT NULL,
    PRIMARY KEY (broker, seq)
);

-- The dedupe window: when each (broker, source, id) was last accepted.
CREATE TABLE dedupe (
    broker       TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    id           TEXT   NOT NULL,
    accepted_at  BIGINT NOT NULL,
    PRIMARY KEY (broker, source, id)
);
CREATE INDEX dedupe_accepted_at ON dedupe (accepted_at);

-- One cursor per trigger into its broker's log, leased by one process at a time.
CREATE TABLE cursors (
    trigger_uid        TEXT   PRIMARY KEY,
    trigger_namespace  TEXT   NOT NULL,
    trigger_name       TEXT   NOT NULL,
    broker             TEXT   NOT NULL,
    position           BIGINT NOT NULL,
    owner              TEXT,
    lease_until        BIGINT
);
CREATE INDEX cursors_broker ON cursors (broker, position);

CREATE TABLE dead_letters (
    id                 UUID    PRIMARY KEY,
    trigger_uid        TEXT    NOT NULL,
    trigger_namespace  TEXT    NOT NULL,
    trigger_name       TEXT    NOT NULL,
    broker             TEXT    NOT NULL,
    event_seq          BIGINT  NOT NULL,
    lane               TEXT,
    payload            BYTEA   NOT NULL,
    attempts           INTEGER NOT NULL,
    last_status        INTEGER,
    last_error         TEXT,
    last_response      BYTEA,
    first_attempt_at   BIGINT,
    dead_at            BIGINT  NOT NULL,
    sink_state         TEXT    NOT NULL
        CHECK (sink_state IN ('none', 'pending', 'delivered', 'failed')),
    sink_error         TEXT,
    replayed_at        BIGINT,
    replay_count       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_trigger ON dead_letters (trigger_namespace, trigger_name, dead_at);
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at, id);

-- Events that need another attempt, wait behind an ordered lane, or go to the dead-letter sink.
-- `id` only grows: it is the order of rows within a lane.
CREATE TABLE deliveries (
    id                 BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger_uid        TEXT    NOT NULL,
    trigger_namespace  TEXT    NOT NULL,
    trigger_name       TEXT    NOT NULL,
    broker             TEXT    NOT NULL,
    event_seq          BIGINT  NOT NULL,
    payload            BYTEA   NOT NULL,
    lane               TEXT,
    phase              TEXT    NOT NULL CHECK (phase IN ('subscriber', 'dead_letter_sink')),
    attempts           INTEGER NOT NULL,
    next_attempt_at    BIGINT  NOT NULL,
    first_attempt_at   BIGINT,
    last_status        INTEGER,
    last_error         TEXT,
    dead_letter_id     UUID    REFERENCES dead_letters (id),
    owner              TEXT,
    lease_until        BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at);
CREATE INDEX deliveries_lane ON deliveries (trigger_uid, lane, phase, id);
