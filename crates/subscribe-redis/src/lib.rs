//! Redis implementations of `subscribe-client`'s [`TokenStore`](subscribe_client::TokenStore),
//! [`GrantLedger`](subscribe_client::GrantLedger) and [`UsedStates`](subscribe_client::UsedStates):
//! any number of server instances share one access token (exactly one of them refreshes it), one
//! set of grants (each sent once) and one record of used authorization states (each confirms
//! once, whichever instance its answer reaches).
//!
//! ```no_run
//! use std::sync::Arc;
//! use subscribe_client::Client;
//! use subscribe_redis::{Redis, RedisGrantLedger, RedisTokenStore, RedisUsedStates};
//! use subscribe_types::{AppId, AppSecret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::builder("redis://127.0.0.1:6379").prefix("shop").connect().await?;
//! let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("…")?)
//!     .token_store(RedisTokenStore::new(redis.clone()))
//!     .used_states(RedisUsedStates::new(redis.clone()))
//!     .build()?;
//! let ledger = Arc::new(RedisGrantLedger::new(redis));
//! # let _ = (client, ledger); Ok(()) }
//! ```
//!
//! Every change is one Lua script, so it is atomic on the server: a save never overwrites a
//! token that expires later, an invalidation removes only the token that was rejected, a
//! refresh lease is released only by its holder, and a grant is reserved by one sender at a
//! time. Keys are namespaced by a prefix and the app id, and never contain a secret.
//!
//! With the feature `events`, `RedisNotificationResults` keeps what
//! `subscribe_msg_sent_event` pushes, by `msgid`, for every instance.
//!
//! [`RedisReplayCache`] is `subscribe-events`' [`ReplayCache`](subscribe_events::replay::ReplayCache)
//! in Redis: an event push replayed to any instance is refused, not applied again.
//!
//! | feature | default | gives |
//! |---|---|---|
//! | `events` | no | `RedisNotificationResults` (`subscribe-client`'s `events`) |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod ledger;
mod replay;
#[cfg(feature = "events")]
mod results;
mod token;
mod used_states;

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use crate::ledger::RedisGrantLedger;
pub use crate::replay::RedisReplayCache;
#[cfg(feature = "events")]
#[cfg_attr(docsrs, doc(cfg(feature = "events")))]
pub use crate::results::RedisNotificationResults;
pub use crate::token::RedisTokenStore;
pub use crate::used_states::RedisUsedStates;

/// A Redis operation failed, or the handle could not be built. Never contains the Redis URL
/// (it may hold a password) nor a token.
///
/// Opaque, as `reqwest::Error` is: ask it what happened with the predicates; the driver's own
/// error, when there is one, is the [`source`](std::error::Error::source).
///
/// ```
/// use subscribe_redis::Redis;
/// let e = Redis::builder("http://not-redis").lazy().unwrap_err();
/// assert!(e.is_configuration() && !e.is_timeout());
/// assert_eq!(e.to_string(), "invalid Redis URL (expected redis://host:port[/db] or rediss://…)");
/// ```
#[derive(Debug)]
pub struct RedisError {
    kind: Kind,
    source: Option<redis::RedisError>,
}

#[derive(Debug)]
enum Kind {
    InvalidUrl,
    InvalidPrefix { len: usize },
    Timeout(Duration),
    Connection,
    Server,
    Corrupt { what: &'static str },
}

impl RedisError {
    fn new(kind: Kind) -> Self {
        Self { kind, source: None }
    }

    pub(crate) fn corrupt(what: &'static str) -> Self {
        Self::new(Kind::Corrupt { what })
    }

    /// No answer within the operation timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
            || self.source.as_ref().is_some_and(redis::RedisError::is_timeout)
    }

    /// The connection could not be made or was lost.
    pub fn is_connection(&self) -> bool {
        matches!(self.kind, Kind::Connection)
    }

