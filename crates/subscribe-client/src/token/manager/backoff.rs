//! Backoff after an outage of the token source, cool-down after a refusal that only a
//! configuration change fixes: the pause before the next attempt, here and across the fleet.

use std::time::Duration;

use tracing::warn;

use super::{TokenManager, lock};
use crate::error::TokenError;

pub(super) struct Cooldown {
    pub(super) until: Duration,
    pub(super) error: TokenError,
}

/// Failures of the token source since its last success.
#[derive(Default)]
pub(super) struct Backoff {
    pub(super) failures: u32,
    /// No attempt before this monotonic instant.
    pub(super) not_before: Duration,
    pub(super) last: Option<TokenError>,
}

impl TokenManager {
    /// A failed attempt: logs it, works out the pause before the next one (`None`: no next
    /// one, the error is final) and tells the fleet through the store when this instance held
    /// the lease.
    pub(super) async fn after_failure(
        &self,
        e: TokenError,
        lease_held: bool,
    ) -> (TokenError, Option<Duration>) {
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

    /// The backoff before the next attempt after `failures` failed ones: `backoff_first`
    /// doubling up to `backoff_max`, with jitter.
    pub(super) fn pause_after(&self, failures: u32) -> Duration {
        let random = crate::state::splitmix(&self.jitter);
        crate::retry::backoff(self.settings.backoff_first, self.settings.backoff_max, failures, random)
    }
}

/// The error of a call made during the cool-down started by `refusal`.
pub(super) fn cooling_down(refusal: &TokenError, remaining: Duration) -> TokenError {
    match refusal {
        TokenError::Rejected { reason, error } => {
            TokenError::CoolingDown { reason: reason.clone(), error: error.clone(), remaining }
        }
        other => other.clone(),
    }
}
