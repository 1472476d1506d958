//! The token manager: one refresh attempt at a time per process (and, with a leasing store,
//! per fleet), its result shared by every caller waiting for it; backoff after an outage,
//! cool-down after a refusal; refresh-ahead in the background; invalidate-and-replay on
//! rejection.
//!
//! The shape:
//! - Callers that hold no usable token join the running **flight** (or start one) and wait on
//!   its `watch` channel, each up to its own deadline (`token_wait`). They never sleep and
//!   never contact the token source themselves, so N waiting callers cost one request per
//!   attempt whatever N is.
//! - A flight is a spawned task: it attempts, and after a failure of the token source waits out
//!   the backoff and attempts again while anyone still waits. Being its own task, a caller
//!   cancelled mid-refresh cannot leave the fleet's lease held or drop a token WeChat has just
//!   issued.
//! - A failure that only a configuration change fixes (wrong secret, IP not on the allow-list,
//!   quota used up) ends the flight and starts the cool-down instead.
//! - Backoff, cool-down, waits and timeouts run on the clock's monotonic reading; token expiry,
//!   shared with other instances through the store, on the wall clock, converted to monotonic
//!   time when this process adopts a token.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use subscribe_transport::{HttpRequest, HttpTransport, SharedTransport, TransportError, TransportErrorKind};
use subscribe_types::secrecy::ExposeSecret;
use subscribe_types::{
    AccessToken, AppId, AppSecret, ClassicTokenRequest, IssuedToken, StableTokenRequest, TokenResponseError,
    endpoint,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{
    CachedToken, ExternalSourceError, HoldOff, SharedExternalSource, SharedTokenStore, TokenStoreError,
};
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

/// Settings of the manager (see the builder methods of the same names).
#[derive(Clone, Debug)]
pub(crate) struct TokenSettings {
    pub(crate) refresh_margin: Duration,
    pub(crate) cooldown: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) lease_poll: Duration,
    /// How long a caller without a usable token waits for one.
    pub(crate) token_wait: Duration,
    /// The bound on one token request (or one `ExternalTokenSource::fetch`).
    pub(crate) request_timeout: Duration,
    /// The bound on each call into the token store (and `ExternalTokenSource::invalidate`).
    pub(crate) store_timeout: Duration,
    /// The first backoff after a failed attempt; each next one doubles, up to `backoff_max`.
    pub(crate) backoff_first: Duration,
    pub(crate) backoff_max: Duration,
}

/// A call into something outside the manager did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("{what} did not answer within {after:?}")]
struct TimedOut {
    what: &'static str,
    after: Duration,
}

/// The token held by this process; instants on the clock's monotonic reading.
#[derive(Clone)]
struct Local {
    cached: CachedToken,
    refresh_at: Duration,
    expires_at: Duration,
}

struct Cooldown {
    until: Duration,
    error: TokenError,
}

/// Failures of the token source since its last success.
#[derive(Default)]
struct Backoff {
    failures: u32,
    /// No attempt before this monotonic instant.
    not_before: Duration,
    last: Option<TokenError>,
}

/// What a flight tells the callers waiting on it.
#[derive(Clone)]
enum Status {
    /// An attempt is running.
    Attempting,
    /// The last attempt failed (see the manager's backoff record); the next starts at
    /// `next_at`.
    Waiting { next_at: Duration },
    /// The flight is over.
    Done(Result<CachedToken, TokenError>),
}

struct Flight {
    id: u64,
    tx: Arc<watch::Sender<Status>>,
    /// The latest deadline of the callers that joined: an attempt planned after it would
    /// serve nobody, so the flight ends instead of waiting for it.
    until: Duration,
}

#[derive(Default)]
struct State {
    local: Option<Local>,
    flight: Option<Flight>,
    next_flight: u64,
    backoff: Backoff,
    cooldown: Option<Cooldown>,
}

/// WeChat allows 20 forced stable-token refreshes a day, at least 30 s apart.
#[derive(Default)]
struct ForceBudget {
    day: u64,
    used: u32,
    /// Monotonic instant of the last forced refresh.
    last: Option<Duration>,
}

const FORCE_PER_DAY: u32 = 20;
const FORCE_SPACING: Duration = Duration::from_secs(30);

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

