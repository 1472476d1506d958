//! The client's reusable contract suites, unchanged.

use std::sync::Arc;

use subscribe_client::test_util::{grant_ledger_contract, shared_token_store_contract, used_states_contract};
use subscribe_redis::{RedisGrantLedger, RedisTokenStore, RedisUsedStates};

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

/// Pushed results pass the contract, are the app's own, expire after `keep_for`, and a hash
/// that lost a field is reported as corrupt rather than read as a result.
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
