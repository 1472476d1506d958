//! Reports of a rejected token, one app at a time: a report of the current token replaces it,
//! but a gateway asks WeChat for a new token on a report no sooner than `report_interval`
//! after the last replacement a report made here.
//!
//! Without that floor, any key with `token:read` could read the token, report it, read the new
//! one, report that, and so spend the app's token requests (2 000 a day on the classic
//! endpoint) and end every other server's token. WeChat keeps a replaced token valid for five
//! minutes (the classic endpoint; the stable endpoint hands out the same token until five
//! minutes before it expires, and ends it at once only on a forced refresh), so the default
//! floor is five minutes.
//!
//! The floor never withholds a token that is already there: a report of a token that is no
//! longer current is answered with the current one at once, and while the floor holds, a token
//! another gateway of the fleet put in the shared store (or a send's own recovery from a
//! rejection, which WeChat confirmed) is still taken. Only a report that would make this
//! gateway ask WeChat is refused, and only after a replacement that succeeded.

use std::time::{Duration, Instant};

use subscribe_client::{CachedToken, Client, SharedTokenStore, TokenError};
use subscribe_types::AccessToken;
use tokio::sync::Mutex;

/// The longest a report waits for the store's answer (the stores bound their own calls
/// tighter: 5 s for SQL, 2 s for Redis).
const STORE_WAIT: Duration = Duration::from_secs(5);

/// Why a report got no token.
#[derive(Debug)]
pub(crate) enum ReportError {
    /// The reported token is the current one (here and in the store), and a report replaced
    /// a token less than the interval ago: nothing was asked of WeChat.
    TooSoon {
        /// When a report of the current token will be acted on.
        retry_after: Duration,
    },
    /// No token could be had.
    Token(TokenError),
}

/// One app's reports.
pub(crate) struct ReportGate {
    interval: Duration,
    /// The token store the app's client shares with the fleet.
    store: SharedTokenStore,
    /// When a report last replaced the token here. Held while a report of the current token is
    /// acted on, so that the reports of one stale token are taken one after another: the first
    /// replaces it, the others find it replaced and are answered the new token.
    last: Mutex<Option<Instant>>,
}

impl ReportGate {
    pub(crate) fn new(interval: Duration, store: SharedTokenStore) -> Self {
        Self { interval, store, last: Mutex::new(None) }
    }

    /// The token to use instead of `rejected`: the current one when `rejected` is not (WeChat
    /// not asked), else a new one when the interval since the last replacement has passed or
    /// the store already holds another.
    pub(crate) async fn report(
        &self,
        client: &Client,
        rejected: &AccessToken,
    ) -> Result<CachedToken, ReportError> {
        // A stale report is answered at once, without queueing behind a replacement.
        let current = client.token().await.map_err(ReportError::Token)?;
        if current.token() != rejected {
            return Ok(current);
        }
        let mut last = self.last.lock().await;
        // Again under the lock: a report just before may have replaced it.
        let current = client.token().await.map_err(ReportError::Token)?;
        if current.token() != rejected {
            return Ok(current);
        }
        let left = last.map_or(Duration::ZERO, |at| self.interval.saturating_sub(at.elapsed()));
        if !left.is_zero() && !self.store_has_another(client, rejected).await {
            return Err(ReportError::TooSoon { retry_after: left });
        }
        let replaced = client.token_rejected(rejected).await.map_err(ReportError::Token)?;
        // Only a replacement that happened closes the floor: after a failure, a report may try
        // again (the client's own back-off and cool-down pace WeChat's token requests then).
        if replaced.token() != rejected {
            *last = Some(Instant::now());
        }
        Ok(replaced)
    }

    /// Whether the shared store holds an unexpired token other than `rejected` (a fleet's
    /// other gateway replaced it): taking it asks nothing of WeChat. A store that does not
    /// answer within [`STORE_WAIT`] counts as no.
    async fn store_has_another(&self, client: &Client, rejected: &AccessToken) -> bool {
        let now = client.clock().now();
        matches!(
            tokio::time::timeout(STORE_WAIT, self.store.load(client.appid())).await,
            Ok(Ok(Some(stored))) if stored.token() != rejected && stored.expires_at() > now
        )
    }
}