pub(crate) struct TokenManager {
    appid: AppId,
    source: TokenSource,
    store: SharedTokenStore,
    clock: SharedClock,
    transport: SharedTransport,
    api_base: String,
    settings: TokenSettings,
    holder: String,
    state: Mutex<State>,
    force: Mutex<ForceBudget>,
    jitter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The point to start refreshing, as time left before expiry: `margin`, but never more than
/// half the lifetime, so short-lived tokens are not refreshed on every call.
///
/// Less 1% of the lifetime (at most 1 s): our expiry is counted from the request's start and
/// WeChat rounds `expires_in` down, so our clock runs slightly ahead of WeChat's. Without the
/// nudge a refresh at exactly "5 minutes left" can land just before WeChat's 5-minute rotation
/// window opens and get the same stable token back: a wasted request.
fn refresh_lead(lifetime: Duration, margin: Duration) -> Duration {
    let nudge = (lifetime / 100).min(Duration::from_secs(1));
    margin.min(lifetime / 2).saturating_sub(nudge)
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
        seed: u64,
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
            state: Mutex::new(State::default()),
            force: Mutex::new(ForceBudget::default()),
            jitter: AtomicU64::new(seed),
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
        let now = self.clock.monotonic();
        {
            let mut st = lock(&self.state);
            if let Some(l) = st.local.as_ref() {
                if now < l.refresh_at {
                    return Ok(l.cached.clone());
                }
                if now < l.expires_at {
                    // Due for refresh but valid: served while one background attempt runs. A
                    // failing refresh never blocks or fails this call.
                    let held = l.cached.clone();
                    self.start_background(&mut st, now);
                    return Ok(held);
                }
            }
        }
        self.obtain(None).await
    }

    /// WeChat rejected `rejected` (40001/40014/42001): returns a different valid token,
    /// refreshing once however many callers report the same rejection.
    pub(crate) async fn rejected(
        self: &Arc<Self>,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        {
            let mut st = lock(&self.state);
            if st.local.as_ref().is_some_and(|l| l.cached.token() == rejected) {
                st.local = None;
            }
        }
        self.obtain(Some(rejected)).await.map(|t| t.token().clone())
    }

    /// Starts a background refresh unless one runs, the backoff says wait, or a cool-down is on.
    fn start_background(self: &Arc<Self>, st: &mut State, now: Duration) {
        let cooling = st.cooldown.as_ref().is_some_and(|c| now < c.until);
        if st.flight.is_none() && now >= st.backoff.not_before && !cooling {
            debug!(appid = %self.appid, "refreshing the access token ahead of expiry");
            drop(self.start_flight(st, None, None));
        }
    }

    /// Starts a flight for a caller waiting until `deadline`, or (`None`) in the background.
    fn start_flight(
        self: &Arc<Self>,
        st: &mut State,
        rejected: Option<AccessToken>,
        deadline: Option<Duration>,
    ) -> watch::Receiver<Status> {
        let (tx, rx) = watch::channel(Status::Attempting);
        let tx = Arc::new(tx);
        st.next_flight += 1;
        let id = st.next_flight;
        st.flight = Some(Flight { id, tx: Arc::clone(&tx), until: deadline.unwrap_or_default() });
        let this = Arc::clone(self);
        let background = deadline.is_none();
        tokio::spawn(async move { this.fly(id, tx, rejected, background).await });
        rx
    }

