-- The original suite's table, widened: BIGINT ids and time-zone-aware timestamps.
CREATE TABLE IF NOT EXISTS object (
    id        BIGINT PRIMARY KEY,
    last_seen TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS object_last_seen_idx ON object (last_seen);
