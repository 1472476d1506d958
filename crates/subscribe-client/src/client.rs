//! [`Client`] and [`ClientBuilder`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use subscribe_transport::{
    HttpRequest, HttpTransport, SharedTransport, TransportError, TransportErrorKind, http,
};
use subscribe_types::{
    AccessToken, ApiResponse, AppId, AppSecret, AuthorizationAnswer, AuthorizeRequest, DEFAULT_MP_BASE,
    Endpoint, ErrorClass, HttpUrl, Method, Scene, SubscribeMessage, TemplateId,
};
use tracing::{Instrument, debug, info_span, warn};

use crate::clock::{Clock, SharedClock, SystemClock};
use crate::error::{AuthorizationError, ConfigError, Error};
use crate::grants::{GrantKey, GrantLedger, Recorded};
use crate::retry::RetryPolicy;
use crate::state::StateKey;
use crate::token::{
    CachedToken, ExternalTokenSource, InMemoryTokenStore, SharedTokenStore, TokenEndpoint, TokenManager,
    TokenSource, TokenStore,
};

/// WeChat's API host.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";

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
    state_key: StateKey,
    state_ttl: Duration,
    jitter: AtomicU64,
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
    /// [`Error::Token`] when none can be had.
    pub async fn access_token(&self) -> Result<AccessToken, Error> {
        Ok(self.inner.tokens.get().await?)
    }

    /// The access token with its expiry, fetched or refreshed as needed. Do not log it.
    ///
    /// # Errors
    /// [`Error::Token`] when none can be had.
    pub async fn token(&self) -> Result<CachedToken, Error> {
        Ok(self.inner.tokens.get_cached().await?)
    }

    /// Sends the one message a confirmation allows.
    ///
    /// Replays only what cannot deliver twice (see [`RetryPolicy`]); a token rejection is
    /// answered by one refresh and one replay.
    ///
    /// # Errors
    /// - [`Error::Api`]: WeChat refused (43101: no unused authorization; 40003: bad openid; …).
    /// - [`Error::OutcomeUnknown`] / [`Error::ProbablyDelivered`]: do **not** resend blindly.
    /// - [`Error::Transport`], [`Error::Token`], [`Error::HttpStatus`]: nothing was delivered.
    pub async fn send(&self, message: &SubscribeMessage) -> Result<SendReceipt, Error> {
        self.execute(message).await.map(|answered| answered.receipt)
    }

    /// Calls any endpoint answered with WeChat's `{errcode, errmsg}` envelope, with the same
    /// token handling and retry policy as [`send`](Self::send): serializes the endpoint's body
    /// with `serde_json` and returns its decoded [`Response`](Endpoint::Response).
    ///
    /// # Errors
    /// As [`send`](Self::send); [`Error::BodyNotSerializable`] when the body cannot be written
    /// as JSON (nothing was sent).
    pub async fn execute<E: Endpoint + ?Sized>(&self, call: &E) -> Result<Answered<E::Response>, Error> {
        let spec = E::SPEC;
        let span =
            info_span!("wechat.call", appid = %self.inner.appid, path = spec.path, endpoint = spec.name);
        let body = serde_json::to_vec(call.body()).map_err(|_| Error::BodyNotSerializable)?;
        let (answer, receipt) = self.run(spec, Bytes::from(body)).instrument(span).await?;
        // `errcode` was 0: WeChat acted. An answer that does not decode as the endpoint's
        // response cannot be called a failure, nor read: reported unknown, never resent.
        let response = serde_json::from_slice(&answer).map_err(|e| Error::OutcomeUnknown {
            reason: "errcode 0, but the rest of the answer did not decode".into(),
            source: Some(Box::new(subscribe_types::DecodeError::from(&e))),
        })?;
        Ok(Answered { response, receipt })
    }

    /// Sends `body` with the policy's replays; on `errcode` 0, the answer's body.
    async fn run(
        &self,
        spec: subscribe_types::EndpointSpec,
        body: Bytes,
    ) -> Result<(Bytes, SendReceipt), Error> {
        let inner = &*self.inner;
        let policy = &inner.retry;
        let (mut connect_left, mut busy_left, mut unknown_left) =
            (policy.connect_retries, policy.busy_retries, policy.unknown_outcome_retries);
        let mut token_replayed = false;
        let mut may_have_delivered = false;
        let mut backoffs = 0u32;
        let mut token = if spec.needs_access_token { Some(inner.tokens.get().await?) } else { None };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let request = self.request(spec, token.as_ref(), &body)?;
            let outcome = inner.transport.send(request).await;
            let answer = match outcome {
                // A request that could not be built would fail the same way again.
                Err(e) if e.kind() == TransportErrorKind::InvalidRequest => return Err(Error::Transport(e)),
                Err(e) if e.request_never_left() => {
                    debug!(attempt, kind = ?e.kind(), "request never left");
                    if connect_left == 0 {
                        return Err(Error::Transport(e));
                    }
                    connect_left -= 1;
                    self.backoff(&mut backoffs).await;
                    continue;
                }
                Err(e) => {
                    warn!(attempt, kind = ?e.kind(), "no answer after the request left: outcome unknown");
                    if unknown_left == 0 {
                        return Err(Error::OutcomeUnknown {
                            reason: e.kind().to_string(),
                            source: Some(Box::new(e)),
                        });
                    }
                    unknown_left -= 1;
                    may_have_delivered = true;
                    self.backoff(&mut backoffs).await;
                    continue;
                }
                Ok(response) => response,
            };
            let status = answer.status().as_u16();
            if status != 200 {
                warn!(attempt, status, "unexpected HTTP status");
                if status >= 500 {
                    return Err(Error::OutcomeUnknown { reason: format!("HTTP {status}"), source: None });
                }
                return Err(Error::HttpStatus { status });
            }
            // Strict: a `200 {}` (a wrong `api_base`, a gateway's own answer) is not a success.
            let envelope = match ApiResponse::parse_strict(answer.body()) {
                Ok(envelope) => envelope,
                Err(e) => {
                    warn!(attempt, error = %e, "unreadable answer");
                    return Err(Error::OutcomeUnknown {
                        reason: "unreadable answer".into(),
                        source: Some(Box::new(e)),
                    });
                }
            };
            let code = envelope.errcode;
            debug!(attempt, errcode = code.get(), "answered");
            let Err(api) = envelope.into_result() else {
                return Ok((answer.into_body(), SendReceipt { attempts: attempt }));
            };
            if code.is_token_rejected()
                && !token_replayed
                && let Some(rejected) = token.take()
            {
                warn!(attempt, errcode = code.get(), "access token rejected; refreshing and replaying once");
                token_replayed = true;
                token = Some(inner.tokens.rejected(&rejected).await?);
                continue;
            }
            if code.class() == Some(ErrorClass::Backoff) && busy_left > 0 {
                busy_left -= 1;
                // WeChat said busy; it almost certainly did nothing, but cannot promise it.
                may_have_delivered = true;
                self.backoff(&mut backoffs).await;
                continue;
            }
            if code.class() == Some(ErrorClass::UserRefused) && may_have_delivered {
                warn!(attempt, "43101 on a replay: the earlier attempt probably delivered");
                return Err(Error::ProbablyDelivered(api));
            }
            return Err(Error::Api(api));
        }
    }

    fn request(
        &self,
        spec: subscribe_types::EndpointSpec,
        token: Option<&AccessToken>,
        body: &Bytes,
    ) -> Result<HttpRequest, Error> {
        let uri = http::Uri::try_from(self.uri_text(spec.path, token)).map_err(invalid_request)?;
        let built = match spec.method {
            Method::Post => HttpRequest::post(uri, body.clone()),
            Method::Get => HttpRequest::get(uri),
        };
        built.map_err(invalid_request)
    }

    fn uri_text(&self, path: &str, token: Option<&AccessToken>) -> String {
        let mut uri = String::with_capacity(self.inner.api_base.len() + path.len() + 200);
        uri.push_str(&self.inner.api_base);
        uri.push_str(path);
        if let Some(t) = token {
            uri.push_str("?access_token=");
            subscribe_types::encoding::push_component(&mut uri, t.expose_secret());
        }
        uri
    }

    async fn backoff(&self, n: &mut u32) {
        let random = crate::state::splitmix(&self.inner.jitter);
        let d = self.inner.retry.backoff(*n, random);
        *n += 1;
        self.inner.clock.sleep(d).await;
    }

    /// A link to the authorization page for `template_id` and `scene`, answered at
    /// `redirect_url`, with a signed `reserved` state that
    /// [`complete_authorization`](Self::complete_authorization) verifies without any storage.
    pub fn authorize_url(
        &self,
        template_id: &TemplateId,
        scene: Scene,
        redirect_url: &HttpUrl,
    ) -> AuthorizationLink {
        self.authorize_url_for_session(template_id, scene, redirect_url, "")
    }

    /// Like [`authorize_url`](Self::authorize_url), with the state bound to `session` (your
    /// user's session id): an answer then verifies only in that session, which stops an
    /// attacker from making a victim complete the attacker's authorization.
    pub fn authorize_url_for_session(
        &self,
        template_id: &TemplateId,
        scene: Scene,
        redirect_url: &HttpUrl,
        session: &str,
    ) -> AuthorizationLink {
        let inner = &*self.inner;
        let expires = inner.clock.now() + inner.state_ttl;
        let state = inner.state_key.sign(&inner.appid, template_id, scene, expires, session);
        let request =
            AuthorizeRequest::new(inner.appid.clone(), template_id.clone(), scene, redirect_url.clone())
                .with_reserved(state);
        AuthorizationLink { url: request.url_with_base(&inner.mp_base), request }
    }

    /// Reads WeChat's redirect (a URL or its query string) and checks its state: issued by this
    /// client's key for this app, template and scene, and not expired. Returns the confirmation
    /// (one message may be sent) or the cancellation.
    ///
    /// # Errors
    /// [`Error::Authorization`]: malformed callback, missing, forged, foreign or expired state.
    pub fn complete_authorization(&self, callback: &str) -> Result<AuthorizationAnswer, Error> {
        self.complete_authorization_for_session(callback, "")
    }

    /// Like [`complete_authorization`](Self::complete_authorization) for a state made with
    /// [`authorize_url_for_session`](Self::authorize_url_for_session).
    ///
    /// # Errors
    /// As [`complete_authorization`](Self::complete_authorization).
    pub fn complete_authorization_for_session(
        &self,
        callback: &str,
        session: &str,
    ) -> Result<AuthorizationAnswer, Error> {
        let answer = AuthorizationAnswer::parse(callback).map_err(AuthorizationError::from)?;
        let inner = &*self.inner;
        inner.state_key.verify(
            &inner.appid,
            answer.template_id(),
            answer.scene(),
            answer.reserved(),
            session,
            inner.clock.now(),
        )?;
        Ok(answer)
    }
}

