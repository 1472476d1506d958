//! When the token source itself fails: one shared attempt, backoff, sends that wait out short
//! outages, a held token that keeps serving, a fleet that backs off as one, refreshes that
//! survive their callers, monotonic time, bounded calls into extensions, and no silent
//! success. `MockTransport` and `ManualClock`; nothing sleeps.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::transport::{TransportErrorKind, transport_fn};
use subscribe_client::{
    BoxError, CachedToken, Client, Clock, ConfigError, ExternalTokenSource, InMemoryTokenStore, ManualClock,
    SendError, TokenError, TokenRejection, TokenStore, TokenStoreError,
};
use subscribe_types::{AccessToken, AppId, ErrCode};

use crate::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Fails a test that would otherwise hang (on code without the bounds under test).
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut).await.unwrap_or_else(|_| panic!("{what} hung"))
}

/// Yields until `cond` holds (other tasks run meanwhile); panics after many tries.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// The monotonic instants (on `clock`) of the token requests `mock` answered.
fn token_request_times(
    mock: &MockTransport,
    clock: &ManualClock,
    reply: MockReply,
) -> Arc<Mutex<Vec<Duration>>> {
    let times = Arc::new(Mutex::new(Vec::new()));
    let (t, c) = (Arc::clone(&times), clock.clone());
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| {
        t.lock().unwrap().push(c.monotonic());
        reply.clone()
    });
    times
}

/// The `Unavailable` error inside `e`, with what its last attempt met.
fn unavailable(e: &dyn AsTokenError) -> (Duration, u32, Option<&TokenError>) {
    match e.token_error() {
        Some(TokenError::Unavailable { waited, attempts, last, .. }) => (*waited, *attempts, last.as_deref()),
        other => panic!("expected Token(Unavailable), got {other:?}"),
    }
}

/// A send's or a token call's error, seen as the token error inside it.
trait AsTokenError {
    fn token_error(&self) -> Option<&TokenError>;
}
impl AsTokenError for TokenError {
    fn token_error(&self) -> Option<&TokenError> {
        Some(self)
    }
}
impl AsTokenError for SendError {
    fn token_error(&self) -> Option<&TokenError> {
        if let SendError::Token(t) = self { Some(t) } else { None }
    }
}

#[tokio::test]
async fn n_waiting_sends_share_each_attempt_whatever_the_failure() {
    let failures = [
        ("HTTP 502", MockReply::status(502).body("<html>502 Bad Gateway</html>")),
        ("dropped connection", MockReply::error(TransportErrorKind::Io)),
        ("timeout", MockReply::error(TransportErrorKind::Timeout)),
        ("errcode -1", errcode_reply(-1, "system error")),
        ("malformed JSON", MockReply::json(200, r#"{"access_token":"T1","expi"#)),
    ];
    for (name, reply) in failures {
        let mock = MockTransport::new();
        mock.route("POST", STABLE_TOKEN_PATH).reply(reply);
        mock.route("POST", SEND_PATH).reply(ok_reply());
        let clock = clock();
        let client = builder(&mock, &clock).build().unwrap();
        let results = send_concurrently(&client, 200).await;

        let requests = mock.count(STABLE_TOKEN_PATH);
        // Attempts at 0, ~0.5, ~1.5, ~3.5, ~7.5 s: a handful within the 10 s wait, not 200.
        assert!((2..=6).contains(&requests), "{name}: {requests} token requests for 200 waiting sends");
        mock.assert_count(SEND_PATH, 0);
        let lasts: Vec<String> = results
            .iter()
            .map(|r| {
                let e = r.as_ref().unwrap_err();
                let (_, attempts, last) = unavailable(e);
                assert_eq!(attempts as usize, requests, "{name}: every caller saw every attempt");
                assert!(e.is_retryable(), "{name}: an outage is retryable");
                format!("{:?}", last.expect("what the endpoint answered"))
            })
            .collect();
        assert!(lasts.iter().all(|l| *l == lasts[0]), "{name}: one failure, shared: {lasts:?}");
    }
}

#[tokio::test]
async fn attempts_back_off_exponentially_with_jitter_up_to_the_cap() {
    let mock = MockTransport::new();
    let clock = clock();
    let times = token_request_times(&mock, &clock, MockReply::status(502));
    let client = builder(&mock, &clock).token_wait(SECS(120)).build().unwrap();
    let err = client.access_token().await.unwrap_err();
    let (waited, attempts, last) = unavailable(&err);
    assert!(matches!(last, Some(TokenError::HttpStatus { status: 502 })), "{err:?}");
    assert!(waited <= SECS(120));

    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), attempts as usize);
    for (k, pair) in times.windows(2).enumerate() {
        let gap = pair[1].saturating_sub(pair[0]);
        // 0.5 s doubling to 30 s, "equal jitter": between half and all of it.
        let full = Duration::from_millis(500).saturating_mul(1 << k).min(SECS(30));
        assert!(gap >= full / 2 && gap <= full, "gap {k}: {gap:?} outside [{:?}, {full:?}]", full / 2);
    }
    // 120 s of outage: 0.5+1+2+4+8+16+30+30+30 > 120 even at the low end of the jitter.
    assert!((7..=10).contains(&times.len()), "{} attempts in 120 s", times.len());
}

