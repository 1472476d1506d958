//! Time, injected: [`Clock`], [`SystemClock`] and (with `test-util`) `ManualClock`.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// Where the client reads the time and how it waits. Every expiry, cool-down, backoff and
/// timeout goes through it, so tests drive time by hand and never sleep.
///
/// Two readings, for two jobs:
/// - [`now`](Self::now), the wall clock, for what is shared with other machines: a token's
///   expiry in a shared store, a signed state's expiry, grant leases.
/// - [`monotonic`](Self::monotonic), for what this process measures on its own: cool-downs,
///   backoff, waits and timeouts. It never goes back, so a wall-clock step (NTP, a VM resumed,
///   an operator's `date`) neither blocks a refresh nor skips a backoff.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
    /// Time since an arbitrary fixed origin of this clock; never decreases.
    fn monotonic(&self) -> Duration;
    /// Waits for `d` (a backoff, a pacing interval).
    async fn sleep(&self, d: Duration);
    /// Waits until [`monotonic`](Self::monotonic) reaches `deadline` (a timeout, a caller's
    /// deadline). Returns at once when it already has.
    async fn sleep_until(&self, deadline: Duration);
}

/// The real clock: [`SystemTime::now`], tokio's monotonic clock and its timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The origin of [`SystemClock::monotonic`]: the first reading in this process.
fn origin() -> tokio::time::Instant {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(tokio::time::Instant::now)
}

#[async_trait::async_trait]
impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(origin())
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    async fn sleep_until(&self, deadline: Duration) {
        tokio::time::sleep_until(origin() + deadline).await;
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

#[async_trait::async_trait]
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
    fn monotonic(&self) -> Duration {
        (**self).monotonic()
    }
    async fn sleep(&self, d: Duration) {
        (**self).sleep(d).await;
    }
    async fn sleep_until(&self, deadline: Duration) {
        (**self).sleep_until(deadline).await;
    }
}

/// A clock that moves only when told to, for tests.
///
/// - [`advance`](Self::advance) moves both readings; [`set`](Self::set) steps the wall clock
///   alone (as NTP or an operator would), leaving the monotonic reading where it is.
/// - `sleep(d)` moves the clock forward by `d` at once and returns (so tasks that sleep
///   concurrently add their sleeps up). Every duration slept is recorded
///   ([`sleeps`](Self::sleeps)).
/// - `sleep_until(deadline)` waits until the clock has been moved past `deadline` (by a test's
///   `advance` or by another task's `sleep`), so a timeout fires only when a test says so.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use subscribe_client::{Clock, ManualClock};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_700_000_060));
/// assert_eq!(clock.monotonic(), Duration::from_secs(60));
/// clock.set(UNIX_EPOCH); // a wall-clock step: the monotonic reading does not move
/// assert_eq!(clock.monotonic(), Duration::from_secs(60));
/// ```
#[cfg(feature = "test-util")]
#[derive(Clone, Debug)]
pub struct ManualClock {
    state: Arc<std::sync::Mutex<Manual>>,
    /// The monotonic reading, published so `sleep_until` can wait for it to move.
    mono: Arc<tokio::sync::watch::Sender<Duration>>,
}

#[cfg(feature = "test-util")]
#[derive(Debug)]
struct Manual {
    wall: SystemTime,
    sleeps: Vec<Duration>,
}

#[cfg(feature = "test-util")]
impl ManualClock {
    /// A clock showing `start`, with its monotonic reading at zero.
    pub fn new(start: SystemTime) -> Self {
        Self {
            state: Arc::new(std::sync::Mutex::new(Manual { wall: start, sleeps: Vec::new() })),
            mono: Arc::new(tokio::sync::watch::Sender::new(Duration::ZERO)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the clock forward (both readings), waking the `sleep_until`s that are due.
    pub fn advance(&self, d: Duration) {
        let mut s = self.lock();
        s.wall += d;
        self.mono.send_modify(|m| *m += d);
    }

    /// Sets the wall clock (forwards or backwards); the monotonic reading does not move.
    pub fn set(&self, t: SystemTime) {
        self.lock().wall = t;
    }

    /// Every duration passed to `sleep`, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().sleeps.clone()
    }
}

#[cfg(feature = "test-util")]
#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().wall
    }

    fn monotonic(&self) -> Duration {
        *self.mono.borrow()
    }

    async fn sleep(&self, d: Duration) {
        {
            let mut s = self.lock();
            s.sleeps.push(d);
            s.wall += d;
            self.mono.send_modify(|m| *m += d);
        }
        tokio::task::yield_now().await;
    }

    async fn sleep_until(&self, deadline: Duration) {
        let mut rx = self.mono.subscribe();
        // `wait_for` returns at once when the reading is already there; the sender lives as
        // long as `self`, so it cannot close under us.
        let _ = rx.wait_for(|m| *m >= deadline).await;
    }
}
