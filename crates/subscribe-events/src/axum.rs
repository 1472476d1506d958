//! An axum endpoint for the server URL (feature `axum`): it answers WeChat's URL check,
//! verifies and decrypts each push, and hands the typed [`Event`] to your async callback,
//! answering WeChat within its time limit.
//!
//! ```
//! use subscribe_events::axum::PushEndpoint;
//! use subscribe_events::{EncodingAesKey, Event, Mode, Push, PushConfig};
//!
//! # fn main() -> Result<(), subscribe_events::PushError> {
//! let key = EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")?;
//! let push = Push::new(PushConfig::new("sandboxPushToken2026", "wx5a1db0c0ffee0001", Mode::Safe).aes_key(key));
//! let endpoint = PushEndpoint::new(push, |event: Event| async move {
//!     println!("{}", event.to_json());
//!     Ok::<(), std::io::Error>(())
//! });
//! let app: axum::Router = axum::Router::new().route("/wechat/push", endpoint.method_router());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! What it answers:
//!
//! | push | answer |
//! |---|---|
//! | the URL check, signed | 200, `echostr` |
//! | an event, handled by the callback | 200 `success` |
//! | an event whose callback failed (or panicked) | 500; the push is forgotten (at most [`MAX_FORGETS`](crate::MAX_FORGETS) times), so WeChat's retry is handled again |
//! | an event the replay cache cannot check (it failed, or is full) | 503, the callback is not called |
//! | an event whose callback is still running at the time limit | 200 `success` (WeChat does not retry); the callback goes on, a failure is logged; or 503 with [`busy_past_time_limit`](PushEndpoint::busy_past_time_limit) (WeChat retries) |
//! | a replay of a push already accepted | 200 `success`, the callback is not called |
//! | a copy of a push whose callback is still running in this process | 503 (the first may yet fail); the callback is not called |
//! | refused ([`PushError`]) | its [`http_status`](PushError::http_status), its text (one text for every push that verified but did not open) |
//! | a body still arriving at the time limit | 408 |
//!
//! Pushes are remembered in the endpoint's own [`MemoryReplayCache`] unless it is given a
//! shared one ([`PushEndpoint::replay_cache`]): behind a load balancer, give every instance the
//! same Redis or SQL cache, or a replay sent to the second instance is read again.
//!
//! Every answer is counted ([`PushEndpoint::stats`]). Refusals are logged at `WARN` with
//! their detail (the [`OpenFailure`](crate::OpenFailure) of a push that did not open, which the
//! answer never carries), at most [`REFUSAL_LOG_BURST`] at once and then one every
//! [`REFUSAL_LOG_EVERY`], each saying how many went unlogged since the one before: a flood of
//! forged pushes cannot flood the log. Our own failures (a callback's, the replay cache's) are
//! logged at `ERROR` on a rate of their own, so a flood cannot hide them either.
//! The callback, and forgetting a push whose callback failed, run in a task of their own: a
//! caller that hangs up cancels neither. The configuration's [`warnings`](crate::PushConfig::warnings)
//! (a short Token, a mode that takes unsigned bodies) are logged when the endpoint is built.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http_body_util::BodyExt as _;

use crate::replay::{MemoryReplayCache, ReplayCache, ReplayCacheError, ReplayKey};
use crate::{Event, MAX_BODY, Push, PushError};

/// What a callback may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Callback =
    Arc<dyn Fn(Event) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync>;

/// Refusals logged at once before the rate applies.
pub const REFUSAL_LOG_BURST: u32 = 5;
/// Then one refusal logged every this long (the others are counted, and the next logged one
/// says how many).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What an endpoint (with all its clones) has answered since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushStats {
    /// Pushes and URL checks refused: a bad signature, a stale timestamp, a repeated or missing
    /// parameter, a body that did not open, an oversized, unreadable or too slow body. Every
    /// one, logged or not.
    pub refused: u64,
    /// Replays of a push already read, answered `success` without the callback.
    pub replayed: u64,
    /// Events the callback handled (or was still running at the time limit): `success`.
    pub handled: u64,
    /// Events whose callback failed or panicked: 500.
    pub failed: u64,
    /// Pushes the replay cache could not check (it failed or is full): 503. Also counted in
    /// `refused`.
    pub unavailable: u64,
    /// Copies of a push whose callback was still running in this process: 503, so that the
    /// sender comes back (the first copy's callback may yet fail and be forgotten).
    pub busy: u64,
}

