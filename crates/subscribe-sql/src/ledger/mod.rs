//! [`SqlGrantLedger`]: the type and its [`GrantLedger`] implementation. Beside it: the audit
//! trail (`audit`), the review workflow (`review`), many grants per transaction (`batch`),
//! PostgreSQL's one-statement paths (`postgres`) and what every transition writes (`rows`).

// First: the transitions' macros (`bump!`, `lease!`, `event!`) are in scope after it.
#[macro_use]
mod rows;

mod audit;
mod batch;
#[cfg(feature = "postgres")]
mod postgres;
mod review;

use std::time::{Duration, SystemTime};

use subscribe_client::{
    Claimed, GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope, LedgerError, MAX_HISTORY,
    PastGrant, Recorded, Reservation, Resolution, ReviewItem, Settlement,
};
use subscribe_types::OpenId;

use self::batch::{ClaimRow, claimed};
#[cfg(feature = "postgres")]
use self::postgres::claim_postgres;
use self::rows::{EMPTY_LEASES, KEY, TAKEABLE, attempts, corrupt, scene, settled, status, until_ms};
use crate::{Sql, from_millis, millis};

pub use self::audit::{EventKind, GrantEvent};

/// Grants in PostgreSQL or SQLite: they survive restarts, every instance and dispatcher shares
/// them, and each transition is kept in an audit trail ([`events`](Self::events)).
///
/// Tables (see the crate's `migrations/`): `wxsub_grants` (one row per app, template, scene and
/// user), `wxsub_grant_events` (every transition: confirmed, reserved, delivered, released,
/// review, dropped, resolved; with time, reservation and reason), `wxsub_grant_counts`
/// (grants per scope and state, kept with every transition) and `wxsub_grant_leases`
/// (reserved grants per scope and lease end, one row per claim), so
/// [`counts`](GrantLedger::counts) reads a handful of rows instead of every grant. No index
/// covers a grant's state or lease: on PostgreSQL a claim or settlement rewrites the row in
/// its page and touches no index.
///
/// Reservation leases are timed by the database's clock: the `now` a caller passes is not
/// used, so an instance whose clock runs ahead cannot take a live reservation. Every transition
/// is one transaction; on PostgreSQL two senders never reserve the same grant (the row's lock
/// decides), and only the current reservation (its id and lease end, as handed out) settles
/// it.
#[derive(Clone, Debug)]
pub struct SqlGrantLedger {
    sql: Sql,
}

/// What `record` found.
enum Found {
    Added,
    Already,
    Renewed,
}

impl SqlGrantLedger {
    /// A ledger on `sql`.
    pub fn new(sql: Sql) -> Self {
        Self { sql }
    }

    /// The database handle.
    pub fn sql(&self) -> &Sql {
        &self.sql
    }
}

