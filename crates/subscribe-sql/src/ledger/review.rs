//! The review workflow: the grants set aside for a person ([`SqlGrantLedger::reviews`]) and
//! the person's decision on each ([`SqlGrantLedger::resolve`]), kept in the audit trail.

use std::time::SystemTime;

use subscribe_client::{GrantKey, GrantScope, LedgerError};
use subscribe_types::OpenId;

use super::rows::{KEY, attempts, corrupt, counter, scene};
use super::{EventKind, SqlGrantLedger};
use crate::from_millis;

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

impl SqlGrantLedger {
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
