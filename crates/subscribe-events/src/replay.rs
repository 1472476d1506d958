//! The replay cache: the pushes read, each remembered for as long as it (in any spelling)
//! could still pass the freshness check. An extension point like the client's stores:
//! [`MemoryReplayCache`] for one process, and Redis, PostgreSQL and SQLite implementations in
//! `subscribe-redis` and `subscribe-sql` for a fleet, where the instance a replay reaches must
//! know what another instance read.
//!
//! # What identifies a push
//!
//! WeChat's `signature` is the sha1 of the Token, `timestamp` and `nonce` **sorted** and
//! concatenated; in the compatible and safe modes `msg_signature` adds the encrypted body, in
//! the plain mode nothing else is signed. So every spelling of one push that verifies carries
//! the same signed text, and the same signature: the hex in another case, the parameters in
//! another order or repeated as another mode (a compatible push resent plain), the timestamp
//! and nonce swapped (the sort hides which is which), any body in plain mode. The key is
//! therefore the signature as computed (lower-case hex), under the AppID
//! ([`ReplayKey::as_str`]): whichever spelling arrives first, every other one is a replay.
//!
//! # How long
//!
//! A push passes the freshness check while `now <= timestamp + window`, whenever it arrived.
//! Its swapped spelling passes while `now <= nonce + window` when the nonce reads as a Unix
//! time (WeChat's nonces are often ten random digits), and a re-split one while its own
//! timestamp (a piece of the joined digits) is fresh. So a key lives until the latest of them
//! plus the window ([`ReplayKey::expires_at`]), except that a time further than
//! [`NONCE_HORIZON`] ahead is not waited for: keeping one entry per push for years would
//! make the cache grow without bound. Instead [`Push::open`](crate::Push::open) refuses an
//! event created more than that horizon before its push's timestamp
//! ([`OpenFailure::OutdatedEvent`](crate::OpenFailure::OutdatedEvent)): WeChat pushes within
//! seconds, so only such a swap can carry one. In the safe mode `CreateTime` is inside the
//! signed, encrypted body; in the plain mode nothing in the body is signed (see
//! [`Mode::Plain`](crate::Mode::Plain)). `docs/security.md` states it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How far ahead a nonce read as a Unix time still extends a key's life (one day): a
/// swapped spelling that becomes fresh later than that is not remembered.
pub const NONCE_HORIZON: u64 = 24 * 60 * 60;

/// Entries a [`MemoryReplayCache`] holds by default: with the 300 s window, room for 333
/// pushes a second, each some 150 bytes (15 MB at most).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A verified push's identity in its canonical form, and until when it must be remembered.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    key: String,
    expires_at: u64,
}

impl fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayKey({} until {})", self.key, self.expires_at)
    }
}

