//! Instants and clocks: a token's key lives for a lifetime computed on the clock that set its
//! expiry, whatever Redis's clock or the system's says.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use subscribe_client::{CachedToken, Clock as _, ManualClock, TokenStore as _};
use subscribe_redis::RedisTokenStore;
use subscribe_types::{AccessToken, AppId};

use crate::redis;

fn app(label: &str) -> AppId {
    AppId::new(format!("wxclock{label}{:08x}", std::process::id())).unwrap()
}

/// A token saved until an instant is read back a second later. The instant is now + 30 days,
/// or the milliseconds since the epoch in `WXSUB_TEST_TOKEN_EXPIRES_MS` when set: `cargo xtask
/// ahead` sets it to a fixed date (the real now + 30 days) and runs this test with the clock
/// 400 days ahead, where the date is past and the test must fail. That failure is the step's
/// proof that its fake clock reaches the tests and that a fixed date cannot pass it.
#[tokio::test]
async fn a_token_saved_until_an_instant_is_kept_until_then() {
    let expires = std::env::var("WXSUB_TEST_TOKEN_EXPIRES_MS").map_or_else(
        |_| crate::now() + Duration::from_secs(30 * 86_400),
        |ms| {
            UNIX_EPOCH + Duration::from_millis(ms.parse().expect("WXSUB_TEST_TOKEN_EXPIRES_MS: milliseconds"))
        },
    );
    let store = RedisTokenStore::new(redis("canary").await);
    let app = app("canary");
    let token = CachedToken::new(AccessToken::new("canary").unwrap(), expires);
    store.save(&app, &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let kept = store.load(&app).await.unwrap();
    assert_eq!(
        kept.as_ref().map(|t| t.to_parts().0),
        Some("canary"),
        "a token is kept until its expiry (it was gone a second after saving)"
    );
}

/// A client on a `ManualClock` two years behind the system's, and a store given that clock:
/// the token's key lives its two hours and a minute. Without the clock, the store measured the
/// lifetime from the system's now, two years past the token's expiry, and dropped it at once.
#[tokio::test]
async fn a_store_on_the_clients_clock_keeps_a_token_for_its_lifetime() {
    let r = redis("manual").await;
    let manual = Arc::new(ManualClock::new(crate::now() - Duration::from_secs(2 * 365 * 86_400)));
    let token =
        CachedToken::new(AccessToken::new("manual").unwrap(), manual.now() + Duration::from_secs(7200));
    let client = ::redis::Client::open(crate::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();

    let on_manual = RedisTokenStore::new(r.clone()).clock(manual);
    let a = app("onmanual");
    on_manual.save(&a, &token).await.unwrap();
    let ttl: i64 =
        ::redis::cmd("PTTL").arg(format!("{}:token:{a}", r.prefix())).query_async(&mut c).await.unwrap();
    assert!(
        (7_255_000..=7_260_000).contains(&ttl),
        "the key lives the token's two hours and a minute: {ttl} ms"
    );

    let on_system = RedisTokenStore::new(r.clone());
    let b = app("onsystem");
    on_system.save(&b, &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        on_system.load(&b).await.unwrap(),
        None,
        "on the system's clock the same token is two years stale: its key is gone"
    );
}