#[derive(Debug, Default)]
struct Counters {
    refused: AtomicU64,
    replayed: AtomicU64,
    handled: AtomicU64,
    failed: AtomicU64,
    unavailable: AtomicU64,
    busy: AtomicU64,
    /// Refusals not logged since the last one that was.
    unlogged: AtomicU64,
    /// Failures (callback, replay cache) not logged since the last one that was.
    failures_unlogged: AtomicU64,
}

/// The server URL's endpoint: a [`Push`] and the callback that receives its events.
#[derive(Clone)]
pub struct PushEndpoint {
    push: Arc<Push>,
    replays: Arc<dyn ReplayCache>,
    on_event: Callback,
    time_limit: Duration,
    busy_past_limit: bool,
    rerun_copies: bool,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    counters: Arc<Counters>,
    log_limit: Arc<RefusalLogLimit>,
    failure_log_limit: Arc<RefusalLogLimit>,
    in_flight: Arc<InFlightMap>,
}

/// How long forgetting a push (in the replay cache) may take before it is given up and logged.
pub const FORGET_TIME_LIMIT: Duration = Duration::from_secs(10);

/// How long a push counts as in flight at most: a callback that never ends does not make every
/// later copy of its push wait for ever.
pub const IN_FLIGHT_AT_MOST: Duration = Duration::from_secs(300);

type InFlightMap = std::sync::Mutex<HashMap<String, (usize, tokio::time::Instant)>>;

/// A push being read or handled in this process, counted by key while the guard lives.
struct InFlight {
    map: Arc<InFlightMap>,
    key: String,
}

impl InFlight {
    fn lock(map: &InFlightMap) -> std::sync::MutexGuard<'_, HashMap<String, (usize, tokio::time::Instant)>> {
        map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(map: &Arc<InFlightMap>, key: &str) -> Self {
        let now = tokio::time::Instant::now();
        Self::lock(map).entry(key.to_owned()).or_insert((0, now)).0 += 1;
        Self { map: Arc::clone(map), key: key.to_owned() }
    }

