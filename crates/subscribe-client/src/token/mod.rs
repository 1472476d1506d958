//! Access tokens: where they are kept ([`TokenStore`]) and where they come from
//! ([`ExternalTokenSource`] besides WeChat's own endpoints).

mod manager;
mod memory;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use subscribe_types::{AccessToken, AppId};

pub(crate) use manager::{TokenManager, TokenSettings, TokenSource};
pub use memory::InMemoryTokenStore;

pub use subscribe_transport::BoxError;

/// A shared error: what a failed token attempt keeps of a store's or an external source's
/// error, so the failure can be handed to every caller that waited for the attempt.
pub(crate) type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A token with the time it stops being valid.
///
/// `Debug` shows the expiry, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct CachedToken {
    token: AccessToken,
    expires_at: SystemTime,
}

impl CachedToken {
    /// A token valid until `expires_at`.
    pub fn new(token: AccessToken, expires_at: SystemTime) -> Self {
        Self { token, expires_at }
    }

    /// The token.
    pub fn token(&self) -> &AccessToken {
        &self.token
    }

    /// When it stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The token's documented encoding for a backend: the token's text and its expiry in
    /// milliseconds since the Unix epoch (0 for an expiry before it). Store both; read them
    /// back with [`from_parts`](Self::from_parts). The text is the secret: keep it out of logs.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use subscribe_client::CachedToken;
    /// use subscribe_types::AccessToken;
    /// let t = CachedToken::new(AccessToken::new("T")?, UNIX_EPOCH + Duration::from_millis(1_800_000_000_123));
    /// let (text, expires_ms) = t.to_parts();
    /// assert_eq!(expires_ms, 1_800_000_000_123);
    /// assert_eq!(CachedToken::from_parts(text, expires_ms)?, t);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_parts(&self) -> (&str, u64) {
        let ms = self.expires_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        (self.token.expose_secret(), u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// A token read back from [`to_parts`](Self::to_parts)'s two values.
    ///
    /// # Errors
    /// [`ValidationError`](subscribe_types::ValidationError) when the text is not a valid access
    /// token (empty, too long, not printable ASCII); it does not quote the text.
    pub fn from_parts(token: &str, expires_at_ms: u64) -> Result<Self, subscribe_types::ValidationError> {
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_millis(expires_at_ms);
        Ok(Self::new(AccessToken::new(token)?, expires_at))
    }

    /// Whether it is still valid at `now` with at least `margin` to spare.
    pub fn is_fresh(&self, now: SystemTime, margin: Duration) -> bool {
        self.expires_at > now + margin
    }
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where tokens are kept between refreshes, shared by every instance that uses the same store.
///
/// The contract (checked by `test_util::token_store_contract`):
/// - [`save`](Self::save) is a compare-and-swap on the expiry: the token that expires later wins,
///   so a slow instance finishing an older refresh cannot overwrite a newer token. It returns
///   what the store holds afterwards.
/// - [`invalidate`](Self::invalidate) is a compare-and-delete: it removes the stored token only
///   if it is the rejected one, so one instance cannot wipe a token another just refreshed.
/// - Both are atomic: concurrent saves of an older and a newer token leave the newer.
/// - The store's `Debug` (what a log line or an error report prints) never shows a token it
///   holds: derive it only over fields that hold none.
/// - A store shared by several instances also implements [`RefreshLease`] and returns it from
///   [`refresh_lease`](Self::refresh_lease), so they elect one refresher and share a failed
///   refresher's pause. A store used by one process keeps the default (`None`).
///
/// The trait uses `async-trait`, so implementations write plain `async fn`s and the client
/// stores them as `Arc<dyn TokenStore>`.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The stored token of `app`, if any (expired ones may be returned; the client checks).
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError>;

    /// Stores `token` unless the stored one expires later; returns what is stored afterwards.
    async fn save(&self, app: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError>;

    /// Removes the stored token of `app` only if it is `rejected`; says whether it did.
    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<bool, TokenStoreError>;

    /// The store's refresh lease, when it coordinates refreshes across instances. The default,
    /// `None`, is right for a store used by one process: the client already refreshes once
    /// per process. A store shared by several instances returns `Some(self)`.
    fn refresh_lease(&self) -> Option<&dyn RefreshLease> {
        None
    }
}

/// The refresh lease of a [`TokenStore`] shared by several instances: it elects one refresher
/// per app, and lets a refresher that failed tell the others to wait.
///
/// The contract (checked by `test_util::token_store_contract` whenever
/// [`TokenStore::refresh_lease`] returns one):
/// - [`try_acquire_refresh_lease`](Self::try_acquire_refresh_lease) is exclusive: while one
///   holder's lease lives, nobody else gets it (of any number of concurrent calls, one wins: a
///   check followed by a set is not enough); it expires after its `ttl`, so a crashed holder's
///   lease comes back.
/// - [`release_refresh_lease`](Self::release_refresh_lease) frees the lease only for its holder.
/// - [`hold_off_refresh`](Self::hold_off_refresh) turns the holder's lease into a pause during
///   which nobody takes the lease; [`refresh_hold_off`](Self::refresh_hold_off) reads it.
///   Without it every instance would back off on its own and the token endpoint would see each
///   instance's attempts. The pause is measured by the store's own clock (a Redis key's TTL),
///   so the instances' clocks need not agree.
#[async_trait::async_trait]
pub trait RefreshLease: Send + Sync {
    /// Tries to become the one refresher of `app` for `ttl`; `holder` identifies the caller.
    async fn try_acquire_refresh_lease(
        &self,
        app: &AppId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, TokenStoreError>;

    /// Gives the lease up, if `holder` still holds it.
    async fn release_refresh_lease(&self, app: &AppId, holder: &str) -> Result<(), TokenStoreError>;

    /// `holder`'s refresh failed: for `pause`, no instance may take the refresh lease of `app`
    /// (the lease, if `holder` still holds it, becomes the hold-off; a lease another instance
    /// holds is left alone, and a longer hold-off is not shortened). `reason` says what the
    /// attempt met, in words, for the others' errors and logs; it holds no secret.
    async fn hold_off_refresh(
        &self,
        app: &AppId,
        holder: &str,
        pause: Duration,
        reason: &str,
    ) -> Result<(), TokenStoreError>;

    /// The hold-off in force for `app`, if any.
    async fn refresh_hold_off(&self, app: &AppId) -> Result<Option<HoldOff>, TokenStoreError>;
}

/// A pause on token requests that a failed refresher asked every instance to keep (see
/// [`RefreshLease::hold_off_refresh`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldOff {
    /// Time left.
    pub remaining: Duration,
    /// What the failed attempt met, in words.
    pub reason: String,
}

impl HoldOff {
    /// The most bytes of a reason a shared store keeps.
    pub const MAX_REASON_BYTES: usize = 200;

    /// `reason` cut to [`MAX_REASON_BYTES`](Self::MAX_REASON_BYTES) on a character boundary:
    /// what a store shared by instances keeps of it.
    ///
    /// ```
    /// use subscribe_client::HoldOff;
    /// assert_eq!(HoldOff::bounded_reason("HTTP 502"), "HTTP 502");
    /// assert_eq!(HoldOff::bounded_reason(&"错".repeat(100)).len(), 198);
    /// ```
    pub fn bounded_reason(reason: &str) -> &str {
        let mut cut = reason.len().min(Self::MAX_REASON_BYTES);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        &reason[..cut]
    }
}

#[async_trait::async_trait]
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        (**self).load(app).await
    }
    async fn save(&self, app: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        (**self).save(app, token).await
    }
    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<bool, TokenStoreError> {
        (**self).invalidate(app, rejected).await
    }
    fn refresh_lease(&self) -> Option<&dyn RefreshLease> {
        (**self).refresh_lease()
    }
}

