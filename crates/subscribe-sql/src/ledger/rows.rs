//! The grants' rows as every transition reads and writes them: the conditions that find a
//! grant, its state letters as a [`GrantStatus`], and the counters, lease buckets and audit
//! events written beside it inside the transition's transaction.

use subscribe_client::{GrantScope, GrantStatus, LedgerError, Reservation, Settlement};

use super::EventKind;
use crate::{SqlError, from_millis};

/// The columns that name a grant, for `WHERE`: `$1` appid, `$2` template, `$3` scene, `$4`
/// openid.
pub(super) const KEY: &str = "appid = $1 AND template_id = $2 AND scene = $3 AND openid = $4";
/// A grant a sender may take: pending, or reserved with a lapsed lease (by the database's clock).
pub(super) const TAKEABLE: &str = "(state = 'P' OR (state = 'R' AND until_ms <= NOW_MS))";

pub(super) fn corrupt(what: &'static str) -> LedgerError {
    SqlError::corrupt(what).into()
}

impl From<SqlError> for LedgerError {
    /// Refused credentials, a wrong URL, a failed migration and a stored value not in this
    /// crate's format fail the same way every time (`Unusable`: someone must act); the rest
    /// may pass later (`Backend`).
    fn from(e: SqlError) -> Self {
        if e.kind() == subscribe_client::ErrorKind::Configuration {
            LedgerError::unusable(e)
        } else {
            LedgerError::backend(e)
        }
    }
}

/// The letter of a settlement's state, its event and its reason.
pub(super) fn settled(s: &Settlement) -> (&'static str, EventKind, Option<&str>) {
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
pub(super) fn grant_id(reservation: &str) -> Option<i64> {
    let (_, tail) = reservation.rsplit_once('-')?;
    tail.split_once('.')?.0.parse().ok()
}

/// A [`GrantStatus`] from a row's state letter, lease end and reason.
pub(super) fn status(
    letter: &str,
    until_ms: i64,
    reason: Option<String>,
) -> Result<GrantStatus, LedgerError> {
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

pub(super) fn attempts(n: i32) -> Result<u32, LedgerError> {
    u32::try_from(n).map_err(|_| corrupt("wxsub_grants.attempts"))
}

pub(super) fn scene(scope: &GrantScope) -> i32 {
    i32::from(scope.scene.get())
}

/// The counter column for a state: pending and reserved grants are both open.
pub(super) fn counter(letter: &str) -> &str {
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
pub(super) fn until_ms(r: &Reservation) -> i64 {
    r.until
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Deletes the scope's lease buckets that are empty and over (`$1`–`$3` the scope): a claim's
/// bucket empties as its grants settle.
pub(super) const EMPTY_LEASES: &str = "DELETE FROM wxsub_grant_leases WHERE appid = $1 AND template_id = $2 \
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