impl Client {
    /// [`complete_authorization`](Self::complete_authorization), then records a confirmation
    /// in `ledger` (idempotently: a repeated confirmation adds nothing). Returns the answer and,
    /// for a confirmation, what recording did.
    ///
    /// # Errors
    /// [`Error::Authorization`] as `complete_authorization`; [`Error::Ledger`] when the ledger
    /// fails (the answer was valid: ask the user to try again).
    pub async fn complete_and_record(
        &self,
        callback: &str,
        ledger: &dyn GrantLedger,
    ) -> Result<(AuthorizationAnswer, Option<Recorded>), Error> {
        self.complete_and_record_for_session(callback, "", ledger).await
    }

    /// [`complete_and_record`](Self::complete_and_record) for a session-bound state.
    ///
    /// # Errors
    /// As [`complete_and_record`](Self::complete_and_record).
    pub async fn complete_and_record_for_session(
        &self,
        callback: &str,
        session: &str,
        ledger: &dyn GrantLedger,
    ) -> Result<(AuthorizationAnswer, Option<Recorded>), Error> {
        let answer = self.complete_authorization_for_session(callback, session)?;
        let recorded = match &answer {
            AuthorizationAnswer::Confirmed(c) => {
                let key = GrantKey::confirmed(self.inner.appid.clone(), c);
                Some(ledger.record(&key, self.inner.clock.now()).await?)
            }
            AuthorizationAnswer::Cancelled(_) => None,
        };
        Ok((answer, recorded))
    }
}

