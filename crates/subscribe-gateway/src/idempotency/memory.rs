//! [`MemoryIdempotencyStore`]: records in this process's memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use subscribe_client::async_trait;
use tokio::time::Instant;

use super::{Claim, IdempotencyStore, IdempotencyStoreError, NewClaim, Record, RecordState, StoredAnswer};

/// Idempotency records in this process's memory: for one gateway that may forget them on a
/// restart (and for tests). A fleet, or a gateway whose retries must survive a restart, needs
/// a shared store: [`SqlIdempotencyStore`](super::SqlIdempotencyStore) or
/// [`RedisIdempotencyStore`](super::RedisIdempotencyStore), which
/// [`Gateway::start`](crate::Gateway::start) opens on the configured `[store]`.
#[derive(Debug, Default)]
pub struct MemoryIdempotencyStore {
    records: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    fingerprint: String,
    /// The claim's owner and the end of its lease, until answered.
    claim: Option<(String, Instant)>,
    answer: Option<StoredAnswer>,
    expires: Instant,
}

impl Entry {
    fn read(&self, now: Instant) -> Record {
        let state = match (&self.answer, &self.claim) {
            (Some(answer), _) => RecordState::Done(answer.clone()),
            (None, Some((_, lease_end))) => RecordState::InFlight { lease_ended: *lease_end <= now },
            (None, None) => RecordState::InFlight { lease_ended: true },
        };
        Record::new(self.fingerprint.clone(), state)
    }
}

impl MemoryIdempotencyStore {
    /// No records yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live record `id`, if any.
    fn live<'a>(records: &'a mut HashMap<String, Entry>, id: &str, now: Instant) -> Option<&'a mut Entry> {
        records.get_mut(id).filter(|e| e.expires > now)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, claim: &NewClaim<'_>) -> Result<Claim, IdempotencyStoreError> {
        let now = Instant::now();
        let mut records = self.records();
        if let Some(entry) = Self::live(&mut records, claim.id, now) {
            return Ok(Claim::Found(entry.read(now)));
        }
        records.insert(
            claim.id.to_owned(),
            Entry {
                fingerprint: claim.fingerprint.to_owned(),
                claim: Some((claim.owner.to_owned(), now + claim.lease)),
                answer: None,
                expires: now + claim.retention,
            },
        );
        Ok(Claim::Claimed)
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, IdempotencyStoreError> {
        let now = Instant::now();
        let mut records = self.records();
        match Self::live(&mut records, id, now) {
            Some(entry) if entry.claim.as_ref().is_some_and(|(o, _)| o == owner) => {
                entry.claim = None;
                entry.answer = Some(answer.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, id: &str, owner: &str) -> Result<bool, IdempotencyStoreError> {
        let mut records = self.records();
        let held = records.get(id).is_some_and(|e| e.claim.as_ref().is_some_and(|(o, _)| o == owner));
        if held {
            records.remove(id);
        }
        Ok(held)
    }

    async fn take_over(
        &self,
        id: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
    ) -> Result<Option<Record>, IdempotencyStoreError> {
        let now = Instant::now();
        let mut records = self.records();
        let Some(entry) = Self::live(&mut records, id, now) else { return Ok(None) };
        let orphaned = entry.fingerprint == fingerprint
            && entry.answer.is_none()
            && entry.claim.as_ref().is_some_and(|(_, lease_end)| *lease_end <= now);
        if orphaned {
            entry.claim = None;
            entry.answer = Some(answer.clone());
        }
        Ok(Some(entry.read(now)))
    }

    async fn prune(&self) -> Result<u64, IdempotencyStoreError> {
        let now = Instant::now();
        let mut records = self.records();
        let before = records.len();
        records.retain(|_, e| e.expires > now);
        Ok((before - records.len()) as u64)
    }
}
