//! [`replay_cache_contract`]: the rules every replay cache of pushed events keeps (feature
//! `events`).

use std::time::{Duration, SystemTime};

/// Checks a [`ReplayCache`](subscribe_events::replay::ReplayCache) (feature `events`): a key's
/// first sight is `true` and every later one `false` until the key expires, also at its last
/// second; of concurrent first sights of one key exactly one is `true`; keys of another
/// signature or another AppID are other keys; a forgotten key is seen for the first time
/// again; a key is kept for its whole lifetime (600 s, checked after a wait) and dropped after
/// it (a key living two seconds is new again after them). Keys are random, so a shared backend
/// can run it in parallel runs. The suite takes about three seconds.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use subscribe_client::events::replay::MemoryReplayCache;
/// subscribe_client::test_util::replay_cache_contract(Arc::new(MemoryReplayCache::default())).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
#[cfg(feature = "events")]
pub async fn replay_cache_contract<C: subscribe_events::replay::ReplayCache + ?Sized + 'static>(
    cache: std::sync::Arc<C>,
) {
    use subscribe_events::replay::ReplayKey;
    #[allow(clippy::disallowed_methods)] // the backend's clock is the real one
    let unix_now = || SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signature = || {
        let mut n = [0u8; 20];
        let _ = getrandom::fill(&mut n);
        hex::encode(n)
    };
    let now = unix_now();
    let key = |appid: &str, sig: &str, lifetime: u64| ReplayKey::new(appid, sig, now, "n", lifetime, now);
    let first = |k: ReplayKey, at: u64, what: &'static str| {
        let cache = std::sync::Arc::clone(&cache);
        async move { cache.first_sight(&k, at).await.unwrap_or_else(|e| panic!("first_sight ({what}): {e:?}")) }
    };
    let (s1, s2) = (signature(), signature());
    let a = key("wxContractA", &s1, 600);
    assert!(first(a.clone(), now, "a new key").await, "first_sight: a new key is a first sight");
    assert!(!first(a.clone(), now, "again").await, "first_sight: the same key again is a replay");
    assert!(
        !first(a.clone(), now + 1, "a second later").await,
        "first_sight: a second later, still a replay"
    );
    assert!(
        !first(a.clone(), a.expires_at(), "at its last second").await,
        "first_sight: a key is a replay until its last second"
    );
    let upper = key("wxContractA", &s1.to_uppercase(), 600);
    assert!(
        !first(upper, now, "in upper case").await,
        "first_sight: the signature in upper case is the same key"
    );
    assert!(
        first(key("wxContractA", &s2, 600), now, "another signature").await,
        "first_sight: another signature"
    );
    assert!(first(key("wxContractB", &s1, 600), now, "another appid").await, "first_sight: another appid");

    // Forgotten, it is new; forgetting what is not there is fine.
    cache.forget(&a).await.unwrap_or_else(|e| panic!("forget: {e:?}"));
    assert!(first(a.clone(), now, "forgotten").await, "forget: a forgotten key is a first sight again");
    assert!(!first(a.clone(), now, "after").await, "forget: and then a replay");
    cache.forget(&key("wxContractA", &signature(), 600)).await.unwrap_or_else(|e| panic!("forget: {e:?}"));

    // Exactly one of many concurrent first sights.
    let racing = key("wxContractA", &signature(), 600);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        tasks.spawn(first(racing.clone(), now, "racing"));
    }
    let firsts = tasks.join_all().await;
    assert_eq!(
        firsts.iter().filter(|f| **f).count(),
        1,
        "first_sight: exactly one of 32 concurrent first sights"
    );

    // Kept for its lifetime, dropped after it (on the backend's own time, if it has one).
    let short = key("wxContractA", &signature(), 1);
    assert!(first(short.clone(), now, "a short key").await);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let later = unix_now();
    assert!(!first(a, later, "after a wait").await, "first_sight: a key is kept for its whole lifetime");
    assert!(first(short, later, "expired").await, "first_sight: an expired key is a first sight again");
}
