use std::sync::Arc;
use std::time::Duration;

use subscribe_client::test_util::{shared_token_store_contract, token_store_contract};
use subscribe_client::{CachedToken, HoldOff, InMemoryTokenStore, RefreshLease, TokenStore, TokenStoreError};
use subscribe_types::{AccessToken, AppId};

#[tokio::test]
async fn in_memory_store_passes_the_contract() {
    token_store_contract(Arc::new(InMemoryTokenStore::new())).await;
    shared_token_store_contract(Arc::new(InMemoryTokenStore::new())).await;
}

#[tokio::test]
async fn a_store_behind_dyn_or_an_arc_passes_the_contract() {
    let store: Arc<dyn TokenStore> = Arc::new(Arc::new(InMemoryTokenStore::new()));
    token_store_contract(store).await;
}

/// An in-memory store whose refresh lease is missing (fine in one process, refused as a shared
/// store) or, with `lease_for_all`, granted to everyone (a fleet would stampede).
#[derive(Debug, Default)]
struct Odd {
    tokens: InMemoryTokenStore,
    lease_for_all: bool,
}

#[subscribe_client::async_trait]
impl TokenStore for Odd {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        self.tokens.load(app).await
    }
    async fn save(&self, app: &AppId, t: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        self.tokens.save(app, t).await
    }
    async fn invalidate(&self, app: &AppId, t: &AccessToken) -> Result<bool, TokenStoreError> {
        self.tokens.invalidate(app, t).await
    }
    fn refresh_lease(&self) -> Option<&dyn RefreshLease> {
        self.lease_for_all.then_some(self as &dyn RefreshLease)
    }
}

#[tokio::test]
async fn a_store_without_a_lease_passes_alone_and_fails_as_a_shared_store() {
    token_store_contract(Arc::new(Odd::default())).await;
    let failed = tokio::spawn(shared_token_store_contract(Arc::new(Odd::default()))).await.unwrap_err();
    let text = crate::panic_text(failed);
    assert!(text.contains("a shared store must offer a refresh lease"), "{text}");
}

#[subscribe_client::async_trait]
impl RefreshLease for Odd {
    async fn try_acquire_refresh_lease(
        &self,
        _: &AppId,
        _: &str,
        _: Duration,
    ) -> Result<bool, TokenStoreError> {
        Ok(true)
    }
    async fn release_refresh_lease(&self, _: &AppId, _: &str) -> Result<(), TokenStoreError> {
        Ok(())
    }
    async fn hold_off_refresh(
        &self,
        _: &AppId,
        _: &str,
        _: Duration,
        _: &str,
    ) -> Result<(), TokenStoreError> {
        Ok(())
    }
    async fn refresh_hold_off(&self, _: &AppId) -> Result<Option<HoldOff>, TokenStoreError> {
        Ok(None)
    }
}

#[tokio::test]
async fn a_lease_granted_to_everyone_fails_the_contract() {
    let failed = tokio::spawn(token_store_contract(Arc::new(Odd { lease_for_all: true, ..Odd::default() })))
        .await
        .unwrap_err();
    let text = crate::panic_text(failed);
    assert!(text.contains("a live lease is exclusive"), "{text}");
}
