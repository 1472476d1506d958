-- Used authorization states (SqlUsedStates): one row per state a confirmation used. used_by
-- names the answer (its AnswerDigest: 32 hex digits of a hash of the state and the openid,
-- never the openid); sealed is 1 once that answer was accepted; uses counts its arrivals (1:
-- the first, more: retries after a lost answer). until_ms is the later of the database's clock
-- when the mark was made plus the lifetime the client gave, and the state's expiry: it is read
-- against the database's clock only, and an application clock behind the database's cannot
-- shorten it (one ahead can only lengthen it). (SQLite compares TEXT
-- byte for byte, as PostgreSQL's "C" collation does.)
CREATE TABLE wxsub_used_states (
    state TEXT PRIMARY KEY,
    used_by TEXT NOT NULL,
    sealed INTEGER NOT NULL DEFAULT 0,
    uses INTEGER NOT NULL DEFAULT 1,
    until_ms BIGINT NOT NULL
);

-- Marks by end: the sweep reads the ended ones, oldest first, a bounded batch at a time,
-- never the whole table.
CREATE INDEX wxsub_used_states_until ON wxsub_used_states (until_ms);
