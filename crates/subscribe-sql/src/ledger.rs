//! [`SqlGrantLedger`].

use std::time::{Duration, SystemTime};

use sqlx::Row as _;
use subscribe_client::{
    Claimed, GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope, GrantStatus, LedgerError,
    MAX_HISTORY, PastGrant, Recorded, Reservation, Settlement,
};
use subscribe_types::OpenId;

use crate::{Sql, SqlError, from_millis, millis};

/// The columns that name a grant, for `WHERE`: `$1` appid, `$2` template, `$3` scene, `$4`
/// openid.
const KEY: &str = "appid = $1 AND template_id = $2 AND scene = $3 AND openid = $4";
/// A grant a sender may take: pending, or reserved with a lapsed lease (by the database's clock).
const TAKEABLE: &str = "(state = 'P' OR (state = 'R' AND until_ms <= NOW_MS))";

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

/// A step in a grant's history, from [`SqlGrantLedger::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantEvent {
    /// What happened.
    pub kind: EventKind,
    /// When, by the database's clock, to the millisecond.
    pub at: SystemTime,
    /// The grant's state before (`None` for a new grant) and after, as
    /// [`GrantStatus`]-like letters: `P` pending, `R` reserved, `D` delivered, `V` review,
    /// `X` dropped.
    pub prior: Option<char>,
    /// The state after.
    pub state: char,
    /// The attempts that went with it (for a renewal, the old life's).
    pub attempts: u32,
    /// The reservation it concerned.
    pub reservation: Option<String>,
    /// Why (a review's or drop's reason, a renewed life's reason, a resolution's note).
    pub reason: Option<String>,
}

/// What a [`GrantEvent`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A confirmation: a new grant, or a renewal of a used, reviewed or dropped one.
    Confirmed,
    /// A sender took the grant.
    Reserved,
    /// The message was delivered.
    Delivered,
    /// A definite failure: pending again.
    Released,
    /// Unknown outcome: set aside for a person.
    Review,
    /// The grant is gone.
    Dropped,
    /// A person decided a review ([`SqlGrantLedger::resolve`]).
    Resolved,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Reserved => "reserved",
            Self::Delivered => "delivered",
            Self::Released => "released",
            Self::Review => "review",
            Self::Dropped => "dropped",
            Self::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "confirmed" => Self::Confirmed,
            "reserved" => Self::Reserved,
            "delivered" => Self::Delivered,
            "released" => Self::Released,
            "review" => Self::Review,
            "dropped" => Self::Dropped,
            "resolved" => Self::Resolved,
            _ => return None,
        })
    }
}

/// A person's decision on a grant under review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// The message did arrive (the user has it): the grant is used.
    Delivered,
    /// It did not arrive: the grant is pending again and the next dispatch sends it.
    Release,
    /// The grant cannot be used: dropped.
    Drop,
}

/// A grant under review, from [`SqlGrantLedger::reviews`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReviewItem {
    /// The user.
    pub openid: OpenId,
    /// Why it is under review.
    pub reason: String,
    /// Its reservations before it was set aside.
    pub attempts: u32,
    /// Since when.
    pub since: SystemTime,
}

fn corrupt(what: &'static str) -> LedgerError {
    LedgerError::backend(SqlError::corrupt(what))
}

impl From<SqlError> for LedgerError {
    fn from(e: SqlError) -> Self {
        LedgerError::backend(e)
    }
}

/// The letter of a settlement's state, its event and its reason.
fn settled(s: &Settlement) -> (&'static str, EventKind, Option<&str>) {
    match s {
        Settlement::Delivered => ("D", EventKind::Delivered, None),
        Settlement::Release => ("P", EventKind::Released, None),
        Settlement::Review(why) => ("V", EventKind::Review, Some(why.as_str())),
        Settlement::Drop(why) => ("X", EventKind::Dropped, Some(why.as_str())),
        // `Settlement` is non-exhaustive: an unknown ending keeps the grant away from
        // automatic resending, like an unknown outcome.
        _ => ("V", EventKind::Review, Some("unknown settlement")),
    }
}

/// The grant's row id in a reservation id of ours, `<holder>-<row id>.<version>`: settling
/// looks the grant up by its primary key.
fn grant_id(reservation: &str) -> Option<i64> {
    let (_, tail) = reservation.rsplit_once('-')?;
    tail.split_once('.')?.0.parse().ok()
}