    /// The URL or the key prefix is invalid: fix the configuration.
    pub fn is_configuration(&self) -> bool {
        matches!(self.kind, Kind::InvalidUrl | Kind::InvalidPrefix { .. })
    }

    /// A stored value is not in the format this crate writes.
    pub fn is_corrupt(&self) -> bool {
        matches!(self.kind, Kind::Corrupt { .. })
    }

    /// What to do about it, as every error of the client says: `Configuration` when someone
    /// must act (the URL, the key prefix, a corrupt value), `Retryable` otherwise (Redis is out,
    /// slow or refused the command for now). The ledger's and the stores' errors are sorted the
    /// same way.
    ///
    /// ```
    /// use subscribe_client::ErrorKind;
    /// let e = subscribe_redis::Redis::builder("http://not-redis").lazy().unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Configuration);
    /// ```
    pub fn kind(&self) -> subscribe_client::ErrorKind {
        if self.is_configuration() || self.is_corrupt() {
            subscribe_client::ErrorKind::Configuration
        } else {
            subscribe_client::ErrorKind::Retryable
        }
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::InvalidUrl => {
                f.write_str("invalid Redis URL (expected redis://host:port[/db] or rediss://…)")
            }
            Kind::InvalidPrefix { len } => {
                write!(f, "invalid key prefix: 1 to 64 characters of [A-Za-z0-9_.:-] (got {len})")
            }
            Kind::Timeout(d) => write!(f, "Redis did not answer within {d:?}"),
            Kind::Connection => f.write_str("the connection to Redis failed"),
            Kind::Server => f.write_str("Redis answered with an error"),
            Kind::Corrupt { what } => write!(f, "corrupt value in Redis at {what}"),
        }
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        let kind = if e.is_timeout() {
            Kind::Timeout(Duration::ZERO)
        } else if e.is_connection_dropped() || e.is_connection_refusal() || e.is_io_error() {
            Kind::Connection
        } else {
            Kind::Server
        };
        Self { kind, source: Some(e) }
    }
}

/// Connection settings.
#[derive(Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct RedisBuilder {
    url: String,
    prefix: String,
    op_timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBuilder")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl RedisBuilder {
    /// Keys start with `prefix:` (default `wxsub`). Use one prefix per environment.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Longest wait for one operation, reconnection included (default 2 s). A slow or absent
    /// Redis then gives a [`RedisError`] that `is_timeout()` instead of a hung request.
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Longest wait for one connection attempt (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Connects.
    ///
    /// # Errors
    /// A [`RedisError`] that `is_configuration()` (URL, prefix), or a connection failure.
    pub async fn connect(self) -> Result<Redis, RedisError> {
        let redis = self.lazy()?;
        redis.run(redis::cmd("PING").query_async::<String>(&mut redis.connection())).await?;
        Ok(redis)
    }

    /// Builds the handle without connecting: the connection is made on first use (and remade
    /// after a failure), so a service can start while Redis is down.
    ///
    /// # Errors
    /// A [`RedisError`] that `is_configuration()` (URL, prefix).
    pub fn lazy(self) -> Result<Redis, RedisError> {
        let len = self.prefix.len();
        if len == 0
            || len > 64
            || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(RedisError::new(Kind::InvalidPrefix { len }));
        }
        let client = redis::Client::open(self.url.as_str()).map_err(|_| RedisError::new(Kind::InvalidUrl))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.op_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let link = Link { client, config, current: RwLock::new(conn), replaced: Mutex::new(None) };
        Ok(Redis { link: Arc::new(link), prefix: self.prefix, op_timeout: self.op_timeout })
    }
}

/// The connection the handles share, and what it takes to make another.
struct Link {
    client: redis::Client,
    config: ConnectionManagerConfig,
    current: RwLock<ConnectionManager>,
    /// When the connection was last replaced for not answering.
    replaced: Mutex<Option<std::time::Instant>>,
}