/// A request that could not be built. `http`'s errors would describe a URI that holds the
/// token: keep none of it.
fn invalid_request<E>(_: E) -> Error {
    Error::Transport(TransportError::from_kind(TransportErrorKind::InvalidRequest))
}

/// Configures a [`Client`]. Required values go to [`Client::builder`]; everything here has a
/// default.
#[must_use = "a builder does nothing until `build` is called"]
pub struct ClientBuilder {
    appid: AppId,
    source: TokenSource,
    transport: Option<SharedTransport>,
    store: Option<SharedTokenStore>,
    api_base: String,
    mp_base: String,
    refresh_margin: Duration,
    token_cooldown: Duration,
    lease_ttl: Duration,
    token_wait: Duration,
    token_timeout: Duration,
    store_timeout: Duration,
    token_backoff: (Duration, Duration),
    retry: RetryPolicy,
    clock: Option<SharedClock>,
    state_key: Option<Vec<u8>>,
    state_ttl: Duration,
    connect_timeout: Duration,
    timeout: Duration,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("appid", &self.appid)
            .field("token_source", &self.source.name())
            .field("api_base", &self.api_base)
            .field("mp_base", &self.mp_base)
            .field("refresh_margin", &self.refresh_margin)
            .field("token_wait", &self.token_wait)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(appid: AppId, source: TokenSource) -> Self {
        Self {
            appid,
            source,
            transport: None,
            store: None,
            api_base: DEFAULT_API_BASE.into(),
            mp_base: DEFAULT_MP_BASE.into(),
            refresh_margin: Duration::from_secs(300),
            token_cooldown: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(30),
            token_wait: Duration::from_secs(10),
            token_timeout: Duration::from_secs(10),
            store_timeout: Duration::from_secs(3),
            token_backoff: (Duration::from_millis(500), Duration::from_secs(30)),
            retry: RetryPolicy::default(),
            clock: None,
            state_key: None,
            state_ttl: Duration::from_secs(15 * 60),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }

    /// Which WeChat token endpoint to use (default [`TokenEndpoint::Stable`]). Ignored with an
    /// external token source.
    pub fn token_endpoint(mut self, endpoint: TokenEndpoint) -> Self {
        self.source = match (self.source, endpoint) {
            (TokenSource::Stable(s) | TokenSource::Classic(s), TokenEndpoint::Stable) => {
                TokenSource::Stable(s)
            }
            (TokenSource::Stable(s) | TokenSource::Classic(s), TokenEndpoint::Classic) => {
                TokenSource::Classic(s)
            }
            (external, _) => external,
        };
        self
    }

    /// The HTTP transport (default: `ReqwestTransport` with the timeouts below).
    pub fn transport(mut self, transport: impl HttpTransport + 'static) -> Self {
        self.transport = Some(SharedTransport::new(transport));
        self
    }

    /// Where tokens are kept (default: an [`InMemoryTokenStore`] of this client's own). Give
    /// several clients one shared store (`Arc<…>`) and they refresh as one.
    pub fn token_store(mut self, store: impl TokenStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The API host (default `https://api.weixin.qq.com`): a proxy, a gateway, the sandbox.
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.api_base = url.into();
        self
    }

    /// The authorization page's host (default `https://mp.weixin.qq.com`).
    pub fn mp_base(mut self, url: impl Into<String>) -> Self {
        self.mp_base = url.into();
        self
    }

    /// Refresh this long before a token expires (default 300 s), in the background while the
    /// current token keeps being served. Capped at half a token's lifetime.
    pub fn refresh_margin(mut self, d: Duration) -> Self {
        self.refresh_margin = d;
        self
    }

    /// After the token endpoint refuses (bad secret, IP not whitelisted, quota, …), fail fast
    /// for this long without contacting WeChat (default 60 s).
    pub fn token_cooldown(mut self, d: Duration) -> Self {
        self.token_cooldown = d;
        self
    }

    /// How long one instance may hold the fleet's refresh lease (default 30 s); others wait at
    /// most this long for its token. It must outlast the work it covers, two token requests
    /// and two store calls at their timeouts ([`token_timeout`](Self::token_timeout),
    /// [`store_timeout`](Self::store_timeout)), or `build` fails with
    /// [`ConfigError::LeaseTooShort`].
    pub fn refresh_lease_ttl(mut self, d: Duration) -> Self {
        self.lease_ttl = d;
        self
    }

    /// How long a call that needs a token and holds none waits for one (default 10 s): across
    /// the backoff of a failing token source, so a short outage costs latency, not messages.
    /// After it, or as soon as the next attempt is planned for later than that, the call fails
    /// with [`TokenError::Unavailable`](crate::TokenError::Unavailable), which carries what the
    /// last attempt met. The attempt itself goes on, and its token serves the next calls. Keep
    /// it at least [`token_timeout`](Self::token_timeout) so a slow answer is waited for.
    pub fn token_wait(mut self, d: Duration) -> Self {
        self.token_wait = d;
        self
    }

    /// The bound on one token request, or one [`ExternalTokenSource::fetch`] (default 10 s).
    /// A request that takes longer counts as a failed attempt.
    pub fn token_timeout(mut self, d: Duration) -> Self {
        self.token_timeout = d;
        self
    }

    /// The bound on each call into the [`TokenStore`] and on
    /// [`ExternalTokenSource::invalidate`] (default 3 s). A store that takes longer is treated
    /// as down for the rest of that attempt: the token source is asked directly.
    pub fn store_timeout(mut self, d: Duration) -> Self {
        self.store_timeout = d;
        self
    }

    /// The backoff after failed token attempts (transport errors, timeouts, HTTP 5xx,
    /// malformed answers, `-1`, a failing store or external source): `first` (default 0.5 s),
    /// doubling up to `max` (default 30 s), with jitter. Shared by every caller of the client,
    /// and with a leasing store by every instance. Refusals that need a configuration change
    /// get the [`token_cooldown`](Self::token_cooldown) instead.
    pub fn token_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.token_backoff = (first, max);
        self
    }

