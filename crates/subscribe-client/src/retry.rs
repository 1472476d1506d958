//! [`RetryPolicy`]: which failures are replayed, how often, how long apart.

use std::time::Duration;

/// What the client replays on its own. Only what certainly did not take effect is replayed by
/// default, because `message/template/subscribe` is not idempotent:
///
/// | failure | default |
/// |---|---|
/// | the request never left (connect, DNS, TLS) | replayed up to 2 times, with backoff |
/// | token rejected (40001/40014/42001) | refresh, replay once (always) |
/// | `-1` system busy | replayed up to 2 times, exponential backoff with jitter |
/// | timeout or reset after sending | **not** replayed: `Error::OutcomeUnknown` |
///
/// ```
/// use std::time::Duration;
/// use subscribe_client::RetryPolicy;
/// let policy = RetryPolicy::default().busy_retries(4).base_delay(Duration::from_millis(100));
/// # let _ = policy;
/// let none = RetryPolicy::none(); // token replays still happen: they cannot deliver twice
/// # let _ = none;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) connect_retries: u32,
    pub(crate) busy_retries: u32,
    pub(crate) unknown_outcome_retries: u32,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            connect_retries: 2,
            busy_retries: 2,
            unknown_outcome_retries: 0,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No replays except the single token-refresh replay.
    pub fn none() -> Self {
        Self { connect_retries: 0, busy_retries: 0, ..Self::default() }
    }

    /// Replays of requests that never left (default 2).
    #[must_use]
    pub fn connect_retries(mut self, n: u32) -> Self {
        self.connect_retries = n;
        self
    }

    /// Replays after `-1` system busy (default 2).
    #[must_use]
    pub fn busy_retries(mut self, n: u32) -> Self {
        self.busy_retries = n;
        self
    }

    /// Replays after a timeout or reset that happened after sending (default 0). Each one
    /// risks a second delivery; a later 43101 is then reported as "probably delivered".
    #[must_use]
    pub fn unknown_outcome_retries(mut self, n: u32) -> Self {
        self.unknown_outcome_retries = n;
        self
    }

    /// The first backoff (default 200 ms); each next one doubles, up to `max_delay`.
    #[must_use]
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// The longest backoff (default 5 s).
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// The wait before replay number `n` (0-based): exponential, capped, with "equal jitter"
    /// (half fixed, half random from `random`), so a fleet does not retry in lockstep.
    pub(crate) fn backoff(&self, n: u32, random: u64) -> Duration {
        backoff(self.base_delay, self.max_delay, n, random)
    }
}

/// The wait before retry number `n` (0-based): `base` doubling up to `max`, with "equal
/// jitter" (half fixed, half random from `random`). Shared by send replays and token attempts.
pub(crate) fn backoff(base: Duration, max: Duration, n: u32, random: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << n.min(16)).min(max);
    let half = exp / 2;
    let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(random % half_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let p = RetryPolicy::default();
        for n in 0..10 {
            let exp = (Duration::from_millis(200) * 2u32.pow(n)).min(Duration::from_secs(5));
            for r in [0, 1, 12_345, u64::MAX] {
                let d = p.backoff(n, r);
                assert!(d >= exp / 2 && d <= exp, "n={n} r={r} d={d:?}");
            }
        }
    }
}