/// A shared connection to Redis (cheap to clone), with the key prefix. Give the same handle to
/// a [`RedisTokenStore`] and a [`RedisGrantLedger`].
///
/// redis' connection manager makes the connection again when it fails (a reset, a closed
/// socket), but not when it only stops answering (a server paused, a network path that drops
/// everything without a reset: by design, so that a slow server is not flooded with
/// reconnections): then every later operation would time out too, forever. So an operation of
/// this crate that gets no answer within [`op_timeout`](Self::op_timeout) replaces the shared
/// connection, at most once per `op_timeout` ([`unanswered`](Self::unanswered) does the same for
/// your own commands).
#[derive(Clone)]
pub struct Redis {
    link: Arc<Link>,
    prefix: String,
    op_timeout: Duration,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Settings for the server at `url` (`redis://[:password@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisBuilder {
        RedisBuilder {
            url: url.into(),
            prefix: "wxsub".to_owned(),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared connection (a clone: cheap, and every clone multiplexes the same one), for
    /// keys of your own beside this crate's (the gateway keeps its idempotency records under
    /// the same prefix). Your commands are yours to bound: [`op_timeout`](Self::op_timeout)
    /// is what this crate waits for one operation, and [`bounded`](Self::bounded) runs one so.
    /// Take the connection anew for each operation: a connection that stopped answering is
    /// replaced in the handle ([`unanswered`](Self::unanswered)), not in a clone kept aside.
    pub fn connection(&self) -> ConnectionManager {
        self.link.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Says that an operation on [`connection`](Self::connection) got no answer within
    /// [`op_timeout`](Self::op_timeout): the shared connection is replaced by a new one (made
    /// on first use), unless it was replaced less than `op_timeout` ago. What this crate's
    /// own operations do when they time out.
    pub fn unanswered(&self) {
        let mut replaced = self.link.replaced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if replaced.is_some_and(|at| at.elapsed() < self.op_timeout) {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.link.client.clone(), self.link.config.clone()) {
            Ok(fresh) => {
                *self.link.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                *replaced = Some(std::time::Instant::now());
                tracing::warn!(
                    "Redis did not answer within {:?}: its connection is replaced",
                    self.op_timeout
                );
            }
            Err(e) => {
                tracing::warn!(error = %RedisError::from(e), "Redis's connection could not be replaced");
            }
        }
    }

    /// Runs `op` (a command on [`connection`](Self::connection)) within
    /// [`op_timeout`](Self::op_timeout): its error, or a timeout (after which the connection is
    /// replaced, as [`unanswered`](Self::unanswered) says), as a [`RedisError`].
    ///
    /// # Errors
    /// What the command failed with, or [`RedisError::is_timeout`].
    pub async fn bounded<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, RedisError> {
        self.run(op).await
    }

    /// The longest this crate waits for one operation ([`RedisBuilder::op_timeout`]).
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    async fn run<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, RedisError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            // redis' own response timeout (the same bound) says no duration: say ours.
            Ok(Err(e)) if e.is_timeout() => {
                self.unanswered();
                Err(RedisError { kind: Kind::Timeout(self.op_timeout), source: Some(e) })
            }
            Ok(r) => Ok(r?),
            Err(_) => {
                self.unanswered();
                Err(RedisError::new(Kind::Timeout(self.op_timeout)))
            }
        }
    }
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long a key must live, in milliseconds, to outlast `until` as the application's clock
/// reads it at `now` (at least 1, which `PX` requires). Keys are given lifetimes rather than
/// `PXAT` instants: an instant would be read on Redis's clock, and an application clock behind
/// Redis's would shorten every mark by the skew (or, for an instant fixed in a test, expire it
/// before it is written once Redis's clock passes it).
fn key_lifetime_ms(until: std::time::SystemTime, now: std::time::SystemTime) -> u64 {
    let left = until.duration_since(now).unwrap_or_default();
    u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn from_millis(ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(ms)
}