/// A shared store handle.
pub type SharedTokenStore = Arc<dyn TokenStore>;

/// An opaque error around an extension's own error, shared so one failed attempt can be handed
/// to every caller that waited for it. `Display` says what failed; the extension's error is the
/// [`source`](std::error::Error::source), to downcast to its type.
///
/// Every such error is an outage of the extension, so its `kind()` is always
/// [`Retryable`](crate::ErrorKind::Retryable); `$why` says how the client treats it.
macro_rules! extension_error {
    ($(#[$doc:meta])* $name:ident, $what:literal, $why:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            source: $crate::token::SharedError,
        }

        impl $name {
            /// Wraps the extension's error. It must not contain a token.
            pub fn new(source: impl Into<$crate::BoxError>) -> Self {
                Self { source: source.into().into() }
            }

            #[doc = concat!(
                "What to do about it: always [`Retryable`](crate::ErrorKind::Retryable), an outage \
                 of the extension that trying again later can get past. ",
                $why
            )]
            pub fn kind(&self) -> $crate::ErrorKind {
                $crate::ErrorKind::Retryable
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($what)
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.source)
            }
        }
    };
}
pub(crate) use extension_error;

extension_error!(
    /// A token store failed (connection lost, timeout, corrupt value). Opaque, so any backend's
    /// error fits; the cause is the [`source`](std::error::Error::source) (downcast it to your
    /// backend's type). Cheap to clone.
    TokenStoreError,
    "token store failed",
    "The client never fails a call for it: when the store fails or does not answer in time \
     (`store_timeout`), it asks the token source directly and keeps the token in this process, \
     and it tries the store again at the next refresh."
);

