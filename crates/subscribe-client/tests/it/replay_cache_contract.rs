//! The replay cache contract passes the process's cache and rejects broken ones.

use std::sync::Arc;

use subscribe_client::events::replay::{MemoryReplayCache, ReplayCache, ReplayCacheError, ReplayKey};
use subscribe_client::test_util::replay_cache_contract;

use crate::panic_text;

#[tokio::test]
async fn the_memory_cache_passes_the_contract() {
    replay_cache_contract(Arc::new(MemoryReplayCache::default())).await;
}

/// A cache that gives its backend the lifetime in seconds where milliseconds are expected:
/// a push meant to be remembered ten minutes is forgotten after 600 ms.
#[derive(Debug, Default)]
struct SecondsAsMillis(MemoryReplayCache, std::sync::Mutex<Vec<(String, std::time::Instant)>>);

#[subscribe_client::async_trait]
impl ReplayCache for SecondsAsMillis {
    async fn first_sight(&self, key: &ReplayKey, now: u64) -> Result<bool, ReplayCacheError> {
        let mut gone = self.1.lock().unwrap();
        let at = std::time::Instant::now();
        if let Some(i) = gone.iter().position(|(k, until)| k == key.as_str() && *until <= at) {
            gone.remove(i);
            self.0.forget_now(key);
        }
        let first = self.0.first_sight_now(key, now).map_err(ReplayCacheError::new)?;
        if first {
            let millis = std::time::Duration::from_millis(key.lifetime(now));
            gone.push((key.as_str().to_owned(), at + millis));
        }
        Ok(first)
    }
    async fn forget(&self, key: &ReplayKey) -> Result<(), ReplayCacheError> {
        self.0.forget(key).await
    }
}

#[tokio::test]
async fn a_cache_that_takes_seconds_for_milliseconds_fails_the_contract() {
    let failed = tokio::spawn(replay_cache_contract(Arc::new(SecondsAsMillis::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("a key is kept for its whole lifetime"), "{text}");
}

/// A cache that checks, then records, with a wait between: two copies of a push read at once
/// are both first sights.
#[derive(Debug, Default)]
struct CheckThenSet(MemoryReplayCache);

#[subscribe_client::async_trait]
impl ReplayCache for CheckThenSet {
    async fn first_sight(&self, key: &ReplayKey, now: u64) -> Result<bool, ReplayCacheError> {
        let seen = self.0.contains(key, now);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        if seen {
            return Ok(false);
        }
        self.0.forget(key).await?;
        self.0.first_sight(key, now).await
    }
    async fn forget(&self, key: &ReplayKey) -> Result<(), ReplayCacheError> {
        self.0.forget(key).await
    }
}

#[tokio::test]
async fn a_cache_that_checks_then_sets_fails_the_contract() {
    let failed = tokio::spawn(replay_cache_contract(Arc::new(CheckThenSet::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("exactly one of 32 concurrent first sights"), "{text}");
}

/// A cache that never lets a key go: it grows with every push for ever.
#[derive(Debug, Default)]
struct NeverExpires(std::sync::Mutex<std::collections::HashSet<String>>);

#[subscribe_client::async_trait]
impl ReplayCache for NeverExpires {
    async fn first_sight(&self, key: &ReplayKey, _: u64) -> Result<bool, ReplayCacheError> {
        Ok(self.0.lock().unwrap().insert(key.as_str().to_owned()))
    }
    async fn forget(&self, key: &ReplayKey) -> Result<(), ReplayCacheError> {
        self.0.lock().unwrap().remove(key.as_str());
        Ok(())
    }
}

#[tokio::test]
async fn a_cache_that_never_expires_fails_the_contract() {
    let failed = tokio::spawn(replay_cache_contract(Arc::new(NeverExpires::default()))).await.unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("an expired key is a first sight again"), "{text}");
}
