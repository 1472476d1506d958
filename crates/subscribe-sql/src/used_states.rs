//! [`SqlUsedStates`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use subscribe_client::{AnswerDigest, Claim, StateUse, UsedStates, UsedStatesError};
use subscribe_types::Reserved;

use crate::{Sql, SqlError, millis};

/// How many marks a handle makes between two sweeps of ended marks (the first mark of a handle
/// sweeps too).
const SWEEP_EVERY: u64 = 32;
/// The most ended marks one sweep deletes: eight times what the marks made in between add, so
/// the sweeps keep up, and no call pays for a whole backlog.
const SWEEP_LIMIT: i64 = 256;

/// Used authorization states in the database (`wxsub_used_states`), shared by every instance
/// on it and kept across restarts: a replayed answer is refused whichever instance it reaches,
/// and after a restart.
///
/// - Marking is one statement, `INSERT … ON CONFLICT (state) DO UPDATE … WHERE` the row is
///   this answer's, unsealed and holds no live claim but this one: a new row is the first use,
///   an updated one a retry of the same answer (its `uses` counted, its claim taken: `claim_id`,
///   `claimed_until_ms` on the database's clock), and a conflict that updates nothing means
///   the state is used, accepted or in progress; a read of the row then says which (it only
///   names the refusal: whether the answer goes on was decided by the one statement). The
///   database's unique key and row lock decide between concurrent uses.
/// - Releasing a claim is one `UPDATE … WHERE` the claim is still the row's.
/// - A row names its answer by its [`AnswerDigest`], never the openid.
/// - A mark's end is the later of two: the database's clock when it was made plus the lifetime
///   the client gave (`expires − now`, both on the client's clock), and the state's expiry
///   itself. It is only ever compared with the database's clock. The first keeps a mark its
///   whole lifetime however far behind the client's clock is (a mark ending at the state's
///   expiry would be born ended when the client's clock runs an hour behind the database's);
///   the second keeps it while an instance whose clock is right still takes the state, when
///   the clock of the one that marked it runs ahead. An application instant can lengthen a
///   mark, never shorten it.
/// - Ended marks are deleted by a sweep every 32 marks of a handle (and on its first), at most
///   256 at a time, oldest first through the index on the end: no call scans the table. An
///   ended mark not yet swept still refuses another answer (its state has expired anyway).
#[derive(Clone, Debug)]
pub struct SqlUsedStates {
    sql: Sql,
    marks: Arc<AtomicU64>,
}

impl SqlUsedStates {
    /// Used states on `sql`.
    pub fn new(sql: Sql) -> Self {
        Self { sql, marks: Arc::default() }
    }

    /// Deletes up to [`SWEEP_LIMIT`] ended marks, oldest first; how many it deleted. On
    /// PostgreSQL, rows another sweep holds are skipped, so concurrent sweeps never wait on
    /// each other.
    async fn sweep(&self) -> Result<u64, SqlError> {
        self.sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    sqlx::query(&q.sql(
                        "DELETE FROM wxsub_used_states WHERE state IN (SELECT state FROM wxsub_used_states \
                         WHERE until_ms <= NOW_MS ORDER BY until_ms LIMIT $1 SKIP_LOCKED)",
                    ))
                    .bind(SWEEP_LIMIT)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
                })
            })
            .await
    }
}

impl SqlUsedStates {
    /// Why a mark refused the answer `by`: another answer's ([`StateUse::Used`]), this one's
    /// sealed ([`StateUse::Accepted`]) or claimed ([`StateUse::InProgress`]). Read after the
    /// marking statement refused it, so the row may have changed since (sealed, released,
    /// swept): any reading refuses, and a released claim reads as in progress, which the user
    /// retries.
    async fn refusal(&self, state: &Reserved, by: &AnswerDigest) -> Result<StateUse, SqlError> {
        let row: Option<(String, i64)> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query_as(
                        "SELECT used_by, CAST(sealed AS BIGINT) FROM wxsub_used_states WHERE state = $1",
                    )
                    .bind(state.as_str())
                    .fetch_optional(p)
                    .await
                })
            })
            .await?;
        Ok(match row {
            Some((used_by, sealed)) if used_by == by.as_str() => {
                if sealed != 0 {
                    StateUse::Accepted
                } else {
                    StateUse::InProgress
                }
            }
            _ => StateUse::Used,
        })
    }
}

impl From<SqlError> for UsedStatesError {
    fn from(e: SqlError) -> Self {
        UsedStatesError::new(e)
    }
}

#[async_trait::async_trait]
impl UsedStates for SqlUsedStates {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        // The lifetime, on the client's clock; a state that expires within the millisecond
        // still needs its mark for that long.
        let lifetime = millis(expires.duration_since(now).unwrap_or_default());
        let expires_ms =
            i64::try_from(expires.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis())
                .unwrap_or(i64::MAX / 2);
        let uses: Option<i64> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    sqlx::query_scalar(&q.sql(
                        "INSERT INTO wxsub_used_states (state, used_by, until_ms, claim_id, claimed_until_ms) \
                         VALUES ($1, $2, GREATEST(NOW_MS + $3, $4), $5, NOW_MS + $6) \
                         ON CONFLICT (state) DO UPDATE SET uses = wxsub_used_states.uses + 1, \
                         claim_id = excluded.claim_id, claimed_until_ms = excluded.claimed_until_ms \
                         WHERE wxsub_used_states.used_by = excluded.used_by AND wxsub_used_states.sealed = 0 \
                         AND (wxsub_used_states.claimed_until_ms <= NOW_MS \
                         OR wxsub_used_states.claim_id = excluded.claim_id) \
                         RETURNING CAST(uses AS BIGINT)",
                    ))
                    .bind(state.as_str())
                    .bind(by.as_str())
                    .bind(lifetime)
                    .bind(expires_ms)
                    .bind(claim.id())
                    .bind(millis(claim.period()))
                    .fetch_optional(p)
                    .await
                })
            })
            .await?;
        if self.marks.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) {
            // The mark is made: a failed sweep is only a delay, the next one catches up.
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "could not delete ended marks of used states");
            }
        }
        Ok(match uses {
            Some(1) => StateUse::First,
            Some(_) => StateUse::Retry,
            None => self.refusal(state, by).await?,
        })
    }

    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        self.sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query(
                        "UPDATE wxsub_used_states SET claimed_until_ms = 0 \
                         WHERE state = $1 AND used_by = $2 AND claim_id = $3",
                    )
                    .bind(state.as_str())
                    .bind(by.as_str())
                    .bind(claim.id())
                    .execute(p)
                    .await
                    .map(|_| ())
                })
            })
            .await?;
        Ok(())
    }

    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError> {
        self.sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query("UPDATE wxsub_used_states SET sealed = 1 WHERE state = $1 AND used_by = $2")
                        .bind(state.as_str())
                        .bind(by.as_str())
                        .execute(p)
                        .await
                        .map(|_| ())
                })
            })
            .await?;
        Ok(())
    }
}
