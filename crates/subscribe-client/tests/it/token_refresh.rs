use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::{CachedToken, Client, InMemoryTokenStore, TokenStore};
use subscribe_types::{AccessToken, AppSecret};

use crate::*;

/// Answers the stable endpoint with T1, T2, T3, … one per request.
fn counting_stable(mock: &MockTransport, expires_in: u32) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&n);
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| {
        token_reply(&format!("T{}", c.fetch_add(1, Ordering::SeqCst) + 1), expires_in)
    });
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sends_on_a_cold_client_make_one_token_request() {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(token_reply("T1", 7200).delay(Duration::from_millis(20)));
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock()).build().unwrap();
    let results = send_concurrently(&client, 1000).await;
    assert!(results.iter().all(Result::is_ok));
    mock.assert_count(STABLE_TOKEN_PATH, 1);
    mock.assert_count(SEND_PATH, 1000);
    assert!(tokens_used(&mock).iter().all(|t| t == "T1"));
}

#[tokio::test(start_paused = true)]
async fn inside_the_margin_the_old_token_is_served_while_one_background_refresh_runs() {
    let mock = MockTransport::new();
    let fetched = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fetched);
    // The second token request takes 10 s to answer: the refresh is visibly "in progress".
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| match f.fetch_add(1, Ordering::SeqCst) {
        0 => token_reply("T1", 7200),
        _ => token_reply("T2", 7200).delay(Duration::from_secs(10)),
    });
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();

    clock.advance(Duration::from_secs(7200 - 200)); // 200 s left: inside the 300 s margin
    for _ in 0..5 {
        client.send_one_time(&message()).await.unwrap();
        // Let the spawned refresh run, as real I/O would (the mock answers without yielding).
        tokio::task::yield_now().await;
    }
    assert_eq!(tokens_used(&mock), ["T1"; 6], "the current token is served during the refresh");
    mock.assert_count(STABLE_TOKEN_PATH, 2); // the first fetch + exactly one background refresh

    tokio::time::sleep(Duration::from_secs(11)).await; // the refresh completes
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(tokens_used(&mock).last().unwrap(), "T2");
    mock.assert_count(STABLE_TOKEN_PATH, 2);
}

#[tokio::test]
async fn after_expiry_callers_wait_for_the_new_token() {
    let mock = MockTransport::new();
    counting_stable(&mock, 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    clock.advance(Duration::from_secs(7201));
    let results = send_concurrently(&client, 50).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(tokens_used(&mock)[1..].iter().all(|t| t == "T2"), "no send used the expired token");
    mock.assert_count(STABLE_TOKEN_PATH, 2);
}

#[tokio::test]
async fn short_lived_tokens_are_not_refreshed_on_every_call() {
    // A 5-second token with a 300-second margin: refreshed at half-life (less 1%: 2.55 s), not
    // on every call, though the whole token lies inside the margin.
    let mock = MockTransport::new();
    counting_stable(&mock, 5);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    for _ in 0..25 {
        client.send_one_time(&message()).await.unwrap();
        clock.advance(Duration::from_millis(100)); // 0 … 2.4 s
    }
    mock.assert_count(STABLE_TOKEN_PATH, 1);
    clock.advance(Duration::from_millis(200)); // 2.6 s: past the half-life
    client.send_one_time(&message()).await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await; // the background refresh runs
    }
    mock.assert_count(STABLE_TOKEN_PATH, 2);
    assert_eq!(tokens_used(&mock).last().unwrap(), "T1", "served the held token meanwhile");
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(tokens_used(&mock).last().unwrap(), "T2");
}

/// A store that shares the tokens of `inner` but grants every lease: two "instances" that do
/// not coordinate, to exercise the compare-and-swap alone.
#[derive(Debug)]
struct NoLease(Arc<InMemoryTokenStore>);

#[subscribe_client::async_trait]
impl TokenStore for NoLease {
    async fn load(
        &self,
        app: &subscribe_types::AppId,
    ) -> Result<Option<CachedToken>, subscribe_client::TokenStoreError> {
        self.0.load(app).await
    }
    async fn save(
        &self,
        app: &subscribe_types::AppId,
        token: &CachedToken,
    ) -> Result<CachedToken, subscribe_client::TokenStoreError> {
        self.0.save(app, token).await
    }
    async fn invalidate(
        &self,
        app: &subscribe_types::AppId,
        rejected: &AccessToken,
    ) -> Result<bool, subscribe_client::TokenStoreError> {
        self.0.invalidate(app, rejected).await
    }
}

