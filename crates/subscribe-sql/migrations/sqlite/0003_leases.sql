-- Claims and settlements rewrite a grant's state, lease end and reservation: every index on
-- those columns is written again with each of them (PostgreSQL's migration drops them to
-- update rows in place; SQLite keeps the same schema). Claims and paging walk the scope's key,
-- filtered; reviews filter the scope; live reservations are counted from wxsub_grant_leases.
DROP INDEX wxsub_grants_open;
DROP INDEX wxsub_grants_review;
DROP INDEX wxsub_grants_held;

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
