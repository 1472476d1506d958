//! [`InMemoryTokenStore`]: the default store.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use subscribe_types::{AccessToken, AppId};

use super::{CachedToken, TokenStore, TokenStoreError};

/// Keeps tokens in this process's memory. The default; right for one instance. Several
/// clients in one process may share one (clone the `Arc`), and then elect one refresher
/// through its lease.
#[derive(Debug, Default)]
pub struct InMemoryTokenStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<AppId, CachedToken>,
    leases: HashMap<AppId, (String, Instant)>,
}

impl InMemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl TokenStore for InMemoryTokenStore {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        Ok(self.lock().tokens.get(app).cloned())
    }

    async fn save(&self, app: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        let mut state = self.lock();
        let slot = state.tokens.entry(app.clone()).or_insert_with(|| token.clone());
        if token.expires_at() > slot.expires_at() {
            *slot = token.clone();
        }
        Ok(slot.clone())
    }

    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<bool, TokenStoreError> {
        let mut state = self.lock();
        if state.tokens.get(app).is_some_and(|t| t.token() == rejected) {
            state.tokens.remove(app);
            return Ok(true);
        }
        Ok(false)
    }

    // The lease's expiry is a monotonic deadline in this process, like a Redis key's TTL.
    async fn try_acquire_refresh_lease(
        &self,
        app: &AppId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, TokenStoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.leases.get(app) {
            Some((h, until)) if *until > now && h != holder => Ok(false),
            _ => {
                state.leases.insert(app.clone(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release_refresh_lease(&self, app: &AppId, holder: &str) -> Result<(), TokenStoreError> {
        let mut state = self.lock();
        if state.leases.get(app).is_some_and(|(h, _)| h == holder) {
            state.leases.remove(app);
        }
        Ok(())
    }
}
