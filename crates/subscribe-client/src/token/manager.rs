//! The token manager: one refresh per process (and, with a leasing store, per fleet),
//! refresh-ahead in the background, invalidate-and-replay on rejection, cool-down on refusal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use subscribe_transport::{HttpRequest, HttpTransport, SharedTransport, TransportError, TransportErrorKind};
use subscribe_types::secrecy::ExposeSecret;
use subscribe_types::{
    AccessToken, ApiError, AppId, AppSecret, ClassicTokenRequest, IssuedToken, StableTokenRequest,
    TokenResponseError, endpoint,
};
use tracing::{debug, info, warn};

use super::{CachedToken, SharedExternalSource, SharedTokenStore};
use crate::clock::SharedClock;
use crate::error::{TokenError, TokenRejection};

/// Where tokens come from.
#[derive(Clone)]
pub(crate) enum TokenSource {
    Stable(AppSecret),
    Classic(AppSecret),
    External(SharedExternalSource),
}

impl TokenSource {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Stable(_) => "stable_token",
            Self::Classic(_) => "token",
            Self::External(_) => "external",
        }
    }
}

/// Settings of the manager.
#[derive(Clone, Debug)]
pub(crate) struct TokenSettings {
    pub(crate) refresh_margin: Duration,
    pub(crate) cooldown: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) lease_poll: Duration,
}

/// The token held by this process, with the time to start refreshing it.
#[derive(Clone)]
struct Local {
    cached: CachedToken,
    refresh_at: SystemTime,
}

struct Cooldown {
    until: SystemTime,
    reason: TokenRejection,
    error: ApiError,
}

/// WeChat allows 20 forced stable-token refreshes a day, at least 30 s apart.
#[derive(Default)]
struct ForceBudget {
    day: u64,
    used: u32,
    last: Option<SystemTime>,
}

const FORCE_PER_DAY: u32 = 20;
const FORCE_SPACING: Duration = Duration::from_secs(30);
/// A failed background refresh is not tried again for this long; callers keep the valid token.
const BACKGROUND_RETRY: Duration = Duration::from_secs(5);

pub(crate) struct TokenManager {
    appid: AppId,
    source: TokenSource,
    store: SharedTokenStore,
    clock: SharedClock,
    transport: SharedTransport,
    api_base: String,
    settings: TokenSettings,
    holder: String,
    local: Mutex<Option<Local>>,
    /// Bumped, under the `local` lock, whenever `local` changes: callers that keep a copy of the
    /// token (the client's per-thread cache) compare it to know their copy is still current.
    generation: AtomicU64,
    refresh_lock: tokio::sync::Mutex<()>,
    background_running: AtomicBool,
    background_not_before: Mutex<SystemTime>,
    cooldown: Mutex<Option<Cooldown>>,
    force: Mutex<ForceBudget>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The point to start refreshing: `margin` before expiry, but never more than half the
/// remaining lifetime, so short-lived tokens are not refreshed on every call.
///
/// Nudged later by 1% of the lifetime (at most 1 s): our expiry is counted from the request's
/// start and WeChat rounds `expires_in` down, so our clock runs slightly ahead of WeChat's.
/// Without the nudge a refresh at exactly "5 minutes left" can land just before WeChat's
/// 5-minute rotation window opens and get the same stable token back: a wasted request.
fn refresh_point(expires_at: SystemTime, lifetime: Duration, margin: Duration) -> SystemTime {
    let nudge = (lifetime / 100).min(Duration::from_secs(1));
    expires_at - margin.min(lifetime / 2) + nudge
}

impl TokenManager {
    #[allow(clippy::too_many_arguments)] // an internal constructor fed by the builder
    pub(crate) fn new(
        appid: AppId,
        source: TokenSource,
        store: SharedTokenStore,
        clock: SharedClock,
        transport: SharedTransport,
        api_base: String,
        settings: TokenSettings,
        holder: String,
    ) -> Self {
        Self {
            appid,
            source,
            store,
            clock,
            transport,
            api_base,
            settings,
            holder,
            local: Mutex::new(None),
            generation: AtomicU64::new(0),
            refresh_lock: tokio::sync::Mutex::new(()),
            background_running: AtomicBool::new(false),
            background_not_before: Mutex::new(UNIX_EPOCH),
            cooldown: Mutex::new(None),
            force: Mutex::new(ForceBudget::default()),
        }
    }

    pub(crate) fn source_name(&self) -> &'static str {
        self.source.name()
    }

