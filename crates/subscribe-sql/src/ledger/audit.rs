//! The audit trail: every transition of a grant, as [`GrantEvent`]s
//! ([`SqlGrantLedger::events`]).

use std::time::SystemTime;

use sqlx::Row as _;
use subscribe_client::{GrantKey, LedgerError};

use super::SqlGrantLedger;
use super::rows::{KEY, attempts, corrupt, scene};
use crate::from_millis;

/// A step in a grant's history, from [`SqlGrantLedger::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantEvent {
    /// What happened.
    pub kind: EventKind,
    /// When, by the database's clock, to the millisecond.
    pub at: SystemTime,
    /// The grant's state before (`None` for a new grant) and after, as
    /// [`GrantStatus`](subscribe_client::GrantStatus)-like letters: `P` pending, `R` reserved,
    /// `D` delivered, `V` review, `X` dropped.
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
    /// A person decided a review ([`GrantLedger::resolve`](subscribe_client::GrantLedger::resolve)), with their note as the reason.
    Resolved,
}

impl EventKind {
    pub(super) fn as_str(self) -> &'static str {
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

impl SqlGrantLedger {
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
}
