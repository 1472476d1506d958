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

mod backoff;
mod fleet;
mod refresh_ahead;
mod source;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use subscribe_transport::SharedTransport;
use subscribe_types::{AccessToken, AppId};
use tokio::sync::watch;

use super::{CachedToken, SharedTokenStore};
use crate::clock::SharedClock;
use crate::error::TokenError;
use backoff::{Backoff, Cooldown, cooling_down};
use source::ForceBudget;
pub(crate) use source::TokenSource;

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
    ) -> Result<CachedToken, TokenError> {
        {
            let mut st = lock(&self.state);
            if st.local.as_ref().is_some_and(|l| l.cached.token() == rejected) {
                st.local = None;
            }
        }
        self.obtain(Some(rejected)).await
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

    /// Runs `fut` against the clock's monotonic reading; `None` when `limit` passes first.
    async fn bounded<T>(&self, limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
        let deadline = self.clock.monotonic() + limit;
        tokio::select! {
            biased;
            v = fut => Some(v),
            () = self.clock.sleep_until(deadline) => None,
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