extension_error!(
    /// An [`ExternalTokenSource`] failed or did not answer in time. The cause is the
    /// [`source`](std::error::Error::source) (downcast it to your source's type). Cheap to clone.
    ExternalSourceError,
    "the external token source returned an error",
    "The client reports it as [`TokenError::External`](crate::TokenError::External) (also \
     `Retryable`) and tries the source again after a backoff."
);

/// A central token service that the integrator runs (WeChat's 中控服务器 pattern): the only
/// component that talks to WeChat's token endpoint, which every instance asks instead.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use subscribe_client::{BoxError, CachedToken, ExternalTokenSource};
/// use subscribe_types::{AccessToken, AppId};
///
/// #[derive(Debug)]
/// struct CentralService; // e.g. an HTTP client for your token service
///
/// #[subscribe_client::async_trait]
/// impl ExternalTokenSource for CentralService {
///     async fn fetch(&self, app: &AppId) -> Result<CachedToken, BoxError> {
///         // GET https://tokens.internal/{app} …
///         # let _ = app;
///         Ok(CachedToken::new(AccessToken::new("T")?, SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX.into())))
///     }
///     async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<(), BoxError> {
///         // POST https://tokens.internal/{app}/rejected — the service refreshes if it still
///         // holds that token.
///         # let _ = (app, rejected);
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait ExternalTokenSource: Send + Sync + fmt::Debug {
    /// The current token of `app`.
    async fn fetch(&self, app: &AppId) -> Result<CachedToken, BoxError>;

    /// Tells the service that WeChat rejected `rejected`, so it refreshes (if it still holds that
    /// token) before the client fetches again.
    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<(), BoxError>;
}

#[async_trait::async_trait]
impl<T: ExternalTokenSource + ?Sized> ExternalTokenSource for Arc<T> {
    async fn fetch(&self, app: &AppId) -> Result<CachedToken, BoxError> {
        (**self).fetch(app).await
    }
    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<(), BoxError> {
        (**self).invalidate(app, rejected).await
    }
}

/// Which token endpoint the client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenEndpoint {
    /// `POST /cgi-bin/stable_token` in normal mode (the default): the secret stays out of the
    /// URL, and a refresh does not end the token other holders use.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every refresh issues a new token and ends the previous one after
    /// a short overlap. Needed where stable tokens are unavailable.
    Classic,
}

pub(crate) type SharedExternalSource = Arc<dyn ExternalTokenSource>;
