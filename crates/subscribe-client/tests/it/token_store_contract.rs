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

/// A store without a refresh lease: fine in one process, refused as a shared store.
#[derive(Debug, Default)]
struct NoLease(InMemoryTokenStore);

#[subscribe_client::async_trait]
impl TokenStore for NoLease {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        self.0.load(app).await
    }
    async fn save(&self, app: &AppId, t: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        self.0.save(app, t).await
    }
    async fn invalidate(&self, app: &AppId, t: &AccessToken) -> Result<bool, TokenStoreError> {
        self.0.invalidate(app, t).await
    }
}

#[tokio::test]
async fn a_store_without_a_lease_passes_alone_and_fails_as_a_shared_store() {
    token_store_contract(Arc::new(NoLease::default())).await;
    let failed = tokio::spawn(shared_token_store_contract(Arc::new(NoLease::default()))).await.unwrap_err();
    let text = crate::panic_text(failed);
    assert!(text.contains("a shared store must offer a refresh lease"), "{text}");
}

/// A shared store whose lease is granted to everyone: the fleet would stampede.
#[derive(Debug, Default)]
struct LeaseForAll(InMemoryTokenStore);

#[subscribe_client::async_trait]
impl TokenStore for LeaseForAll {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        self.0.load(app).await
    }
    async fn save(&self, app: &AppId, t: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        self.0.save(app, t).await
    }
    async fn invalidate(&self, app: &AppId, t: &AccessToken) -> Result<bool, TokenStoreError> {
        self.0.invalidate(app, t).await
    }
    fn refresh_lease(&self) -> Option<&dyn RefreshLease> {
        Some(self)
    }
}

#[subscribe_client::async_trait]
impl RefreshLease for LeaseForAll {
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
    let failed = tokio::spawn(token_store_contract(Arc::new(LeaseForAll::default()))).await.unwrap_err();
    let text = crate::panic_text(failed);
    assert!(text.contains("a live lease is exclusive"), "{text}");
}
