//! The review workflow on SQL: the grants set aside for a person
//! ([`GrantLedger::reviews`](subscribe_client::GrantLedger::reviews)) and the person's
//! decision on each ([`GrantLedger::resolve`](subscribe_client::GrantLedger::resolve)), kept
//! in the audit trail as a `resolved` event with the note.

use subscribe_client::{GrantKey, GrantScope, LedgerError, Resolution, ReviewItem};
use subscribe_types::OpenId;

use super::rows::{KEY, attempts, corrupt, counter, scene};
use super::{EventKind, SqlGrantLedger};
use crate::from_millis;

impl SqlGrantLedger {
    /// `reviews`: the grants in state `V`, `since` their last transition.
    pub(super) async fn review_page(
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
                Ok(ReviewItem::new(
                    OpenId::new(openid).map_err(|_| corrupt("wxsub_grants.openid"))?,
                    reason.unwrap_or_default(),
                    attempts(attempts_)?,
                    from_millis(since),
                ))
            })
            .collect()
    }

    /// `resolve`: one transaction that moves the grant out of `V` (or finds it elsewhere and
    /// changes nothing), appends its `resolved` event with the note, and moves the counters.
    pub(super) async fn resolve_review(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
    ) -> Result<bool, LedgerError> {
        let (state, attempts_reset) = match resolution {
            Resolution::Delivered => ("D", false),
            Resolution::Release => ("P", true),
            Resolution::Drop => ("X", false),
            // `Resolution` is non-exhaustive: a decision this ledger does not know changes
            // nothing, as for a grant that is not under review.
            _ => return Ok(false),
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
