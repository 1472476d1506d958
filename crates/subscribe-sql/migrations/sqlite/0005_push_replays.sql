-- Event pushes read (SqlReplayCache): one row per push, keyed by its ReplayKey
-- (`{appid}:{signature in lower-case hex}`, nothing secret: the signature is in every push's
-- query), kept until expires_at (Unix seconds on the application's clock, the clock that checks
-- a push's freshness): the last second at which any spelling of the push can pass. A row whose
-- expires_at has passed is a new push again: the next sight takes it over in the same statement.
-- (SQLite compares TEXT byte for byte, as PostgreSQL's "C" collation does.)
CREATE TABLE wxsub_push_replays (
    key TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Rows by end: the purge (at most once a minute per instance) deletes the ended ones through
-- it, never scanning the table.
CREATE INDEX wxsub_push_replays_expires ON wxsub_push_replays (expires_at);
