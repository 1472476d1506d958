//! Time, injected: [`Clock`], [`SystemClock`] and (with `test-util`) `ManualClock`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the client reads the time and how it waits. Every expiry, cool-down and backoff goes
/// through it, so tests drive time by hand and never sleep.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
    /// Waits for `d` (a backoff).
    async fn sleep(&self, d: Duration);
}

/// The real clock: [`SystemTime::now`] and [`tokio::time::sleep`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// A clock that moves only when told to, for tests. `sleep` advances it at once (recording the
/// duration) instead of waiting.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use subscribe_client::{Clock, ManualClock};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_700_000_060));
/// ```
#[cfg(feature = "test-util")]
#[derive(Clone, Debug)]
pub struct ManualClock {
    state: Arc<std::sync::Mutex<(SystemTime, Vec<Duration>)>>,
}

#[cfg(feature = "test-util")]
impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        Self { state: Arc::new(std::sync::Mutex::new((start, Vec::new()))) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (SystemTime, Vec<Duration>)> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        self.lock().0 += d;
    }

    /// Sets the clock.
    pub fn set(&self, t: SystemTime) {
        self.lock().0 = t;
    }

    /// Every duration passed to `sleep`, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().1.clone()
    }
}

#[cfg(feature = "test-util")]
#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().0
    }

    async fn sleep(&self, d: Duration) {
        {
            let mut s = self.lock();
            s.0 += d;
            s.1.push(d);
        }
        tokio::task::yield_now().await;
    }
}