#[tokio::test]
async fn two_racing_refreshes_never_let_the_older_token_overwrite_the_newer() {
    let store = Arc::new(InMemoryTokenStore::new());
    let clock = clock();
    let started = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    // Instance A: its token request leaves first and is answered last.
    let slow = subscribe_client::transport::transport_fn({
        let (started, gate) = (Arc::clone(&started), Arc::clone(&gate));
        move |_req| {
            let (started, gate) = (Arc::clone(&started), Arc::clone(&gate));
            async move {
                started.notify_one();
                gate.notified().await;
                Ok(subscribe_client::transport::http::Response::new(
                    r#"{"access_token":"OLDER","expires_in":7200}"#.into(),
                ))
            }
        }
    });
    let a = Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .transport(slow)
        .clock(clock.clone())
        .token_store(NoLease(Arc::clone(&store)))
        .build()
        .unwrap();
    let fast = mock_with_stable_token("NEWER", 7200);
    let b = builder(&fast, &clock).token_store(NoLease(Arc::clone(&store))).build().unwrap();

    let a_task = tokio::spawn({
        let a = a.clone();
        async move { a.access_token().await }
    });
    started.notified().await; // A's request is out
    clock.advance(Duration::from_secs(5)); // less than the token request timeout
    let b_token = b.access_token().await.unwrap();
    assert_eq!(b_token.expose_secret(), "NEWER");
    gate.notify_one(); // A's older answer arrives now
    let a_token = a_task.await.unwrap().unwrap();

    let stored = store.load(&appid()).await.unwrap().unwrap();
    assert_eq!(stored.token().expose_secret(), "NEWER", "the store kept the newer token");
    assert_eq!(a_token.expose_secret(), "NEWER", "A adopted the newer token the store kept");
}

#[tokio::test]
async fn token_rejected_on_500_in_flight_sends_means_one_refresh_and_one_replay_each() {
    let store = Arc::new(InMemoryTokenStore::new());
    store
        .save(&appid(), &CachedToken::new(AccessToken::new("T1").unwrap(), t0() + Duration::from_secs(7200)))
        .await
        .unwrap();
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(token_reply("T2", 7200));
    mock.route("POST", SEND_PATH).respond_with(|req| match req.query_param("access_token") {
        // Slow rejections: all 500 are in flight with T1 before the first answer.
        Some("T1") => errcode_reply(40001, "invalid credential, access_token is invalid or not latest")
            .delay(Duration::from_millis(200)),
        _ => ok_reply(),
    });
    let client = builder(&mock, &clock()).token_store(Arc::clone(&store)).build().unwrap();
    let results = send_concurrently(&client, 500).await;
    for r in &results {
        assert_eq!(r.as_ref().unwrap().attempts, 2, "each send replayed exactly once");
    }
    mock.assert_count(STABLE_TOKEN_PATH, 1);
    let used = tokens_used(&mock);
    assert_eq!(used.iter().filter(|t| *t == "T1").count(), 500);
    assert_eq!(used.iter().filter(|t| *t == "T2").count(), 500);
    assert_eq!(store.load(&appid()).await.unwrap().unwrap().token().expose_secret(), "T2");
}

#[tokio::test]
async fn a_refreshed_token_rejected_again_returns_the_error_without_a_third_attempt() {
    let mock = MockTransport::new();
    counting_stable(&mock, 7200);
    mock.route("POST", SEND_PATH).reply(errcode_reply(42001, "access_token expired"));
    let client = builder(&mock, &clock()).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert_eq!(err.api_code(), Some(subscribe_types::ErrCode::ACCESS_TOKEN_EXPIRED));
    assert_eq!(tokens_used(&mock), ["T1", "T2"]);
    mock.assert_count(STABLE_TOKEN_PATH, 2);
}