#[tokio::test]
async fn refusals_that_need_a_configuration_change_keep_the_cooldown() {
    for (code, reason) in [
        (45009, TokenRejection::QuotaExceeded),
        (40164, TokenRejection::IpNotWhitelisted { ip: None }),
        (40125, TokenRejection::InvalidSecret),
    ] {
        let mock = MockTransport::new();
        mock.route("POST", STABLE_TOKEN_PATH).reply(errcode_reply(code, "refused"));
        let clock = clock();
        let client = builder(&mock, &clock).build().unwrap();
        let results = send_concurrently(&client, 200).await;
        mock.assert_count(STABLE_TOKEN_PATH, 1);
        for r in &results {
            let SendError::Token(t) = r.as_ref().unwrap_err() else { panic!("{r:?}") };
            assert!(matches!(t, TokenError::Rejected { .. }), "{code}: the attempt's own refusal: {t:?}");
            assert_eq!(t.rejection(), Some(&reason), "{code}");
        }
        let again = client.access_token().await.unwrap_err();
        assert!(matches!(again, TokenError::CoolingDown { .. }), "{code}: {again:?}");
        assert!(clock.sleeps().is_empty(), "{code}: nobody waited out a backoff");
        mock.assert_count(STABLE_TOKEN_PATH, 1);
    }
}

/// An external source that fails `fails` times, then hands out `X1`.
#[derive(Debug)]
struct FlakySource {
    calls: AtomicUsize,
    fails: usize,
}

#[subscribe_client::async_trait]
impl ExternalTokenSource for FlakySource {
    async fn fetch(&self, _app: &AppId) -> Result<CachedToken, BoxError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fails {
            return Err("central token service: 503".into());
        }
        Ok(CachedToken::new(AccessToken::new("X1")?, t0() + SECS(7200)))
    }
    async fn invalidate(&self, _app: &AppId, _rejected: &AccessToken) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_external_source_is_backed_off_like_the_endpoint() {
    let source = Arc::new(FlakySource { calls: AtomicUsize::new(0), fails: usize::MAX });
    let mock = MockTransport::new();
    let clock = clock();
    let client = Client::builder_with_token_source(appid(), Arc::clone(&source))
        .state_key([7u8; 32])
        .transport(mock.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let results = send_concurrently(&client, 100).await;
    let calls = source.calls.load(Ordering::SeqCst);
    assert!((2..=6).contains(&calls), "{calls} fetches for 100 waiting sends");
    for r in &results {
        let (_, _, last) = unavailable(r.as_ref().unwrap_err());
        let Some(TokenError::External(e)) = last else { panic!("{r:?}") };
        let cause = std::error::Error::source(e).unwrap();
        assert_eq!(cause.to_string(), "central token service: 503", "the source's own error, shared");
    }

    // Recovers within the wait: three failures, then a token.
    let source = Arc::new(FlakySource { calls: AtomicUsize::new(0), fails: 3 });
    let mock = MockTransport::new();
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = Client::builder_with_token_source(appid(), Arc::clone(&source))
        .state_key([7u8; 32])
        .transport(mock.clone())
        .clock(ManualClock::new(t0()))
        .build()
        .unwrap();
    assert!(send_concurrently(&client, 100).await.iter().all(Result::is_ok));
    assert_eq!(source.calls.load(Ordering::SeqCst), 4);
}

/// A store that fails every call, counting them.
#[derive(Debug, Default)]
struct BrokenStore {
    calls: AtomicUsize,
}

impl BrokenStore {
    fn fail<T>(&self) -> Result<T, TokenStoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(TokenStoreError::new("connection refused"))
    }
}

