//! Dispatch jobs as they are kept: what a job sends (its spec, opaque here), who started it,
//! where it stands, its progress, and which gateway holds it for how long, in the gateway's
//! store so that a job survives the request that started it and the gateway that ran it.
//!
//! The [`JobStore`] trait is the storage: an insert that refuses a second live job on one
//! grant scope, reads, a cancel flag, a holder's renewal and end, and the adoption of a live
//! job whose holder stopped renewing it. Implementations: SQLite and PostgreSQL
//! ([`SqlJobStore`]), Redis ([`RedisJobStore`]) and this process's memory
//! ([`MemoryJobStore`]). What the gateway does with a job is in `docs/gateway.md` (dispatch
//! jobs).

mod memory;
mod redis;
mod sql;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subscribe_client::async_trait;

pub use memory::MemoryJobStore;
pub use redis::RedisJobStore;
pub use sql::SqlJobStore;

/// A job store shared by the gateway's routes and its job runner (and by gateways on the same
/// backend).
pub type SharedJobStore = Arc<dyn JobStore>;

/// The storage of dispatch jobs. Every method is one atomic step on the backend; leases are
/// timed on the backend's clock where it has one (PostgreSQL, SQLite and Redis do), so gateways
/// whose clocks disagree agree on when a hold ends.
///
/// A job is `live` (running) until its holder ends it ([`finish`](Self::finish)); while live it
/// has a holder (`owner`) whose hold lasts until the end of its lease. At most one live job has
/// a given `scope` (one app's template and scene): a second is refused at
/// [`create`](Self::create). Ended jobs are kept until [`prune`](Self::prune)d.
#[async_trait]
pub trait JobStore: Send + Sync + fmt::Debug {
    /// Inserts `job`, live and held by `job.owner` for `lease`, unless a live job has the same
    /// scope: then [`Created::Busy`] with that job's id, nothing inserted.
    async fn create(&self, job: &NewJob<'_>, lease: Duration) -> Result<Created, JobStoreError>;

    /// The job `id` of `appid`.
    async fn get(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError>;

    /// Up to `limit` jobs of `appid`, newest first (descending ids), those with an id below
    /// `before` when it is given.
    async fn list(
        &self,
        appid: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobStoreError>;

    /// Asks the live job `id` of `appid` to stop (its holder sees it at its next renewal); a
    /// job that has ended is left as it is. The job as it stands after, `None` if there is none.
    async fn cancel(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError>;

    /// Renews `owner`'s hold on the live job `id` for `lease` and stores its progress. Whether
    /// a stop was asked, or `None` when `owner` no longer holds it (another gateway took it
    /// over, or it ended).
    async fn renew(
        &self,
        id: &str,
        owner: &str,
        progress: &JobProgress,
        lease: Duration,
    ) -> Result<Option<bool>, JobStoreError>;

    /// Ends the live job `id` held by `owner` as `end` (never [`JobState::Running`]), with its
    /// last progress and a `detail` (why it failed). Whether it did.
    async fn finish(
        &self,
        id: &str,
        owner: &str,
        end: JobState,
        progress: &JobProgress,
        detail: Option<&str>,
    ) -> Result<bool, JobStoreError>;

    /// Gives up `owner`'s hold on the live job `id` (its lease ends now), with its progress, so
    /// that another gateway resumes it at once. Whether it did.
    async fn release(&self, id: &str, owner: &str, progress: &JobProgress) -> Result<bool, JobStoreError>;

    /// Takes one live job of one of `apps` whose lease has ended (its holder stopped) for
    /// `owner`, for `lease`, counting it resumed; `None` when there is none. Of gateways adopting
    /// at once, one gets each job.
    async fn adopt(
        &self,
        owner: &str,
        lease: Duration,
        apps: &[&str],
    ) -> Result<Option<JobRecord>, JobStoreError>;

    /// Deletes up to 500 jobs that ended more than `retention` ago; how many.
    async fn prune(&self, retention: Duration) -> Result<u64, JobStoreError>;

    /// The longest one call may take before it fails; zero (the default) for a store that
    /// answers at once.
    fn call_limit(&self) -> Duration {
        Duration::ZERO
    }
}

/// A job to insert.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct NewJob<'a> {
    /// The job's id: unique, and ordered by creation (a later job has a greater id).
    pub id: &'a str,
    /// The app.
    pub appid: &'a str,
    /// The grants it sends to: at most one live job per scope.
    pub scope: &'a str,
    /// What it sends (the gateway's JSON; opaque to the store).
    pub spec: &'a str,
    /// Who started it (the API key's name).
    pub created_by: &'a str,
    /// The gateway that runs it.
    pub owner: &'a str,
}

impl<'a> NewJob<'a> {
    /// A job `id` of `appid` on `scope`, doing `spec`, started by `created_by`, held by `owner`.
    pub fn new(
        id: &'a str,
        appid: &'a str,
        scope: &'a str,
        spec: &'a str,
        created_by: &'a str,
        owner: &'a str,
    ) -> Self {
        Self { id, appid, scope, spec, created_by, owner }
    }
}

/// What [`JobStore::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// The job was inserted.
    Created,
    /// A live job has the scope: its id.
    Busy(String),
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Live: a gateway runs it, or will resume it.
    Running,
    /// Every pending grant was taken and its outcome recorded.
    Finished,
    /// Stopped on request; the grants it had not taken are still pending.
    Cancelled,
    /// Stopped by an error (the ledger failed, the app is no longer configured); `detail` says
    /// which. The grants it had not taken are still pending.
    Failed,
}

impl JobState {
    /// `running`, `finished`, `cancelled` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// The state named `name` ([`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "running" => Self::Running,
            "finished" => Self::Finished,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A job's counts, summed over its runs (a resumed job adds its new run's to what its earlier
/// holder stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobProgress {
    /// Grants taken and sent.
    pub sent: u64,
    /// Delivered.
    pub delivered: u64,
    /// A definite failure: pending again.
    pub failed: u64,
    /// The outcome is unknown: under review.
    pub unknown: u64,
    /// Dropped (WeChat refused it, or the openid is invalid).
    pub dropped: u64,
    /// Pending grants not yet taken, by the latest count.
    pub remaining: u64,
}

impl JobProgress {
    /// The progress as it is kept (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The progress kept as `text` ([`to_json`](Self::to_json)).
    ///
    /// # Errors
    /// When `text` is not in that format.
    pub fn from_json(text: &str) -> Result<Self, JobStoreError> {
        serde_json::from_str(text).map_err(|e| JobStoreError::with_source("read a job's progress", e))
    }
}

/// A job as it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobRecord {
    /// Its id.
    pub id: String,
    /// The app.
    pub appid: String,
    /// What it sends (the gateway's JSON).
    pub spec: String,
    /// Who started it.
    pub created_by: String,
    /// When, in milliseconds since the Unix epoch (the store's clock).
    pub created_ms: i64,
    /// Where it stands.
    pub state: JobState,
    /// Whether a stop was asked.
    pub cancel_requested: bool,
    /// Its counts, as its holder last stored them.
    pub progress: JobProgress,
    /// When it ended, in milliseconds since the Unix epoch.
    pub ended_ms: Option<i64>,
    /// Why it failed.
    pub detail: Option<String>,
    /// How many times a gateway took it over from one that stopped.
    pub resumed: u32,
}

/// A job store could not be read or written. Holds no URL or password (the backend's error,
/// when there is one, is the [`source`](std::error::Error::source), which the backends' crates
/// keep free of them).
#[derive(Debug, thiserror::Error)]
#[error("job store: {what}")]
pub struct JobStoreError {
    what: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl JobStoreError {
    /// An error saying `what` failed.
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), source: None }
    }

    /// An error saying `what` failed, because of `source`.
    pub fn with_source(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { what: format!("could not {}", what.into()), source: Some(Box::new(source)) }
    }

    /// `op` (a store's call, `what` it does) within `limit`.
    pub(crate) async fn bounded<T, E: std::error::Error + Send + Sync + 'static>(
        what: &'static str,
        limit: Duration,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Self> {
        match tokio::time::timeout(limit, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Self::with_source(what, e)),
            Err(_) => Err(Self::new(format!("could not {what} within {limit:?}"))),
        }
    }
}

/// The most ended jobs one [`JobStore::prune`] deletes.
pub const PRUNE_BATCH: usize = 500;

/// Milliseconds of `d` for a backend, at least 1.
pub(crate) fn millis(d: Duration) -> i64 {
    crate::idempotency::millis(d)
}
