//! The webhook outbox: each app's pushed events kept in the store, in the order they were
//! stored, until the caller's webhook took them, so that an event is never lost while the
//! webhook is down and is delivered in order when it is back.
//!
//! The [`OutboxStore`] trait is the storage: an append, a lease per app (one gateway of a fleet
//! delivers an app's events at a time, which keeps them in order), a read of the oldest, and
//! the removal of a delivered one. Implementations: SQLite and PostgreSQL ([`SqlOutbox`]),
//! Redis ([`RedisOutbox`]) and this process's memory ([`MemoryOutbox`]).

mod memory;
mod redis;
mod sql;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use subscribe_client::async_trait;

pub use memory::MemoryOutbox;
pub use redis::RedisOutbox;
pub use sql::SqlOutbox;

use crate::jobs::JobStoreError as StoreError;

/// How long a delivered event's key is kept: longer than WeChat resends a push (its signature
/// is fresh five minutes), so that a copy read again is never kept, nor posted, twice.
pub const KEPT_DELIVERED: Duration = Duration::from_secs(3600);

/// An outbox shared by the push endpoints and the deliverers (and by gateways on the same
/// backend).
pub type SharedOutbox = Arc<dyn OutboxStore>;

/// An outbox could not be read or written (the job store's error type: the same backends).
pub type OutboxError = StoreError;

/// The storage of the webhook outbox. Every method is one atomic step on the backend; leases are
/// timed on the backend's clock where it has one.
#[async_trait]
pub trait OutboxStore: Send + Sync + fmt::Debug {
    /// Appends the event `key` (its identity: the same event pushed again has the same key)
    /// with `body` to `appid`'s events, unless it waits there already or was kept less than
    /// [`KEPT_DELIVERED`] ago (the stores keep a delivered event's key at least that long): its
    /// sequence number,
    /// greater than every earlier one of the app's, visible to [`peek`](Self::peek) only after
    /// the ones before it (numbers are never seen out of order).
    async fn append(&self, appid: &str, key: &str, body: &str) -> Result<u64, OutboxError>;

    /// Takes or renews the delivery of `appid`'s events for `owner`, for `lease`: whether
    /// `owner` holds it now (no other holder, or the other's lease has ended).
    async fn lease(&self, appid: &str, owner: &str, lease: Duration) -> Result<bool, OutboxError>;

    /// Up to `limit` of `appid`'s events, oldest first.
    async fn peek(&self, appid: &str, limit: usize) -> Result<Vec<OutboxItem>, OutboxError>;

    /// Removes `appid`'s event `seq` (delivered), keeping its key [`KEPT_DELIVERED`] so that the
    /// same event appended again meanwhile is not kept twice. Whether it was waiting.
    async fn remove(&self, appid: &str, seq: u64) -> Result<bool, OutboxError>;

    /// Ends `owner`'s delivery lease of `appid`, if it holds it (it stops): another gateway
    /// takes the delivery at once.
    async fn release(&self, appid: &str, owner: &str) -> Result<(), OutboxError>;

    /// How many of `appid`'s events wait.
    async fn len(&self, appid: &str) -> Result<u64, OutboxError>;
}

/// An event waiting for the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxItem {
    /// Its sequence number in its app's events.
    pub seq: u64,
    /// The event's identity (the same event pushed again has the same).
    pub key: String,
    /// The event (JSON).
    pub body: String,
}

impl OutboxItem {
    /// The event `seq`, `key`, with `body`.
    pub fn new(seq: u64, key: impl Into<String>, body: impl Into<String>) -> Self {
        Self { seq, key: key.into(), body: body.into() }
    }
}
