//! The replay cache: the pushes read, each remembered for as long as it could still pass the
//! freshness check.
//!
//! What identifies a push is what its signature binds in every mode: the `timestamp` and the
//! `nonce` (`signature` is sha1 of the Token, the timestamp and the nonce; in plain mode nothing
//! else is signed). So the key is that pair in one canonical form, never the signature as
//! received (whose hex case varies), the mode (a compatible-mode push can be resent as a plain
//! one) or the body (unsigned in plain mode). [`Seen`] computes the key and its expiry in one
//! place, so that a shared store (Redis, SQL) can take the same key and lifetime.

use std::collections::HashMap;
use std::sync::Mutex;

/// A verified push's identity in its canonical form, and until when it must be remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    key: String,
    expires_at: u64,
}

impl Seen {
    /// The push stamped `timestamp` (Unix seconds, already parsed) with `nonce` (already
    /// percent-decoded), under a freshness window of `window` seconds.
    ///
    /// The key is `{timestamp}.{nonce}`: the timestamp as a number (digits only, so the first
    /// `.` ends it), the nonce as the signature covered it. The push passes the freshness
    /// check while `now <= timestamp + window`, whenever it was received: a push stamped ahead
    /// of the receiver's clock by the whole window stays fresh for twice the window after its
    /// arrival, and is remembered that long.
    pub(crate) fn of(timestamp: u64, nonce: &str, window: u64) -> Self {
        Self { key: format!("{timestamp}.{nonce}"), expires_at: timestamp.saturating_add(window) }
    }

    /// The canonical key (what a shared store would write).
    #[cfg(test)]
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The last second (Unix) at which the push can pass the freshness check.
    #[cfg(test)]
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// The pushes read, by [`Seen`] key, with the second after which each is forgotten.
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    entries: Mutex<HashMap<String, u64>>,
}

impl ReplayCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `seen` was read (and not forgotten).
    pub(crate) fn contains(&self, seen: &Seen) -> bool {
        self.entries().contains_key(&seen.key)
    }

    /// Records `seen`; `false` when it was already there (a replay). Drops every entry that
    /// can no longer pass the freshness check at `now`, so the cache holds only what the
    /// window lets in.
    pub(crate) fn first_sight(&self, seen: Seen, now_unix: u64) -> bool {
        let mut entries = self.entries();
        entries.retain(|_, expires_at| *expires_at >= now_unix);
        match entries.entry(seen.key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seen.expires_at);
                true
            }
        }
    }

    /// Forgets `seen`, so the same push is read again.
    pub(crate) fn forget(&self, seen: &Seen) {
        self.entries().remove(&seen.key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_timestamp_and_the_nonce_and_the_expiry_the_timestamp_plus_the_window() {
        let seen = Seen::of(1_800_000_000, "4.2", 300);
        assert_eq!((seen.key(), seen.expires_at()), ("1800000000.4.2", 1_800_000_300));
        assert_eq!(Seen::of(u64::MAX, "n", 300).expires_at(), u64::MAX);
    }

    #[test]
    fn entries_leave_once_their_push_can_no_longer_pass() {
        let cache = ReplayCache::default();
        assert!(cache.first_sight(Seen::of(1000, "a", 300), 1000));
        assert!(cache.first_sight(Seen::of(1300, "b", 300), 1000));
        // At 1300 the first is still fresh (1000 + 300): kept.
        assert!(!cache.first_sight(Seen::of(1000, "a", 300), 1300));
        assert_eq!(cache.len(), 2);
        // At 1301 it is stale and goes; the second stays until 1600.
        assert!(cache.first_sight(Seen::of(1301, "c", 300), 1301));
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&Seen::of(1000, "a", 300)));
        assert!(cache.first_sight(Seen::of(1900, "d", 300), 1900));
        assert_eq!(cache.len(), 1, "only what the window still lets in");
        cache.forget(&Seen::of(1900, "d", 300));
        assert_eq!(cache.len(), 0);
    }
}