#[tokio::test]
async fn force_refresh_only_when_the_rejected_token_comes_back_and_within_budget() {
    let mock = MockTransport::new();
    let current = Arc::new(std::sync::Mutex::new((String::from("T1"), 1u32)));
    let rejected = Arc::new(std::sync::Mutex::new(vec![String::from("T1")]));
    {
        let current = Arc::clone(&current);
        mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |req| {
            let mut c = current.lock().unwrap();
            if String::from_utf8_lossy(req.body()).contains(r#""force_refresh":true"#) {
                c.1 += 1;
                c.0 = format!("T{}", c.1);
            }
            token_reply(&c.0, 7200)
        });
    }
    {
        let rejected = Arc::clone(&rejected);
        mock.route("POST", SEND_PATH).respond_with(move |req| {
            if rejected.lock().unwrap().iter().any(|t| Some(t.as_str()) == req.query_param("access_token")) {
                errcode_reply(40001, "invalid credential")
            } else {
                ok_reply()
            }
        });
    }
    let force_count = || {
        mock.requests()
            .iter()
            .filter(|r| String::from_utf8_lossy(r.body()).contains(r#""force_refresh":true"#))
            .count()
    };
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();

    // Normal refresh hands T1 back: one forced refresh gives T2.
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(tokens_used(&mock), ["T1", "T2"]);
    assert_eq!(force_count(), 1);

    // T2 rejected 10 s later: normal mode returns T2 again, and 30 s have not passed.
    rejected.lock().unwrap().push("T2".into());
    clock.advance(Duration::from_secs(10));
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(
        matches!(
            err,
            subscribe_client::SendError::Token(subscribe_client::TokenError::RejectedTokenReissued)
        ),
        "{err:?}"
    );
    assert_eq!(force_count(), 1, "no forced refresh within 30 s of the last");

    // Past the spacing, a forced refresh is allowed again.
    clock.advance(Duration::from_secs(30));
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(force_count(), 2);
    assert_eq!(tokens_used(&mock).last().unwrap(), "T3");
}

#[tokio::test]
async fn ip_not_whitelisted_is_typed_with_the_ip_then_fails_fast_during_the_cooldown() {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(errcode_reply(
        40164,
        "invalid ip 47.96.12.34 ipv6 ::ffff:47.96.12.34, not in whitelist rid: 6571c2e4",
    ));
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    let subscribe_client::SendError::Token(subscribe_client::TokenError::Rejected { reason, error }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        reason,
        &subscribe_client::TokenRejection::IpNotWhitelisted { ip: Some("47.96.12.34".into()) }
    );
    assert_eq!(error.code().get(), 40164);
    assert!(err.to_string().contains("no access token"));

    for _ in 0..20 {
        let err = client.send_one_time(&message()).await.unwrap_err();
        assert!(
            matches!(
                err,
                subscribe_client::SendError::Token(subscribe_client::TokenError::CoolingDown { .. })
            ),
            "{err:?}"
        );
    }
    mock.assert_count(STABLE_TOKEN_PATH, 1); // zero further token requests
    mock.assert_count(SEND_PATH, 0);

    clock.advance(Duration::from_secs(61));
    let _ = client.send_one_time(&message()).await;
    mock.assert_count(STABLE_TOKEN_PATH, 2); // tried again once the cool-down is over
}

#[tokio::test]
async fn each_token_endpoint_refusal_is_typed() {
    use subscribe_client::TokenRejection::*;
    for (code, want) in [
        (40013, InvalidAppId),
        (40001, InvalidSecret),
        (40125, InvalidSecret),
        (61004, IpNotWhitelisted { ip: None }),
        (40243, SecretFrozen),
        (45009, QuotaExceeded),
        (-1, Busy),
    ] {
        let mock = MockTransport::new();
        mock.route("POST", STABLE_TOKEN_PATH).reply(errcode_reply(code, "refused"));
        let client = builder(&mock, &clock()).build().unwrap();
        let err = client.access_token().await.unwrap_err();
        let t = &err;
        assert_eq!(t.rejection(), Some(&want), "{code}");
        // -1 does not start a cool-down; everything else does.
        let again = client.access_token().await.unwrap_err();
        let cooling = matches!(again, subscribe_client::TokenError::CoolingDown { .. });
        assert_eq!(cooling, code != -1, "{code}");
    }
}

#[tokio::test]
async fn token_rejected_refreshes_once_for_many_reports_of_the_same_token() {
    let mock = MockTransport::new();
    counting_stable(&mock, 7200);
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    let first = client.token().await.unwrap();
    let stale = first.token().clone();
    let mut reports = Vec::new();
    for _ in 0..50 {
        let (c, t) = (client.clone(), stale.clone());
        reports.push(tokio::spawn(async move { c.token_rejected(&t).await }));
    }
    for r in reports {
        let answer = r.await.unwrap().unwrap();
        assert_eq!(answer.token().expose_secret(), "T2", "each report is answered with the new token");
        assert_eq!(answer.expires_at(), t0() + Duration::from_secs(7200));
    }
    mock.assert_count(STABLE_TOKEN_PATH, 2);
    // A late report of the same stale token, and one of a token that was never current: the
    // current token, without a request.
    let late = client.token_rejected(&stale).await.unwrap();
    assert_eq!(late.token().expose_secret(), "T2");
    let unknown = client.token_rejected(&AccessToken::new("never-issued").unwrap()).await.unwrap();
    assert_eq!(unknown.token().expose_secret(), "T2");
    mock.assert_count(STABLE_TOKEN_PATH, 2);
}