    /// A token to use now. Waits only when this process holds no valid token.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<AccessToken, TokenError> {
        self.get_cached().await.map(|t| t.token().clone())
    }

    /// Like [`get`](Self::get), with the expiry.
    pub(crate) async fn get_cached(self: &Arc<Self>) -> Result<CachedToken, TokenError> {
        let now = self.clock.now();
        if let Some(l) = lock(&self.local).as_ref() {
            if now < l.refresh_at {
                return Ok(l.cached.clone());
            }
            if now < l.cached.expires_at() {
                self.spawn_background_refresh(now);
                return Ok(l.cached.clone());
            }
        }
        self.refresh(None).await
    }

    /// The current generation of the held token (see the field).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The held token, the instant until which it may be used without asking again (its
    /// refresh point), and the generation they belong to, read together.
    pub(crate) fn snapshot(&self) -> Option<(AccessToken, SystemTime, u64)> {
        let local = lock(&self.local);
        let l = local.as_ref()?;
        Some((l.cached.token().clone(), l.refresh_at, self.generation.load(Ordering::Acquire)))
    }

    /// WeChat rejected `rejected` (40001/40014/42001): returns a different valid token,
    /// refreshing at most once per process however many callers report the same rejection.
    pub(crate) async fn rejected(
        self: &Arc<Self>,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        self.refresh(Some(rejected)).await.map(|t| t.token().clone())
    }

    fn spawn_background_refresh(self: &Arc<Self>, now: SystemTime) {
        if now < *lock(&self.background_not_before) || self.background_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            debug!(appid = %this.appid, "refreshing the access token ahead of expiry");
            if let Err(e) = this.refresh(None).await {
                warn!(appid = %this.appid, error = %e, "background token refresh failed; the current token is still served");
                *lock(&this.background_not_before) = this.clock.now() + BACKGROUND_RETRY;
            }
            this.background_running.store(false, Ordering::Release);
        });
    }

    fn check_cooldown(&self, now: SystemTime) -> Result<(), TokenError> {
        let mut guard = lock(&self.cooldown);
        if let Some(c) = guard.as_ref() {
            if let Ok(remaining) = c.until.duration_since(now)
                && !remaining.is_zero()
            {
                return Err(TokenError::CoolingDown {
                    reason: c.reason.clone(),
                    error: c.error.clone(),
                    remaining,
                });
            }
            *guard = None;
        }
        Ok(())
    }

    /// The process's token, when it is not the rejected one and not yet due for refresh.
    fn good_local(&self, now: SystemTime, rejected: Option<&AccessToken>) -> Option<CachedToken> {
        let local = lock(&self.local);
        let l = local.as_ref()?;
        (now < l.refresh_at && Some(l.cached.token()) != rejected).then(|| l.cached.clone())
    }

    /// The process's token while it is still valid at all (for when refreshing fails).
    fn valid_local(&self, now: SystemTime, rejected: Option<&AccessToken>) -> Option<CachedToken> {
        let local = lock(&self.local);
        let l = local.as_ref()?;
        (now < l.cached.expires_at() && Some(l.cached.token()) != rejected).then(|| l.cached.clone())
    }

    fn adopt(&self, cached: CachedToken, lifetime: Option<Duration>, now: SystemTime) -> CachedToken {
        let remaining = cached.expires_at().duration_since(now).unwrap_or_default();
        let lifetime = lifetime.unwrap_or(remaining);
        let refresh_at = refresh_point(cached.expires_at(), lifetime, self.settings.refresh_margin);
        let mut local = lock(&self.local);
        *local = Some(Local { cached: cached.clone(), refresh_at });
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(local);
        cached
    }

    /// A stored token is usable when it is neither the rejected one nor the one this process
    /// already holds (and is refreshing because it is due), and is not itself due for refresh.
    /// Its lifetime is unknown, so it is due at half its remaining life at the latest.
    fn usable(&self, t: &CachedToken, now: SystemTime, rejected: Option<&AccessToken>) -> bool {
        let held = lock(&self.local).as_ref().is_some_and(|l| l.cached.token() == t.token());
        let remaining = t.expires_at().duration_since(now).unwrap_or_default();
        !held
            && Some(t.token()) != rejected
            && now < refresh_point(t.expires_at(), remaining, self.settings.refresh_margin)
    }

    async fn refresh(self: &Arc<Self>, rejected: Option<&AccessToken>) -> Result<CachedToken, TokenError> {
        self.check_cooldown(self.clock.now())?;
        let _single_flight = self.refresh_lock.lock().await;
        let now = self.clock.now();
        // Another task of this process may have refreshed while we waited for the lock.
        if let Some(t) = self.good_local(now, rejected) {
            return Ok(t);
        }
        // A refusal seen by the task before us also stops us, without contacting WeChat.
        self.check_cooldown(now)?;

        // Another instance may have refreshed into the shared store.
        match self.adopt_stored(rejected).await {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {}
            Err(e) => {
                warn!(appid = %self.appid, error = %e, "token store unavailable; asking the token source directly");
            }
        }

        if let Some(r) = rejected {
            self.invalidate(r).await;
        }

        if let Some(found) = self.wait_for_lease(now, rejected).await {
            return Ok(found);
        }
        // The lease is ours. The previous holder may have saved its token just before releasing
        // it: read once more rather than ask WeChat again.
        if let Ok(Some(t)) = self.adopt_stored(rejected).await {
            self.release_lease().await;
            return Ok(t);
        }
        let result = self.fetch_fresh(rejected).await;
        // Saved before the lease is released, so the next holder finds the new token.
        let outcome = self.keep_fetched(result, rejected).await;
        self.release_lease().await;
        outcome
    }

    /// The store's token, adopted, when it is usable (another instance refreshed it).
    async fn adopt_stored(
        &self,
        rejected: Option<&AccessToken>,
    ) -> Result<Option<CachedToken>, crate::TokenStoreError> {
        let stored = self.store.load(&self.appid).await?;
        let now = self.clock.now();
        Ok(stored.filter(|t| self.usable(t, now, rejected)).map(|t| self.adopt(t, None, now)))
    }

    async fn release_lease(&self) {
        if let Err(e) = self.store.release_refresh_lease(&self.appid, &self.holder).await {
            warn!(appid = %self.appid, error = %e, "could not release the refresh lease; it will expire");
        }
    }

    /// Stores a fetched token (keeping a newer one found in the store), or on failure serves a
    /// still-valid local token where that is safe.
    async fn keep_fetched(
        &self,
        result: Result<(CachedToken, Duration), TokenError>,
        rejected: Option<&AccessToken>,
    ) -> Result<CachedToken, TokenError> {
        match result {
            Ok((cached, lifetime)) => {
                let kept = match self.store.save(&self.appid, &cached).await {
                    Ok(kept) => kept,
                    Err(e) => {
                        warn!(appid = %self.appid, error = %e, "token store unavailable; keeping the new token in this process only");
                        cached.clone()
                    }
                };
                let lifetime = (kept.token() == cached.token()).then_some(lifetime);
                Ok(self.adopt(kept, lifetime, self.clock.now()))
            }
            // Serve a still-valid token rather than fail, when only the refresh failed.
            Err(e) => match self.valid_local(self.clock.now(), rejected) {
                Some(t) if !matches!(e, TokenError::RejectedTokenReissued) => {
                    warn!(appid = %self.appid, error = %e, "token refresh failed; serving the current token until it expires");
                    Ok(t)
                }
                _ => Err(e),
            },
        }
    }

    async fn invalidate(&self, rejected: &AccessToken) {
        {
            let mut local = lock(&self.local);
            if local.as_ref().is_some_and(|l| l.cached.token() == rejected) {
                *local = None;
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        match self.store.invalidate(&self.appid, rejected).await {
            Ok(removed) => {
                info!(appid = %self.appid, removed, "access token rejected by WeChat; invalidated");
            }
            Err(e) => {
                warn!(appid = %self.appid, error = %e, "could not invalidate the rejected token in the store");
            }
        }
        if let TokenSource::External(src) = &self.source
            && let Err(e) = src.invalidate(&self.appid, rejected).await
        {
            warn!(appid = %self.appid, error = %e, "external token source did not take the invalidation");
        }
    }

    /// Becomes the fleet's refresher, or waits for the one that is and returns its token.
    /// Bounded: after the lease's lifetime without a new token, refreshes anyway.
    async fn wait_for_lease(&self, start: SystemTime, rejected: Option<&AccessToken>) -> Option<CachedToken> {
        let ttl = self.settings.lease_ttl;
        loop {
            match self.store.try_acquire_refresh_lease(&self.appid, &self.holder, ttl).await {
                Ok(true) => return None,
                Err(e) => {
                    warn!(appid = %self.appid, error = %e, "refresh lease unavailable; refreshing without it");
                    return None;
                }
                Ok(false) => {}
            }
            let now = self.clock.now();
            if now.duration_since(start).unwrap_or_default() >= ttl {
                warn!(appid = %self.appid, "the refresh lease holder did not deliver a token in time; refreshing");
                return None;
            }
            self.clock.sleep(self.settings.lease_poll).await;
            if let Ok(Some(t)) = self.adopt_stored(rejected).await {
                return Some(t);
            }
        }
    }

    /// Fetches a token different from `rejected`, forcing a stable refresh when the normal one
    /// hands the rejected token back and WeChat's budget allows it.
    async fn fetch_fresh(
        &self,
        rejected: Option<&AccessToken>,
    ) -> Result<(CachedToken, Duration), TokenError> {
        let (cached, lifetime) = self.fetch(false).await?;
        if Some(cached.token()) != rejected {
            return Ok((cached, lifetime));
        }
        if matches!(self.source, TokenSource::Stable(_)) && self.take_force_budget() {
            info!(appid = %self.appid, "stable token endpoint returned the rejected token; forcing a refresh");
            let (cached, lifetime) = self.fetch(true).await?;
            if Some(cached.token()) != rejected {
                return Ok((cached, lifetime));
            }
        }
        Err(TokenError::RejectedTokenReissued)
    }

    fn take_force_budget(&self) -> bool {
        let now = self.clock.now();
        // WeChat's days are Beijing days (UTC+8).
        let day = (now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + 8 * 3600) / 86_400;
        let mut b = lock(&self.force);
        if b.day != day {
            *b = ForceBudget { day, used: 0, last: b.last };
        }
        let spaced = b.last.is_none_or(|l| now.duration_since(l).unwrap_or_default() >= FORCE_SPACING);
        if b.used < FORCE_PER_DAY && spaced {
            b.used += 1;
            b.last = Some(now);
            true
        } else {
            false
        }
    }

    /// One request to the token source. Returns the token and its lifetime; expiry counts from
    /// when the request started, so a slow answer cannot outlive a newer token.
    async fn fetch(&self, force_refresh: bool) -> Result<(CachedToken, Duration), TokenError> {
        let started = self.clock.now();
        let secret_request = match &self.source {
            TokenSource::External(src) => {
                let cached = src.fetch(&self.appid).await.map_err(TokenError::External)?;
                let lifetime = cached.expires_at().duration_since(started).unwrap_or_default();
                return Ok((cached, lifetime));
            }
            TokenSource::Stable(secret) => {
                let body =
                    StableTokenRequest { appid: self.appid.clone(), secret: secret.clone(), force_refresh }
                        .body();
                let uri = format!("{}{}", self.api_base, endpoint::STABLE_TOKEN.path);
                HttpRequest::post(&uri, Bytes::from(body.expose_secret().to_owned()))
            }
            TokenSource::Classic(secret) => {
                let pq = ClassicTokenRequest { appid: self.appid.clone(), secret: secret.clone() }
                    .path_and_query();
                HttpRequest::get(format!("{}{}", self.api_base, pq.expose_secret()))
            }
        };
        // The URI may hold the secret: keep none of `http::Error`'s text.
        let request = secret_request.map_err(|_| {
            TokenError::Transport(TransportError::from_kind(TransportErrorKind::InvalidRequest))
        })?;
        info!(appid = %self.appid, endpoint = self.source.name(), force_refresh, "requesting an access token");
        let response = self.transport.send(request).await.map_err(TokenError::Transport)?;
        if response.status() != 200 {
            return Err(TokenError::HttpStatus { status: response.status().as_u16() });
        }
        match IssuedToken::parse(response.body()) {
            Ok(issued) => {
                let lifetime = Duration::from_secs(issued.expires_in.into());
                Ok((CachedToken::new(issued.access_token, started + lifetime), lifetime))
            }
            Err(TokenResponseError::Api(error)) => {
                let reason = TokenRejection::of(&error);
                warn!(appid = %self.appid, errcode = error.code().get(), reason = %reason, "token endpoint refused");
                if reason.starts_cooldown() {
                    *lock(&self.cooldown) = Some(Cooldown {
                        until: self.clock.now() + self.settings.cooldown,
                        reason: reason.clone(),
                        error: error.clone(),
                    });
                }
                Err(TokenError::Rejected { reason, error })
            }
            Err(TokenResponseError::Decode(e)) => Err(TokenError::Decode(e)),
            Err(TokenResponseError::Invalid(e)) => Err(TokenError::Invalid(e)),
            Err(_) => Err(TokenError::HttpStatus { status: 200 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::refresh_point;

    #[test]
    fn the_refresh_point_falls_inside_wechats_rotation_window() {
        let exp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let secs = Duration::from_secs;
        // WeChat's 2-hour token with the 5-minute margin: 299 s before our expiry, so the
        // request lands inside WeChat's last 5 minutes even though our expiry runs early.
        assert_eq!(refresh_point(exp, secs(7200), secs(300)), exp - secs(299));
        // Short lifetimes: half of it, nudged by 1%.
        assert_eq!(refresh_point(exp, secs(4), secs(300)), exp - secs(2) + Duration::from_millis(40));
        // A small margin is honoured, nudged by at most a second.
        assert_eq!(refresh_point(exp, secs(7200), secs(10)), exp - secs(9));
    }
}