/// Unix seconds in decimal digits, without a sign, a space or a leading zero: the one
/// spelling WeChat sends. Any other spelling of a number (`0123`, `+123`) is a second way to
/// write one push, so it is refused rather than read.
pub(crate) fn canonical_number(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Every timestamp another spelling of the push could carry: the signed text joins the Token,
/// the timestamp and the nonce in sorted order, so the timestamp and the nonce can swap, and
/// their joined digits can be split elsewhere (`05` + `1800000000` is `051` + `800000000`). A
/// superset: every prefix and suffix of up to 20 characters of the two joined either way, read
/// as a canonical number.
fn spellings_of_time(timestamp: u64, nonce: &str) -> impl Iterator<Item = u64> {
    let ts = timestamp.to_string();
    [format!("{ts}{nonce}"), format!("{nonce}{ts}")].into_iter().flat_map(|joined| {
        (1..joined.len())
            .filter(|i| joined.is_char_boundary(*i))
            .flat_map(|i| [joined[..i].to_owned(), joined[i..].to_owned()])
            .filter(|piece| piece.len() <= 20)
            .filter_map(|piece| canonical_number(&piece))
            .collect::<Vec<_>>()
    })
}

impl ReplayKey {
    /// The key of a push of `appid` whose signature, as computed from the Token, `timestamp`
    /// and `nonce`, is `signature` (hex, any case), stamped `timestamp` (Unix seconds), under
    /// a freshness window of `window` seconds, received at `now_unix`.
    pub fn new(
        appid: &str,
        signature: &str,
        timestamp: u64,
        nonce: &str,
        window: u64,
        now_unix: u64,
    ) -> Self {
        let horizon = now_unix.saturating_add(window).saturating_add(NONCE_HORIZON);
        let latest = spellings_of_time(timestamp, nonce).filter(|t| *t <= horizon).fold(timestamp, u64::max);
        Self {
            key: format!("{appid}:{}", signature.to_ascii_lowercase()),
            expires_at: latest.saturating_add(window),
        }
    }

    /// A key as a store keeps it: `{appid}:{signature in lower-case hex}`. Holds nothing
    /// secret (the signature is in every push's query).
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The last second (Unix) at which a spelling of the push can pass the freshness check:
    /// the key is kept until then, and may be dropped after.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// How many seconds from `now_unix` the key must still be kept (at least 1, so a store
    /// that takes lifetimes never gets 0).
    pub fn lifetime(&self, now_unix: u64) -> u64 {
        self.expires_at.saturating_sub(now_unix).saturating_add(1)
    }

    /// A key from its parts, for a store that reads keys back, and for tests.
    pub fn from_parts(key: impl Into<String>, expires_at: u64) -> Self {
        Self { key: key.into(), expires_at }
    }
}

/// The replay cache failed (connection lost, timeout, full). Opaque, so any backend's error
/// fits; the cause is the [`source`](std::error::Error::source). Cheap to clone. The push is
/// not read: the endpoint answers 503, and WeChat retries.
#[derive(Clone, Debug)]
pub struct ReplayCacheError {
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl ReplayCacheError {
    /// Wraps the backend's error.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { source: Arc::from(source.into()) }
    }
}

impl fmt::Display for ReplayCacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the replay cache failed")
    }
}

impl std::error::Error for ReplayCacheError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Where the pushes read are remembered. Implement it for a backend every instance behind
/// the load balancer shares; check it with `subscribe_client::test_util::replay_cache_contract`.
///
/// ```
/// use subscribe_events::replay::{MemoryReplayCache, ReplayCache, ReplayKey};
///
/// # async fn run() -> Result<(), subscribe_events::replay::ReplayCacheError> {
/// let cache = MemoryReplayCache::default();
/// let key = ReplayKey::new("wx5a1db0c0ffee0001", "9f0c…", 1_800_000_000, "42", 300, 1_800_000_001);
/// assert!(cache.first_sight(&key, 1_800_000_001).await?);
/// assert!(!cache.first_sight(&key, 1_800_000_002).await?, "a replay");
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait ReplayCache: fmt::Debug + Send + Sync {
    /// Records `key` until its [`expires_at`](ReplayKey::expires_at) and says whether this is
    /// its first sight: `false` when it is there and not expired at `now_unix` (a replay).
    /// Atomic: of any number of concurrent calls with one key, exactly one sees `true`.
    ///
    /// # Errors
    /// The backend failed; nothing is known, and the push must not be read.
    async fn first_sight(&self, key: &ReplayKey, now_unix: u64) -> Result<bool, ReplayCacheError>;

    /// Forgets `key`, so its next sight is a first one again (for a push whose handler failed,
    /// so that WeChat's retry is read).
    ///
    /// # Errors
    /// The backend failed.
    async fn forget(&self, key: &ReplayKey) -> Result<(), ReplayCacheError>;
}

/// Keys with an expiry, dropped from the oldest on: no scan of the whole map, ever. Bounded.
#[derive(Debug)]
pub(crate) struct Expiring<V> {
    entries: HashMap<String, (u64, V)>,
    by_expiry: BTreeSet<(u64, String)>,
    capacity: usize,
}

