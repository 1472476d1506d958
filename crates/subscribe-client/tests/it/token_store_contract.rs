use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// A store whose refresh lease is check-then-set: it reads whether the lease is free, awaits
/// (a round trip to a database, say), then writes itself in as the holder. Concurrent
/// refreshers all read "free" and all win. Tokens are kept by the in-memory store.
#[derive(Debug, Default)]
struct CheckThenSetLease {
    tokens: InMemoryTokenStore,
    /// app → holder (or the hold-off's reason) and when it ends.
    leases: Mutex<HashMap<AppId, Slot>>,
}

#[derive(Debug)]
enum Slot {
    Lease { holder: String, until: tokio::time::Instant },
    HoldOff { reason: String, until: tokio::time::Instant },
}

impl CheckThenSetLease {
    fn slot(&self, app: &AppId) -> Option<(Option<String>, String, tokio::time::Instant)> {
        let now = tokio::time::Instant::now();
        match self.leases.lock().unwrap().get(app) {
            Some(Slot::Lease { holder, until }) if *until > now => {
                Some((Some(holder.clone()), String::new(), *until))
            }
            Some(Slot::HoldOff { reason, until }) if *until > now => Some((None, reason.clone(), *until)),
            _ => None,
        }
    }
}

#[subscribe_client::async_trait]
impl TokenStore for CheckThenSetLease {
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
        Some(self)
    }
}

#[subscribe_client::async_trait]
impl RefreshLease for CheckThenSetLease {
    async fn try_acquire_refresh_lease(
        &self,
        app: &AppId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, TokenStoreError> {
        let free = match self.slot(app) {
            None => true,
            Some((h, ..)) => h.as_deref() == Some(holder),
        };
        if !free {
            return Ok(false);
        }
        // The gap between the read and the write, where another refresher reads "free" too.
        tokio::task::yield_now().await;
        let until = tokio::time::Instant::now() + ttl;
        self.leases.lock().unwrap().insert(app.clone(), Slot::Lease { holder: holder.to_owned(), until });
        Ok(true)
    }
    async fn release_refresh_lease(&self, app: &AppId, holder: &str) -> Result<(), TokenStoreError> {
        let mut leases = self.leases.lock().unwrap();
        if matches!(leases.get(app), Some(Slot::Lease { holder: h, .. }) if h == holder) {
            leases.remove(app);
        }
        Ok(())
    }
    async fn hold_off_refresh(
        &self,
        app: &AppId,
        holder: &str,
        pause: Duration,
        reason: &str,
    ) -> Result<(), TokenStoreError> {
        let until = tokio::time::Instant::now() + pause;
        match self.slot(app) {
            Some((Some(h), ..)) if h != holder => {}
            Some((None, _, longer)) if longer > until => {}
            _ => {
                self.leases
                    .lock()
                    .unwrap()
                    .insert(app.clone(), Slot::HoldOff { reason: reason.to_owned(), until });
            }
        }
        Ok(())
    }
    async fn refresh_hold_off(&self, app: &AppId) -> Result<Option<HoldOff>, TokenStoreError> {
        Ok(match self.slot(app) {
            Some((None, reason, until)) => Some(HoldOff {
                remaining: until.saturating_duration_since(tokio::time::Instant::now()),
                reason,
            }),
            _ => None,
        })
    }
}

#[tokio::test]
async fn a_check_then_set_lease_fails_the_contract() {
    // Sequentially it keeps every lease rule…
    let alone = Arc::new(CheckThenSetLease::default());
    let app = AppId::new("wxcheckthenset01").unwrap();
    assert!(alone.try_acquire_refresh_lease(&app, "h1", Duration::from_secs(9)).await.unwrap());
    assert!(!alone.try_acquire_refresh_lease(&app, "h2", Duration::from_secs(9)).await.unwrap());
    // …but not under concurrency.
    let failed =
        tokio::spawn(shared_token_store_contract(Arc::new(CheckThenSetLease::default()))).await.unwrap_err();
    let text = crate::panic_text(failed);
    assert!(text.contains("exactly one of 64 concurrent try_acquire_refresh_lease calls wins"), "{text}");
}

/// A store whose compare-and-swap is a read, an await, then an unconditional write: two
/// instances saving at once can leave the older token.
#[derive(Debug, Default)]
struct ReadThenWrite {
    tokens: Mutex<HashMap<AppId, CachedToken>>,
}

#[subscribe_client::async_trait]
impl TokenStore for ReadThenWrite {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        Ok(self.tokens.lock().unwrap().get(app).cloned())
    }
    async fn save(&self, app: &AppId, t: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        let stored = self.load(app).await?;
        if let Some(stored) = stored.filter(|s| s.expires_at() >= t.expires_at()) {
            return Ok(stored);
        }
        // The round trip between the read and the write, where another save reads too.
        tokio::task::yield_now().await;
        self.tokens.lock().unwrap().insert(app.clone(), t.clone());
        Ok(t.clone())
    }
    async fn invalidate(&self, app: &AppId, t: &AccessToken) -> Result<bool, TokenStoreError> {
        let mut tokens = self.tokens.lock().unwrap();
        let stored = tokens.get(app).is_some_and(|s| s.token() == t);
        if stored {
            tokens.remove(app);
        }
        Ok(stored)
    }
}

#[tokio::test]
async fn a_store_whose_compare_and_swap_is_read_then_write_fails_the_contract() {
    let failed = tokio::spawn(token_store_contract(Arc::new(ReadThenWrite::default()))).await.unwrap_err();
    let text = crate::panic_text(failed);
    assert!(text.contains("concurrent saves of an older and a newer token leave the newer"), "{text}");
}

/// A store keeping each token's parts (`CachedToken::to_parts`) in a map with a derived `Debug`:
/// printing the store prints the tokens.
#[derive(Debug, Default)]
struct Chatty {
    rows: Mutex<HashMap<String, (String, u64)>>,
}

#[subscribe_client::async_trait]
impl TokenStore for Chatty {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        let rows = self.rows.lock().unwrap();
        rows.get(app.as_str())
            .map(|(t, ms)| CachedToken::from_parts(t, *ms).map_err(TokenStoreError::new))
            .transpose()
    }
    async fn save(&self, app: &AppId, t: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        let (text, ms) = t.to_parts();
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(app.as_str().to_owned()).or_insert_with(|| (text.to_owned(), ms));
        if ms > row.1 {
            *row = (text.to_owned(), ms);
        }
        CachedToken::from_parts(&row.0, row.1).map_err(TokenStoreError::new)
    }
    async fn invalidate(&self, app: &AppId, t: &AccessToken) -> Result<bool, TokenStoreError> {
        let mut rows = self.rows.lock().unwrap();
        let stored = rows.get(app.as_str()).is_some_and(|row| row.0 == t.expose_secret());
        if stored {
            rows.remove(app.as_str());
        }
        Ok(stored)
    }
}

#[tokio::test]
async fn a_store_whose_debug_shows_its_tokens_fails_the_contract() {
    let failed = tokio::spawn(token_store_contract(Arc::new(Chatty::default()))).await.unwrap_err();
    let text = crate::panic_text(failed);
    assert!(text.contains("the store's Debug must not show a token it holds"), "{text}");
}
