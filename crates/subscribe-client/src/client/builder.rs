//! [`ClientBuilder`]: every setting, its default, and the checks `build` makes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use subscribe_transport::{HttpTransport, SharedTransport};
use subscribe_types::{AppId, AppSecret, DEFAULT_MP_BASE, HttpUrl};
use zeroize::Zeroizing;

use super::{Client, Inner};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::error::ConfigError;
use crate::retry::RetryPolicy;
use crate::state::{StateKey, StateKeys};
use crate::token::{
    InMemoryTokenStore, SharedTokenStore, TokenEndpoint, TokenManager, TokenSource, TokenStore,
};

/// WeChat's API host.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";

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
    /// Held until `build` derives the signing key from it; zeroed when the builder goes.
    state_key: Option<Zeroizing<Vec<u8>>>,
    previous_state_keys: Vec<PreviousKey>,
    used_states: Option<crate::used_states::SharedUsedStates>,
    state_ttl: Duration,
    /// `timeouts(..)`, when called: (connect, overall).
    timeouts: Option<(Duration, Duration)>,
}

/// A key of the ring's past (see [`ClientBuilder::previous_state_key`]).
enum PreviousKey {
    Bytes(Zeroizing<Vec<u8>>),
    Secret(AppSecret),
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
            .field("previous_state_keys", &self.previous_state_keys.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(super) fn new(appid: AppId, source: TokenSource) -> Self {
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
            previous_state_keys: Vec::new(),
            used_states: None,
            state_ttl: Duration::from_secs(15 * 60),
            timeouts: None,
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

    /// The HTTP transport (default: `ReqwestTransport` with the [`timeouts`](Self::timeouts)).
    /// A transport given here owns its timeouts: calling `timeouts` as well is a
    /// [`ConfigError::TimeoutsWithCustomTransport`] at `build`.
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

    /// The bound on one token request, or one [`ExternalTokenSource::fetch`](crate::ExternalTokenSource::fetch) (default 10 s).
    /// A request that takes longer counts as a failed attempt.
    pub fn token_timeout(mut self, d: Duration) -> Self {
        self.token_timeout = d;
        self
    }

    /// The bound on each call into the [`TokenStore`] and on
    /// [`ExternalTokenSource::invalidate`](crate::ExternalTokenSource::invalidate) (default 3 s). A store that takes longer is treated
    /// as down for the rest of that attempt: the token source is asked directly.
    ///
    /// It bounds each call into the [`UsedStates`](crate::UsedStates) store too, and so sets
    /// how long a completion's [`Claim`](crate::Claim) on its answer's mark lasts: ten times
    /// this, at least [`Claim::CLAIM_PERIOD`](crate::Claim::CLAIM_PERIOD) (30 s), so a
    /// completion (a mark, a ledger write, a seal) ends well within its claim.
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
        // The caller's buffer itself, not a copy: zeroed (all of its capacity) when dropped.
        self.state_key = Some(Zeroizing::new(key.into()));
        self
    }

    /// A key that signed states before the current one: states it signed still verify until
    /// they expire (`state_ttl`). Give the key you rotated away from here for one `state_ttl`
    /// after the rotation (and during a rolling deploy, each old instance's key), so the
    /// confirmations users made just before it are not turned away as forged. Repeatable.
    pub fn previous_state_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.previous_state_keys.push(PreviousKey::Bytes(Zeroizing::new(key.into())));
        self
    }

    /// For the default state key (derived from the AppSecret): the AppSecret it was derived
    /// from before the secret was reset, so the states signed with it still verify until they
    /// expire. Repeatable.
    pub fn previous_app_secret(mut self, secret: AppSecret) -> Self {
        self.previous_state_keys.push(PreviousKey::Secret(secret));
        self
    }

    /// Where used authorization states are remembered, so each confirms once (default: an
    /// [`InMemoryUsedStates`](crate::InMemoryUsedStates) of this client's own, which stops
    /// replays within this process). Give every instance one shared store (Redis:
    /// `subscribe_redis::RedisUsedStates`) to stop a replay that reaches another instance.
    /// Every call into it is bounded by [`store_timeout`](Self::store_timeout).
    pub fn used_states(mut self, store: impl crate::UsedStates + 'static) -> Self {
        self.used_states = Some(Arc::new(store));
        self
    }

    /// How long a signed state stays valid (default 15 minutes).
    pub fn state_ttl(mut self, d: Duration) -> Self {
        self.state_ttl = d;
        self
    }

    /// Timeouts of the default transport (default 5 s to connect, 15 s in all). Only for the
    /// default transport: with [`transport`](Self::transport) set, `build` fails with
    /// [`ConfigError::TimeoutsWithCustomTransport`] rather than ignore them.
    pub fn timeouts(mut self, connect: Duration, overall: Duration) -> Self {
        self.timeouts = Some((connect, overall));
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`ConfigError`]: an invalid base URL, a weak or missing state key, no transport,
    /// `timeouts` together with a custom transport, a zero timeout or backoff, a refresh lease
    /// shorter than the work it covers.
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
        let current = match (&self.state_key, &self.source) {
            (Some(k), _) if k.len() < 32 => return Err(ConfigError::WeakStateKey),
            (Some(k), _) => StateKey::from_bytes(k),
            (None, TokenSource::Stable(s) | TokenSource::Classic(s)) => StateKey::from_secret(s),
            (None, TokenSource::External(_)) => return Err(ConfigError::MissingStateKey),
        };
        let mut previous = Vec::with_capacity(self.previous_state_keys.len());
        for key in &self.previous_state_keys {
            previous.push(match key {
                PreviousKey::Bytes(k) if k.len() < 32 => return Err(ConfigError::WeakStateKey),
                PreviousKey::Bytes(k) => StateKey::from_bytes(k),
                PreviousKey::Secret(s) => StateKey::from_secret(s),
            });
        }
        let state_key = StateKeys { current, previous };
        let transport = match (self.transport, self.timeouts) {
            (Some(_), Some(_)) => return Err(ConfigError::TimeoutsWithCustomTransport),
            (Some(t), None) => t,
            (None, timeouts) => {
                let (connect, overall) =
                    timeouts.unwrap_or((Duration::from_secs(5), Duration::from_secs(15)));
                default_transport(connect, overall)?
            }
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
                used_states: self.used_states.unwrap_or_else(|| Arc::new(crate::InMemoryUsedStates::new())),
                store_timeout: self.store_timeout,
                state_ttl: self.state_ttl,
                jitter: AtomicU64::new(seed),
                openid_locks: crate::keyed::KeyedLocks::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Does not compile if the keys given to the builder go back to plain `Vec`s.
    #[test]
    fn state_keys_given_to_the_builder_are_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let builder = super::super::Client::builder(
            AppId::new("wx0123456789abcdef").unwrap(),
            AppSecret::new("0123456789abcdef0123456789abcdef").unwrap(),
        )
        .state_key(vec![7; 32])
        .previous_state_key(vec![8; 32]);
        zeroed_on_drop(builder.state_key.as_ref().unwrap());
        let PreviousKey::Bytes(previous) = &builder.previous_state_keys[0] else { panic!("bytes") };
        zeroed_on_drop(previous);
        assert!(!format!("{builder:?}").contains("[7, 7"));
    }
}