    /// A caller without a usable token: joins the running flight or starts one, and waits for
    /// its token up to `token_wait`.
    async fn obtain(self: &Arc<Self>, rejected: Option<&AccessToken>) -> Result<CachedToken, TokenError> {
        let start = self.clock.monotonic();
        let deadline = start + self.settings.token_wait;
        // What the caller is told when it gives up: the manager's own record of the failures,
        // not only what this caller happened to see (a `watch` keeps the latest value only).
        let unavailable = |now: Duration| {
            let st = lock(&self.state);
            let b = &st.backoff;
            TokenError::Unavailable {
                waited: now.saturating_sub(start),
                attempts: b.failures,
                next_attempt_in: b.last.as_ref().map(|_| b.not_before.saturating_sub(now)),
                last: b.last.clone().map(Box::new),
            }
        };
        loop {
            let mut rx = {
                let mut st = lock(&self.state);
                let now = self.clock.monotonic();
                if let Some(l) = st.local.as_ref()
                    && now < l.expires_at
                    && Some(l.cached.token()) != rejected
                {
                    return Ok(l.cached.clone());
                }
                if let Some(c) = &st.cooldown {
                    if now < c.until {
                        return Err(cooling_down(&c.error, c.until.saturating_sub(now)));
                    }
                    st.cooldown = None;
                }
                if now >= deadline {
                    drop(st);
                    return Err(unavailable(now));
                }
                if let Some(f) = &mut st.flight {
                    f.until = f.until.max(deadline);
                    f.tx.subscribe()
                } else {
                    if st.backoff.failures > 0 && st.backoff.not_before > deadline {
                        // No attempt can start before this caller gives up: fail now.
                        drop(st);
                        return Err(unavailable(now));
                    }
                    self.start_flight(&mut st, rejected.cloned(), Some(deadline))
                }
            };
            loop {
                let status = rx.borrow_and_update().clone();
                match status {
                    Status::Done(Ok(t)) if Some(t.token()) != rejected => return Ok(t),
                    // A flight that did not know of our rejection brought the rejected token
                    // back: start one that does.
                    Status::Done(Ok(_)) => break,
                    Status::Done(Err(e)) => return Err(e),
                    Status::Waiting { next_at } => {
                        if next_at > deadline {
                            return Err(unavailable(self.clock.monotonic()));
                        }
                    }
                    Status::Attempting => {}
                }
                tokio::select! {
                    biased;
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The flight ended without a word: it panicked (in a store or a
                            // source), which counts as a failed attempt. Not started anew here,
                            // or a store that always panics would spin.
                            return Err(unavailable(self.clock.monotonic()));
                        }
                    }
                    () = self.clock.sleep_until(deadline) => {
                        return Err(unavailable(self.clock.monotonic()));
                    }
                }
            }
        }
    }

    /// The flight: attempts until one succeeds, fails for good, or nobody waits any more.
    async fn fly(
        self: Arc<Self>,
        id: u64,
        tx: Arc<watch::Sender<Status>>,
        rejected: Option<AccessToken>,
        background: bool,
    ) {
        let _end = EndOnDrop { manager: &self, id };
        let mut first = true;
        loop {
            let wait = lock(&self.state).backoff.not_before.saturating_sub(self.clock.monotonic());
            if !wait.is_zero() {
                self.clock.sleep(wait).await;
            }
            {
                let mut st = lock(&self.state);
                // A background refresh makes its first attempt with nobody waiting; later ones
                // only for callers that still wait.
                if !(first && background) && tx.receiver_count() == 0 {
                    end_flight(&mut st, id);
                    return;
                }
            }
            first = false;
            tx.send_replace(Status::Attempting);
            let (result, lease_held) = self.attempt(rejected.as_ref()).await;
            let result = match result {
                Ok(token) => Ok(token),
                Err(e) => Err(self.after_failure(e, lease_held).await),
            };
            let mut st = lock(&self.state);
            match result {
                Ok(token) => {
                    st.backoff = Backoff::default();
                    end_flight(&mut st, id);
                    tx.send_replace(Status::Done(Ok(token)));
                    return;
                }
                Err((e, None)) => {
                    end_flight(&mut st, id);
                    tx.send_replace(Status::Done(Err(e)));
                    return;
                }
                Err((e, Some(pause))) => {
                    let now = self.clock.monotonic();
                    let b = &mut st.backoff;
                    b.failures += 1;
                    b.not_before = now + pause;
                    b.last = Some(e);
                    let next_at = b.not_before;
                    tx.send_replace(Status::Waiting { next_at });
                    let wanted = st.flight.as_ref().is_some_and(|f| f.id == id && next_at <= f.until);
                    if !wanted || tx.receiver_count() == 0 {
                        end_flight(&mut st, id);
                        return;
                    }
                }
            }
        }
    }

    /// A failed attempt: logs it, works out the pause before the next one (`None`: no next
    /// one, the error is final) and tells the fleet through the store when this instance held
    /// the lease.
    async fn after_failure(&self, e: TokenError, lease_held: bool) -> (TokenError, Option<Duration>) {
        let pause = if e.is_final() {
            None
        } else if let TokenError::HeldOff { remaining, .. } = &e {
            Some(*remaining)
        } else {
            let failures = lock(&self.state).backoff.failures;
            Some(self.pause_after(failures))
        };
        if let Some(p) = pause {
            warn!(appid = %self.appid, error = %e, retry_in = ?p, "token attempt failed; backing off");
        } else {
            warn!(appid = %self.appid, error = %e, "token attempt failed");
        }
        if lease_held && let Some(lease) = self.store.refresh_lease() {
            // Pause the fleet: for the backoff after an outage, for the cool-down after a
            // refusal. Either way the lease is given up.
            let fleet_pause = pause.or_else(|| e.starts_cooldown().then_some(self.settings.cooldown));
            let reason = e.to_string();
            let told = match fleet_pause {
                Some(p) => {
                    self.store_call(lease.hold_off_refresh(&self.appid, &self.holder, p, &reason)).await
                }
                None => self.store_call(lease.release_refresh_lease(&self.appid, &self.holder)).await,
            };
            if let Err(err) = told {
                warn!(appid = %self.appid, error = %err, "could not hand the refresh lease back; it will expire");
            }
        }
        (e, pause)
    }

    /// One attempt: the shared store, then the lease, then the token source. Returns whether
    /// this instance still holds the refresh lease (only after a failed fetch).
    ///
    /// When the store fails or does not answer, the attempt goes on without it (straight to
    /// the token source, keeping the token in this process), so a broken store costs one
    /// `store_timeout` per attempt, not one per step.
    async fn attempt(&self, rejected: Option<&AccessToken>) -> (Result<CachedToken, TokenError>, bool) {
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

    /// The backoff before the next attempt after `failures` failed ones: `backoff_first`
    /// doubling up to `backoff_max`, with jitter.
    fn pause_after(&self, failures: u32) -> Duration {
        let random = crate::state::splitmix(&self.jitter);
        crate::retry::backoff(self.settings.backoff_first, self.settings.backoff_max, failures, random)
    }

    /// Runs `fut` against the clock's monotonic reading; `None` when `limit` passes first.
    async fn bounded<T>(&self, limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
        let deadline = self.clock.monotonic() + limit;
        tokio::select! {
            biased;
            v = fut => Some(v),
            () = self.clock.sleep_until(deadline) => None,
        }
    }

    /// A call into the token store, bounded by `store_timeout`.
    async fn store_call<T>(
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

    /// A stored token is usable when it is neither the rejected one nor the one this process
    /// already holds (and is refreshing because it is due), and is not itself due for refresh.
    /// Its lifetime is unknown, so it is due at half its remaining life at the latest.
    fn usable(&self, t: &CachedToken, rejected: Option<&AccessToken>) -> bool {
        let held = lock(&self.state).local.as_ref().is_some_and(|l| l.cached.token() == t.token());
        let remaining = t.expires_at().duration_since(self.clock.now()).unwrap_or_default();
        !held
            && Some(t.token()) != rejected
            && remaining > refresh_lead(remaining, self.settings.refresh_margin)
    }

    /// Makes `cached` the process's token. Its expiry, a wall-clock time, becomes a monotonic
    /// instant here; `lifetime` (when known) places the refresh point.
    fn adopt(&self, cached: CachedToken, lifetime: Option<Duration>) -> CachedToken {
        let now = self.clock.monotonic();
        let remaining = cached.expires_at().duration_since(self.clock.now()).unwrap_or_default();
        let lead = refresh_lead(lifetime.unwrap_or(remaining), self.settings.refresh_margin);
        let local = Local {
            cached: cached.clone(),
            refresh_at: now + remaining.saturating_sub(lead),
            expires_at: now + remaining,
        };
        lock(&self.state).local = Some(local);
        cached
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
    /// refreshes anyway. A store without a [`RefreshLease`](super::RefreshLease) serves one
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
        let now = self.clock.monotonic();
        // WeChat's days are Beijing days (UTC+8).
        let wall = self.clock.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let day = (wall.as_secs() + 8 * 3600) / 86_400;
        let mut b = lock(&self.force);
        if b.day != day {
            *b = ForceBudget { day, used: 0, last: b.last };
        }
        let spaced = b.last.is_none_or(|l| now.saturating_sub(l) >= FORCE_SPACING);
        if b.used < FORCE_PER_DAY && spaced {
            b.used += 1;
            b.last = Some(now);
            true
        } else {
            false
        }
    }

    /// One request to the token source, bounded by `request_timeout`. Returns the token and
    /// its lifetime; expiry counts from when the request started, so a slow answer cannot
    /// outlive a newer token.
    async fn fetch(&self, force_refresh: bool) -> Result<(CachedToken, Duration), TokenError> {
        let started: SystemTime = self.clock.now();
        let limit = self.settings.request_timeout;
        let secret_request = match &self.source {
            TokenSource::External(src) => {
                let cached = match self.bounded(limit, src.fetch(&self.appid)).await {
                    Some(Ok(cached)) => cached,
                    Some(Err(e)) => return Err(TokenError::External(ExternalSourceError::new(e))),
                    None => {
                        let e = TimedOut { what: "the external token source", after: limit };
                        return Err(TokenError::External(ExternalSourceError::new(e)));
                    }
                };
                let lifetime = cached.expires_at().duration_since(started).unwrap_or_default();
                return Ok((cached, lifetime));
            }
            TokenSource::Stable(secret) => {
                let body =
                    StableTokenRequest { appid: self.appid.clone(), secret: secret.clone(), force_refresh }
                        .body();
                let uri = format!("{}{}", self.api_base, endpoint::STABLE_TOKEN.path);
                // The body holds the secret: a copy the transport's `Bytes` own, zeroed when the
                // last of their clones (a transport's retry keeps one) is dropped.
                let body = Zeroizing::new(body.expose_secret().as_bytes().to_vec());
                HttpRequest::post(&uri, Bytes::from_owner(body))
            }
            TokenSource::Classic(secret) => {
                let pq = ClassicTokenRequest { appid: self.appid.clone(), secret: secret.clone() }
                    .path_and_query();
                // The URI holds the secret: parsed from bytes it keeps slices of, zeroed when the
                // last of them is dropped.
                let pq = pq.expose_secret();
                let mut uri = Zeroizing::new(Vec::with_capacity(self.api_base.len() + pq.len()));
                uri.extend_from_slice(self.api_base.as_bytes());
                uri.extend_from_slice(pq.as_bytes());
                subscribe_transport::http::Uri::from_maybe_shared(Bytes::from_owner(uri))
                    .map_err(subscribe_transport::http::Error::from)
                    .and_then(HttpRequest::get)
            }
        };
        // The URI may hold the secret: keep none of `http::Error`'s text.
        let request = secret_request.map_err(|_| {
            TokenError::Transport(TransportError::from_kind(TransportErrorKind::InvalidRequest))
        })?;
        info!(appid = %self.appid, endpoint = self.source.name(), force_refresh, "requesting an access token");
        let Some(sent) = self.bounded(limit, self.transport.send(request)).await else {
            let e = TimedOut { what: "the token endpoint", after: limit };
            return Err(TokenError::Transport(TransportError::timeout(e)));
        };
        let response = sent.map_err(TokenError::Transport)?;
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
                let e = TokenError::Rejected { reason, error };
                if e.starts_cooldown() {
                    let until = self.clock.monotonic() + self.settings.cooldown;
                    lock(&self.state).cooldown = Some(Cooldown { until, error: e.clone() });
                }
                Err(e)
            }
            Err(TokenResponseError::Decode(e)) => Err(TokenError::Decode(e)),
            Err(TokenResponseError::Invalid(e)) => Err(TokenError::Invalid(e)),
            Err(_) => Err(TokenError::HttpStatus { status: 200 }),
        }
    }
}

