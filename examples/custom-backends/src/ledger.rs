//! [`FileGrantLedger`].

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subscribe_client::{
    Clock as _, GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope, GrantStatus, LedgerError,
    MAX_HISTORY, PastGrant, Recorded, Reservation, Resolution, ReviewItem, Settlement, SystemClock,
};
use subscribe_types::OpenId;

/// Where one grant stands, as the file holds it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Status {
    Pending,
    Reserved {
        id: String,
        until_ms: u64,
    },
    Delivered,
    /// Set aside for a person since `since_ms` (0 in a file written before it was kept).
    Review {
        reason: String,
        #[serde(default)]
        since_ms: u64,
    },
    Dropped {
        reason: String,
    },
}

impl Status {
    fn public(&self) -> GrantStatus {
        match self {
            Status::Pending => GrantStatus::Pending,
            Status::Reserved { until_ms, .. } => GrantStatus::Reserved { until: time(*until_ms) },
            Status::Delivered => GrantStatus::Delivered,
            Status::Review { reason, .. } => GrantStatus::Review { reason: reason.clone() },
            Status::Dropped { reason } => GrantStatus::Dropped { reason: reason.clone() },
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Row {
    #[serde(flatten)]
    status: Status,
    attempts: u32,
    /// Earlier lives, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    history: Vec<Past>,
}

/// An earlier life of a grant, ended by a renewal.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Past {
    #[serde(flatten)]
    status: Status,
    attempts: u32,
    renewed_ms: u64,
}

impl Row {
    fn fresh() -> Self {
        Self { status: Status::Pending, attempts: 0, history: Vec::new() }
    }

    fn is_pending(&self, now_ms: u64) -> bool {
        match self.status {
            Status::Pending => true,
            Status::Reserved { until_ms, .. } => until_ms <= now_ms, // a lapsed lease
            _ => false,
        }
    }
}

/// Scope (`appid|template_id|scene`: none of them can hold a `|`) → openid → row.
type Tables = BTreeMap<String, BTreeMap<String, Row>>;

/// Grants in a JSON file, for one process: a restart loses no confirmation and no outcome, and
/// a reservation that was live when the process stopped comes back when its lease lapses.
#[derive(Debug)]
pub struct FileGrantLedger {
    path: PathBuf,
    tables: Mutex<Tables>,
    next_id: AtomicU64,
}

impl FileGrantLedger {
    /// Opens the ledger in `path`, reading what an earlier run left there.
    ///
    /// # Errors
    /// When the file exists and cannot be read or is not a ledger.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let tables = crate::read_json(&path)?;
        Ok(Self { path, tables: Mutex::new(tables), next_id: AtomicU64::new(0) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Tables>, LedgerError> {
        self.tables.lock().map_err(|_| LedgerError::backend("a writer panicked"))
    }

    /// Makes the change to one row durable before it is reported; when the file cannot be
    /// written, puts the row back as it was (`before`), so memory never runs ahead of the file.
    fn commit(
        &self,
        tables: &mut Tables,
        scope: &str,
        openid: &str,
        before: Option<Row>,
    ) -> Result<(), LedgerError> {
        let written = serde_json::to_vec(&*tables)
            .map_err(LedgerError::backend)
            .and_then(|bytes| crate::write_atomically(&self.path, &bytes).map_err(LedgerError::backend));
        if written.is_err()
            && let Some(rows) = tables.get_mut(scope)
        {
            match before {
                Some(row) => rows.insert(openid.to_owned(), row),
                None => rows.remove(openid),
            };
        }
        written
    }
}

fn scope_key(scope: &GrantScope) -> String {
    format!("{}|{}|{}", scope.appid, scope.template_id, scope.scene)
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn openid(s: &str) -> Result<OpenId, LedgerError> {
    OpenId::new(s).map_err(LedgerError::backend)
}

#[subscribe_client::async_trait]
impl GrantLedger for FileGrantLedger {
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError> {
        let mut tables = self.lock()?;
        let scope = scope_key(&key.scope());
        let rows = tables.entry(scope.clone()).or_default();
        let before = rows.get(key.openid.as_str()).cloned();
        let recorded = match rows.get_mut(key.openid.as_str()) {
            None => {
                rows.insert(key.openid.as_str().to_owned(), Row::fresh());
                Recorded::Added
            }
            Some(row) if matches!(row.status, Status::Pending | Status::Reserved { .. }) => {
                return Ok(Recorded::AlreadyPending);
            }
            Some(row) => {
                // Used, dropped or in review: a new confirmation is a new grant; the old one's
                // end goes to the history.
                let past =
                    Past { status: row.status.clone(), attempts: row.attempts, renewed_ms: millis(now) };
                let mut history = std::mem::take(&mut row.history);
                if history.len() == MAX_HISTORY {
                    history.remove(0);
                }
                history.push(past);
                *row = Row { history, ..Row::fresh() };
                Recorded::Renewed
            }
        };
        self.commit(&mut tables, &scope, key.openid.as_str(), before)?;
        Ok(recorded)
    }

    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        let tables = self.lock()?;
        let Some(rows) = tables.get(&scope_key(scope)) else { return Ok(Vec::new()) };
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.as_str()));
        let now_ms = millis(now);
        rows.range::<str, _>((from, Bound::Unbounded))
            .filter(|(_, row)| row.is_pending(now_ms))
            .take(limit)
            .map(|(o, _)| openid(o))
            .collect()
    }

    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        let mut tables = self.lock()?;
        let scope = scope_key(&key.scope());
        let row = tables.get_mut(&scope).and_then(|rows| rows.get_mut(key.openid.as_str()));
        let Some(row) = row.filter(|row| row.is_pending(millis(now))) else { return Ok(None) };
        let before = Some(row.clone());
        // Unique across restarts too: the time, then a counter.
        let id = format!("{holder}-{}-{}", millis(now), self.next_id.fetch_add(1, Ordering::Relaxed));
        let until_ms = millis(now + lease);
        row.attempts += 1;
        row.status = Status::Reserved { id: id.clone(), until_ms };
        let attempt = row.attempts;
        self.commit(&mut tables, &scope, key.openid.as_str(), before)?;
        Ok(Some(Reservation { key: key.clone(), id, until: time(until_ms), attempt }))
    }

    async fn settle(&self, r: &Reservation, settlement: Settlement) -> Result<(), LedgerError> {
        let mut tables = self.lock()?;
        let scope = scope_key(&r.key.scope());
        let row = tables.get_mut(&scope).and_then(|rows| rows.get_mut(r.key.openid.as_str()));
        let Some(row) = row.filter(|row| matches!(&row.status, Status::Reserved { id, .. } if *id == r.id))
        else {
            return Err(LedgerError::LeaseLost);
        };
        let before = Some(row.clone());
        if settlement == Settlement::Release {
            row.attempts = 0; // a definite failure delivered nothing: the next sender is attempt 1
        }
        row.status = match settlement {
            Settlement::Delivered => Status::Delivered,
            Settlement::Release => Status::Pending,
            // A settlement carries no time: when it was set aside is read here.
            Settlement::Review(reason) => Status::Review { reason, since_ms: millis(SystemClock.now()) },
            Settlement::Drop(reason) => Status::Dropped { reason },
            _ => return Err(LedgerError::backend("a settlement this ledger does not know")),
        };
        self.commit(&mut tables, &scope, r.key.openid.as_str(), before)
    }

    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        let tables = self.lock()?;
        let row = tables.get(&scope_key(&key.scope())).and_then(|rows| rows.get(key.openid.as_str()));
        Ok(row.map(|row| GrantRecord {
            key: key.clone(),
            status: row.status.public(),
            attempts: row.attempts,
            history: row
                .history
                .iter()
                .map(|p| PastGrant {
                    status: p.status.public(),
                    attempts: p.attempts,
                    renewed_at: time(p.renewed_ms),
                })
                .collect(),
        }))
    }

    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError> {
        let tables = self.lock()?;
        let now_ms = millis(now);
        let mut c = GrantCounts::default();
        for row in tables.get(&scope_key(scope)).into_iter().flat_map(BTreeMap::values) {
            match row.status {
                _ if row.is_pending(now_ms) => c.pending += 1,
                Status::Reserved { .. } => c.reserved += 1,
                Status::Delivered => c.delivered += 1,
                Status::Review { .. } => c.review += 1,
                Status::Dropped { .. } => c.dropped += 1,
                Status::Pending => {}
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
        let tables = self.lock()?;
        let Some(rows) = tables.get(&scope_key(scope)) else { return Ok(Vec::new()) };
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.as_str()));
        rows.range::<str, _>((from, Bound::Unbounded))
            .filter_map(|(o, row)| match &row.status {
                Status::Review { reason, since_ms } => Some((o, reason, row.attempts, *since_ms)),
                _ => None,
            })
            .take(limit.max(1))
            .map(|(o, reason, attempts, since_ms)| {
                Ok(ReviewItem::new(openid(o)?, reason.clone(), attempts, time(since_ms)))
            })
            .collect()
    }

    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        _now: SystemTime,
    ) -> Result<bool, LedgerError> {
        let mut tables = self.lock()?;
        let scope = scope_key(&key.scope());
        let row = tables.get_mut(&scope).and_then(|rows| rows.get_mut(key.openid.as_str()));
        let Some(row) = row.filter(|row| matches!(row.status, Status::Review { .. })) else {
            return Ok(false); // only a grant under review is decided
        };
        let before = Some(row.clone());
        row.status = match resolution {
            Resolution::Delivered => Status::Delivered,
            Resolution::Release => {
                row.attempts = 0; // nothing arrived: the next sender is attempt 1
                Status::Pending
            }
            Resolution::Drop => Status::Dropped { reason: note.to_owned() },
            _ => return Ok(false), // a decision this ledger does not know changes nothing
        };
        self.commit(&mut tables, &scope, key.openid.as_str(), before)?;
        Ok(true)
    }
}
