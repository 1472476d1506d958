//! [`RateLimiter`]: the one pacing of sends, shared by the [`Dispatcher`](crate::Dispatcher)
//! and `wxsub send-batch`.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::SharedClock;

/// Starts at most `per_second` operations per second, evenly spaced, on a [`Clock`](crate::Clock)
/// (so a `ManualClock` drives it in tests). Shared by every task that takes a slot: each
/// [`until_ready`](Self::until_ready) reserves the next free slot and sleeps until it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, UNIX_EPOCH};
/// use subscribe_client::{ManualClock, RateLimiter};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let clock = ManualClock::new(UNIX_EPOCH);
/// let limiter = RateLimiter::per_second(4.0, Arc::new(clock.clone())).expect("a positive rate");
/// for _ in 0..3 {
///     limiter.until_ready().await;
/// }
/// // The first start is at once; the next two wait a quarter of a second each.
/// assert_eq!(clock.sleeps(), [Duration::from_millis(250), Duration::from_millis(250)]);
/// # });
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// The next free slot, on the clock's monotonic time.
    next: Mutex<Option<Duration>>,
    clock: SharedClock,
}

impl RateLimiter {
    /// A limiter of `per_second` starts a second; `None` unless it is a positive finite number.
    pub fn per_second(per_second: f64, clock: SharedClock) -> Option<Self> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / per_second).ok()?;
        Some(Self { interval, next: Mutex::new(None), clock })
    }

    /// The spacing between two starts.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for the next free slot, which this call takes.
    pub async fn until_ready(&self) {
        let now = self.clock.monotonic();
        let start = {
            let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + self.interval);
            start
        };
        let wait = start.saturating_sub(now);
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
    }
}