#[subscribe_client::async_trait]
impl TokenStore for BrokenStore {
    async fn load(&self, _: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        self.fail()
    }
    async fn save(&self, _: &AppId, _: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        self.fail()
    }
    async fn invalidate(&self, _: &AppId, _: &AccessToken) -> Result<bool, TokenStoreError> {
        self.fail()
    }
}

#[tokio::test]
async fn a_failing_store_and_a_failing_endpoint_cost_one_store_call_and_one_request_per_attempt() {
    let store = Arc::new(BrokenStore::default());
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::status(503));
    let client = builder(&mock, &clock()).token_store(Arc::clone(&store)).build().unwrap();
    let results = send_concurrently(&client, 100).await;
    assert!(results.iter().all(Result::is_err));
    let requests = mock.count(STABLE_TOKEN_PATH);
    assert!((2..=6).contains(&requests), "{requests} token requests");
    assert_eq!(store.calls.load(Ordering::SeqCst), requests, "one store call per attempt, then none");

    // With the endpoint answering, the broken store does not stop sends.
    let store = Arc::new(BrokenStore::default());
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock()).token_store(Arc::clone(&store)).build().unwrap();
    assert!(send_concurrently(&client, 100).await.iter().all(Result::is_ok));
    mock.assert_count(STABLE_TOKEN_PATH, 1);
}

#[tokio::test]
async fn a_token_store_error_is_retryable_as_the_client_treats_it() {
    use subscribe_client::{ErrorKind, ExternalSourceError, UsedStatesError};
    let store = BrokenStore::default();
    let e = store.load(&appid()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Retryable);
    assert_eq!(e.clone().kind(), ErrorKind::Retryable, "one attempt's failure, handed to every waiter");
    assert_eq!(e.to_string(), "token store failed");
    assert_eq!(std::error::Error::source(&e).map(ToString::to_string).as_deref(), Some("connection refused"));
    // The client acts on it so: a send through the broken store gets a token from WeChat and
    // goes out, and the next refresh tries the store again.
    let store = Arc::new(BrokenStore::default());
    let (mock, clock) = (mock_with_stable_token("T1", 600), clock());
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock).token_store(Arc::clone(&store)).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    let calls = store.calls.load(Ordering::SeqCst);
    assert!(calls >= 1, "the store was asked");
    clock.advance(SECS(600));
    client.send_one_time(&message()).await.unwrap();
    assert!(store.calls.load(Ordering::SeqCst) > calls, "asked again at the next refresh");
    // The other extensions' errors are outages too, and say so alike.
    assert_eq!(ExternalSourceError::new("down").kind(), ErrorKind::Retryable);
    assert_eq!(UsedStatesError::new("down").kind(), ErrorKind::Retryable);
}

#[tokio::test]
async fn a_two_second_outage_costs_latency_not_messages() {
    let mock = MockTransport::new();
    let clock = clock();
    let c = clock.clone();
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| {
        if c.monotonic() < SECS(2) { MockReply::status(502) } else { token_reply("T1", 7200) }
    });
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock).build().unwrap();
    let results = send_concurrently(&client, 200).await;
    assert!(results.iter().all(Result::is_ok), "every message delivered");
    mock.assert_count(SEND_PATH, 200);
    let requests = mock.count(STABLE_TOKEN_PATH);
    assert!((3..=5).contains(&requests), "{requests} token requests for a 2 s outage");
    assert!(clock.monotonic() >= SECS(2) && clock.monotonic() < SECS(5), "{:?}", clock.monotonic());
}

