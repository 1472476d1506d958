//! [`SandboxClock`]: the sandbox's time, injected so tests can move it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where the sandbox reads time: token lifetimes, grace periods and fault windows on the
/// monotonic reading, WeChat's (Beijing) days and the timestamps of logs and inboxes on the
/// wall reading.
pub trait SandboxClock: Send + Sync + fmt::Debug {
    /// Monotonic time.
    fn now(&self) -> Instant;
    /// Wall-clock time.
    fn wall(&self) -> SystemTime;
}

/// The machine's clocks (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SandboxClock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // the one place the sandbox reads the wall clock
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told: expire tokens or end a day without waiting.
///
/// ```
/// use std::time::Duration;
/// use subscribe_sandbox::{ManualClock, SandboxClock};
/// let clock = ManualClock::new();
/// let (t0, w0) = (clock.now(), clock.wall());
/// clock.advance(Duration::from_secs(7200));
/// assert_eq!(clock.now() - t0, Duration::from_secs(7200));
/// assert_eq!(clock.wall().duration_since(w0).unwrap(), Duration::from_secs(7200));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    start: (Instant, SystemTime),
    offset: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock standing at the machine's current time.
    pub fn new() -> Self {
        Self { start: (SystemClock.now(), SystemClock.wall()), offset: Arc::default() }
    }

    /// Moves both readings forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += d;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SandboxClock for ManualClock {
    fn now(&self) -> Instant {
        self.start.0 + self.offset()
    }

    fn wall(&self) -> SystemTime {
        self.start.1 + self.offset()
    }
}

/// A shared clock.
pub type SharedSandboxClock = Arc<dyn SandboxClock>;

/// One reading of both clocks, handed to the state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub(crate) mono: Instant,
    pub(crate) wall: SystemTime,
}

impl Now {
    pub(crate) fn of(clock: &dyn SandboxClock) -> Self {
        Self { mono: clock.now(), wall: clock.wall() }
    }
}
