//! Idempotency records for the send API: what a request with an `Idempotency-Key` claimed, and
//! the answer it got, kept in the gateway's store so that a retry (on any gateway of the fleet,
//! or after a restart) gets the first answer and nothing is sent twice.
//!
//! The [`IdempotencyStore`] trait is the storage: one atomic insert-if-absent (the claim, with a
//! lease), a conditional write of the answer by the claim's owner, a conditional release, a
//! conditional take-over of a claim whose lease ran out, and pruning. Implementations: SQLite
//! and PostgreSQL ([`SqlIdempotencyStore`]), Redis ([`RedisIdempotencyStore`]) and this
//! process's memory ([`MemoryIdempotencyStore`]). [`Gateway::start`](crate::Gateway::start)
//! opens the one of the configured `[store]`; [`Gateway::with_stores`](crate::Gateway::with_stores)
//! takes any (a test's failing one included). What the gateway does with a record is in
//! `docs/gateway.md` (the `Idempotency-Key` contract).

mod key;
mod memory;
mod redis;
pub(crate) mod sql;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subscribe_client::async_trait;
use tokio::time::Instant;
use tracing::{debug, warn};

pub(crate) use key::{IdempotencyKey, fingerprint, new_owner, record_id};
pub use memory::MemoryIdempotencyStore;
pub use redis::RedisIdempotencyStore;
pub use sql::SqlIdempotencyStore;

/// An idempotency store shared by the gateway's routes (and by gateways on the same backend).
pub type SharedIdempotencyStore = Arc<dyn IdempotencyStore>;

/// The default of `idempotency.retention_ms`: a record is kept 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The storage of idempotency records. Every method is one atomic step on the backend; times
/// (leases, expiry) are read on the backend's clock where it has one (PostgreSQL, SQLite and
/// Redis do), so gateways whose clocks disagree agree on when a lease ends.
///
/// A record is identified by `id` (64 hexadecimal characters: a hash of the app, the API key's
/// name and the `Idempotency-Key`) and holds the request's `fingerprint` (a hash of its method,
/// path and body), and either a claim (`owner` and the end of its lease) or an answer. It is
/// forgotten `retention` after it was claimed; a record past that reads as absent.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug {
    /// Claims `claim.id` for `claim.owner` if no live record has it (atomically: of any number
    /// of concurrent claims, one gets [`Claim::Claimed`]); otherwise reads the record.
    async fn claim(&self, claim: &NewClaim<'_>) -> Result<Claim, IdempotencyStoreError>;

    /// Stores `answer` in the record `id` and ends its claim, if `owner` still holds it.
    /// Whether it did.
    async fn complete(
        &self,
        id: &str,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, IdempotencyStoreError>;

    /// Forgets the record `id` if `owner` still holds its claim (nothing was sent: a retry may
    /// send). Whether it did.
    async fn release(&self, id: &str, owner: &str) -> Result<bool, IdempotencyStoreError>;

    /// Stores `answer` in the record `id` if it is still claimed, its lease has ended and its
    /// fingerprint is `fingerprint` (its owner died); then reads the record, whoever wrote it.
    /// `None` when there is no live record.
    async fn take_over(
        &self,
        id: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
    ) -> Result<Option<Record>, IdempotencyStoreError>;

    /// Deletes records past their retention; how many. (Redis expires its keys itself.)
    async fn prune(&self) -> Result<u64, IdempotencyStoreError>;

    /// The longest one call may take before it fails (its bound); zero (the default) for a
    /// store that answers at once. A claim's lease covers the send and two calls (the claim
    /// and the write of its answer), so that a slow store does not end a claim whose send is
    /// still running.
    fn call_limit(&self) -> Duration {
        Duration::ZERO
    }
}

/// A claim to make.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct NewClaim<'a> {
    /// The record: 64 hexadecimal characters.
    pub id: &'a str,
    /// The request's fingerprint: 64 hexadecimal characters.
    pub fingerprint: &'a str,
    /// Who claims: a random token, unique to this request.
    pub owner: &'a str,
    /// How long the claim holds without an answer.
    pub lease: Duration,
    /// How long the record is kept, from now.
    pub retention: Duration,
}

