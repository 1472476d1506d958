//! Refresh ahead: where a token's refresh point lies, the token adopted with it, and the
//! background refresh that starts once it is due.

use std::sync::Arc;
use std::time::Duration;

use subscribe_types::AccessToken;
use tracing::debug;

use super::{Local, State, TokenManager, lock};
use crate::token::CachedToken;

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
    /// Starts a background refresh unless one runs, the backoff says wait, or a cool-down is on.
    pub(super) fn start_background(self: &Arc<Self>, st: &mut State, now: Duration) {
        let cooling = st.cooldown.as_ref().is_some_and(|c| now < c.until);
        if st.flight.is_none() && now >= st.backoff.not_before && !cooling {
            debug!(appid = %self.appid, "refreshing the access token ahead of expiry");
            drop(self.start_flight(st, None, None));
        }
    }

    /// A stored token is usable when it is neither the rejected one nor the one this process
    /// already holds (and is refreshing because it is due), and is not itself due for refresh.
    /// Its lifetime is unknown, so it is due at half its remaining life at the latest.
    pub(super) fn usable(&self, t: &CachedToken, rejected: Option<&AccessToken>) -> bool {
        let held = lock(&self.state).local.as_ref().is_some_and(|l| l.cached.token() == t.token());
        let remaining = t.expires_at().duration_since(self.clock.now()).unwrap_or_default();
        !held
            && Some(t.token()) != rejected
            && remaining > refresh_lead(remaining, self.settings.refresh_margin)
    }

    /// Makes `cached` the process's token. Its expiry, a wall-clock time, becomes a monotonic
    /// instant here; `lifetime` (when known) places the refresh point.
    pub(super) fn adopt(&self, cached: CachedToken, lifetime: Option<Duration>) -> CachedToken {
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
