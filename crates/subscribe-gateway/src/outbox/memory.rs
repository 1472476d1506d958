//! [`MemoryOutbox`]: the outbox in this process's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use subscribe_client::async_trait;
use tokio::time::Instant;

use super::{OutboxError, OutboxItem, OutboxStore};

/// The outbox in this process's memory: for one gateway whose undelivered events may be lost on
/// a restart (and for tests). Events that must outlive the gateway need a shared store:
/// [`SqlOutbox`](super::SqlOutbox) or [`RedisOutbox`](super::RedisOutbox), which
/// [`Gateway::start`](crate::Gateway::start) opens on the configured `[store]`.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    apps: Mutex<HashMap<String, App>>,
}

#[derive(Debug, Default)]
struct App {
    next: u64,
    items: VecDeque<OutboxItem>,
    /// The delivered events' keys and numbers, kept [`super::KEPT_DELIVERED`].
    delivered: HashMap<String, (u64, Instant)>,
    lease: Option<(String, Instant)>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn apps(&self) -> MutexGuard<'_, HashMap<String, App>> {
        self.apps.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl OutboxStore for MemoryOutbox {
    async fn append(&self, appid: &str, key: &str, body: &str) -> Result<u64, OutboxError> {
        let mut apps = self.apps();
        let app = apps.entry(appid.to_owned()).or_default();
        let now = Instant::now();
        app.delivered.retain(|_, (_, at)| now.duration_since(*at) < super::KEPT_DELIVERED);
        if let Some(waiting) = app.items.iter().find(|i| i.key == key) {
            return Ok(waiting.seq);
        }
        if let Some((seq, _)) = app.delivered.get(key) {
            return Ok(*seq);
        }
        app.next += 1;
        let seq = app.next;
        app.items.push_back(OutboxItem::new(seq, key, body));
        Ok(seq)
    }

    async fn lease(&self, appid: &str, owner: &str, lease: Duration) -> Result<bool, OutboxError> {
        let now = Instant::now();
        let mut apps = self.apps();
        let app = apps.entry(appid.to_owned()).or_default();
        let free = app.lease.as_ref().is_none_or(|(holder, until)| holder == owner || *until <= now);
        if free {
            app.lease = Some((owner.to_owned(), now + lease));
        }
        Ok(free)
    }

    async fn peek(&self, appid: &str, limit: usize) -> Result<Vec<OutboxItem>, OutboxError> {
        Ok(self.apps().get(appid).map(|a| a.items.iter().take(limit).cloned().collect()).unwrap_or_default())
    }

    async fn remove(&self, appid: &str, seq: u64) -> Result<bool, OutboxError> {
        let mut apps = self.apps();
        let Some(app) = apps.get_mut(appid) else { return Ok(false) };
        let Some(at) = app.items.iter().position(|i| i.seq == seq) else { return Ok(false) };
        if let Some(item) = app.items.remove(at) {
            app.delivered.insert(item.key, (item.seq, Instant::now()));
        }
        Ok(true)
    }

    async fn release(&self, appid: &str, owner: &str) -> Result<(), OutboxError> {
        if let Some(app) = self.apps().get_mut(appid)
            && app.lease.as_ref().is_some_and(|(holder, _)| holder == owner)
        {
            app.lease = None;
        }
        Ok(())
    }

    async fn len(&self, appid: &str) -> Result<u64, OutboxError> {
        Ok(self.apps().get(appid).map_or(0, |a| a.items.len() as u64))
    }
}