    /// Whether another copy of the push is in flight too (and has been for less than
    /// [`IN_FLIGHT_AT_MOST`]).
    fn shared(&self) -> bool {
        Self::lock(&self.map)
            .get(&self.key)
            .is_some_and(|(n, since)| *n > 1 && since.elapsed() < IN_FLIGHT_AT_MOST)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = Self::lock(&self.map);
        if let Some((n, _)) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The refusal log's rate limiter, on tokio's clock (the one the time limit runs on, and the
/// one a test can pause and advance).
type RefusalLogLimit = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl std::fmt::Debug for PushEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushEndpoint")
            .field("push", &self.push)
            .field("replays", &self.replays)
            .field("on_event", &"<callback>")
            .field("time_limit", &self.time_limit)
            .field("clock", &"<clock>")
            .field("stats", &self.stats())
            .field("log_limit", &self.log_limit)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::disallowed_methods)] // the default clock; `PushEndpoint::clock` injects another
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn refusal_quota() -> Quota {
    let burst = NonZeroU32::new(REFUSAL_LOG_BURST).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(REFUSAL_LOG_EVERY)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl PushEndpoint {
    /// An endpoint handing each event to `on_event`. WeChat waits 5 seconds for an answer;
    /// the default time limit is 4 s (see [`time_limit`](Self::time_limit)). Logs the
    /// configuration's [`warnings`](crate::PushConfig::warnings) at `WARN`.
    pub fn new<F, Fut, E>(push: Push, on_event: F) -> Self
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let on_event: Callback = Arc::new(move |event| {
            let fut = on_event(event);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        for warning in push.warnings() {
            tracing::warn!("{warning}");
        }
        Self {
            push: Arc::new(push),
            replays: Arc::new(MemoryReplayCache::default()),
            on_event,
            time_limit: Duration::from_secs(4),
            busy_past_limit: false,
            rerun_copies: false,
            clock: Arc::new(unix_now),
            counters: Arc::default(),
            log_limit: Arc::new(RateLimiter::direct_with_clock(refusal_quota(), TokioClock)),
            failure_log_limit: Arc::new(RateLimiter::direct_with_clock(refusal_quota(), TokioClock)),
            in_flight: Arc::default(),
        }
    }

    /// What the endpoint has answered so far: refusals, replays, events handled and failed.
    pub fn stats(&self) -> PushStats {
        let c = &self.counters;
        PushStats {
            refused: c.refused.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            handled: c.handled.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
        }
    }

    /// Where pushes read are remembered: the endpoint's own [`MemoryReplayCache`] by default;
    /// a shared one (`subscribe_redis::RedisReplayCache`, `subscribe_sql::SqlReplayCache`)
    /// when several instances take pushes.
    #[must_use]
    pub fn replay_cache(mut self, cache: Arc<dyn ReplayCache>) -> Self {
        self.replays = cache;
        self
    }

    /// How long a push may take, from its first byte to the answer: reading the body and
    /// running the callback. Past it the body's read is refused (408) or the callback is left
    /// running and `success` answered.
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Whether a callback still running at the time limit is answered 503 (WeChat sends the
    /// push again) instead of `success` (the default). For a callback that keeps the event
    /// somewhere before it may be acknowledged: `success` at the time limit would end WeChat's
    /// retries while the keeping may yet fail. The retry then finds the push in flight (503),
    /// taken (a replay: `success`) or, when the callback failed, forgotten (read again).
    #[must_use]
    pub fn busy_past_time_limit(mut self, busy: bool) -> Self {
        self.busy_past_limit = busy;
        self
    }

    /// Whether the callback is idempotent, so that a copy of an encrypted push (its body signed
    /// with `msg_signature`) that the replay cache has seen is handed to it again instead of
    /// answered `success` unread (the default). For a fleet on a shared replay cache whose
    /// callback keeps the event: the instance that read the push first may still be keeping it
    /// (it answered 503 at the time limit) or may have failed to, and WeChat's copy reaching
    /// another instance must not be acknowledged before the event is kept. A copy of a plain
    /// push (its body not signed) is still answered as a replay: reading it again would let
    /// anyone who saw its query post any body with it.
    #[must_use]
    pub fn idempotent_callback(mut self, idempotent: bool) -> Self {
        self.rerun_copies = idempotent;
        self
    }

    /// The clock checked against `timestamp` (Unix seconds); the system's by default.
    #[must_use]
    pub fn clock(mut self, now_unix: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(now_unix);
        self
    }

    /// `GET` (the URL check) and `POST` (pushes), to mount at the server URL's path in a
    /// router of any state.
    pub fn method_router<S: Clone + Send + Sync + 'static>(self) -> MethodRouter<S> {
        let for_post = self.clone();
        get(move |RawQuery(q): RawQuery| {
            let this = self.clone();
            async move { this.verify_url(q.as_deref().unwrap_or_default()).await }
        })
        .post(move |RawQuery(q): RawQuery, request: Request| {
            let this = for_post.clone();
            async move { this.receive(q.unwrap_or_default(), request.into_body()).await }
        })
    }

    /// A router with the endpoint at `/`, to `nest` or serve as it is.
    pub fn router(self) -> axum::Router {
        axum::Router::new().route("/", self.method_router())
    }

    async fn verify_url(&self, query: &str) -> Response {
        let now = (self.clock)();
        let check = match self.push.check_url(query, now) {
            Ok(check) => check,
            Err(e) => return self.refused(&e),
        };
        if let Some(key) = &check.key {
            // The check's query could be posted as a push: remember it. Whether it was seen
            // before does not matter (the check may come again); a failing cache does not stop
            // the check, which records nothing else.
            if let Err(e) = self.replays.first_sight(key, now).await {
                self.log_failure(|unlogged| {
                    tracing::warn!(error = %e, unlogged, "the replay cache failed to record a URL check");
                });
            }
        }
        check.echostr.into_response()
    }

    async fn receive(&self, query: String, body: Body) -> Response {
        // On tokio's clock, the one its timeouts run on (and the one a test can pause).
        let started = tokio::time::Instant::now();
        let limited = http_body_util::Limited::new(body, MAX_BODY);
        let bytes = match tokio::time::timeout(self.time_limit, limited.collect()).await {
            Err(_) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return (StatusCode::REQUEST_TIMEOUT, "the body was still arriving at the time limit")
                    .into_response();
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return self.refused(&PushError::TooLarge);
            }
            Ok(Err(_)) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return (StatusCode::BAD_REQUEST, "the body could not be read").into_response();
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let now = (self.clock)();
        let (event, key, signed) = match self.push.verify(&query, &bytes, now) {
            Ok(verified) => {
                let signed = verified.body_signed();
                let (event, key) = verified.into_parts();
                (event, key, signed)
            }
            Err(e) => return self.refused(&e),
        };
        // Entered before the cache is asked, so that a copy whose answer from a shared cache
        // comes back first still finds this one in flight.
        let in_flight = InFlight::enter(&self.in_flight, key.as_str());
        match self.replays.first_sight(&key, now).await {
            Ok(true) => {}
            // A copy of a push whose callback is still running here: it may yet fail, so the
            // copy is not told `success` (WeChat would stop retrying), but to come back.
            Ok(false) if in_flight.shared() => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                return (StatusCode::SERVICE_UNAVAILABLE, "this push is being handled; send it again later")
                    .into_response();
            }
            // Signed, for a callback that may run again: read again (see `idempotent_callback`).
            Ok(false) if self.rerun_copies && signed => {}
            Ok(false) => return self.replayed(),
            Err(e) => {
                self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
                self.log_failure(|unlogged| {
                    tracing::error!(error = %e, unlogged, "the replay cache failed; the push was not read");
                });
                return self.refused(&PushError::Unavailable);
            }
        }
        let name = event.name().to_owned();
        // The callback (even its synchronous part) and what follows its failure run in tasks of
        // their own, so a caller that hangs up (or an outer timeout) cannot leave a failed push
        // unforgotten.
        let on_event = Arc::clone(&self.on_event);
        let (done, outcome) = tokio::sync::oneshot::channel();
        let this = self.clone();
        tokio::spawn(async move {
            let handled = match tokio::spawn(async move { on_event(event).await }).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    this.log_failure(|unlogged| {
                        tracing::error!(event = %name, error = %e, unlogged, "the event push callback failed");
                    });
                    false
                }
                Err(e) => {
                    this.log_failure(|unlogged| {
                        tracing::error!(event = %name, error = %e, unlogged, "the event push callback panicked");
                    });
                    false
                }
            };
            // Answered first (a slow cache cannot turn a failure into `success`), then, still
            // in flight (a copy meanwhile is told to come back), forgotten: WeChat's retry must
            // be read again, not taken for a replay (as many times as WeChat retries, no more).
            // Also when `success` was already answered at the time limit: the sender of that
            // copy may not have been WeChat.
            let _ = done.send(handled);
            if !handled {
                this.forget(&key, now).await;
            }
            drop(in_flight);
        });
        let left = self.time_limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, outcome).await {
            Ok(Ok(true)) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                "success".into_response()
            }
            Ok(Ok(false) | Err(_)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                (StatusCode::INTERNAL_SERVER_ERROR, "the event was not handled").into_response()
            }
            Err(_) if self.busy_past_limit => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "an event push callback is still running at the time limit; answered 503, for WeChat to send it again"
                );
                (StatusCode::SERVICE_UNAVAILABLE, "the event is still being handled").into_response()
            }
            Err(_) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("an event push callback is still running at the time limit; answered success");
                "success".into_response()
            }
        }
    }

    fn replayed(&self) -> Response {
        self.counters.replayed.fetch_add(1, Ordering::Relaxed);
        "success".into_response()
    }

    /// Forgets a push whose callback failed, unless it was forgotten [`MAX_FORGETS`](crate::MAX_FORGETS) times.
    async fn forget(&self, key: &ReplayKey, now: u64) {
        if !self.push.may_forget(key, now) {
            return;
        }
        let forgot = tokio::time::timeout(FORGET_TIME_LIMIT, self.replays.forget(key)).await;
        if let Err(e) = forgot.unwrap_or_else(|_| Err(ReplayCacheError::new("no answer in time"))) {
            self.log_failure(|unlogged| {
                tracing::error!(error = %e, unlogged, "the replay cache failed to forget a push; WeChat's retry will be taken for a replay");
            });
        }
    }

    /// Runs `log` (given how many refusals went unlogged since the last) within the refusals'
    /// rate; counts it as unlogged otherwise.
    fn log_refusal(&self, log: impl FnOnce(u64)) {
        if self.log_limit.check().is_ok() {
            log(self.counters.unlogged.swap(0, Ordering::Relaxed));
        } else {
            self.counters.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The same for our own failures (a callback, the replay cache), on a rate of their own:
    /// a flood of forged pushes cannot hide them.
    fn log_failure(&self, log: impl FnOnce(u64)) {
        if self.failure_log_limit.check().is_ok() {
            log(self.counters.failures_unlogged.swap(0, Ordering::Relaxed));
        } else {
            self.counters.failures_unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the refusal, logs it (with its detail) within the rate, and answers its status
    /// and its text, which never carries the detail.
    fn refused(&self, e: &PushError) -> Response {
        let refused = self.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
        self.log_refusal(|unlogged| {
            tracing::warn!(
                status = e.http_status(),
                error = %e,
                detail = ?e,
                refused,
                unlogged,
                "an event push was refused"
            );
        });
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        (status, e.to_string()).into_response()
    }
}
