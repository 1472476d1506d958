//! The used-states contract rejects a store that keeps marks for less than their lifetime.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use subscribe_client::test_util::used_states_contract;
use subscribe_client::{InMemoryUsedStates, UsedStates, UsedStatesError};
use subscribe_types::Reserved;

use crate::panic_text;

/// A store that hands its backend the mark's lifetime in seconds where milliseconds are
/// expected (`SET … PX <seconds>`): a mark meant for ten minutes is gone after 600 ms.
#[derive(Debug, Default)]
struct SecondsAsMillis(InMemoryUsedStates);

#[subscribe_client::async_trait]
impl UsedStates for SecondsAsMillis {
    async fn first_use(
        &self,
        state: &Reserved,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<bool, UsedStatesError> {
        let lifetime = expires.duration_since(now).unwrap_or_default();
        self.0.first_use(state, now + Duration::from_millis(lifetime.as_secs()), now).await
    }
    async fn forget(&self, state: &Reserved) -> Result<(), UsedStatesError> {
        self.0.forget(state).await
    }
}

#[tokio::test]
async fn a_store_that_takes_seconds_for_milliseconds_fails_the_contract() {
    let failed = tokio::spawn(used_states_contract(Arc::new(SecondsAsMillis::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("first_use: a mark is kept until its state expires"), "{text}");
}