/// A [`GrantStatus`] from a row's state letter, lease end and reason.
fn status(letter: &str, until_ms: i64, reason: Option<String>) -> Result<GrantStatus, LedgerError> {
    let reason = move || reason.unwrap_or_default();
    Ok(match letter {
        "P" => GrantStatus::Pending,
        "R" => GrantStatus::Reserved { until: from_millis(until_ms) },
        "D" => GrantStatus::Delivered,
        "V" => GrantStatus::Review { reason: reason() },
        "X" => GrantStatus::Dropped { reason: reason() },
        _ => return Err(corrupt("wxsub_grants.state")),
    })
}

fn attempts(n: i32) -> Result<u32, LedgerError> {
    u32::try_from(n).map_err(|_| corrupt("wxsub_grants.attempts"))
}

fn scene(scope: &GrantScope) -> i32 {
    i32::from(scope.scene.get())
}

/// The counter column for a state: pending and reserved grants are both open.
fn counter(letter: &str) -> &str {
    if letter == "P" || letter == "R" { "O" } else { letter }
}

/// Adds to the scope's rows of a tally (`wxsub_grant_counts` by state letter,
/// `wxsub_grant_leases` by lease end), inside the caller's transaction. Rows are touched in
/// one order (by key) in every transaction, so two never deadlock; a net change of zero
/// writes nothing.
macro_rules! tally {
    ($tx:expr, $table:literal, $column:literal, $scope:expr, $changes:expr) => {{
        let mut changes = std::collections::BTreeMap::new();
        for (key, delta) in $changes {
            let delta: i64 = delta;
            *changes.entry(key).or_insert(0_i64) += delta;
        }
        for (key, delta) in changes.into_iter().filter(|&(_, d)| d != 0) {
            sqlx::query(concat!(
                "INSERT INTO ",
                $table,
                " (appid, template_id, scene, ",
                $column,
                ", n) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (appid, template_id, scene, ",
                $column,
                ") \
                 DO UPDATE SET n = ",
                $table,
                ".n + excluded.n",
            ))
            .bind($scope.appid.as_str())
            .bind($scope.template_id.as_str())
            .bind(scene($scope))
            .bind(key)
            .bind(delta)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

/// Moves the scope's grant counters (state letter, change).
macro_rules! bump {
    ($tx:expr, $scope:expr, $changes:expr) => {
        tally!($tx, "wxsub_grant_counts", "state", $scope, $changes)
    };
}

/// Moves reserved grants in and out of the scope's lease buckets (lease end, change).
macro_rules! lease {
    ($tx:expr, $scope:expr, $changes:expr) => {
        tally!($tx, "wxsub_grant_leases", "until_ms", $scope, $changes)
    };
}

/// The lease end a reservation was handed out with, in the table's milliseconds.
fn until_ms(r: &Reservation) -> i64 {
    r.until
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Deletes the scope's lease buckets that are empty and over (`$1`–`$3` the scope): a claim's
/// bucket empties as its grants settle.
const EMPTY_LEASES: &str = "DELETE FROM wxsub_grant_leases WHERE appid = $1 AND template_id = $2 \
     AND scene = $3 AND until_ms < NOW_MS AND n = 0";

/// Appends one event, inside the caller's transaction.
macro_rules! event {
    ($tx:expr, $id:expr, $at:expr, $kind:expr, $prior:expr, $state:expr, $attempts:expr, $reservation:expr, $reason:expr) => {
        sqlx::query(
            "INSERT INTO wxsub_grant_events \
             (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($id)
        .bind($at)
        .bind($kind.as_str())
        .bind($prior)
        .bind($state)
        .bind($attempts)
        .bind($reservation)
        .bind($reason)
        .execute(&mut *$tx)
        .await?
    };
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

    /// Every transition of the grant, oldest first (empty for an unknown grant).
    ///
    /// # Errors
    /// [`LedgerError::Backend`] when the database fails.
    pub async fn events(&self, key: &GrantKey) -> Result<Vec<GrantEvent>, LedgerError> {
        let rows = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query(&format!(
                        "SELECT e.kind, e.at_ms, e.prior, e.state, e.attempts, e.reservation, e.reason \
                         FROM wxsub_grant_events e JOIN wxsub_grants g ON g.id = e.grant_id \
                         WHERE g.{} ORDER BY e.id",
                        KEY.replace(" AND ", " AND g.")
                    ))
                    .bind(key.appid.as_str())
                    .bind(key.template_id.as_str())
                    .bind(scene(&key.scope()))
                    .bind(key.openid.as_str())
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .map(|row| {
                        Ok::<_, sqlx::Error>((
                            row.try_get::<String, _>(0)?,
                            row.try_get::<i64, _>(1)?,
                            row.try_get::<Option<String>, _>(2)?,
                            row.try_get::<String, _>(3)?,
                            row.try_get::<i32, _>(4)?,
                            row.try_get::<Option<String>, _>(5)?,
                            row.try_get::<Option<String>, _>(6)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, _>>()
                })
            })
            .await?;
        let letter = |s: &str| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(c),
                _ => Err(corrupt("wxsub_grant_events.state")),
            }
        };
        rows.into_iter()
            .map(|(kind, at, prior, state, attempts_, reservation, reason)| {
                Ok(GrantEvent {
                    kind: EventKind::parse(&kind).ok_or_else(|| corrupt("wxsub_grant_events.kind"))?,
                    at: from_millis(at),
                    prior: prior.as_deref().map(letter).transpose()?,
                    state: letter(&state)?,
                    attempts: attempts(attempts_)?,
                    reservation,
                    reason,
                })
            })
            .collect()
    }

    /// Records many confirmations of one scope at once (an import from another store, a
    /// backfill): like [`record`](GrantLedger::record) for each new grant, in transactions of
    /// 1,000. Grants that exist already are left as they are (not renewed). Returns how many
    /// were added.
    ///
    /// # Errors
    /// [`LedgerError::Backend`] when the database fails; the chunks committed before stay.
    pub async fn record_many(&self, scope: &GrantScope, openids: &[OpenId]) -> Result<u64, LedgerError> {
        let mut added = 0;
        for chunk in openids.chunks(1000) {
            let n = self
                .sql
                .run(async {
                    on_pool!(self.sql, |p, q| {
                        let mut tx = p.begin_with(q.begin).await?;
                        let mut insert = sqlx::QueryBuilder::new(
                            "INSERT INTO wxsub_grants (appid, template_id, scene, openid, state, updated_ms) ",
                        );
                        insert.push_values(chunk, |mut b, openid| {
                            b.push_bind(scope.appid.as_str())
                                .push_bind(scope.template_id.as_str())
                                .push_bind(scene(scope))
                                .push_bind(openid.as_str())
                                .push("'P'")
                                .push(q.now_ms);
                        });
                        insert.push(
                            " ON CONFLICT (appid, template_id, scene, openid) DO NOTHING RETURNING id, updated_ms",
                        );
                        let rows: Vec<(i64, i64)> = insert.build_query_as().fetch_all(&mut *tx).await?;
                        if !rows.is_empty() {
                            let mut events = sqlx::QueryBuilder::new(
                                "INSERT INTO wxsub_grant_events (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) ",
                            );
                            events.push_values(&rows, |mut b, (id, at)| {
                                b.push_bind(*id)
                                    .push_bind(*at)
                                    .push_bind(EventKind::Confirmed.as_str())
                                    .push_bind(None::<&str>)
                                    .push_bind("P")
                                    .push_bind(0_i32)
                                    .push_bind(None::<&str>)
                                    .push_bind(None::<&str>);
                            });
                            events.build().execute(&mut *tx).await?;
                            let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
                            bump!(tx, scope, [("O", n)]);
                        }
                        tx.commit().await?;
                        Ok::<_, sqlx::Error>(rows.len() as u64)
                    })
                })
                .await?;
            added += n;
        }
        Ok(added)
    }

    /// Up to `limit` grants of `scope` under review, in `openid` order after `after`.
    ///
    /// # Errors
    /// [`LedgerError::Backend`] when the database fails.
    pub async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let rows: Vec<(String, Option<String>, i32, i64)> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query_as(
                        "SELECT openid, reason, attempts, updated_ms FROM wxsub_grants \
                         WHERE appid = $1 AND template_id = $2 AND scene = $3 AND state = 'V' \
                         AND openid > $4 ORDER BY openid LIMIT $5",
                    )
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
        rows.into_iter()
            .map(|(openid, reason, attempts_, since)| {
                Ok(ReviewItem {
                    openid: OpenId::new(openid).map_err(|_| corrupt("wxsub_grants.openid"))?,
                    reason: reason.unwrap_or_default(),
                    attempts: attempts(attempts_)?,
                    since: from_millis(since),
                })
            })
            .collect()
    }

    /// Decides a grant under review, with a note for the audit trail (who decided and on what
    /// evidence). Returns `false`, changing nothing, when the grant is not under review.
    ///
    /// # Errors
    /// [`LedgerError::Backend`] when the database fails.
    pub async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
    ) -> Result<bool, LedgerError> {
        let (state, attempts_reset) = match resolution {
            Resolution::Delivered => ("D", false),
            Resolution::Release => ("P", true),
            Resolution::Drop => ("X", false),
        };
        let scope = key.scope();
        let done = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let mut tx = p.begin_with(q.begin).await?;
                    let row: Option<(i64, i32, i64)> = sqlx::query_as(&q.sql(&format!(
                        "UPDATE wxsub_grants SET state = $5, \
                         attempts = CASE WHEN $6 THEN 0 ELSE attempts END, \
                         reason = CASE WHEN $5 = 'X' THEN $7 ELSE NULL END, \
                         version = version + 1, updated_ms = NOW_MS \
                         WHERE {KEY} AND state = 'V' RETURNING id, attempts, updated_ms"
                    )))
                    .bind(key.appid.as_str())
                    .bind(key.template_id.as_str())
                    .bind(scene(&scope))
                    .bind(key.openid.as_str())
                    .bind(state)
                    .bind(attempts_reset)
                    .bind(note)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((id, attempts_, at)) = row else { return Ok(false) };
                    event!(
                        tx,
                        id,
                        at,
                        EventKind::Resolved,
                        Some("V"),
                        state,
                        attempts_,
                        None::<&str>,
                        Some(note)
                    );
                    bump!(tx, &scope, [("V", -1), (counter(state), 1)]);
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(true)
                })
            })
            .await?;
        Ok(done)
    }
}

