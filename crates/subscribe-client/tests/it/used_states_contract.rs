//! The used-states contract rejects a store that keeps marks for less than their lifetime.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use subscribe_client::test_util::used_states_contract;
use subscribe_client::{AnswerDigest, Claim, InMemoryUsedStates, StateUse, UsedStates, UsedStatesError};
use subscribe_types::Reserved;

use crate::panic_text;

/// A store that hands its backend the mark's lifetime in seconds where milliseconds are
/// expected (`SET … PX <seconds>`): a mark meant for ten minutes is gone after 600 ms.
#[derive(Debug, Default)]
struct SecondsAsMillis(InMemoryUsedStates);

#[subscribe_client::async_trait]
impl UsedStates for SecondsAsMillis {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        let lifetime = expires.duration_since(now).unwrap_or_default();
        self.0.mark_used(state, by, claim, now + Duration::from_millis(lifetime.as_secs()), now).await
    }
    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError> {
        self.0.seal(state, by).await
    }
    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        self.0.release(state, by, claim).await
    }
}

#[tokio::test]
async fn a_store_that_takes_seconds_for_milliseconds_fails_the_contract() {
    let failed = tokio::spawn(used_states_contract(Arc::new(SecondsAsMillis::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("mark_used: a mark is kept until its state expires"), "{text}");
}

/// A store as stores were before a mark named its answer: the first use wins and every later
/// use is a replay, whoever makes it, so a lost answer loses the user's grant.
#[derive(Debug, Default)]
struct FirstUseOnly(InMemoryUsedStates);

#[subscribe_client::async_trait]
impl UsedStates for FirstUseOnly {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        Ok(match self.0.mark_used(state, by, claim, expires, now).await? {
            StateUse::Retry => StateUse::Used,
            other => other,
        })
    }
    async fn seal(&self, _: &Reserved, _: &AnswerDigest) -> Result<(), UsedStatesError> {
        Ok(())
    }
    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        self.0.release(state, by, claim).await
    }
}

#[tokio::test]
async fn a_store_that_refuses_the_same_answers_retry_fails_the_contract() {
    let failed = tokio::spawn(used_states_contract(Arc::new(FirstUseOnly::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(
        text.contains("mark_used: the same answer again is a retry once the claim was released"),
        "{text}"
    );
}

/// A store whose marks are never sealed: the same answer stays a retry after it was accepted,
/// so replaying a user's own answer renews a grant that was delivered.
#[derive(Debug, Default)]
struct NeverSealed(InMemoryUsedStates);

#[subscribe_client::async_trait]
impl UsedStates for NeverSealed {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        self.0.mark_used(state, by, claim, expires, now).await
    }
    async fn seal(&self, _: &Reserved, _: &AnswerDigest) -> Result<(), UsedStatesError> {
        Ok(())
    }
    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        self.0.release(state, by, claim).await
    }
}

#[tokio::test]
async fn a_store_that_never_seals_fails_the_contract() {
    let failed = tokio::spawn(used_states_contract(Arc::new(NeverSealed::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("seal: once sealed, the same answer finds the state accepted"), "{text}");
}

/// A store as stores were before claims: the same answer is a retry whenever its mark is
/// unsealed, so two completions of one answer at once both go on, and the second renews the
/// grant the first recorded once it was delivered.
#[derive(Debug, Default)]
struct NoClaims(InMemoryUsedStates);

#[subscribe_client::async_trait]
impl UsedStates for NoClaims {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        Ok(match self.0.mark_used(state, by, claim, expires, now).await? {
            StateUse::InProgress => StateUse::Retry,
            other => other,
        })
    }
    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError> {
        self.0.seal(state, by).await
    }
    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        self.0.release(state, by, claim).await
    }
}

#[tokio::test]
async fn a_store_without_claims_fails_the_contract() {
    let failed = tokio::spawn(used_states_contract(Arc::new(NoClaims::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("while the first call's claim is live, is in progress"), "{text}");
}