    /// What is replayed on failure (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The clock (default [`SystemClock`]); tests use `ManualClock`.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The key that signs authorization states (at least 32 bytes). Default: derived from the
    /// AppSecret, so every instance agrees without configuration. Required with an external
    /// token source.
    pub fn state_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.state_key = Some(key.into());
        self
    }

    /// How long a signed state stays valid (default 15 minutes).
    pub fn state_ttl(mut self, d: Duration) -> Self {
        self.state_ttl = d;
        self
    }

    /// Timeouts of the default transport (default 5 s to connect, 15 s in all).
    pub fn timeouts(mut self, connect: Duration, overall: Duration) -> Self {
        self.connect_timeout = connect;
        self.timeout = overall;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`ConfigError`]: an invalid base URL, a weak or missing state key, no transport, a
    /// zero timeout or backoff, a refresh lease shorter than the work it covers.
    pub fn build(self) -> Result<Client, ConfigError> {
        for (setting, d) in [
            ("token_wait", self.token_wait),
            ("token_timeout", self.token_timeout),
            ("store_timeout", self.store_timeout),
            ("refresh_lease_ttl", self.lease_ttl),
            ("token_backoff", self.token_backoff.0),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { setting });
            }
        }
        let needed = 2 * self.token_timeout + 2 * self.store_timeout;
        if self.lease_ttl < needed {
            return Err(ConfigError::LeaseTooShort { lease: self.lease_ttl, needed });
        }
        let api_base = base_url("api_base", &self.api_base)?;
        let mp_base = base_url("mp_base", &self.mp_base)?;
        let state_key = match (&self.state_key, &self.source) {
            (Some(k), _) if k.len() < 32 => return Err(ConfigError::WeakStateKey),
            (Some(k), _) => StateKey::from_bytes(k),
            (None, TokenSource::Stable(s) | TokenSource::Classic(s)) => StateKey::from_secret(s),
            (None, TokenSource::External(_)) => return Err(ConfigError::MissingStateKey),
        };
        let transport = match self.transport {
            Some(t) => t,
            None => default_transport(self.connect_timeout, self.timeout)?,
        };
        let clock: SharedClock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store: SharedTokenStore =
            self.store.unwrap_or_else(|| Arc::new(InMemoryTokenStore::with_clock(Arc::clone(&clock))));
        // Low 64 bits of the time in nanoseconds: only a seed, truncation is intended.
        #[allow(clippy::cast_possible_truncation)]
        let seed = clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        let mut holder_bytes = [0u8; 8];
        let _ = getrandom::fill(&mut holder_bytes);
        let holder = format!("{:016x}", u64::from_le_bytes(holder_bytes) ^ seed);
        let tokens = TokenManager::new(
            self.appid.clone(),
            self.source,
            store,
            Arc::clone(&clock),
            transport.clone(),
            api_base.clone(),
            crate::token::TokenSettings {
                refresh_margin: self.refresh_margin,
                cooldown: self.token_cooldown,
                lease_ttl: self.lease_ttl,
                lease_poll: Duration::from_millis(50),
                token_wait: self.token_wait,
                request_timeout: self.token_timeout,
                store_timeout: self.store_timeout,
                backoff_first: self.token_backoff.0,
                backoff_max: self.token_backoff.1.max(self.token_backoff.0),
            },
            holder,
            seed.rotate_left(17) ^ 0x5DEE_CE66_D1CE_4E5B,
        );
        Ok(Client {
            inner: Arc::new(Inner {
                appid: self.appid,
                api_base,
                mp_base,
                transport,
                tokens: Arc::new(tokens),
                retry: self.retry,
                clock,
                state_key,
                state_ttl: self.state_ttl,
                jitter: AtomicU64::new(seed),
            }),
        })
    }
}

fn base_url(which: &'static str, url: &str) -> Result<String, ConfigError> {
    HttpUrl::new(url).map_err(|_| ConfigError::InvalidBaseUrl { which })?;
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(feature = "reqwest")]
fn default_transport(connect: Duration, overall: Duration) -> Result<SharedTransport, ConfigError> {
    let t = subscribe_transport::ReqwestTransport::builder()
        .connect_timeout(connect)
        .timeout(overall)
        .build()
        .map_err(ConfigError::Transport)?;
    Ok(SharedTransport::new(t))
}

#[cfg(not(feature = "reqwest"))]
fn default_transport(_: Duration, _: Duration) -> Result<SharedTransport, ConfigError> {
    Err(ConfigError::NoTransport)
}
