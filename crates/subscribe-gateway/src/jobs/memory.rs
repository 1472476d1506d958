//! [`MemoryJobStore`]: jobs in this process's memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use subscribe_client::{Clock, SharedClock, SystemClock, async_trait};

use super::{Created, JobProgress, JobRecord, JobState, JobStore, JobStoreError, NewJob};

/// Jobs in this process's memory: for one gateway whose jobs may be lost on a restart (and for
/// tests). A job that must survive a restart, or be resumed by another gateway, needs a shared
/// store: [`SqlJobStore`](super::SqlJobStore) or [`RedisJobStore`](super::RedisJobStore),
/// which [`Gateway::start`](crate::Gateway::start) opens on the configured `[store]`.
#[derive(Debug)]
pub struct MemoryJobStore {
    jobs: Mutex<Jobs>,
    clock: SharedClock,
}

/// The jobs by id, and the live job of each scope.
#[derive(Debug, Default)]
struct Jobs {
    by_id: BTreeMap<String, Entry>,
    live: HashMap<String, String>,
}

#[derive(Debug)]
struct Entry {
    record: JobRecord,
    scope: String,
    /// The holder and the end of its lease, in ms, while the job is live.
    hold: Option<(String, i64)>,
}

impl Default for MemoryJobStore {
    fn default() -> Self {
        Self { jobs: Mutex::default(), clock: std::sync::Arc::new(SystemClock) }
    }
}

impl MemoryJobStore {
    /// No jobs yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        let since = self.clock.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// The live entry `id` held by `owner`.
    fn held<'a>(jobs: &'a mut Jobs, id: &str, owner: &str) -> Option<&'a mut Entry> {
        jobs.by_id.get_mut(id).filter(|e| e.hold.as_ref().is_some_and(|(o, _)| o == owner))
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, job: &NewJob<'_>, lease: Duration) -> Result<Created, JobStoreError> {
        let now = self.now_ms();
        let mut jobs = self.jobs();
        if let Some(live) = jobs.live.get(job.scope) {
            return Ok(Created::Busy(live.clone()));
        }
        let record = JobRecord {
            id: job.id.to_owned(),
            appid: job.appid.to_owned(),
            spec: job.spec.to_owned(),
            created_by: job.created_by.to_owned(),
            created_ms: now,
            state: JobState::Running,
            cancel_requested: false,
            progress: JobProgress::default(),
            ended_ms: None,
            detail: None,
            resumed: 0,
        };
        let hold = Some((job.owner.to_owned(), now + super::millis(lease)));
        jobs.live.insert(job.scope.to_owned(), job.id.to_owned());
        jobs.by_id.insert(job.id.to_owned(), Entry { record, scope: job.scope.to_owned(), hold });
        Ok(Created::Created)
    }

    async fn get(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        Ok(self.jobs().by_id.get(id).filter(|e| e.record.appid == appid).map(|e| e.record.clone()))
    }

    async fn list(
        &self,
        appid: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobStoreError> {
        let jobs = self.jobs();
        let below = jobs.by_id.iter().rev().filter(|(id, _)| before.is_none_or(|b| id.as_str() < b));
        Ok(below
            .filter(|(_, e)| e.record.appid == appid)
            .take(limit)
            .map(|(_, e)| e.record.clone())
            .collect())
    }

    async fn cancel(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        let mut jobs = self.jobs();
        let Some(entry) = jobs.by_id.get_mut(id).filter(|e| e.record.appid == appid) else { return Ok(None) };
        if entry.hold.is_some() {
            entry.record.cancel_requested = true;
        }
        Ok(Some(entry.record.clone()))
    }

    async fn renew(
        &self,
        id: &str,
        owner: &str,
        progress: &JobProgress,
        lease: Duration,
    ) -> Result<Option<bool>, JobStoreError> {
        let now = self.now_ms();
        let mut jobs = self.jobs();
        Ok(Self::held(&mut jobs, id, owner).map(|e| {
            e.hold = Some((owner.to_owned(), now + super::millis(lease)));
            e.record.progress = *progress;
            e.record.cancel_requested
        }))
    }

    async fn finish(
        &self,
        id: &str,
        owner: &str,
        end: JobState,
        progress: &JobProgress,
        detail: Option<&str>,
    ) -> Result<bool, JobStoreError> {
        let now = self.now_ms();
        let mut jobs = self.jobs();
        let Some(e) = Self::held(&mut jobs, id, owner) else { return Ok(false) };
        e.hold = None;
        e.record.state = end;
        e.record.progress = *progress;
        e.record.ended_ms = Some(now);
        e.record.detail = detail.map(str::to_owned);
        let scope = e.scope.clone();
        if jobs.live.get(&scope).is_some_and(|live| live == id) {
            jobs.live.remove(&scope);
        }
        Ok(true)
    }

    async fn release(&self, id: &str, owner: &str, progress: &JobProgress) -> Result<bool, JobStoreError> {
        let now = self.now_ms();
        let mut jobs = self.jobs();
        let Some(e) = Self::held(&mut jobs, id, owner) else { return Ok(false) };
        e.hold = Some((owner.to_owned(), now));
        e.record.progress = *progress;
        Ok(true)
    }

    async fn adopt(
        &self,
        owner: &str,
        lease: Duration,
        apps: &[&str],
    ) -> Result<Option<JobRecord>, JobStoreError> {
        let now = self.now_ms();
        let mut jobs = self.jobs();
        let lapsed = jobs.by_id.values_mut().find(|e| {
            e.hold.as_ref().is_some_and(|(_, until)| *until <= now) && apps.contains(&e.record.appid.as_str())
        });
        Ok(lapsed.map(|e| {
            e.hold = Some((owner.to_owned(), now + super::millis(lease)));
            e.record.resumed += 1;
            e.record.clone()
        }))
    }

    async fn prune(&self, retention: Duration) -> Result<u64, JobStoreError> {
        let cutoff = self.now_ms() - super::millis(retention);
        let mut jobs = self.jobs();
        let old: Vec<String> = jobs
            .by_id
            .iter()
            .filter(|(_, e)| e.record.ended_ms.is_some_and(|ended| ended <= cutoff))
            .map(|(id, _)| id.clone())
            .take(super::PRUNE_BATCH)
            .collect();
        for id in &old {
            jobs.by_id.remove(id);
        }
        Ok(old.len() as u64)
    }
}
