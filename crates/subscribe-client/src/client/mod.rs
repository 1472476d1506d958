//! [`Client`]: one app's tokens, sends and authorizations. Built by [`ClientBuilder`]
//! (`builder.rs`); sending in `send.rs`; authorization pages, answers and recording in
//! `authorize.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use subscribe_transport::SharedTransport;
use subscribe_types::{AccessToken, AppId, AppSecret, AuthorizeRequest};

use crate::clock::SharedClock;
use crate::error::TokenError;
use crate::retry::RetryPolicy;
use crate::state::StateKeys;
use crate::token::{CachedToken, ExternalTokenSource, TokenManager, TokenSource};

mod accepted;
mod authorize;
mod builder;
mod library;
mod send;

pub use authorize::{Answer, Completion};
pub use builder::{ClientBuilder, DEFAULT_API_BASE};
/// A WeChat client for one app: tokens, sends, authorization. Cheap to clone (an `Arc`),
/// `Send + Sync`; build one per AppID and share it.
///
/// See the [crate documentation](crate) for a complete example.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    appid: AppId,
    api_base: String,
    mp_base: String,
    transport: SharedTransport,
    tokens: Arc<TokenManager>,
    retry: RetryPolicy,
    clock: SharedClock,
    state_key: StateKeys,
    used_states: crate::used_states::SharedUsedStates,
    /// Bounds each call into `used_states`.
    store_timeout: Duration,
    state_ttl: Duration,
    jitter: AtomicU64,
    /// One send at a time per openid for the mini-program and notification sends (WeChat's 43108).
    openid_locks: crate::keyed::KeyedLocks,
}

/// A successful call's decoded answer and its receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answered<T> {
    /// The endpoint's response (for the send endpoint, [`Ack`](subscribe_types::Ack)).
    pub response: T,
    /// How the call went.
    pub receipt: SendReceipt,
}

/// What a successful call reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReceipt {
    /// Requests made, replays included (1 when the first attempt succeeded).
    pub attempts: u32,
}

/// An authorization page link and the request it encodes (its `reserved` is the signed state).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthorizationLink {
    /// Where to send the user (inside WeChat).
    pub url: String,
    /// The request, for records and tests.
    pub request: AuthorizeRequest,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("appid", &self.inner.appid)
            .field("api_base", &self.inner.api_base)
            .field("mp_base", &self.inner.mp_base)
            .field("token_source", &self.inner.tokens.source_name())
            .finish_non_exhaustive()
    }
}
impl Client {
    /// Starts a client for `appid` that gets tokens from WeChat with `secret` (stable-token
    /// endpoint, normal mode, unless [`ClientBuilder::token_endpoint`] says otherwise).
    pub fn builder(appid: AppId, secret: AppSecret) -> ClientBuilder {
        ClientBuilder::new(appid, TokenSource::Stable(secret))
    }

    /// Starts a client for `appid` that gets tokens from your central token service.
    pub fn builder_with_token_source(
        appid: AppId,
        source: impl ExternalTokenSource + 'static,
    ) -> ClientBuilder {
        ClientBuilder::new(appid, TokenSource::External(Arc::new(source)))
    }

    /// The app this client acts for.
    pub fn appid(&self) -> &AppId {
        &self.inner.appid
    }

    /// The clock the client reads.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// An access token, fetched or refreshed as needed: for calling APIs this crate does not
    /// model. Do not log it.
    ///
    /// # Errors
    /// [`TokenError`] when none can be had.
    pub async fn access_token(&self) -> Result<AccessToken, TokenError> {
        self.inner.tokens.get().await
    }

    /// The access token with its expiry, fetched or refreshed as needed. Do not log it.
    ///
    /// # Errors
    /// [`TokenError`] when none can be had.
    pub async fn token(&self) -> Result<CachedToken, TokenError> {
        self.inner.tokens.get_cached().await
    }

    /// WeChat rejected `rejected` (40001, 40014 or 42001) on a call made outside this client:
    /// returns a different valid token with its expiry. Compare and invalidate, as the client's
    /// own sends do: while `rejected` is the current token it is dropped (here and, if it is
    /// still the stored one, in the token store) and one refresh runs, however many callers
    /// report the same token at once, each of them answered with its result; when `rejected`
    /// is no longer the current token (another caller's report already replaced it, or it was
    /// never current), the current token is returned without a request. This is no force
    /// refresh: a caller cannot make the client ask WeChat for a token while the current one
    /// is valid and not the one reported. Do not log the result.
    ///
    /// # Errors
    /// [`TokenError`] when no other token can be had (among them
    /// [`TokenError::RejectedTokenReissued`] when the token endpoint keeps handing the rejected
    /// token back).
    pub async fn token_rejected(&self, rejected: &AccessToken) -> Result<CachedToken, TokenError> {
        self.inner.tokens.rejected(rejected).await
    }
}
