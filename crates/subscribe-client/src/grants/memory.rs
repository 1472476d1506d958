//! [`InMemoryGrantLedger`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use subscribe_types::OpenId;

use super::{
    GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope, GrantStatus, LedgerError, MAX_HISTORY,
    PastGrant, Recorded, Reservation, Resolution, ReviewItem, Settlement,
};
use crate::{Clock as _, SharedClock, SystemClock};

/// `t` to the millisecond, as every ledger keeps it.
fn to_millis(t: SystemTime) -> SystemTime {
    let ms = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[derive(Debug)]
enum State {
    Pending,
    Reserved {
        id: String,
        until: SystemTime,
    },
    Delivered,
    /// Set aside, with its reason, since the settlement (to the millisecond).
    Review {
        reason: String,
        since: SystemTime,
    },
    Dropped(String),
}

#[derive(Debug)]
struct Entry {
    state: State,
    attempts: u32,
    history: Vec<PastGrant>,
}

impl Entry {
    fn status(&self) -> GrantStatus {
        match &self.state {
            State::Pending => GrantStatus::Pending,
            State::Reserved { until, .. } => GrantStatus::Reserved { until: *until },
            State::Delivered => GrantStatus::Delivered,
            State::Review { reason, .. } => GrantStatus::Review { reason: reason.clone() },
            State::Dropped(r) => GrantStatus::Dropped { reason: r.clone() },
        }
    }

    fn is_pending(&self, now: SystemTime) -> bool {
        match &self.state {
            State::Pending => true,
            State::Reserved { until, .. } => *until <= now,
            _ => false,
        }
    }
}

/// Keeps grants in this process's memory: for one instance, tests and demos. Grants are lost
/// when the process ends; use a shared ledger (Redis: `subscribe-redis`) in production.
///
/// A settlement carries no time, so when a grant was set aside for review (its
/// [`ReviewItem::since`]) is read from the ledger's clock: the system clock unless
/// [`clock`](Self::clock) gives another (the client's `ManualClock` in tests).
#[derive(Debug)]
pub struct InMemoryGrantLedger {
    scopes: Mutex<HashMap<GrantScope, BTreeMap<OpenId, Entry>>>,
    next_id: AtomicU64,
    clock: SharedClock,
}

impl Default for InMemoryGrantLedger {
    fn default() -> Self {
        Self { scopes: Mutex::default(), next_id: AtomicU64::new(0), clock: Arc::new(SystemClock) }
    }
}

impl InMemoryGrantLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the time a grant is set aside for review from `clock`.
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<GrantScope, BTreeMap<OpenId, Entry>>> {
        self.scopes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl GrantLedger for InMemoryGrantLedger {
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError> {
        let mut scopes = self.lock();
        let entries = scopes.entry(key.scope()).or_default();
        match entries.get_mut(&key.openid) {
            None => {
                entries.insert(
                    key.openid.clone(),
                    Entry { state: State::Pending, attempts: 0, history: Vec::new() },
                );
                Ok(Recorded::Added)
            }
            Some(e) => match e.state {
                State::Pending | State::Reserved { .. } => Ok(Recorded::AlreadyPending),
                State::Delivered | State::Review { .. } | State::Dropped(_) => {
                    let past =
                        PastGrant { status: e.status(), attempts: e.attempts, renewed_at: to_millis(now) };
                    if e.history.len() == MAX_HISTORY {
                        e.history.remove(0);
                    }
                    e.history.push(past);
                    e.state = State::Pending;
                    e.attempts = 0;
                    Ok(Recorded::Renewed)
                }
            },
        }
    }

    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        let scopes = self.lock();
        let Some(entries) = scopes.get(scope) else { return Ok(Vec::new()) };
        let range = match after {
            Some(a) => entries.range::<OpenId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => entries.range::<OpenId, _>(..),
        };
        Ok(range.filter(|(_, e)| e.is_pending(now)).take(limit).map(|(k, _)| k.clone()).collect())
    }

    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        let mut scopes = self.lock();
        let Some(e) = scopes.get_mut(&key.scope()).and_then(|s| s.get_mut(&key.openid)) else {
            return Ok(None);
        };
        if !e.is_pending(now) {
            return Ok(None);
        }
        let id = format!("{holder}-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let until = now + lease;
        e.attempts += 1;
        e.state = State::Reserved { id: id.clone(), until };
        Ok(Some(Reservation { key: key.clone(), id, until, attempt: e.attempts }))
    }

    async fn settle(&self, r: &Reservation, settlement: Settlement) -> Result<(), LedgerError> {
        let since = to_millis(self.clock.now());
        let mut scopes = self.lock();
        let e = scopes
            .get_mut(&r.key.scope())
            .and_then(|s| s.get_mut(&r.key.openid))
            .ok_or(LedgerError::LeaseLost)?;
        match &e.state {
            State::Reserved { id, .. } if *id == r.id => {}
            _ => return Err(LedgerError::LeaseLost),
        }
        if settlement == Settlement::Release {
            // A definite failure delivered nothing: the next sender starts at attempt 1.
            e.attempts = 0;
        }
        e.state = match settlement {
            Settlement::Delivered => State::Delivered,
            Settlement::Release => State::Pending,
            Settlement::Review(reason) => State::Review { reason, since },
            Settlement::Drop(reason) => State::Dropped(reason),
        };
        Ok(())
    }

    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        let scopes = self.lock();
        Ok(scopes.get(&key.scope()).and_then(|s| s.get(&key.openid)).map(|e| GrantRecord {
            key: key.clone(),
            status: e.status(),
            attempts: e.attempts,
            history: e.history.clone(),
        }))
    }

    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError> {
        let scopes = self.lock();
        let mut c = GrantCounts::default();
        for e in scopes.get(scope).into_iter().flat_map(BTreeMap::values) {
            match &e.state {
                State::Reserved { until, .. } if *until > now => c.reserved += 1,
                State::Pending | State::Reserved { .. } => c.pending += 1,
                State::Delivered => c.delivered += 1,
                State::Review { .. } => c.review += 1,
                State::Dropped(_) => c.dropped += 1,
            }
        }
        Ok(c)
    }

    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError> {
        let scopes = self.lock();
        let Some(entries) = scopes.get(scope) else { return Ok(Vec::new()) };
        let range = match after {
            Some(a) => entries.range::<OpenId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => entries.range::<OpenId, _>(..),
        };
        Ok(range
            .filter_map(|(openid, e)| match &e.state {
                State::Review { reason, since } => {
                    Some(ReviewItem::new(openid.clone(), reason.clone(), e.attempts, *since))
                }
                _ => None,
            })
            .take(limit.max(1))
            .collect())
    }

    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        _now: SystemTime,
    ) -> Result<bool, LedgerError> {
        let mut scopes = self.lock();
        let Some(e) = scopes.get_mut(&key.scope()).and_then(|s| s.get_mut(&key.openid)) else {
            return Ok(false);
        };
        if !matches!(e.state, State::Review { .. }) {
            return Ok(false);
        }
        e.state = match resolution {
            Resolution::Delivered => State::Delivered,
            Resolution::Release => {
                e.attempts = 0;
                State::Pending
            }
            Resolution::Drop => State::Dropped(note.to_owned()),
        };
        Ok(true)
    }
}