#[tokio::test]
async fn an_outage_longer_than_token_wait_fails_with_what_the_endpoint_last_answered() {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::status(502).body(SECRET));
    let clock = clock();
    let client = builder(&mock, &clock).token_wait(SECS(3)).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    let (waited, attempts, last) = unavailable(&err);
    assert!(matches!(last, Some(TokenError::HttpStatus { status: 502 })), "{err:?}");
    assert!(waited <= SECS(3), "{waited:?}");
    assert_eq!(attempts as usize, mock.count(STABLE_TOKEN_PATH));
    let SendError::Token(t) = &err else { unreachable!() };
    assert!(matches!(t.last(), Some(TokenError::HttpStatus { status: 502 })));
    let chain = format!("{} / {}", err, std::error::Error::source(&err).unwrap());
    assert!(chain.contains("no access token within"), "{chain}");
    let debug = format!("{err:?}");
    assert!(!debug.contains(SECRET) && !chain.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn a_caller_does_not_wait_for_an_attempt_planned_after_its_deadline() {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::status(502));
    let clock = clock();
    let client =
        builder(&mock, &clock).token_wait(SECS(5)).token_backoff(SECS(20), SECS(60)).build().unwrap();
    let err = client.access_token().await.unwrap_err();
    let TokenError::Unavailable { next_attempt_in: Some(next), .. } = &err else { panic!("{err:?}") };
    assert!(*next >= SECS(10), "{next:?}");
    let err = client.access_token().await.unwrap_err();
    unavailable(&err);
    mock.assert_count(STABLE_TOKEN_PATH, 1);
    assert_eq!(clock.monotonic(), Duration::ZERO, "nobody waited");
    // Once the backoff has passed, the next caller starts the next attempt.
    clock.advance(SECS(20));
    let _ = client.access_token().await;
    mock.assert_count(STABLE_TOKEN_PATH, 2);
}

#[tokio::test]
async fn a_held_token_keeps_serving_while_refreshes_fail_or_hang() {
    let mock = MockTransport::new();
    let clock = clock();
    let n = Arc::new(AtomicUsize::new(0));
    let k = Arc::clone(&n);
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| match k.fetch_add(1, Ordering::SeqCst) {
        0 => token_reply("T1", 7200),
        // The first refresh hangs (for an hour of tokio time); later ones fail.
        1 => token_reply("T2", 7200).delay(SECS(3600)),
        _ => MockReply::status(502),
    });
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();

    clock.advance(SECS(7200 - 250)); // inside the 300 s margin: due for refresh
    for _ in 0..20 {
        within("a send during a hung refresh", client.send_one_time(&message())).await.unwrap();
        tokio::task::yield_now().await;
        clock.advance(SECS(1));
    }
    // The hung request is bounded by the token timeout (10 s), then failures back off.
    for _ in 0..150 {
        within("a send during failing refreshes", client.send_one_time(&message())).await.unwrap();
        tokio::task::yield_now().await;
        clock.advance(SECS(1));
    }
    assert!(tokens_used(&mock).iter().all(|t| t == "T1"), "the held token served every send");
    let requests = mock.count(STABLE_TOKEN_PATH);
    // 1 + the hung one + backoff attempts over ~160 s (0.5, 1, 2, 4, 8, 16, 30, 30, 30, …).
    assert!((5..=14).contains(&requests), "{requests} token requests while the token was held");
}