#[async_trait::async_trait]
impl GrantLedger for SqlGrantLedger {
    async fn record(&self, key: &GrantKey, _now: SystemTime) -> Result<Recorded, LedgerError> {
        let scope = key.scope();
        let found = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let mut tx = p.begin_with(q.begin).await?;
                    let added: Option<(i64, i64)> = sqlx::query_as(&q.sql(
                        "INSERT INTO wxsub_grants (appid, template_id, scene, openid, state, updated_ms) \
                         VALUES ($1, $2, $3, $4, 'P', NOW_MS) \
                         ON CONFLICT (appid, template_id, scene, openid) DO NOTHING RETURNING id, updated_ms",
                    ))
                    .bind(key.appid.as_str())
                    .bind(key.template_id.as_str())
                    .bind(scene(&scope))
                    .bind(key.openid.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((id, at)) = added {
                        event!(tx, id, at, EventKind::Confirmed, None::<&str>, "P", 0, None::<&str>, None::<&str>);
                        bump!(tx, &scope, [("O", 1)]);
                        tx.commit().await?;
                        return Ok(Found::Added);
                    }
                    let (id, state, old_attempts, reason): (i64, String, i32, Option<String>) =
                        sqlx::query_as(&q.sql(&format!(
                            "SELECT id, state, attempts, reason FROM wxsub_grants WHERE {KEY} FOR_UPDATE"
                        )))
                        .bind(key.appid.as_str())
                        .bind(key.template_id.as_str())
                        .bind(scene(&scope))
                        .bind(key.openid.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                    if state == "P" || state == "R" {
                        tx.rollback().await?;
                        return Ok(Found::Already);
                    }
                    let at: i64 = sqlx::query_scalar(&q.sql(
                        "UPDATE wxsub_grants SET state = 'P', attempts = 0, until_ms = 0, reservation = NULL, \
                         reason = NULL, version = version + 1, updated_ms = NOW_MS WHERE id = $1 \
                         RETURNING updated_ms",
                    ))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    event!(tx, id, at, EventKind::Confirmed, Some(state.as_str()), "P", old_attempts, None::<&str>, reason);
                    bump!(tx, &scope, [(state.as_str(), -1), ("O", 1)]);
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(Found::Renewed)
                })
            })
            .await?;
        Ok(match found {
            Found::Added => Recorded::Added,
            Found::Already => Recorded::AlreadyPending,
            Found::Renewed => Recorded::Renewed,
        })
    }

    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        _now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let ids: Vec<String> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    sqlx::query_scalar(&q.sql(&format!(
                        "SELECT openid FROM wxsub_grants \
                         WHERE appid = $1 AND template_id = $2 AND scene = $3 \
                         AND {TAKEABLE} AND openid > $4 ORDER BY openid LIMIT $5"
                    )))
                    .bind(scope.appid.as_str())
                    .bind(scope.template_id.as_str())
                    .bind(scene(scope))
                    .bind(after.map_or("", OpenId::as_str))
                    .bind(limit)
                    .fetch_all(p)
                    .await
                })
            })
            .await?;
        ids.into_iter().map(|id| OpenId::new(id).map_err(|_| corrupt("wxsub_grants.openid"))).collect()
    }

    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        _now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        let scope = key.scope();
        let row: Option<(i64, i32, i64, String, i64)> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let mut tx = p.begin_with(q.begin).await?;
                    // The state and lease end before: a lapsed reservation leaves its bucket.
                    let before: Option<(String, i64)> = sqlx::query_as(&q.sql(&format!(
                        "SELECT state, until_ms FROM wxsub_grants WHERE {KEY} FOR_UPDATE"
                    )))
                    .bind(key.appid.as_str())
                    .bind(key.template_id.as_str())
                    .bind(scene(&scope))
                    .bind(key.openid.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let row: Option<(i64, i32, i64, String, i64)> = sqlx::query_as(&q.sql(&format!(
                        "UPDATE wxsub_grants SET state = 'R', attempts = attempts + 1, \
                         until_ms = NOW_MS + $5, version = version + 1, updated_ms = NOW_MS, \
                         reservation = CAST($6 AS TEXT) || '-' || CAST(id AS TEXT) || '.' || CAST(version + 1 AS TEXT) \
                         WHERE {KEY} AND {TAKEABLE} \
                         RETURNING id, attempts, until_ms, reservation, updated_ms"
                    )))
                    .bind(key.appid.as_str())
                    .bind(key.template_id.as_str())
                    .bind(scene(&scope))
                    .bind(key.openid.as_str())
                    .bind(millis(lease))
                    .bind(holder)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((id, attempts_, until, reservation, at)) = &row {
                        event!(tx, *id, *at, EventKind::Reserved, None::<&str>, "R", *attempts_, Some(reservation.as_str()), None::<&str>);
                        let lapsed = before.filter(|(state, _)| state == "R").map(|(_, old)| (old, -1));
                        lease!(tx, &scope, std::iter::once((*until, 1)).chain(lapsed));
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(row)
                })
            })
            .await?;
        row.map(|(_, attempt, until, id, _)| {
            Ok(Reservation { key: key.clone(), id, until: from_millis(until), attempt: attempts(attempt)? })
        })
        .transpose()
    }

    async fn settle(&self, r: &Reservation, settlement: Settlement) -> Result<(), LedgerError> {
        let (state, kind, reason) = settled(&settlement);
        let scope = r.key.scope();
        let done = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let mut tx = p.begin_with(q.begin).await?;
                    let row: Option<(i64, i64)> = sqlx::query_as(&q.sql(&format!(
                        "UPDATE wxsub_grants SET state = $5, \
                         attempts = CASE WHEN $5 = 'P' THEN 0 ELSE attempts END, \
                         until_ms = 0, reservation = NULL, reason = $7, version = version + 1, \
                         updated_ms = NOW_MS \
                         WHERE {KEY} AND state = 'R' AND reservation = $6 AND until_ms = $8 \
                         RETURNING id, updated_ms"
                    )))
                    .bind(r.key.appid.as_str())
                    .bind(r.key.template_id.as_str())
                    .bind(scene(&scope))
                    .bind(r.key.openid.as_str())
                    .bind(state)
                    .bind(&r.id)
                    .bind(reason)
                    .bind(until_ms(r))
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((id, at)) = row else { return Ok(false) };
                    let attempt = i32::try_from(r.attempt).unwrap_or(i32::MAX);
                    event!(tx, id, at, kind, Some("R"), state, attempt, Some(r.id.as_str()), reason);
                    lease!(tx, &scope, [(until_ms(r), -1)]);
                    if state != "P" {
                        bump!(tx, &scope, [("O", -1), (state, 1)]);
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(true)
                })
            })
            .await?;
        if done { Ok(()) } else { Err(LedgerError::LeaseLost) }
    }

    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        let scope = key.scope();
        #[allow(clippy::type_complexity)] // the columns, as read
        let found: Option<(
            (String, i32, i64, Option<String>),
            Vec<(String, i32, i64, Option<String>)>,
        )> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    let row: Option<(i64, String, i32, i64, Option<String>)> = sqlx::query_as(&format!(
                        "SELECT id, state, attempts, until_ms, reason FROM wxsub_grants WHERE {KEY}"
                    ))
                    .bind(key.appid.as_str())
                    .bind(key.template_id.as_str())
                    .bind(scene(&scope))
                    .bind(key.openid.as_str())
                    .fetch_optional(p)
                    .await?;
                    let Some((id, state, attempts_, until, reason)) = row else { return Ok(None) };
                    // The earlier lives: the renewals in the audit trail, most recent last.
                    let mut lives: Vec<(String, i32, i64, Option<String>)> = sqlx::query_as(
                        "SELECT prior, attempts, at_ms, reason FROM wxsub_grant_events \
                         WHERE grant_id = $1 AND kind = 'confirmed' AND prior IS NOT NULL \
                         ORDER BY id DESC LIMIT $2",
                    )
                    .bind(id)
                    .bind(i64::try_from(MAX_HISTORY).unwrap_or(16))
                    .fetch_all(p)
                    .await?;
                    lives.reverse();
                    Ok::<_, sqlx::Error>(Some(((state, attempts_, until, reason), lives)))
                })
            })
            .await?;
        let Some(((state, attempts_, until, reason), lives)) = found else { return Ok(None) };
        let history = lives
            .into_iter()
            .map(|(prior, a, at, why)| {
                Ok(PastGrant {
                    status: status(&prior, 0, why)?,
                    attempts: attempts(a)?,
                    renewed_at: from_millis(at),
                })
            })
            .collect::<Result<_, LedgerError>>()?;
        Ok(Some(GrantRecord {
            key: key.clone(),
            status: status(&state, until, reason)?,
            attempts: attempts(attempts_)?,
            history,
        }))
    }

    async fn counts(&self, scope: &GrantScope, _now: SystemTime) -> Result<GrantCounts, LedgerError> {
        let (rows, live): (Vec<(String, i64)>, i64) = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let rows = sqlx::query_as(
                        "SELECT state, n FROM wxsub_grant_counts WHERE appid = $1 AND template_id = $2 AND scene = $3",
                    )
                    .bind(scope.appid.as_str())
                    .bind(scope.template_id.as_str())
                    .bind(scene(scope))
                    .fetch_all(p)
                    .await?;
                    // Live reservations: the lease buckets still ahead, never the grants.
                    let live = sqlx::query_scalar(&q.sql(
                        "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM wxsub_grant_leases \
                         WHERE appid = $1 AND template_id = $2 AND scene = $3 AND until_ms > NOW_MS",
                    ))
                    .bind(scope.appid.as_str())
                    .bind(scope.template_id.as_str())
                    .bind(scene(scope))
                    .fetch_one(p)
                    .await?;
                    Ok::<_, sqlx::Error>((rows, live))
                })
            })
            .await?;
        let n = |v: i64| u64::try_from(v).map_err(|_| corrupt("wxsub_grant_counts.n"));
        let mut counts = GrantCounts::default();
        let mut open = 0;
        for (state, v) in rows {
            match state.as_str() {
                "O" => open = n(v)?,
                "D" => counts.delivered = n(v)?,
                "V" => counts.review = n(v)?,
                "X" => counts.dropped = n(v)?,
                _ => return Err(corrupt("wxsub_grant_counts.state")),
            }
        }
        counts.reserved = n(live)?;
        counts.pending = open.checked_sub(counts.reserved).ok_or_else(|| corrupt("wxsub_grant_counts.n"))?;
        Ok(counts)
    }

    async fn reserve_next(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        holder: &str,
        lease: Duration,
        _now: SystemTime,
    ) -> Result<Claimed, LedgerError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let after = after.map_or("", OpenId::as_str);
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)] // the only pool when SQLite is left out
        if let crate::Pool::Pg(p) = &self.sql.pool {
            let rows = self.sql.run(claim_postgres(p, scope, after, limit, holder, millis(lease))).await?;
            return claimed(scope, rows);
        }
        let rows = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    // One writer at a time (SQLite): the first `limit` takeable grants after the
                    // cursor, then the same grants reserved (the takeable ones up to the last
                    // found, by one reading of the clock), their events, and the lease buckets
                    // they move between.
                    let mut tx = p.begin_with(q.begin).await?;
                    let now: i64 = sqlx::query_scalar(&q.sql("SELECT NOW_MS")).fetch_one(&mut *tx).await?;
                    let takeable = TAKEABLE.replace("NOW_MS", "$6");
                    let found: Vec<(String, String, i64)> = sqlx::query_as(&format!(
                        "SELECT openid, state, until_ms FROM wxsub_grants WHERE appid = $1 \
                         AND template_id = $2 AND scene = $3 AND openid > $4 AND {takeable} \
                         ORDER BY openid LIMIT $5"
                    ))
                    .bind(scope.appid.as_str())
                    .bind(scope.template_id.as_str())
                    .bind(scene(scope))
                    .bind(after)
                    .bind(limit)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                    let rows: Vec<ClaimRow> = match found.last() {
                        None => Vec::new(),
                        Some((last, ..)) => {
                            sqlx::query_as(&format!(
                                "UPDATE wxsub_grants SET state = 'R', attempts = attempts + 1, \
                                 until_ms = $6 + $7, version = version + 1, updated_ms = $6, \
                                 reservation = CAST($8 AS TEXT) || '-' || CAST(id AS TEXT) || '.' || CAST(version + 1 AS TEXT) \
                                 WHERE appid = $1 AND template_id = $2 AND scene = $3 AND openid > $4 \
                                 AND openid <= $5 AND {takeable} \
                                 RETURNING id, openid, attempts, until_ms, reservation, updated_ms"
                            ))
                            .bind(scope.appid.as_str())
                            .bind(scope.template_id.as_str())
                            .bind(scene(scope))
                            .bind(after)
                            .bind(last.as_str())
                            .bind(now)
                            .bind(millis(lease))
                            .bind(holder)
                            .fetch_all(&mut *tx)
                            .await?
                        }
                    };
                    if !rows.is_empty() {
                        let mut insert = sqlx::QueryBuilder::new(
                            "INSERT INTO wxsub_grant_events (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) ",
                        );
                        insert.push_values(&rows, |mut b, (id, _, attempts_, _, reservation, at)| {
                            b.push_bind(*id)
                                .push_bind(*at)
                                .push_bind(EventKind::Reserved.as_str())
                                .push_bind(None::<&str>)
                                .push_bind("R")
                                .push_bind(*attempts_)
                                .push_bind(reservation.as_str())
                                .push_bind(None::<&str>);
                        });
                        insert.build().execute(&mut *tx).await?;
                    }
                    let taken = rows.iter().map(|r| (r.3, 1));
                    let lapsed = found.iter().filter(|(_, state, _)| state == "R").map(|(_, _, old)| (*old, -1));
                    lease!(tx, scope, taken.chain(lapsed));
                    sqlx::query(&q.sql(EMPTY_LEASES))
                        .bind(scope.appid.as_str())
                        .bind(scope.template_id.as_str())
                        .bind(scene(scope))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(rows)
                })
            })
            .await?;
        claimed(scope, rows)
    }

    async fn settle_many(&self, items: Vec<(Reservation, Settlement)>) -> Vec<Result<(), LedgerError>> {
        // One transaction per scope (a dispatch settles one scope). An openid seen twice in the
        // batch is settled on its own afterwards: one statement cannot apply both.
        let mut results: Vec<Option<Result<(), LedgerError>>> = items.iter().map(|_| None).collect();
        let mut groups: std::collections::BTreeMap<GrantScope, Vec<usize>> =
            std::collections::BTreeMap::new();
        let mut later = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, (r, _)) in items.iter().enumerate() {
            if seen.insert(&r.key) {
                groups.entry(r.key.scope()).or_default().push(i);
            } else {
                later.push(i);
            }
        }
        for (scope, idx) in groups {
            match self.settle_scope(&scope, idx.iter().map(|&i| (&items[i].0, &items[i].1)).collect()).await {
                Ok(applied) => {
                    for (&i, ok) in idx.iter().zip(applied) {
                        results[i] = Some(if ok { Ok(()) } else { Err(LedgerError::LeaseLost) });
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    for &i in &idx {
                        results[i] =
                            Some(Err(LedgerError::backend(format!("batch settlement failed: {text}"))));
                    }
                }
            }
        }
        for i in later {
            let (r, s) = &items[i];
            results[i] = Some(self.settle(r, s.clone()).await);
        }
        results.into_iter().map(|r| r.unwrap_or(Err(LedgerError::LeaseLost))).collect()
    }

    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError> {
        self.review_page(scope, after, limit).await
    }

    /// The decision and its note go to the audit trail ([`events`](SqlGrantLedger::events)),
    /// stamped by the database's clock (`now` is not used).
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        _now: SystemTime,
    ) -> Result<bool, LedgerError> {
        self.resolve_review(key, resolution, note).await
    }
}
