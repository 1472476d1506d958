//! [`InMemoryTokenStore`]: the default store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use subscribe_types::{AccessToken, AppId};

use super::{CachedToken, HoldOff, RefreshLease, TokenStore, TokenStoreError};
use crate::clock::{Clock, SharedClock, SystemClock};

/// Keeps tokens in this process's memory. The default; right for one instance. Several
/// clients in one process may share one (clone the `Arc`), and then elect one refresher
/// through its lease and keep one another's hold-offs.
///
/// Leases and hold-offs expire on the store's clock's monotonic reading, like a Redis key's TTL
/// ([`with_clock`](Self::with_clock) gives it a `ManualClock` in tests).
#[derive(Debug)]
pub struct InMemoryTokenStore {
    state: Mutex<State>,
    clock: SharedClock,
}

impl Default for InMemoryTokenStore {
    fn default() -> Self {
        Self::with_clock(SystemClock)
    }
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<AppId, CachedToken>,
    leases: HashMap<AppId, Slot>,
}

/// Who holds an app's refresh lease, or the hold-off that stands in its place.
#[derive(Debug)]
enum Slot {
    Lease { holder: String, until: Duration },
    HoldOff { until: Duration, reason: String },
}

impl Slot {
    fn until(&self) -> Duration {
        match self {
            Self::Lease { until, .. } | Self::HoldOff { until, .. } => *until,
        }
    }
}

impl InMemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose leases and hold-offs expire on `clock`.
    pub fn with_clock(clock: impl Clock + 'static) -> Self {
        Self { state: Mutex::new(State::default()), clock: Arc::new(clock) }
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

    fn refresh_lease(&self) -> Option<&dyn RefreshLease> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl RefreshLease for InMemoryTokenStore {
    async fn try_acquire_refresh_lease(
        &self,
        app: &AppId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, TokenStoreError> {
        let now = self.clock.monotonic();
        let mut state = self.lock();
        match state.leases.get(app) {
            Some(Slot::Lease { holder: h, until }) if *until > now && h != holder => Ok(false),
            Some(Slot::HoldOff { until, .. }) if *until > now => Ok(false),
            _ => {
                state.leases.insert(app.clone(), Slot::Lease { holder: holder.to_owned(), until: now + ttl });
                Ok(true)
            }
        }
    }

    async fn release_refresh_lease(&self, app: &AppId, holder: &str) -> Result<(), TokenStoreError> {
        let mut state = self.lock();
        if matches!(state.leases.get(app), Some(Slot::Lease { holder: h, .. }) if h == holder) {
            state.leases.remove(app);
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
        let now = self.clock.monotonic();
        let mut state = self.lock();
        let taken_by_other = match state.leases.get(app) {
            Some(Slot::Lease { holder: h, until }) => h != holder && *until > now,
            Some(Slot::HoldOff { .. }) | None => false,
        };
        if !taken_by_other {
            let until = now + pause;
            // Never shorten a longer hold-off already in force.
            if !matches!(state.leases.get(app), Some(s @ Slot::HoldOff { .. }) if s.until() > until) {
                state.leases.insert(app.clone(), Slot::HoldOff { until, reason: reason.to_owned() });
            }
        }
        Ok(())
    }

    async fn refresh_hold_off(&self, app: &AppId) -> Result<Option<HoldOff>, TokenStoreError> {
        let now = self.clock.monotonic();
        Ok(match self.lock().leases.get(app) {
            Some(Slot::HoldOff { until, reason }) if *until > now => {
                Some(HoldOff { remaining: until.saturating_sub(now), reason: reason.clone() })
            }
            _ => None,
        })
    }
}
