-- The dedupe window as an append-only log: keys in the order they were stamped, so a commit writes
-- the table's last page or two instead of one random B-tree page per event. kinetic looks keys up
-- in an index it builds in memory from this table (store/src/sqlite/dedupe.rs).
CREATE TABLE dedupe_log (
    seq          INTEGER PRIMARY KEY,
    broker       TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    accepted_at  INTEGER NOT NULL
);
INSERT INTO dedupe_log (broker, source, id, accepted_at)
    SELECT broker, source, id, accepted_at FROM dedupe ORDER BY accepted_at;
DROP TABLE dedupe;
