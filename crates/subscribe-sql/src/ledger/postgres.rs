//! PostgreSQL's fast paths: a claim and a batch of settlements, each one statement.

use subscribe_client::{GrantScope, Reservation, Settlement};

use super::batch::ClaimRow;
use super::rows::{EMPTY_LEASES, TAKEABLE, grant_id, scene, settled, until_ms};

/// [`GrantLedger::reserve_next`] on PostgreSQL: one statement. It locks the first `limit`
/// takeable grants after the cursor that no other transaction holds (`SKIP LOCKED`), reserves
/// them (by primary key: with `IN (…)`, a cached generic plan, no `LIMIT` known, joins
/// against a scan of the whole table), appends their events, moves the lease buckets (the
/// claim's in, lapsed reservations' out, in one order of rows) and deletes the scope's empty
/// lapsed buckets (not one this claim moves).
pub(super) async fn claim_postgres(
    pool: &sqlx::PgPool,
    scope: &GrantScope,
    after: &str,
    limit: i64,
    holder: &str,
    lease_ms: i64,
) -> Result<Vec<ClaimRow>, sqlx::Error> {
    sqlx::query_as(&crate::PG.sql(&format!(
        "WITH s AS MATERIALIZED (SELECT id, state, until_ms FROM wxsub_grants WHERE appid = $1 \
             AND template_id = $2 AND scene = $3 AND openid > $4 AND {TAKEABLE} \
             ORDER BY openid LIMIT $5 FOR UPDATE SKIP LOCKED), \
         c AS (UPDATE wxsub_grants SET state = 'R', attempts = attempts + 1, \
             until_ms = NOW_MS + $6, version = version + 1, updated_ms = NOW_MS, \
             reservation = CAST($7 AS TEXT) || '-' || CAST(id AS TEXT) || '.' || CAST(version + 1 AS TEXT) \
             WHERE id = ANY(ARRAY(SELECT id FROM s)) \
             RETURNING id, openid, attempts, until_ms, reservation, updated_ms), \
         e AS (INSERT INTO wxsub_grant_events \
             (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) \
             SELECT id, updated_ms, 'reserved', NULL, 'R', attempts, reservation, NULL FROM c), \
         l AS (INSERT INTO wxsub_grant_leases (appid, template_id, scene, until_ms, n) \
             SELECT $1, $2, $3, until_ms, SUM(d) FROM (SELECT until_ms, 1 AS d FROM c UNION ALL \
             SELECT until_ms, -1 FROM s WHERE state = 'R') AS x GROUP BY until_ms \
             HAVING SUM(d) <> 0 ORDER BY until_ms \
             ON CONFLICT (appid, template_id, scene, until_ms) \
             DO UPDATE SET n = wxsub_grant_leases.n + excluded.n), \
         z AS ({EMPTY_LEASES} AND until_ms NOT IN (SELECT until_ms FROM s WHERE state = 'R')) \
         SELECT id, openid, attempts, until_ms, reservation, updated_ms FROM c"
    )))
    .bind(scope.appid.as_str())
    .bind(scope.template_id.as_str())
    .bind(scene(scope))
    .bind(after)
    .bind(limit)
    .bind(lease_ms)
    .bind(holder)
    .fetch_all(pool)
    .await
}

/// [`SqlGrantLedger::settle_scope`] on PostgreSQL: one statement (the settlements as arrays,
/// so the statement's text, and its prepared plan, is the same for every batch), which updates
/// the grants, appends their events and moves the counters (in one order of rows, so two batches
/// never deadlock). Returns the openids settled. Grants are found by primary key (from the
/// reservation id) and the reservation alone: a condition on the scope would let the planner
/// walk the scope's reservations instead, once per settlement.
pub(super) async fn settle_postgres(
    pool: &sqlx::PgPool,
    items: &[(&Reservation, &Settlement)],
) -> Result<Vec<String>, sqlx::Error> {
    let mut gids = Vec::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    let mut states = Vec::with_capacity(items.len());
    let mut reasons = Vec::with_capacity(items.len());
    let mut attempts_ = Vec::with_capacity(items.len());
    let mut untils = Vec::with_capacity(items.len());
    for (r, s) in items {
        let (state, _, reason) = settled(s);
        // Not one of ours: it cannot be the grant's current reservation.
        let Some(gid) = grant_id(&r.id) else { continue };
        gids.push(gid);
        ids.push(r.id.as_str());
        states.push(state);
        reasons.push(reason);
        attempts_.push(i32::try_from(r.attempt).unwrap_or(i32::MAX));
        untils.push(until_ms(r));
    }
    sqlx::query_scalar(&crate::PG.sql(
        "WITH v AS (SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int4[], \
             $6::int8[]) AS v (gid, reservation, state, reason, attempt, until)), \
         u AS (UPDATE wxsub_grants AS g SET state = v.state, \
             attempts = CASE WHEN v.state = 'P' THEN 0 ELSE g.attempts END, until_ms = 0, \
             reservation = NULL, reason = v.reason, version = g.version + 1, updated_ms = NOW_MS \
             FROM v WHERE g.id = v.gid AND g.state = 'R' AND g.reservation = v.reservation \
             AND g.until_ms = v.until \
             RETURNING g.id, g.appid, g.template_id, g.scene, g.openid, g.updated_ms, v.state, v.reason, \
             v.reservation, v.attempt, v.until), \
         e AS (INSERT INTO wxsub_grant_events (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) \
             SELECT id, updated_ms, CASE state WHEN 'D' THEN 'delivered' WHEN 'P' THEN 'released' \
             WHEN 'V' THEN 'review' ELSE 'dropped' END, 'R', state, attempt, reservation, reason FROM u), \
         l AS (INSERT INTO wxsub_grant_leases (appid, template_id, scene, until_ms, n) \
             SELECT appid, template_id, scene, until, -COUNT(*) FROM u \
             GROUP BY appid, template_id, scene, until ORDER BY appid, template_id, scene, until \
             ON CONFLICT (appid, template_id, scene, until_ms) \
             DO UPDATE SET n = wxsub_grant_leases.n + excluded.n), \
         n AS (INSERT INTO wxsub_grant_counts (appid, template_id, scene, state, n) \
             SELECT appid, template_id, scene, s, d FROM ( \
             SELECT appid, template_id, scene, 'O' AS s, -COUNT(*) AS d FROM u WHERE state <> 'P' \
             GROUP BY appid, template_id, scene UNION ALL \
             SELECT appid, template_id, scene, state, COUNT(*) FROM u WHERE state <> 'P' \
             GROUP BY appid, template_id, scene, state) AS x \
             WHERE d <> 0 ORDER BY appid, template_id, scene, s \
             ON CONFLICT (appid, template_id, scene, state) DO UPDATE SET n = wxsub_grant_counts.n + excluded.n) \
         SELECT openid FROM u",
    ))
    .bind(gids)
    .bind(ids)
    .bind(states)
    .bind(reasons)
    .bind(attempts_)
    .bind(untils)
    .fetch_all(pool)
    .await
}