// Four instances sleep concurrently, which a `ManualClock` cannot show (each sleep would move
// everyone's time): tokio's paused clock does, without sleeping for real.
#[tokio::test(start_paused = true)]
async fn instances_sharing_a_store_keep_one_anothers_backoff() {
    let store = Arc::new(InMemoryTokenStore::new());
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::status(502));
    let instances: Vec<Client> = (0..4)
        .map(|_| {
            Client::builder(appid(), subscribe_types::AppSecret::new(SECRET).unwrap())
                .transport(mock.clone())
                .token_store(Arc::clone(&store))
                .build()
                .unwrap()
        })
        .collect();
    let msg = Arc::new(message());
    let mut tasks = Vec::new();
    for c in &instances {
        for _ in 0..50 {
            let (c, m) = (c.clone(), Arc::clone(&msg));
            tasks.push(tokio::spawn(async move { c.send_one_time(&m).await }));
        }
    }
    let mut held_off = 0;
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        let (_, _, last) = unavailable(&err);
        match last {
            Some(TokenError::HttpStatus { status: 502 }) => {}
            Some(TokenError::HeldOff { reason, .. }) => {
                assert!(reason.contains("HTTP 502"), "{reason}");
                held_off += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let requests = mock.count(STABLE_TOKEN_PATH);
    // One instance alone makes 2..=6 attempts in its 10 s wait; four must not make four times
    // that.
    assert!(requests <= 6, "{requests} token requests from 4 instances");
    assert!(held_off > 0, "the other instances learnt of the failure through the store");
}

#[tokio::test]
async fn a_cancelled_caller_leaves_no_lease_held_and_loses_no_token() {
    let clock = clock();
    let store = Arc::new(InMemoryTokenStore::with_clock(clock.clone()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let transport = transport_fn({
        let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
        move |_req| {
            let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                Ok(subscribe_client::transport::http::Response::new(
                    r#"{"access_token":"ISSUED","expires_in":7200}"#.into(),
                ))
            }
        }
    });
    let client = Client::builder(appid(), subscribe_types::AppSecret::new(SECRET).unwrap())
        .transport(transport)
        .clock(clock.clone())
        .token_store(Arc::clone(&store))
        .build()
        .unwrap();
    let caller = tokio::spawn({
        let c = client.clone();
        async move { c.access_token().await }
    });
    until("the token request is out", || started.load(Ordering::SeqCst) == 1).await;
    caller.abort(); // a timeout wrapper, a dropped HTTP request
    assert!(caller.await.unwrap_err().is_cancelled());
    gate.add_permits(1); // WeChat answers after the caller has gone

    let s = Arc::clone(&store);
    for _ in 0..10_000 {
        if s.load(&appid()).await.unwrap().is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let stored = store.load(&appid()).await.unwrap().expect("the issued token was kept");
    assert_eq!(stored.token().expose_secret(), "ISSUED");
    assert!(
        subscribe_client::RefreshLease::try_acquire_refresh_lease(
            &*store,
            &appid(),
            "another-instance",
            SECS(30)
        )
        .await
        .unwrap(),
        "the refresh lease was released"
    );
    subscribe_client::RefreshLease::release_refresh_lease(&*store, &appid(), "another-instance")
        .await
        .unwrap();
    assert_eq!(within("the next call", client.access_token()).await.unwrap().expose_secret(), "ISSUED");
    assert_eq!(started.load(Ordering::SeqCst), 1, "no second token request");
}

#[test]
fn the_lease_must_outlast_the_work_it_covers() {
    let mock = MockTransport::new();
    let err = builder(&mock, &clock()).refresh_lease_ttl(SECS(10)).build().unwrap_err();
    // Two token requests at 10 s and two store calls at 3 s.
    assert!(matches!(err, ConfigError::LeaseTooShort { needed, .. } if needed == SECS(26)), "{err:?}");
    let ok =
        builder(&mock, &clock()).refresh_lease_ttl(SECS(10)).token_timeout(SECS(3)).store_timeout(SECS(1));
    assert!(ok.build().is_ok());
    let zero = builder(&mock, &clock()).token_wait(Duration::ZERO).build().unwrap_err();
    assert!(matches!(zero, ConfigError::ZeroDuration { setting: "token_wait" }), "{zero:?}");
}

#[tokio::test]
async fn a_wall_clock_step_neither_skips_a_cooldown_nor_blocks_a_refresh() {
    // A refusal's cool-down survives a step forward of an hour, and ends on time after a step
    // back of two.
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(errcode_reply(40164, "invalid ip"));
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    client.access_token().await.unwrap_err();
    clock.set(t0() + SECS(3600));
    let err = client.access_token().await.unwrap_err();
    assert!(matches!(err, TokenError::CoolingDown { .. }), "{err:?}");
    mock.assert_count(STABLE_TOKEN_PATH, 1);
    clock.set(t0() - SECS(7200));
    clock.advance(SECS(61));
    let _ = client.access_token().await;
    mock.assert_count(STABLE_TOKEN_PATH, 2);

    // A step back of an hour does not postpone a refresh that is due.
    let mock = MockTransport::new();
    let n = Arc::new(AtomicUsize::new(0));
    let k = Arc::clone(&n);
    mock.route("POST", STABLE_TOKEN_PATH)
        .respond_with(move |_| token_reply(&format!("T{}", k.fetch_add(1, Ordering::SeqCst) + 1), 7200));
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = self::clock();
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    clock.advance(SECS(7000));
    clock.set(t0() + SECS(7000) - SECS(3600));
    client.send_one_time(&message()).await.unwrap();
    until("the due refresh ran", || mock.count(STABLE_TOKEN_PATH) == 2).await;
    tokio::task::yield_now().await;
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(tokens_used(&mock).last().unwrap(), "T2");

    // A step forward of an hour neither expires the held token nor skips the backoff.
    let mock = MockTransport::new();
    let n = Arc::new(AtomicUsize::new(0));
    let k = Arc::clone(&n);
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| match k.fetch_add(1, Ordering::SeqCst) {
        0 => token_reply("T1", 7200),
        _ => MockReply::status(502),
    });
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = self::clock();
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    clock.advance(SECS(7000)); // due: the background refresh fails and backs off
    client.send_one_time(&message()).await.unwrap();
    until("the background refresh failed", || mock.count(STABLE_TOKEN_PATH) == 2).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    clock.set(t0() + SECS(7000) + SECS(3600));
    for _ in 0..10 {
        client.send_one_time(&message()).await.unwrap();
        tokio::task::yield_now().await;
    }
    mock.assert_count(STABLE_TOKEN_PATH, 2);
    assert!(tokens_used(&mock).iter().all(|t| t == "T1"));
}

/// A store whose `load` never answers.
#[derive(Debug, Default)]
struct HungStore {
    loads: AtomicUsize,
}

#[subscribe_client::async_trait]
impl TokenStore for HungStore {
    async fn load(&self, _: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
    async fn save(&self, _: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        Ok(token.clone())
    }
    async fn invalidate(&self, _: &AppId, _: &AccessToken) -> Result<bool, TokenStoreError> {
        Ok(false)
    }
}

#[tokio::test]
async fn a_hung_store_costs_one_store_timeout_then_the_endpoint_is_asked() {
    let store = Arc::new(HungStore::default());
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).token_store(Arc::clone(&store)).build().unwrap();
    let send = tokio::spawn({
        let c = client.clone();
        async move { c.send_one_time(&message()).await }
    });
    until("the store was asked", || store.loads.load(Ordering::SeqCst) == 1).await;
    clock.advance(SECS(3)); // the store timeout
    within("the send", send).await.unwrap().unwrap();
    mock.assert_count(STABLE_TOKEN_PATH, 1);
}

/// An external source whose `fetch` never answers.
#[derive(Debug, Default)]
struct HungSource {
    fetches: AtomicUsize,
}

#[subscribe_client::async_trait]
impl ExternalTokenSource for HungSource {
    async fn fetch(&self, _: &AppId) -> Result<CachedToken, BoxError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
    async fn invalidate(&self, _: &AppId, _: &AccessToken) -> Result<(), BoxError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_hung_external_source_is_timed_out_and_backed_off() {
    let source = Arc::new(HungSource::default());
    let clock = clock();
    let client = Client::builder_with_token_source(appid(), Arc::clone(&source))
        .state_key([7u8; 32])
        .transport(MockTransport::new())
        .clock(clock.clone())
        .token_wait(SECS(15))
        .build()
        .unwrap();
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.access_token().await }
    });
    until("the source was asked", || source.fetches.load(Ordering::SeqCst) == 1).await;
    clock.advance(SECS(10)); // the token timeout: the first fetch is given up, backoff follows
    until("the source was asked again", || source.fetches.load(Ordering::SeqCst) == 2).await;
    clock.advance(SECS(5)); // the caller's wait is over; the second fetch is still out
    let err = within("the call", call).await.unwrap().unwrap_err();
    let (waited, attempts, last) = unavailable(&err);
    assert_eq!(attempts, 1);
    assert!(waited >= SECS(15), "{waited:?}");
    let Some(TokenError::External(cause)) = last else { panic!("{err:?}") };
    let inner = std::error::Error::source(cause).unwrap().to_string();
    assert!(inner.contains("did not answer within 10s"), "{inner}");
}