impl<V> Expiring<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), by_expiry: BTreeSet::new(), capacity }
    }

    /// Drops every entry that expired before `now_unix`, oldest first.
    pub(crate) fn purge(&mut self, now_unix: u64) {
        while let Some((expires_at, _)) = self.by_expiry.first() {
            if *expires_at >= now_unix {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.entries.remove(&key);
            }
        }
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    /// Inserts a key that is not there; `false` when the cache is full.
    pub(crate) fn insert(&mut self, key: &str, expires_at: u64, value: V) -> bool {
        if self.entries.len() >= self.capacity {
            return false;
        }
        self.by_expiry.insert((expires_at, key.to_owned()));
        self.entries.insert(key.to_owned(), (expires_at, value));
        true
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some((expires_at, _)) = self.entries.remove(key) {
            self.by_expiry.remove(&(expires_at, key.to_owned()));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The cache is full of pushes that can all still pass the freshness check.
#[derive(Debug, thiserror::Error)]
#[error("the replay cache holds {0} pushes, its capacity, all still fresh")]
pub struct Full(pub usize);

/// The replay cache of one process: bounded ([`DEFAULT_CAPACITY`] entries unless told), each
/// entry dropped once its push can no longer pass, oldest first (no scan of the whole map).
/// When it is full of pushes still fresh it refuses the next one ([`Full`]) rather than forget
/// one that could be replayed. Behind a load balancer, use a shared one (Redis, SQL).
#[derive(Debug)]
pub struct MemoryReplayCache {
    entries: Mutex<Expiring<()>>,
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryReplayCache {
    /// A cache holding at most `capacity` pushes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { entries: Mutex::new(Expiring::new(capacity)) }
    }

    fn entries(&self) -> MutexGuard<'_, Expiring<()>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`ReplayCache::first_sight`] without a runtime.
    ///
    /// # Errors
    /// [`Full`] when every entry is still fresh and there is no room.
    pub fn first_sight_now(&self, key: &ReplayKey, now_unix: u64) -> Result<bool, Full> {
        let mut entries = self.entries();
        entries.purge(now_unix);
        if entries.get_mut(key.as_str()).is_some() {
            return Ok(false);
        }
        if entries.insert(key.as_str(), key.expires_at, ()) { Ok(true) } else { Err(Full(entries.len())) }
    }

    /// Whether `key` is there and not expired at `now_unix`.
    pub fn contains(&self, key: &ReplayKey, now_unix: u64) -> bool {
        let mut entries = self.entries();
        entries.purge(now_unix);
        entries.get_mut(key.as_str()).is_some()
    }

    /// [`ReplayCache::forget`] without a runtime.
    pub fn forget_now(&self, key: &ReplayKey) {
        self.entries().remove(key.as_str());
    }

    /// How many pushes it holds (some may have expired since the last call).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_sight(&self, key: &ReplayKey, now_unix: u64) -> Result<bool, ReplayCacheError> {
        self.first_sight_now(key, now_unix).map_err(ReplayCacheError::new)
    }

    async fn forget(&self, key: &ReplayKey) -> Result<(), ReplayCacheError> {
        self.forget_now(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ts: u64, nonce: &str) -> ReplayKey {
        ReplayKey::new("wx1", &format!("{ts}{nonce}"), ts, nonce, 300, ts)
    }

    #[test]
    fn the_key_is_the_signature_under_the_appid_and_lives_until_the_timestamp_plus_the_window() {
        let k = ReplayKey::new("wx1", "ABCdef", 1_800_000_000, "abc", 300, 1_800_000_000);
        assert_eq!((k.as_str(), k.expires_at()), ("wx1:abcdef", 1_800_000_300));
        assert_eq!(k.lifetime(1_800_000_000), 301);
        assert_eq!(ReplayKey::new("wx1", "s", u64::MAX, "n", 300, 0).expires_at(), u64::MAX);
    }

    #[test]
    fn a_nonce_that_reads_as_a_later_time_keeps_the_key_until_it_is_stale_too() {
        // Swapped, `timestamp=1800003600&nonce=1800000000` carries the same signature.
        let k = ReplayKey::new("wx1", "s", 1_800_000_000, "1800003600", 300, 1_800_000_000);
        assert_eq!(k.expires_at(), 1_800_003_900);
        // An earlier one changes nothing.
        assert_eq!(
            ReplayKey::new("wx1", "s", 1_800_000_000, "1700000000", 300, 0).expires_at(),
            1_800_000_300
        );
        // `1800000000` + `01800003600` re-splits as `18000000000` + `1800003600`.
        assert_eq!(
            ReplayKey::new("wx1", "s", 1_800_000_000, "01800003600", 300, 1_800_000_000).expires_at(),
            1_800_003_900
        );
        // Beyond the horizon it is not waited for.
        let far = ReplayKey::new("wx1", "s", 1_800_000_000, "9999999999", 300, 1_800_000_000);
        assert_eq!(far.expires_at(), 1_800_000_300);
    }

    proptest::proptest! {
        /// No split of the joined text into a timestamp and a nonce that signs alike (the
        /// Token sorting after both, as a letter does after digits) is fresh after the key
        /// expires, unless it is beyond the horizon.
        #[test]
        fn no_spelling_outlives_its_key(
            ts in 1_799_999_700u64..1_800_000_300,
            time in 1_799_999_000u64..1_800_090_000,
            before in "[0-9]{0,3}",
            after in "[0-9]{0,3}",
        ) {
            // Nonces with a time inside, so that swaps and re-splits land in the window.
            let nonce = format!("{before}{time}{after}");
            let now = 1_800_000_000;
            let key = ReplayKey::new("wx1", "s", ts, &nonce, 300, now);
            let mut sorted = [ts.to_string(), nonce.clone()];
            sorted.sort();
            let joined = sorted.concat();
            for i in 1..joined.len() {
                let (a, b) = joined.split_at(i);
                if a > b {
                    continue; // sorted, they would join the other way round
                }
                for t in [a, b].into_iter().filter_map(canonical_number) {
                    if t <= now + 300 + NONCE_HORIZON {
                        proptest::prop_assert!(t + 300 <= key.expires_at(), "{a} + {b}: {t}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_canonical_numbers_are_read() {
        for (s, n) in [("0", Some(0)), ("1800000000", Some(1_800_000_000)), ("", None), ("01", None)] {
            assert_eq!(canonical_number(s), n, "{s:?}");
        }
        for s in ["+1", " 1", "1 ", "1e3", "18446744073709551616"] {
            assert_eq!(canonical_number(s), None, "{s:?}");
        }
    }

    #[test]
    fn entries_leave_oldest_first_once_their_push_can_no_longer_pass() {
        let cache = MemoryReplayCache::default();
        assert_eq!(cache.first_sight_now(&key(1000, "a"), 1000).ok(), Some(true));
        assert_eq!(cache.first_sight_now(&key(1300, "b"), 1000).ok(), Some(true));
        // At 1300 the first is still fresh (1000 + 300): kept.
        assert_eq!(cache.first_sight_now(&key(1000, "a"), 1300).ok(), Some(false));
        assert_eq!(cache.len(), 2);
        // At 1301 it is stale and goes; the second stays until 1600.
        assert_eq!(cache.first_sight_now(&key(1301, "c"), 1301).ok(), Some(true));
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&key(1000, "a"), 1301));
        assert_eq!(cache.first_sight_now(&key(1900, "d"), 1900).ok(), Some(true));
        assert_eq!(cache.len(), 1, "only what the window still lets in");
        cache.forget_now(&key(1900, "d"));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets_a_fresh_push() {
        let cache = MemoryReplayCache::with_capacity(2);
        assert_eq!(cache.first_sight_now(&key(1000, "a"), 1000).ok(), Some(true));
        assert_eq!(cache.first_sight_now(&key(1000, "b"), 1000).ok(), Some(true));
        assert!(cache.first_sight_now(&key(1000, "c"), 1000).is_err());
        // Both are still remembered.
        assert_eq!(cache.first_sight_now(&key(1000, "a"), 1000).ok(), Some(false));
        // Once one is stale there is room again.
        assert_eq!(cache.first_sight_now(&key(1400, "c"), 1400).ok(), Some(true));
    }

    #[test]
    fn a_purge_looks_only_at_what_expired() {
        let mut map = Expiring::new(10);
        for (i, expires_at) in [5, 1, 9, 3].into_iter().enumerate() {
            assert!(map.insert(&i.to_string(), expires_at, ()));
        }
        map.purge(4);
        assert_eq!(map.len(), 2);
        assert!(map.get_mut("0").is_some() && map.get_mut("2").is_some());
        map.remove("0");
        map.purge(6);
        assert_eq!((map.len(), map.by_expiry.len()), (1, 1));
    }
}