impl SqlGrantLedger {
    /// Settles reservations of one scope (distinct openids) in one transaction; says for each
    /// whether it was still current and is now settled.
    async fn settle_scope(
        &self,
        scope: &GrantScope,
        items: Vec<(&Reservation, &Settlement)>,
    ) -> Result<Vec<bool>, SqlError> {
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)] // the only pool when SQLite is left out
        if let crate::Pool::Pg(p) = &self.sql.pool {
            let applied: Vec<String> = self.sql.run(settle_postgres(p, &items)).await?;
            let applied: std::collections::HashSet<&str> = applied.iter().map(String::as_str).collect();
            return Ok(items.iter().map(|(r, _)| applied.contains(r.key.openid.as_str())).collect());
        }
        let returned: Vec<(i64, String, i64)> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let mut tx = p.begin_with(q.begin).await?;
                    let mut update = sqlx::QueryBuilder::new(
                        "UPDATE wxsub_grants SET state = v.column3, \
                         attempts = CASE WHEN v.column3 = 'P' THEN 0 ELSE wxsub_grants.attempts END, \
                         until_ms = 0, reservation = NULL, reason = v.column4, \
                         version = wxsub_grants.version + 1, updated_ms = ",
                    );
                    update.push(q.now_ms).push(" FROM (");
                    update.push_values(&items, |mut b, (r, s)| {
                        let (state, _, reason) = settled(s);
                        // An id that is not one of ours matches no grant (ids start at 1).
                        let gid = grant_id(&r.id).unwrap_or(0);
                        b.push_bind(gid)
                            .push_bind(r.id.as_str())
                            .push_bind(state)
                            .push_bind(reason)
                            .push_bind(until_ms(r));
                    });
                    // By primary key and reservation only (see `settle_postgres`); the scope is
                    // checked on what comes back.
                    update
                        .push(
                            ") AS v WHERE wxsub_grants.id = v.column1 AND wxsub_grants.state = 'R' \
                             AND wxsub_grants.reservation = v.column2 AND wxsub_grants.until_ms = v.column5 \
                             RETURNING wxsub_grants.id, wxsub_grants.openid, wxsub_grants.updated_ms, \
                             wxsub_grants.appid, wxsub_grants.template_id, wxsub_grants.scene",
                        );
                    let returned: Vec<(i64, String, i64, String, String, i32)> =
                        update.build_query_as().fetch_all(&mut *tx).await?;
                    // A reservation whose key names another scope than its grant's is not one of
                    // this batch's: undo by failing the batch.
                    if returned.iter().any(|(_, _, _, a, t, sc)| {
                        a != scope.appid.as_str() || t != scope.template_id.as_str() || *sc != scene(scope)
                    }) {
                        return Err(sqlx::Error::Protocol("a reservation's key does not match its grant".into()));
                    }
                    let returned: Vec<(i64, String, i64)> =
                        returned.into_iter().map(|(id, o, at, ..)| (id, o, at)).collect();
                    if !returned.is_empty() {
                        let by_openid: std::collections::HashMap<&str, (i64, i64)> =
                            returned.iter().map(|(id, o, at)| (o.as_str(), (*id, *at))).collect();
                        let mut insert = sqlx::QueryBuilder::new(
                            "INSERT INTO wxsub_grant_events (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) ",
                        );
                        let applied = items.iter().filter_map(|(r, s)| by_openid.get(r.key.openid.as_str()).map(|v| (v, r, s)));
                        insert.push_values(applied, |mut b, ((id, at), r, s)| {
                            let (state, kind, reason) = settled(s);
                            b.push_bind(*id)
                                .push_bind(*at)
                                .push_bind(kind.as_str())
                                .push_bind("R")
                                .push_bind(state)
                                .push_bind(i32::try_from(r.attempt).unwrap_or(i32::MAX))
                                .push_bind(r.id.as_str())
                                .push_bind(reason);
                        });
                        insert.build().execute(&mut *tx).await?;
                        let settled_leases = items
                            .iter()
                            .filter(|(r, _)| by_openid.contains_key(r.key.openid.as_str()))
                            .map(|(r, _)| (until_ms(r), -1));
                        lease!(tx, scope, settled_leases);
                        let moved = items
                            .iter()
                            .map(|(r, s)| (r, settled(s).0))
                            .filter(|(r, state)| *state != "P" && by_openid.contains_key(r.key.openid.as_str()))
                            .flat_map(|(_, state)| [("O", -1), (state, 1)]);
                        bump!(tx, scope, moved);
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(returned)
                })
            })
            .await?;
        let applied: std::collections::HashSet<&str> = returned.iter().map(|(_, o, _)| o.as_str()).collect();
        Ok(items.iter().map(|(r, _)| applied.contains(r.key.openid.as_str())).collect())
    }
}

