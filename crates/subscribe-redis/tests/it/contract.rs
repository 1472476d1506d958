//! The client's reusable contract suites, unchanged.

use std::sync::Arc;

use subscribe_client::test_util::{grant_ledger_contract, shared_token_store_contract, used_states_contract};
use subscribe_redis::{RedisGrantLedger, RedisReplayCache, RedisTokenStore, RedisUsedStates};

use crate::redis;

#[tokio::test]
async fn token_store_passes_the_client_contract() {
    shared_token_store_contract(Arc::new(RedisTokenStore::new(redis("store").await))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_ledger_passes_the_client_contract() {
    grant_ledger_contract(Arc::new(RedisGrantLedger::new(redis("ledger").await))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_states_pass_the_client_contract() {
    used_states_contract(Arc::new(RedisUsedStates::new(redis("states").await))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_cache_passes_the_events_contract() {
    subscribe_client::test_util::replay_cache_contract(Arc::new(RedisReplayCache::new(
        redis("replays").await,
    )))
    .await;
}

/// Two instances, each with its own connection to one Redis and one prefix: a push the first
/// read is a replay at the second, and forgotten by the second it is new at the first. The key
/// lives its lifetime on the application's clock (`PX`), not until an instant on Redis's.
#[tokio::test]
async fn a_push_read_by_one_instance_is_a_replay_at_another() {
    use subscribe_events::replay::{ReplayCache as _, ReplayKey};

    let shared = redis("replays-fleet").await;
    let other =
        subscribe_redis::Redis::builder(crate::redis_url()).prefix(shared.prefix()).connect().await.unwrap();
    let (a, b) = (RedisReplayCache::new(shared.clone()), RedisReplayCache::new(other));
    let now = crate::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // An application clock an hour behind Redis's: the key still lives its whole window.
    let behind = now - 3600;
    let key = ReplayKey::new("wx00000000000c0de7", "ABCDEF0123", behind, "42", 300, behind);
    assert!(a.first_sight(&key, behind).await.unwrap(), "a first sight at the first instance");
    assert!(!b.first_sight(&key, behind).await.unwrap(), "a replay at the second");
    assert!(!a.first_sight(&key, behind + 1).await.unwrap(), "and at the first");

    let client = ::redis::Client::open(crate::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let name = format!("{}:replay:wx00000000000c0de7:abcdef0123", shared.prefix());
    let ttl: i64 = ::redis::cmd("PTTL").arg(&name).query_async(&mut c).await.unwrap();
    assert!((300_000..=301_000).contains(&ttl), "the key lives the push's window and a second: {ttl} ms");

    b.forget(&key).await.unwrap();
    assert!(a.first_sight(&key, behind).await.unwrap(), "forgotten by one, new at the other");
}

/// Pushed results pass the contract, are the app's own, expire after `keep_for`, and a hash
/// that lost a field is reported as corrupt rather than read as a result. (`events` only: the
/// type is behind it.)
#[cfg(feature = "events")]
#[tokio::test]
async fn notification_results_pass_the_client_contract_and_expire() {
    use std::time::Duration;

    use subscribe_client::{NotificationResult, NotificationResults as _};
    use subscribe_redis::RedisNotificationResults;
    use subscribe_types::AppId;

    let r = redis("results").await;
    let appid = AppId::new("wx00000000000c0de5").unwrap();
    let results = RedisNotificationResults::new(r.clone(), appid.clone()).keep_for(Duration::from_secs(60));
    subscribe_client::test_util::notification_results_contract(&results).await;
    let other = RedisNotificationResults::new(r.clone(), AppId::new("wx00000000000c0de6").unwrap());
    assert_eq!(other.result(1).await.unwrap(), None, "another app's results are its own");

    let client = ::redis::Client::open(crate::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:result:{appid}:1", r.prefix());
    let ttl: i64 = ::redis::cmd("PTTL").arg(&key).query_async(&mut c).await.unwrap();
    assert!(ttl > 55_000 && ttl <= 60_000, "kept for keep_for: {ttl} ms");

    let short = RedisNotificationResults::new(r.clone(), appid.clone()).keep_for(Duration::from_millis(10));
    let result = NotificationResult {
        msgid: 7,
        openid: "oContract_User_000000000001".into(),
        template_id: "ContractTemplate_0000000000000000000000001".into(),
        error_code: 0,
        error_status: "success".into(),
        at: crate::now(),
    };
    short.record_result(&result).await.unwrap();
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(format!("{}:result:{appid}:7", r.prefix()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 1_000, "at least a second, never forever: {ttl} ms");

    let () =
        ::redis::cmd("HDEL").arg(&key).arg("error_code").query_async(&mut c).await.map(|_: i64| ()).unwrap();
    let e = results.result(1).await.unwrap_err();
    let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<subscribe_redis::RedisError>());
    assert!(source.is_some_and(subscribe_redis::RedisError::is_corrupt), "{e:?}");
    assert_eq!(source.unwrap().to_string(), "corrupt value in Redis at a notification result's field");
}

/// Marks and tokens live for lifetimes computed on the application's clock, not until an
/// instant read on Redis's: an application clock an hour behind Redis's keeps a used state
/// marked for its whole ten minutes (with `PXAT` the mark was born expired and the replay
/// accepted), and a token expiring in two hours by the application's clock lives two hours and
/// a minute in Redis, whatever Redis's clock says.
#[tokio::test]
async fn keys_live_by_the_applications_clock_not_redis_s() {
    use std::time::Duration;

    use subscribe_client::{CachedToken, TokenStore as _, UsedStates as _};
    use subscribe_types::{AccessToken, AppId, Reserved};

    let r = redis("skew").await;
    let client = ::redis::Client::open(crate::redis_url()).unwrap();
    let c = client.get_multiplexed_async_connection().await.unwrap();
    let pttl = |key: String| {
        let mut c = c.clone();
        async move { ::redis::cmd("PTTL").arg(key).query_async::<i64>(&mut c).await.unwrap() }
    };

    let behind = crate::now() - Duration::from_secs(3600);
    let states = RedisUsedStates::new(r.clone());
    let state = Reserved::new(format!("1{:032x}", std::process::id())).unwrap();
    let by = |openid: &str| {
        subscribe_client::AnswerDigest::of(&state, &subscribe_types::OpenId::new(openid).unwrap())
    };
    let (alice, mallory) = (by("oAlice"), by("oMallory"));
    let until = behind + Duration::from_secs(600);
    assert_eq!(
        states
            .mark_used(&state, &alice, &subscribe_client::Claim::new(Duration::from_secs(30)), until, behind)
            .await
            .unwrap(),
        subscribe_client::StateUse::First
    );
    assert_eq!(
        states
            .mark_used(
                &state,
                &mallory,
                &subscribe_client::Claim::new(Duration::from_secs(30)),
                until,
                behind
            )
            .await
            .unwrap(),
        subscribe_client::StateUse::Used,
        "a replay from an instance an hour behind Redis is refused"
    );
    let ttl = pttl(format!("{}:state:{}", r.prefix(), state.as_str())).await;
    assert!((595_000..=600_000).contains(&ttl), "the mark lives the state's ten minutes: {ttl} ms");

    let store = RedisTokenStore::new(r.clone());
    let app = AppId::new(format!("wxskew{:012x}", std::process::id())).unwrap();
    let token =
        CachedToken::new(AccessToken::new("skewed").unwrap(), crate::now() + Duration::from_secs(7200));
    store.save(&app, &token).await.unwrap();
    let ttl = pttl(format!("{}:token:{app}", r.prefix())).await;
    assert!(
        (7_255_000..=7_260_000).contains(&ttl),
        "the token's key lives its two hours and a minute: {ttl} ms"
    );
}
