//! Test support: [`ManualClock`](crate::ManualClock), canned WeChat answers for
//! [`MockTransport`], and the [`token_store_contract`] conformance suite that any
//! [`TokenStore`] backend runs in its own tests.

use std::time::{Duration, SystemTime};

pub use subscribe_transport::{MockReply, MockTransport};
use subscribe_types::{AccessToken, AppId};

use crate::token::{CachedToken, TokenStore};

/// The send endpoint's path.
pub const SEND_PATH: &str = "/cgi-bin/message/template/subscribe";
/// The stable token endpoint's path.
pub const STABLE_TOKEN_PATH: &str = "/cgi-bin/stable_token";
/// The classic token endpoint's path.
pub const CLASSIC_TOKEN_PATH: &str = "/cgi-bin/token";

/// A token endpoint's success: `{"access_token", "expires_in"}`.
pub fn token_reply(token: &str, expires_in: u32) -> MockReply {
    MockReply::json(200, format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#))
}

/// `{"errcode": code, "errmsg": msg}`.
pub fn errcode_reply(code: i64, msg: &str) -> MockReply {
    MockReply::json(200, format!(r#"{{"errcode":{code},"errmsg":"{msg}"}}"#))
}

/// `{"errcode":0,"errmsg":"ok"}`.
pub fn ok_reply() -> MockReply {
    errcode_reply(0, "ok")
}

/// A mock with the stable-token endpoint always answering `token` valid for `expires_in`.
pub fn mock_with_stable_token(token: &str, expires_in: u32) -> MockTransport {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(token_reply(token, expires_in));
    mock
}

fn unique_app(label: &str) -> AppId {
    let mut n = [0u8; 6];
    let _ = getrandom::fill(&mut n);
    let suffix = u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], 0, 0]);
    AppId::new(format!("wxcontract{label}{suffix:012x}")).unwrap_or_else(|e| panic!("contract app id: {e}"))
}

fn token(s: &str) -> AccessToken {
    AccessToken::new(s).unwrap_or_else(|e| panic!("contract token: {e}"))
}

/// The [`TokenStore`] contract. Panics, naming the broken rule, when `store` breaks it.
///
/// Uses fresh random app ids, so it can run against a store shared with other tests. The
/// lease checks run only when the store grants leases exclusively (the trait's default grants
/// every request, which is right for a one-process store).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// subscribe_client::test_util::token_store_contract(&subscribe_client::InMemoryTokenStore::new()).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
pub async fn token_store_contract<S: TokenStore + ?Sized>(store: &S) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let app = unique_app("a");
    let other = unique_app("b");
    let older = CachedToken::new(token("older"), t0 + Duration::from_secs(7200));
    let newer = CachedToken::new(token("newer"), t0 + Duration::from_secs(7300));

    assert!(store.load(&app).await.expect("load").is_none(), "load: a new app has no token");

    let kept = store.save(&app, &older).await.expect("save");
    assert_eq!(kept, older, "save: into an empty slot stores the token");
    assert_eq!(store.load(&app).await.expect("load"), Some(older.clone()), "load: returns what was saved");

    let kept = store.save(&app, &newer).await.expect("save");
    assert_eq!(kept, newer, "save: a token expiring later replaces the stored one");

    let kept = store.save(&app, &older).await.expect("save");
    assert_eq!(kept, newer, "save: an older token never overwrites a newer one (it returns the newer)");
    assert_eq!(store.load(&app).await.expect("load"), Some(newer.clone()), "load after a refused save");

    assert!(store.load(&other).await.expect("load").is_none(), "apps are isolated");

    let removed = store.invalidate(&app, older.token()).await.expect("invalidate");
    assert!(!removed, "invalidate: a token that is not the stored one removes nothing");
    assert_eq!(
        store.load(&app).await.expect("load"),
        Some(newer.clone()),
        "invalidate of another token kept the stored one"
    );

    assert!(
        store.invalidate(&app, newer.token()).await.expect("invalidate"),
        "invalidate: the stored token is removed"
    );
    assert!(store.load(&app).await.expect("load").is_none(), "invalidate: nothing is left");
    assert!(!store.invalidate(&app, newer.token()).await.expect("invalidate"), "invalidate of an empty slot");

    let fresh = CachedToken::new(token("fresh"), t0 + Duration::from_secs(60));
    assert_eq!(
        store.save(&app, &fresh).await.expect("save"),
        fresh,
        "after invalidation any token is stored"
    );

    let debug = format!("{fresh:?}");
    assert!(!debug.contains("fresh"), "CachedToken's Debug must not show the token: {debug}");

    // Leases.
    let ttl = Duration::from_millis(300);
    assert!(
        store.try_acquire_refresh_lease(&app, "h1", ttl).await.expect("lease"),
        "the first holder gets the lease"
    );
    let exclusive = !store.try_acquire_refresh_lease(&app, "h2", ttl).await.expect("lease");
    if exclusive {
        assert!(
            store.try_acquire_refresh_lease(&other, "h2", ttl).await.expect("lease"),
            "leases are per app"
        );
        store.release_refresh_lease(&app, "h2").await.expect("release");
        assert!(
            !store.try_acquire_refresh_lease(&app, "h3", ttl).await.expect("lease"),
            "only the holder releases"
        );
        store.release_refresh_lease(&app, "h1").await.expect("release");
        assert!(
            store.try_acquire_refresh_lease(&app, "h3", ttl).await.expect("lease"),
            "a released lease is free"
        );
        // Expiry: a crashed holder's lease comes back.
        tokio::time::sleep(ttl + Duration::from_millis(200)).await;
        assert!(
            store.try_acquire_refresh_lease(&app, "h4", ttl).await.expect("lease"),
            "an expired lease is free"
        );
        store.release_refresh_lease(&app, "h4").await.expect("release");
        store.release_refresh_lease(&other, "h2").await.expect("release");
    }
}
