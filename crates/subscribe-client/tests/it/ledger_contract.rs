//! The grant ledger contract rejects ledgers that are wrong in the ways a real backend goes
//! wrong when claiming in batches (`reserve_next`) and counting: each one below breaks one
//! rule, and the suite must fail it, naming that rule.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use subscribe_client::test_util::grant_ledger_contract;
use subscribe_client::{
    Claimed, GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope, GrantStatus, InMemoryGrantLedger,
    LedgerError, Recorded, Reservation, Resolution, ReviewItem, Settlement,
};
use subscribe_types::OpenId;

use crate::panic_text;

/// How a [`Wrong`] ledger breaks the contract.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `reserve_next` claims from the first openid whatever its cursor says.
    ClaimIgnoresCursor,
    /// `reserve_next` lists the pending grants, then (after an await) takes each one without
    /// checking that it is still pending: an `UPDATE … WHERE openid IN (listed)` with no
    /// condition on the state, so two claimers racing get the same grants.
    ClaimWithoutRecheck,
    /// `reserve_next` starts every claim at attempt 1 (`SET attempts = 1`, not `attempts + 1`).
    ClaimRestartsAttempts,
    /// `counts` calls every reservation reserved, lapsed ones too (it never compares `until`
    /// with `now`).
    CountsLapsedAsReserved,
    /// `reviews` lists from the first openid whatever its cursor says.
    ReviewsIgnoreCursor,
    /// `resolve` answers `true` whether or not the grant was under review (an `UPDATE` whose
    /// affected rows nobody reads).
    ResolveClaimsSuccess,
}

/// The in-memory ledger with one [`Fault`]; everything else forwarded.
#[derive(Debug)]
struct Wrong {
    inner: InMemoryGrantLedger,
    fault: Fault,
}

impl Wrong {
    fn new(fault: Fault) -> Arc<Self> {
        Arc::new(Self { inner: InMemoryGrantLedger::new(), fault })
    }
}

#[subscribe_client::async_trait]
impl GrantLedger for Wrong {
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError> {
        self.inner.record(key, now).await
    }
    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        self.inner.pending_page(scope, after, limit, now).await
    }
    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        self.inner.reserve(key, holder, lease, now).await
    }
    async fn settle(&self, reservation: &Reservation, settlement: Settlement) -> Result<(), LedgerError> {
        self.inner.settle(reservation, settlement).await
    }
    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        self.inner.get(key).await
    }
    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError> {
        match self.fault {
            // Every reservation's `until` lies after the epoch: all count as reserved.
            Fault::CountsLapsedAsReserved => self.inner.counts(scope, SystemTime::UNIX_EPOCH).await,
            _ => self.inner.counts(scope, now).await,
        }
    }
    async fn reserve_next(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Claimed, LedgerError> {
        match self.fault {
            Fault::ClaimIgnoresCursor => {
                self.inner.reserve_next(scope, None, limit, holder, lease, now).await
            }
            Fault::ClaimRestartsAttempts => {
                let mut claimed = self.inner.reserve_next(scope, after, limit, holder, lease, now).await?;
                for r in &mut claimed.reservations {
                    r.attempt = 1;
                }
                Ok(claimed)
            }
            Fault::ClaimWithoutRecheck => {
                let listed = self.inner.pending_page(scope, after, limit.max(1), now).await?;
                // The round trip between the SELECT and the UPDATE: other claimers list too.
                tokio::task::yield_now().await;
                let mut reservations = Vec::with_capacity(listed.len());
                for openid in &listed {
                    let key = scope.key(openid.clone());
                    if let Some(r) = self.inner.reserve(&key, holder, lease, now).await? {
                        reservations.push(r);
                    } else if let Some(GrantRecord {
                        status: GrantStatus::Reserved { until },
                        attempts,
                        ..
                    }) = self.inner.get(&key).await?
                    {
                        // Another claimer took it since it was listed: taken over all the same.
                        reservations.push(Reservation {
                            key,
                            id: format!("{holder}-stale"),
                            until,
                            attempt: attempts,
                        });
                    }
                }
                Ok(Claimed { reservations, cursor: listed.last().cloned() })
            }
            _ => self.inner.reserve_next(scope, after, limit, holder, lease, now).await,
        }
    }
    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError> {
        match self.fault {
            Fault::ReviewsIgnoreCursor => self.inner.reviews(scope, None, limit).await,
            _ => self.inner.reviews(scope, after, limit).await,
        }
    }
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        now: SystemTime,
    ) -> Result<bool, LedgerError> {
        let resolved = self.inner.resolve(key, resolution, note, now).await?;
        Ok(resolved || matches!(self.fault, Fault::ResolveClaimsSuccess))
    }
}

/// Runs the suite on `ledger`, which must fail it, and returns the panic's message.
async fn broken_rule(ledger: Arc<Wrong>) -> String {
    let failed = tokio::time::timeout(Duration::from_secs(30), tokio::spawn(grant_ledger_contract(ledger)))
        .await
        .expect("the contract suite ends")
        .unwrap_err();
    panic_text(failed)
}

#[tokio::test]
async fn a_ledger_whose_claims_ignore_their_cursor_fails_the_contract() {
    let rule = broken_rule(Wrong::new(Fault::ClaimIgnoresCursor)).await;
    assert!(rule.contains("reserve_next: continues after the cursor"), "{rule}");
    assert!(rule.contains("released before the cursor came back"), "{rule}");
}

#[tokio::test]
async fn a_ledger_that_hands_one_grant_to_two_claimers_fails_the_contract() {
    let rule = broken_rule(Wrong::new(Fault::ClaimWithoutRecheck)).await;
    assert!(rule.contains("8 concurrent claimers get disjoint grants"), "{rule}");
}

#[tokio::test]
async fn a_ledger_whose_claims_restart_attempts_at_one_fails_the_contract() {
    let rule = broken_rule(Wrong::new(Fault::ClaimRestartsAttempts)).await;
    assert!(rule.contains("reserve_next: a lapsed reservation is claimed again as attempt 2"), "{rule}");
}

#[tokio::test]
async fn a_ledger_that_counts_lapsed_reservations_as_reserved_fails_the_contract() {
    let rule = broken_rule(Wrong::new(Fault::CountsLapsedAsReserved)).await;
    assert!(rule.contains("counts: a lapsed reservation is pending, not reserved"), "{rule}");
}

#[tokio::test]
async fn a_ledger_whose_reviews_ignore_their_cursor_fails_the_contract() {
    let rule = broken_rule(Wrong::new(Fault::ReviewsIgnoreCursor)).await;
    assert!(rule.contains("reviews: strictly after the cursor"), "{rule}");
}

#[tokio::test]
async fn a_ledger_that_resolves_grants_not_under_review_fails_the_contract() {
    let rule = broken_rule(Wrong::new(Fault::ResolveClaimsSuccess)).await;
    assert!(rule.contains("resolve: a pending grant is not under review"), "{rule}");
}