impl<'a> NewClaim<'a> {
    /// A claim of `id` for the request with `fingerprint`, by `owner`.
    pub fn new(
        id: &'a str,
        fingerprint: &'a str,
        owner: &'a str,
        lease: Duration,
        retention: Duration,
    ) -> Self {
        Self { id, fingerprint, owner, lease, retention }
    }
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The record is new: the claimant sends, then stores the answer.
    Claimed,
    /// A live record has the id.
    Found(Record),
}

/// A live record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The fingerprint of the request that claimed it.
    pub fingerprint: String,
    /// Claimed or answered.
    pub state: RecordState,
}

impl Record {
    /// A record of the request with `fingerprint`, in `state`.
    pub fn new(fingerprint: impl Into<String>, state: RecordState) -> Self {
        Self { fingerprint: fingerprint.into(), state }
    }
}

/// Where a record stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordState {
    /// Claimed, no answer yet.
    InFlight {
        /// Whether the claim's lease has ended (its owner died or hangs).
        lease_ended: bool,
    },
    /// Answered.
    Done(StoredAnswer),
}

/// An answer as it is kept: its HTTP status and its JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

impl StoredAnswer {
    /// An answer with `status` and the JSON `body`.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, body: body.into() }
    }
}

/// An idempotency store could not be read or written. Holds no URL or password (the backend's
/// error, when there is one, is the [`source`](std::error::Error::source), which the backends'
/// crates keep free of them).
#[derive(Debug, thiserror::Error)]
#[error("idempotency store: {what}")]
pub struct IdempotencyStoreError {
    what: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl IdempotencyStoreError {
    /// An error saying `what` failed.
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), source: None }
    }

    /// An error saying `what` failed, because of `source`.
    pub fn with_source(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { what: what.into(), source: Some(Box::new(source)) }
    }

    /// `op` (a store's call, `what` it does) within `limit`: its error, or the time running
    /// out, as an `IdempotencyStoreError` saying what could not be done.
    pub(crate) async fn bounded<T, E: std::error::Error + Send + Sync + 'static>(
        what: &'static str,
        limit: std::time::Duration,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Self> {
        match tokio::time::timeout(limit, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Self::with_source(format!("could not {what}"), e)),
            Err(_) => Err(Self::new(format!("could not {what} within {limit:?}"))),
        }
    }
}

/// The gateway's side of the records: the store, the retention, the lease and the pruning.
pub(crate) struct Idempotency {
    pub(crate) store: SharedIdempotencyStore,
    pub(crate) retention: Duration,
    /// How long a claim holds: the send's budget and time to store its answer.
    pub(crate) lease: Duration,
    /// When the next prune may start.
    next_prune: Mutex<Instant>,
}

/// How often a gateway prunes, at most (and at the first claim). With the SQL store's batches
/// (up to 100,000 records a prune) that outpaces a fleet's claims at well over 1,000 sends a
/// second; each batch is a short statement of its own.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Idempotency {
    pub(crate) fn new(store: SharedIdempotencyStore, retention: Duration, lease: Duration) -> Self {
        Self { store, retention, lease, next_prune: Mutex::new(Instant::now()) }
    }

    /// Starts a prune in the background if none ran for [`PRUNE_EVERY`] (or the retention, when
    /// shorter) on this gateway.
    pub(crate) fn prune_if_due(&self) {
        let now = Instant::now();
        {
            let mut next = self.next_prune.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if now < *next {
                return;
            }
            *next = now + PRUNE_EVERY.min(self.retention);
        }
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            match store.prune().await {
                Ok(n) => debug!(pruned = n, "idempotency records past their retention deleted"),
                // A failed prune only delays the next: records past their retention read as absent.
                Err(e) => warn!(error = %e, "could not prune idempotency records"),
            }
        });
    }
}

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("store", &self.store)
            .field("retention", &self.retention)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Milliseconds of `d` for a backend, at least 1 and far from overflowing when added to a
/// clock reading.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4).clamp(1, i64::MAX / 4)
}