/// A reserved grant as a claim returns it: id, openid, attempts, lease end, reservation id,
/// time.
type ClaimRow = (i64, String, i32, i64, String, i64);

/// A claim's rows as reservations, in `openid` order, with the cursor after them.
fn claimed(scope: &GrantScope, mut rows: Vec<ClaimRow>) -> Result<Claimed, LedgerError> {
    rows.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    let reservations = rows
        .into_iter()
        .map(|(_, openid, attempt, until, id, _)| {
            let openid = OpenId::new(openid).map_err(|_| corrupt("wxsub_grants.openid"))?;
            Ok(Reservation {
                key: scope.key(openid),
                id,
                until: from_millis(until),
                attempt: attempts(attempt)?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    let cursor = reservations.last().map(|r| r.key.openid.clone());
    Ok(Claimed { reservations, cursor })
}

/// [`GrantLedger::reserve_next`] on PostgreSQL: one statement. It locks the first `limit`
/// takeable grants after the cursor that no other transaction holds (`SKIP LOCKED`), reserves
/// them (by primary key: with `IN (…)`, a cached generic plan, no `LIMIT` known, joins
/// against a scan of the whole table), appends their events, moves the lease buckets (the
/// claim's in, lapsed reservations' out, in one order of rows) and deletes the scope's empty
/// lapsed buckets (not one this claim moves).
#[cfg(feature = "postgres")]
async fn claim_postgres(
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
#[cfg(feature = "postgres")]
async fn settle_postgres(
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
}