/// Ends a flight however its task ends. A flight that unwinds (a store or a source panicked)
/// counts as a failed attempt, so the next one waits out the backoff.
struct EndOnDrop<'a> {
    manager: &'a TokenManager,
    id: u64,
}

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        let m = self.manager;
        let mut st = lock(&m.state);
        if std::thread::panicking() && st.flight.as_ref().is_some_and(|f| f.id == self.id) {
            let pause = m.pause_after(st.backoff.failures);
            st.backoff.failures += 1;
            st.backoff.not_before = m.clock.monotonic() + pause;
        }
        end_flight(&mut st, self.id);
    }
}

/// Clears `id`'s flight from the state (a newer flight is left alone).
fn end_flight(st: &mut State, id: u64) {
    if st.flight.as_ref().is_some_and(|f| f.id == id) {
        st.flight = None;
    }
}

/// The error of a call made during the cool-down started by `refusal`.
fn cooling_down(refusal: &TokenError, remaining: Duration) -> TokenError {
    match refusal {
        TokenError::Rejected { reason, error } => {
            TokenError::CoolingDown { reason: reason.clone(), error: error.clone(), remaining }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::refresh_lead;

    #[test]
    fn the_refresh_point_falls_inside_wechats_rotation_window() {
        let secs = Duration::from_secs;
        // WeChat's 2-hour token with the 5-minute margin: 299 s before our expiry, so the
        // request lands inside WeChat's last 5 minutes even though our expiry runs early.
        assert_eq!(refresh_lead(secs(7200), secs(300)), secs(299));
        // Short lifetimes: half of it, less 1%.
        assert_eq!(refresh_lead(secs(4), secs(300)), Duration::from_millis(1960));
        // A small margin is honoured, less at most a second.
        assert_eq!(refresh_lead(secs(7200), secs(10)), secs(9));
    }
}
