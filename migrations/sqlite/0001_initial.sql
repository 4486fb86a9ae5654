-- kinetic's state on SQLite (the embedded default). Times are Unix milliseconds.

-- Applied resources (Broker, Trigger, Service, sources): the JSON the API crate serializes.
CREATE TABLE resources (
    kind        TEXT    NOT NULL,
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    uid         TEXT    NOT NULL UNIQUE,
    generation  INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;

-- The last position handed out in each broker's log. Positions are never reused, even after every
-- event of a broker was pruned, so a cursor's position stays meaningful.
CREATE TABLE log_heads (
    broker  TEXT    PRIMARY KEY,
    head    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    broker       TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    payload      BLOB    NOT NULL,
    accepted_at  INTEGER NOT NULL,
    PRIMARY KEY (broker, seq)
);

-- The dedupe window: when each (broker, source, id) was last accepted.
CREATE TABLE dedupe (
    broker       TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    accepted_at  INTEGER NOT NULL,
    PRIMARY KEY (broker, source, id)
) WITHOUT ROWID;
CREATE INDEX dedupe_accepted_at ON dedupe (accepted_at);

-- One cursor per trigger into its broker's log, leased by one process at a time.
CREATE TABLE cursors (
    trigger_uid        TEXT    PRIMARY KEY,
    trigger_namespace  TEXT    NOT NULL,
    trigger_name       TEXT    NOT NULL,
    broker             TEXT    NOT NULL,
    position           INTEGER NOT NULL,
    owner              TEXT,
    lease_until        INTEGER
) WITHOUT ROWID;
CREATE INDEX cursors_broker ON cursors (broker, position);

CREATE TABLE dead_letters (
    id                 TEXT    PRIMARY KEY,
    trigger_uid        TEXT    NOT NULL,
    trigger_namespace  TEXT    NOT NULL,
    trigger_name       TEXT    NOT NULL,
    broker             TEXT    NOT NULL,
    event_seq          INTEGER NOT NULL,
    lane               TEXT,
    payload            BLOB    NOT NULL,
    attempts           INTEGER NOT NULL,
    last_status        INTEGER,
    last_error         TEXT,
    last_response      BLOB,
    first_attempt_at   INTEGER,
    dead_at            INTEGER NOT NULL,
    sink_state         TEXT    NOT NULL
        CHECK (sink_state IN ('none', 'pending', 'delivered', 'failed')),
    sink_error         TEXT,
    replayed_at        INTEGER,
    replay_count       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_trigger ON dead_letters (trigger_namespace, trigger_name, dead_at);
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at, id);

-- Events that need another attempt, wait behind an ordered lane, or go to the dead-letter sink.
-- `id` only grows (AUTOINCREMENT): it is the order of rows within a lane.
CREATE TABLE deliveries (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_uid        TEXT    NOT NULL,
    trigger_namespace  TEXT    NOT NULL,
    trigger_name       TEXT    NOT NULL,
    broker             TEXT    NOT NULL,
    event_seq          INTEGER NOT NULL,
    payload            BLOB    NOT NULL,
    lane               TEXT,
    phase              TEXT    NOT NULL CHECK (phase IN ('subscriber', 'dead_letter_sink')),
    attempts           INTEGER NOT NULL,
    next_attempt_at    INTEGER NOT NULL,
    first_attempt_at   INTEGER,
    last_status        INTEGER,
    last_error         TEXT,
    dead_letter_id     TEXT    REFERENCES dead_letters (id),
    owner              TEXT,
    lease_until        INTEGER
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at);
CREATE INDEX deliveries_lane ON deliveries (trigger_uid, lane, phase, id);
