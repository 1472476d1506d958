//! The token shared with other instances: the store read before asking the token source and
//! written after, the refresh lease that elects one refresher per fleet, invalidation.

use std::future::Future;

use subscribe_types::AccessToken;
use tracing::{info, warn};

use super::{TimedOut, TokenManager, TokenSource};
use crate::error::TokenError;
use crate::token::{CachedToken, HoldOff, TokenStoreError};

/// How the refresh lease went.
enum Lease {
    /// Ours: release it (or turn it into a hold-off) when done.
    Ours,
    /// The store could not say, or the holder never delivered: refresh without it.
    Without,
    /// Another instance refreshed while we waited.
    Adopted(CachedToken),
    /// A failed refresher asked the fleet to pause.
    HeldOff(HoldOff),
}

impl TokenManager {
    /// One attempt: the shared store, then the lease, then the token source. Returns whether
    /// this instance still holds the refresh lease (only after a failed fetch).
    ///
    /// When the store fails or does not answer, the attempt goes on without it (straight to
    /// the token source, keeping the token in this process), so a broken store costs one
    /// `store_timeout` per attempt, not one per step.
    pub(super) async fn attempt(
        &self,
        rejected: Option<&AccessToken>,
    ) -> (Result<CachedToken, TokenError>, bool) {
        // Another instance may have refreshed into the shared store.
        let store_up = match self.adopt_stored(rejected).await {
            Ok(Some(t)) => return (Ok(t), false),
            Ok(None) => true,
            Err(e) => {
                warn!(appid = %self.appid, error = %e, "token store unavailable; asking the token source directly");
                false
            }
        };
        if let Some(r) = rejected {
            self.invalidate_shared(r, store_up).await;
        }
        let lease = if store_up { self.take_lease(rejected).await } else { Lease::Without };
        let ours = match lease {
            Lease::Adopted(t) => return (Ok(t), false),
            Lease::HeldOff(h) => {
                return (Err(TokenError::HeldOff { remaining: h.remaining, reason: h.reason }), false);
            }
            Lease::Ours => true,
            Lease::Without => false,
        };
        // The previous holder may have saved its token just before releasing the lease: read
        // once more rather than ask WeChat again.
        if ours && let Ok(Some(t)) = self.adopt_stored(rejected).await {
            self.release_lease().await;
            return (Ok(t), false);
        }
        match self.fetch_fresh(rejected).await {
            Ok((cached, lifetime)) => {
                // Saved before the lease is released, so the next holder finds the new token.
                let kept = if store_up {
                    match self.store_call(self.store.save(&self.appid, &cached)).await {
                        Ok(kept) => kept,
                        Err(e) => {
                            warn!(appid = %self.appid, error = %e, "token store unavailable; keeping the new token in this process only");
                            cached.clone()
                        }
                    }
                } else {
                    cached.clone()
                };
                let lifetime = (kept.token() == cached.token()).then_some(lifetime);
                let adopted = self.adopt(kept, lifetime);
                if ours {
                    self.release_lease().await;
                }
                (Ok(adopted), false)
            }
            Err(e) => (Err(e), ours),
        }
    }

    /// A call into the token store, bounded by `store_timeout`.
    pub(super) async fn store_call<T>(
        &self,
        fut: impl Future<Output = Result<T, TokenStoreError>>,
    ) -> Result<T, TokenStoreError> {
        let limit = self.settings.store_timeout;
        self.bounded(limit, fut)
            .await
            .unwrap_or_else(|| Err(TokenStoreError::new(TimedOut { what: "the token store", after: limit })))
    }

    /// The store's token, adopted, when it is usable (another instance refreshed it).
    async fn adopt_stored(
        &self,
        rejected: Option<&AccessToken>,
    ) -> Result<Option<CachedToken>, TokenStoreError> {
        let stored = self.store_call(self.store.load(&self.appid)).await?;
        Ok(stored.filter(|t| self.usable(t, rejected)).map(|t| self.adopt(t, None)))
    }

    async fn release_lease(&self) {
        let Some(lease) = self.store.refresh_lease() else { return };
        if let Err(e) = self.store_call(lease.release_refresh_lease(&self.appid, &self.holder)).await {
            warn!(appid = %self.appid, error = %e, "could not release the refresh lease; it will expire");
        }
    }

    /// Tells the shared store (when it answers) and the external source that WeChat rejected
    /// `rejected`.
    async fn invalidate_shared(&self, rejected: &AccessToken, store_up: bool) {
        if store_up {
            match self.store_call(self.store.invalidate(&self.appid, rejected)).await {
                Ok(removed) => {
                    info!(appid = %self.appid, removed, "access token rejected by WeChat; invalidated");
                }
                Err(e) => {
                    warn!(appid = %self.appid, error = %e, "could not invalidate the rejected token in the store");
                }
            }
        }
        if let TokenSource::External(src) = &self.source {
            let limit = self.settings.store_timeout;
            let told = self.bounded(limit, src.invalidate(&self.appid, rejected)).await;
            match told {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    warn!(appid = %self.appid, error = %e, "external token source did not take the invalidation");
                }
                None => {
                    warn!(appid = %self.appid, after = ?limit, "external token source did not answer the invalidation in time");
                }
            }
        }
    }

    /// Becomes the fleet's refresher, or waits for the one that is and returns its token, or
    /// learns that the fleet is paused. Bounded: after the lease's lifetime without a word,
    /// refreshes anyway. A store without a [`RefreshLease`](crate::RefreshLease) serves one
    /// process: refresh without a lease.
    async fn take_lease(&self, rejected: Option<&AccessToken>) -> Lease {
        let Some(lease) = self.store.refresh_lease() else { return Lease::Without };
        let ttl = self.settings.lease_ttl;
        let start = self.clock.monotonic();
        loop {
            match self.store_call(lease.try_acquire_refresh_lease(&self.appid, &self.holder, ttl)).await {
                Ok(true) => return Lease::Ours,
                Err(e) => {
                    warn!(appid = %self.appid, error = %e, "refresh lease unavailable; refreshing without it");
                    return Lease::Without;
                }
                Ok(false) => {}
            }
            if let Ok(Some(h)) = self.store_call(lease.refresh_hold_off(&self.appid)).await {
                return Lease::HeldOff(h);
            }
            if self.clock.monotonic().saturating_sub(start) >= ttl {
                warn!(appid = %self.appid, "the refresh lease holder did not deliver a token in time; refreshing");
                return Lease::Without;
            }
            self.clock.sleep(self.settings.lease_poll).await;
            if let Ok(Some(t)) = self.adopt_stored(rejected).await {
                return Lease::Adopted(t);
            }
        }
    }
}
