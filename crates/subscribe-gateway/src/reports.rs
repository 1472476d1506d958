//! Reports of a rejected token, one app at a time: a report of the current token replaces it,
//! but no sooner than `report_interval` after the last replacement a report made here.
//!
//! Without that floor, any key with `token:read` could read the token, report it, read the new
//! one, report that, and so spend the app's token requests (2 000 a day on the classic
//! endpoint; the stable endpoint's 20 forced refreshes a day) and end every other server's
//! token. WeChat keeps a replaced token valid for five minutes (the stable endpoint's
//! documentation says so of a forced refresh), so a token that was rejected within five
//! minutes of a refresh was not rejected because someone else refreshed: the default floor is
//! five minutes.

use std::time::{Duration, Instant};

use subscribe_client::{CachedToken, Client, TokenError};
use subscribe_types::AccessToken;
use tokio::sync::Mutex;

/// Why a report got no token.
#[derive(Debug)]
pub(crate) enum ReportError {
    /// The reported token is the current one, and a report replaced a token less than the
    /// interval ago: nothing was asked of WeChat.
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
    /// When a report last replaced the token here. Held while a report is acted on, so that
    /// the reports of one stale token are taken one after another: the first replaces it, the
    /// others find it replaced and are answered the new token.
    last: Mutex<Option<Instant>>,
}

impl ReportGate {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::new(None) }
    }

    /// The token to use instead of `rejected`: the current one when `rejected` is not (WeChat
    /// not asked), else a new one when the interval since the last replacement has passed.
    pub(crate) async fn report(
        &self,
        client: &Client,
        rejected: &AccessToken,
    ) -> Result<CachedToken, ReportError> {
        let mut last = self.last.lock().await;
        let current = client.token().await.map_err(ReportError::Token)?;
        if current.token() != rejected {
            return Ok(current);
        }
        let left = last.map_or(Duration::ZERO, |at| self.interval.saturating_sub(at.elapsed()));
        if !left.is_zero() {
            return Err(ReportError::TooSoon { retry_after: left });
        }
        *last = Some(Instant::now());
        client.token_rejected(rejected).await.map_err(ReportError::Token)
    }
}
