//! [`KeyedLocks`]: one async lock per key (an openid), held only while someone holds or waits
//! for it, so the map never grows beyond the keys in use at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// One lock per key, created on first use and forgotten when its last holder or waiter lets
/// go.
#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    locks: Mutex<Locks>,
}

#[derive(Debug, Default)]
struct Locks {
    by_key: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The size at which the next new key first sweeps out locks nobody holds (left by a
    /// waiter cancelled just as it was handed the lock).
    sweep_at: usize,
}

/// Holds the lock of one key; dropping it releases the lock and forgets the key when nobody
/// else holds or waits for it.
pub(crate) struct KeyGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for `key`'s lock.
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock = {
            let mut map = self.map();
            if !map.by_key.contains_key(key) && map.by_key.len() >= map.sweep_at {
                map.by_key.retain(|_, l| Arc::strong_count(l) > 1);
                map.sweep_at = (map.by_key.len() * 2).max(64);
            }
            Arc::clone(map.by_key.entry(key.to_owned()).or_default())
        };
        // If this future is dropped while waiting, its clones go with it: whoever releases
        // last forgets the key.
        let guard = Arc::clone(&lock).lock_owned().await;
        KeyGuard { owner: self, key: key.to_owned(), lock, guard: Some(guard) }
    }

    /// Keys with a lock held or awaited.
    pub(crate) fn len(&self) -> usize {
        self.map().by_key.len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Locks> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.owner.map();
        // The map's clone and ours: nobody else holds or waits (a new waiter clones under the
        // map's lock, which is held here).
        if Arc::strong_count(&self.lock) == 2 {
            map.by_key.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_holder_per_key_others_in_parallel_and_nothing_left_after() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let most = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (locks, inside, most) = (Arc::clone(&locks), Arc::clone(&inside), Arc::clone(&most));
            tasks.push(tokio::spawn(async move {
                let k = i % 2;
                let _held = locks.lock(if k == 0 { "oAlice" } else { "oBob" }).await;
                let now = inside[k].fetch_add(1, Ordering::SeqCst) + 1;
                most[k].fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                inside[k].fetch_sub(1, Ordering::SeqCst);
            }));
        }
        let started = tokio::time::Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most[0].load(Ordering::SeqCst), 1, "one holder of a key at a time");
        assert_eq!(most[1].load(Ordering::SeqCst), 1, "one holder of a key at a time");
        // 20 holders per key, 10 ms each, both keys at once: 200 ms, not 400.
        assert!(started.elapsed() < std::time::Duration::from_millis(250), "{:?}", started.elapsed());
        assert_eq!(locks.len(), 0, "no key is kept once nobody holds it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_nothing_behind() {
        let locks = KeyedLocks::default();
        let held = locks.lock("oAlice").await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(5), locks.lock("oAlice")).await;
        assert!(waiting.is_err());
        drop(held);
        assert_eq!(locks.len(), 0);
    }
}
