//! Redis implementations of `subscribe-client`'s [`TokenStore`](subscribe_client::TokenStore)
//! and [`GrantLedger`](subscribe_client::GrantLedger): any number of server instances share one
//! access token (exactly one of them refreshes it) and one set of grants (each sent once).
//!
//! ```no_run
//! use std::sync::Arc;
//! use subscribe_client::Client;
//! use subscribe_redis::{Redis, RedisGrantLedger, RedisTokenStore};
//! use subscribe_types::{AppId, AppSecret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::builder("redis://127.0.0.1:6379").prefix("shop").connect().await?;
//! let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("…")?)
//!     .token_store(RedisTokenStore::new(redis.clone()))
//!     .build()?;
//! let ledger = Arc::new(RedisGrantLedger::new(redis));
//! # let _ = (client, ledger); Ok(()) }
//! ```
//!
//! Every change is one Lua script, so it is atomic on the server: a save never overwrites a
//! token that expires later, an invalidation removes only the token that was rejected, a
//! refresh lease is released only by its holder, and a grant is reserved by one sender at a
//! time. Keys are namespaced by a prefix and the app id, and never contain a secret.

mod ledger;
mod token;

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use crate::ledger::RedisGrantLedger;
pub use crate::token::RedisTokenStore;

/// A Redis operation failed. Never contains the Redis URL (it may hold a password) nor a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL (expected redis://host:port[/db] or rediss://…)")]
    InvalidUrl,
    /// The prefix breaks the rule.
    #[error("invalid key prefix: 1 to 64 characters of [A-Za-z0-9_.:-] (got {len})")]
    InvalidPrefix {
        /// Its length.
        len: usize,
    },
    /// No answer within the operation timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("Redis failed: {kind}")]
    Redis {
        /// The kind of failure, as the driver names it.
        kind: String,
        /// The driver's error.
        #[source]
        source: redis::RedisError,
    },
    /// A stored value is not in the format this crate writes.
    #[error("corrupt value in Redis at {what}")]
    Corrupt {
        /// Which value (a key role, never a secret).
        what: &'static str,
    },
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis { kind: format!("{:?}", e.kind()), source: e }
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
    /// Redis then gives [`RedisError::Timeout`] instead of a hung request.
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
    /// [`RedisError::InvalidUrl`], [`RedisError::InvalidPrefix`], or a connection failure.
    pub async fn connect(self) -> Result<Redis, RedisError> {
        let redis = self.lazy()?;
        redis.run(redis::cmd("PING").query_async::<String>(&mut redis.conn.clone())).await?;
        Ok(redis)
    }

    /// Builds the handle without connecting: the connection is made on first use (and remade
    /// after a failure), so a service can start while Redis is down.
    ///
    /// # Errors
    /// [`RedisError::InvalidUrl`] or [`RedisError::InvalidPrefix`].
    pub fn lazy(self) -> Result<Redis, RedisError> {
        let len = self.prefix.len();
        if len == 0
            || len > 64
            || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(RedisError::InvalidPrefix { len });
        }
        let client = redis::Client::open(self.url.as_str()).map_err(|_| RedisError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.op_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Redis { conn, prefix: self.prefix, op_timeout: self.op_timeout })
    }
}

/// A shared connection to Redis (cheap to clone), with the key prefix. Give the same handle to
/// a [`RedisTokenStore`] and a [`RedisGrantLedger`].
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
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
            Ok(r) => Ok(r?),
            Err(_) => Err(RedisError::Timeout(self.op_timeout)),
        }
    }
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(ms)
}
