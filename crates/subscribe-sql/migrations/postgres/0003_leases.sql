-- Claims and settlements rewrite a grant's state, lease end and reservation. With no index on
-- those columns and room left in every page, PostgreSQL rewrites the row within its page and
-- touches no index at all (a heap-only tuple update): a dispatch writes about a third as much.
-- So the partial indexes on state go: claims and paging walk the scope's key (which they
-- used anyway, filtered), reviews filter the scope, and live reservations are counted from
-- wxsub_grant_leases below. The fill factor applies to pages written from now on.
DROP INDEX wxsub_grants_open;
DROP INDEX wxsub_grants_review;
DROP INDEX wxsub_grants_held;
ALTER TABLE wxsub_grants SET (fillfactor = 60);

-- Reserved grants per scope and lease end (n of them), kept by every claim and settlement:
-- counting live reservations reads the scope's rows here whose until_ms is still ahead. A
-- claim writes one row for its whole batch; buckets emptied and lapsed are deleted by the
-- scope's next claim.
CREATE TABLE wxsub_grant_leases (
    appid TEXT NOT NULL,
    template_id TEXT NOT NULL,
    scene INTEGER NOT NULL,
    until_ms BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (appid, template_id, scene, until_ms)
);
INSERT INTO wxsub_grant_leases (appid, template_id, scene, until_ms, n)
    SELECT appid, template_id, scene, until_ms, COUNT(*) FROM wxsub_grants WHERE state = 'R'
    GROUP BY appid, template_id, scene, until_ms;
