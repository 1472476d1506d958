-- Grants, their audit trail, per-scope counters, access tokens and the refresh lease.
-- Times are milliseconds since the Unix epoch, taken from the database's clock.

-- One row per (appid, template_id, scene, openid). state: P pending, R reserved (until
-- until_ms), D delivered, V under review, X dropped. version counts the row's transitions and
-- makes every reservation id unique.
CREATE TABLE wxsub_grants (
    id BIGSERIAL PRIMARY KEY,
    appid TEXT NOT NULL,
    template_id TEXT NOT NULL,
    scene INTEGER NOT NULL,
    -- Byte order, as OpenId orders in Rust and paging's cursor expects.
    openid TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('P', 'R', 'D', 'V', 'X')),
    attempts INTEGER NOT NULL DEFAULT 0,
    until_ms BIGINT NOT NULL DEFAULT 0,
    reservation TEXT,
    reason TEXT,
    version BIGINT NOT NULL DEFAULT 0,
    updated_ms BIGINT NOT NULL,
    CONSTRAINT wxsub_grants_key UNIQUE (appid, template_id, scene, openid)
);

-- The grants not yet used, in openid order: what paging and claiming walk.
CREATE INDEX wxsub_grants_open ON wxsub_grants (appid, template_id, scene, openid)
    WHERE state IN ('P', 'R');

-- Reservations by lease end: counting live ones reads only reservations.
-- Grants under review, in openid order.
CREATE INDEX wxsub_grants_review ON wxsub_grants (appid, template_id, scene, openid)
    WHERE state = 'V';

CREATE INDEX wxsub_grants_held ON wxsub_grants (appid, template_id, scene, until_ms)
    WHERE state = 'R';

-- Every transition of every grant: kind (confirmed, reserved, delivered, released, review,
-- dropped, resolved), the state before (prior; NULL for a new grant) and after, and the
-- attempts, reservation and reason that went with it. A confirmation whose prior is D, V or X
-- renewed a used, reviewed or dropped grant: its attempts and reason are the old life's.
CREATE TABLE wxsub_grant_events (
    -- Orders a grant's events; not a key (read through the index below): one index fewer to
    -- write per event.
    id BIGSERIAL NOT NULL,
    -- No foreign key: grants are never deleted, and checking one per event costs every
    -- transition a lookup.
    grant_id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    prior TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reservation TEXT,
    reason TEXT
);
CREATE INDEX wxsub_grant_events_grant ON wxsub_grant_events (grant_id, id);

-- Grants per scope and state (O: open, that is pending or reserved; D, V, X), kept with
-- every transition so a dashboard never counts the grants themselves.
CREATE TABLE wxsub_grant_counts (
    appid TEXT NOT NULL,
    template_id TEXT NOT NULL,
    scene INTEGER NOT NULL,
    state TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (appid, template_id, scene, state)
);

CREATE TABLE wxsub_tokens (
    appid TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- The refresh lease of each app: a holder until until_ms, or (hold_off set, with the reason)
-- a pause nobody refreshes in.
CREATE TABLE wxsub_token_leases (
    appid TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    hold_off TEXT
);
