//! The token source: one request to WeChat's stable or classic endpoint or to an external
//! source, and the budget of forced stable-token refreshes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use subscribe_transport::{HttpRequest, HttpTransport, TransportError, TransportErrorKind};
use subscribe_types::secrecy::ExposeSecret;
use subscribe_types::{
    AccessToken, AppSecret, ClassicTokenRequest, IssuedToken, StableTokenRequest, TokenResponseError,
    endpoint,
};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::{Cooldown, TimedOut, TokenManager, lock};
use crate::error::{TokenError, TokenRejection};
use crate::token::{CachedToken, ExternalSourceError, SharedExternalSource};

/// Where tokens come from.
#[derive(Clone)]
pub(crate) enum TokenSource {
    Stable(AppSecret),
    Classic(AppSecret),
    External(SharedExternalSource),
}

impl TokenSource {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Stable(_) => "stable_token",
            Self::Classic(_) => "token",
            Self::External(_) => "external",
        }
    }
}

/// WeChat allows 20 forced stable-token refreshes a day, at least 30 s apart.
#[derive(Default)]
pub(super) struct ForceBudget {
    day: u64,
    used: u32,
    /// Monotonic instant of the last forced refresh.
    last: Option<Duration>,
}

const FORCE_PER_DAY: u32 = 20;
const FORCE_SPACING: Duration = Duration::from_secs(30);

impl TokenManager {
    /// Fetches a token different from `rejected`, forcing a stable refresh when the normal one
    /// hands the rejected token back and WeChat's budget allows it.
    pub(super) async fn fetch_fresh(
        &self,
        rejected: Option<&AccessToken>,
    ) -> Result<(CachedToken, Duration), TokenError> {
        let (cached, lifetime) = self.fetch(false).await?;
        if Some(cached.token()) != rejected {
            return Ok((cached, lifetime));
        }
        if matches!(self.source, TokenSource::Stable(_)) && self.take_force_budget() {
            info!(appid = %self.appid, "stable token endpoint returned the rejected token; forcing a refresh");
            let (cached, lifetime) = self.fetch(true).await?;
            if Some(cached.token()) != rejected {
                return Ok((cached, lifetime));
            }
        }
        Err(TokenError::RejectedTokenReissued)
    }

    fn take_force_budget(&self) -> bool {
        let now = self.clock.monotonic();
        // WeChat's days are Beijing days (UTC+8).
        let wall = self.clock.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let day = (wall.as_secs() + 8 * 3600) / 86_400;
        let mut b = lock(&self.force);
        if b.day != day {
            *b = ForceBudget { day, used: 0, last: b.last };
        }
        let spaced = b.last.is_none_or(|l| now.saturating_sub(l) >= FORCE_SPACING);
        if b.used < FORCE_PER_DAY && spaced {
            b.used += 1;
            b.last = Some(now);
            true
        } else {
            false
        }
    }

    /// One request to the token source, bounded by `request_timeout`. Returns the token and
    /// its lifetime; expiry counts from when the request started, so a slow answer cannot
    /// outlive a newer token.
    async fn fetch(&self, force_refresh: bool) -> Result<(CachedToken, Duration), TokenError> {
        let started: SystemTime = self.clock.now();
        let limit = self.settings.request_timeout;
        let secret_request = match &self.source {
            TokenSource::External(src) => {
                let cached = match self.bounded(limit, src.fetch(&self.appid)).await {
                    Some(Ok(cached)) => cached,
                    Some(Err(e)) => return Err(TokenError::External(ExternalSourceError::new(e))),
                    None => {
                        let e = TimedOut { what: "the external token source", after: limit };
                        return Err(TokenError::External(ExternalSourceError::new(e)));
                    }
                };
                let lifetime = cached.expires_at().duration_since(started).unwrap_or_default();
                return Ok((cached, lifetime));
            }
            TokenSource::Stable(secret) => {
                let body =
                    StableTokenRequest { appid: self.appid.clone(), secret: secret.clone(), force_refresh }
                        .body();
                let uri = format!("{}{}", self.api_base, endpoint::STABLE_TOKEN.path);
                // The body holds the secret: a copy the transport's `Bytes` own, zeroed when the
                // last of their clones (a transport's retry keeps one) is dropped.
                let body = Zeroizing::new(body.expose_secret().as_bytes().to_vec());
                HttpRequest::post(&uri, Bytes::from_owner(body))
            }
            TokenSource::Classic(secret) => {
                let pq = ClassicTokenRequest { appid: self.appid.clone(), secret: secret.clone() }
                    .path_and_query();
                // The URI holds the secret: parsed from bytes it keeps slices of, zeroed when the
                // last of them is dropped.
                let pq = pq.expose_secret();
                let mut uri = Zeroizing::new(Vec::with_capacity(self.api_base.len() + pq.len()));
                uri.extend_from_slice(self.api_base.as_bytes());
                uri.extend_from_slice(pq.as_bytes());
                subscribe_transport::http::Uri::from_maybe_shared(Bytes::from_owner(uri))
                    .map_err(subscribe_transport::http::Error::from)
                    .and_then(HttpRequest::get)
            }
        };
        // The URI may hold the secret: keep none of `http::Error`'s text.
        let request = secret_request.map_err(|_| {
            TokenError::Transport(TransportError::from_kind(TransportErrorKind::InvalidRequest))
        })?;
        info!(appid = %self.appid, endpoint = self.source.name(), force_refresh, "requesting an access token");
        let Some(sent) = self.bounded(limit, self.transport.send(request)).await else {
            let e = TimedOut { what: "the token endpoint", after: limit };
            return Err(TokenError::Transport(TransportError::timeout(e)));
        };
        let response = sent.map_err(TokenError::Transport)?;
        if response.status() != 200 {
            return Err(TokenError::HttpStatus { status: response.status().as_u16() });
        }
        match IssuedToken::parse(response.body()) {
            Ok(issued) => {
                let lifetime = Duration::from_secs(issued.expires_in.into());
                Ok((CachedToken::new(issued.access_token, started + lifetime), lifetime))
            }
            Err(TokenResponseError::Api(error)) => {
                let reason = TokenRejection::of(&error);
                warn!(appid = %self.appid, errcode = error.code().get(), reason = %reason, "token endpoint refused");
                let e = TokenError::Rejected { reason, error };
                if e.starts_cooldown() {
                    let until = self.clock.monotonic() + self.settings.cooldown;
                    lock(&self.state).cooldown = Some(Cooldown { until, error: e.clone() });
                }
                Err(e)
            }
            Err(TokenResponseError::Decode(e)) => Err(TokenError::Decode(e)),
            Err(TokenResponseError::Invalid(e)) => Err(TokenError::Invalid(e)),
            Err(_) => Err(TokenError::HttpStatus { status: 200 }),
        }
    }
}