#[tokio::test]
async fn an_answer_without_errcode_is_an_unknown_outcome_not_a_delivery() {
    for body in ["{}", r#"{"errmsg":"ok"}"#, r#"{"status":"success"}"#] {
        let mock = mock_with_stable_token("T1", 7200);
        mock.route("POST", SEND_PATH).reply(MockReply::json(200, body));
        let client = builder(&mock, &clock()).build().unwrap();
        let err = client.send_one_time(&message()).await.unwrap_err();
        assert!(matches!(err, SendError::OutcomeUnknown { .. }), "{body}: {err:?}");
        assert!(!err.outcome_known() && !err.is_retryable(), "{body}");
        mock.assert_count(SEND_PATH, 1);
    }
    // The envelope with errcode 0 is still a delivery, and a refusal still a refusal.
    let mock = mock_with_stable_token("T1", 7200);
    mock.push(errcode_reply(0, "ok"));
    mock.push(errcode_reply(43101, "user refuse to accept the msg"));
    let client = builder(&mock, &clock()).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(client.send_one_time(&message()).await.unwrap_err().api_code(), Some(ErrCode::USER_REFUSED));
}

#[tokio::test]
async fn a_request_that_could_not_be_built_is_neither_replayed_nor_retryable() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(MockReply::error(TransportErrorKind::InvalidRequest));
    let client = builder(&mock, &clock()).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Transport(e) if e.kind() == TransportErrorKind::InvalidRequest),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    mock.assert_count(SEND_PATH, 1);

    // At the token endpoint: final, no backoff.
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::error(TransportErrorKind::InvalidRequest));
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    let err = client.access_token().await.unwrap_err();
    assert!(matches!(&err, TokenError::Transport(_)), "{err:?}");
    assert!(!err.is_transient());
    mock.assert_count(STABLE_TOKEN_PATH, 1);
}

/// A store whose first `load` panics (a bug in someone's backend).
#[derive(Debug, Default)]
struct PanickyStore {
    loads: AtomicUsize,
    inner: InMemoryTokenStore,
}

#[subscribe_client::async_trait]
impl TokenStore for PanickyStore {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        assert!(self.loads.fetch_add(1, Ordering::SeqCst) > 0, "PanickyStore: the first load panics");
        self.inner.load(app).await
    }
    async fn save(&self, app: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        self.inner.save(app, token).await
    }
    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<bool, TokenStoreError> {
        self.inner.invalidate(app, rejected).await
    }
}

#[tokio::test]
async fn a_refresh_that_panics_fails_its_callers_and_backs_off_without_wedging_the_client() {
    let store = Arc::new(PanickyStore::default());
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).token_store(Arc::clone(&store)).build().unwrap();
    let results = within("sends during a panicking refresh", send_concurrently(&client, 20)).await;
    for r in &results {
        let (_, attempts, last) = unavailable(r.as_ref().unwrap_err());
        assert_eq!((attempts, last.is_none()), (1, true), "{r:?}");
    }
    mock.assert_count(STABLE_TOKEN_PATH, 0);
    // The next call waits out the backoff and gets a token.
    within("the next send", client.send_one_time(&message())).await.unwrap();
    assert!(clock.monotonic() >= Duration::from_millis(250), "the backoff was kept: {:?}", clock.monotonic());
    mock.assert_count(STABLE_TOKEN_PATH, 1);
}
