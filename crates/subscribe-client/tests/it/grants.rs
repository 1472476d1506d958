use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::transport::TransportErrorKind;
use subscribe_client::{
    CancellationToken, DispatchObserver, Dispatcher, GrantKey, GrantLedger, GrantScope, GrantStatus,
    InMemoryGrantLedger, LedgerError, OutcomeKind, Progress, RecipientOutcome, Recorded,
};
use subscribe_types::{OpenId, Scene, SubscribeMessage, TemplateId, ValidationError};

use crate::*;

fn scope() -> GrantScope {
    GrantScope {
        appid: appid(),
        template_id: TemplateId::new(TEMPLATE).unwrap(),
        scene: Scene::new(1000).unwrap(),
    }
}

fn build(to: &OpenId) -> Result<SubscribeMessage, ValidationError> {
    SubscribeMessage::builder(to.clone(), TemplateId::new(TEMPLATE)?, Scene::new(1000)?)
        .title("到货提醒")
        .content("到货了")
        .build()
}

async fn ledger_with(users: &[&str]) -> Arc<InMemoryGrantLedger> {
    let ledger = Arc::new(InMemoryGrantLedger::new());
    for u in users {
        ledger.record(&scope().key(OpenId::new(*u).unwrap()), t0()).await.unwrap();
    }
    ledger
}

/// Counts sends per recipient (from the request bodies).
fn sends_per_user(mock: &MockTransport) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in mock.requests().iter().filter(|r| r.path() == SEND_PATH) {
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        *out.entry(v["touser"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_ledger_passes_the_contract() {
    grant_ledger_contract(Arc::new(InMemoryGrantLedger::new())).await;
}

#[tokio::test]
async fn completing_an_authorization_records_the_grant_in_one_call() {
    let clock = clock();
    let client = builder(&MockTransport::new(), &clock).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let link = client.authorize_url(
        &TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(1000).unwrap(),
        &subscribe_types::HttpUrl::new("https://a.example/cb").unwrap(),
    );
    let cb = |action: &str| {
        format!(
            "https://a.example/cb?openid=oAlice&template_id={TEMPLATE}&action={action}&scene=1000&reserved={}",
            link.request.reserved.as_str()
        )
    };
    let (_, rec) = client.complete_and_record(&cb("confirm"), &ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Added));
    let replay = client.complete_and_record(&cb("confirm"), &ledger).await.unwrap_err();
    assert!(
        matches!(
            replay,
            subscribe_client::RecordError::Authorization(subscribe_client::AuthorizationError::ReplayedState)
        ),
        "a state confirms once: {replay:?}"
    );
    let (answer, rec) = client.complete_and_record(&cb("cancel"), &ledger).await.unwrap();
    assert_eq!((answer.action(), rec), (subscribe_types::Action::Cancel, None));
    let key = scope().key(OpenId::new("oAlice").unwrap());
    assert_eq!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Pending);
    // A forged answer records nothing: a state whose MAC (its last characters) is altered,
    // for a user who never confirmed.
    let state = link.request.reserved.as_str();
    let last = state.chars().last().unwrap();
    let forged_state = format!("{}{}", &state[..state.len() - 1], if last == '0' { '1' } else { '0' });
    let forged = format!(
        "https://a.example/cb?openid=oMallory&template_id={TEMPLATE}&action=confirm&scene=1000&reserved={forged_state}"
    );
    let err = client.complete_and_record(&forged, &ledger).await.unwrap_err();
    assert!(
        matches!(
            err,
            subscribe_client::RecordError::Authorization(subscribe_client::AuthorizationError::ForgedState)
        ),
        "{err:?}"
    );
    assert!(ledger.get(&scope().key(OpenId::new("oMallory").unwrap())).await.unwrap().is_none());
    assert_eq!(ledger.counts(&scope(), t0()).await.unwrap().pending, 1, "only Alice's grant");
}

/// The callback of `link` for `openid`, confirmed.
fn confirm(link: &subscribe_client::AuthorizationLink, openid: &str) -> String {
    format!(
        "https://a.example/cb?openid={openid}&template_id={TEMPLATE}&action=confirm&scene=1000&reserved={}",
        link.request.reserved.as_str()
    )
}

fn link(client: &subscribe_client::Client) -> subscribe_client::AuthorizationLink {
    client.authorize_url(
        &TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(1000).unwrap(),
        &subscribe_types::HttpUrl::new("https://a.example/cb").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_used_states_pass_the_contract() {
    used_states_contract(Arc::new(subscribe_client::InMemoryUsedStates::new())).await;
}

#[tokio::test]
async fn in_memory_used_states_forget_expired_marks() {
    use subscribe_client::UsedStates as _;
    let store = subscribe_client::InMemoryUsedStates::new();
    let alice = OpenId::new("oAlice").unwrap();
    for i in 0..5000 {
        let state = subscribe_types::Reserved::new(format!("s{i}")).unwrap();
        let now = t0() + Duration::from_secs(i);
        let by = subscribe_client::AnswerDigest::of(&state, &alice);
        let first = store.mark_used(&state, &by, now + Duration::from_secs(900), now).await.unwrap();
        assert_eq!(first, subscribe_client::StateUse::First);
    }
    // One mark per state confirmed within the last 900 s, give or take one sweep's slack.
    assert!(store.len() <= 2 * 1024, "{} marks held", store.len());
}

#[tokio::test]
async fn one_state_replayed_with_a_thousand_openids_records_one_grant() {
    let clock = clock();
    let client = builder(&MockTransport::new(), &clock).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let link = link(&client);
    let mut recorded = 0;
    for i in 0..1000 {
        match client.complete_and_record(&confirm(&link, &format!("oForged{i:04}")), &ledger).await {
            Ok((_, Some(_))) => recorded += 1,
            Err(e) => assert_eq!(e.kind(), subscribe_client::ErrorKind::Invalid, "{e:?}"),
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(recorded, 1, "one state, one grant");
    assert_eq!(ledger.counts(&scope(), t0()).await.unwrap().pending, 1);
}

#[tokio::test]
async fn a_replayed_answer_never_renews_a_delivered_or_reviewed_grant() {
    let clock = clock();
    let client = builder(&MockTransport::new(), &clock).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let link = link(&client);
    client.complete_and_record(&confirm(&link, "oAlice"), &ledger).await.unwrap();
    let key = scope().key(OpenId::new("oAlice").unwrap());
    let r = ledger.reserve(&key, "h", Duration::from_secs(60), t0()).await.unwrap().unwrap();
    ledger.settle(&r, subscribe_client::Settlement::Review("timeout".into())).await.unwrap();

    assert!(client.complete_and_record(&confirm(&link, "oAlice"), &ledger).await.is_err());
    assert_eq!(
        ledger.get(&key).await.unwrap().unwrap().status,
        GrantStatus::Review { reason: "timeout".into() },
        "the evidence stays"
    );
    // A fresh confirmation, with a fresh state, is a new grant.
    let (_, rec) =
        client.complete_and_record(&confirm(&self::link(&client), "oAlice"), &ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Renewed));
}

#[tokio::test]
async fn a_replay_at_another_instance_is_refused_when_they_share_the_used_states() {
    let clock = clock();
    let used = Arc::new(subscribe_client::InMemoryUsedStates::new());
    let a = builder(&MockTransport::new(), &clock).used_states(Arc::clone(&used)).build().unwrap();
    let b = builder(&MockTransport::new(), &clock).used_states(Arc::clone(&used)).build().unwrap();
    let alone = builder(&MockTransport::new(), &clock).build().unwrap();
    let link = link(&a);
    a.complete_authorization(&confirm(&link, "oAlice")).await.unwrap();
    assert!(matches!(
        b.complete_authorization(&confirm(&link, "oMallory")).await,
        Err(subscribe_client::AuthorizationError::ReplayedState)
    ));
    // An instance with a store of its own cannot know: share one (Redis) across a fleet.
    alone.complete_authorization(&confirm(&link, "oMallory")).await.unwrap();
    // Cancellations use up nothing.
    let cancel =
        confirm(&link, "oAlice").replace("openid=oAlice&", "").replace("action=confirm", "action=cancel");
    b.complete_authorization(&cancel).await.unwrap();
    b.complete_authorization(&cancel).await.unwrap();
}

/// A ledger whose backend is down.
#[derive(Debug, Default)]
struct DownLedger(InMemoryGrantLedger, std::sync::atomic::AtomicBool);

#[subscribe_client::async_trait]
impl GrantLedger for DownLedger {
    async fn record(&self, key: &GrantKey, now: std::time::SystemTime) -> Result<Recorded, LedgerError> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LedgerError::backend("connection refused"));
        }
        self.0.record(key, now).await
    }
    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: std::time::SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        self.0.pending_page(scope, after, limit, now).await
    }
    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: std::time::SystemTime,
    ) -> Result<Option<subscribe_client::Reservation>, LedgerError> {
        self.0.reserve(key, holder, lease, now).await
    }
    async fn settle(
        &self,
        r: &subscribe_client::Reservation,
        s: subscribe_client::Settlement,
    ) -> Result<(), LedgerError> {
        self.0.settle(r, s).await
    }
    async fn get(&self, key: &GrantKey) -> Result<Option<subscribe_client::GrantRecord>, LedgerError> {
        self.0.get(key).await
    }
    async fn counts(
        &self,
        scope: &GrantScope,
        now: std::time::SystemTime,
    ) -> Result<subscribe_client::GrantCounts, LedgerError> {
        self.0.counts(scope, now).await
    }
}

#[tokio::test]
async fn when_the_ledger_fails_the_same_answer_can_be_retried_and_no_other() {
    let clock = clock();
    let client = builder(&MockTransport::new(), &clock).build().unwrap();
    let ledger = DownLedger::default();
    ledger.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let link = link(&client);
    let err = client.complete_and_record(&confirm(&link, "oAlice"), &ledger).await.unwrap_err();
    assert!(matches!(err, subscribe_client::RecordError::Ledger(_)), "{err:?}");
    assert_eq!(err.kind(), subscribe_client::ErrorKind::Retryable);
    // The failure gave nobody else the state: it stays Alice's answer's (the client used to
    // forget the mark, and then any openid could use it).
    let other = client.complete_and_record(&confirm(&link, "oMallory"), &ledger).await.unwrap_err();
    assert!(
        matches!(
            other,
            subscribe_client::RecordError::Authorization(subscribe_client::AuthorizationError::ReplayedState)
        ),
        "{other:?}"
    );
    ledger.1.store(false, std::sync::atomic::Ordering::SeqCst);
    let (_, rec) = client.complete_and_record(&confirm(&link, "oAlice"), &ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Added), "the user's retry of the same answer is recorded");
}

/// A store of used states that fails, or never answers.
#[derive(Debug)]
struct BrokenUsedStates {
    hang: bool,
}

#[subscribe_client::async_trait]
impl subscribe_client::UsedStates for BrokenUsedStates {
    async fn mark_used(
        &self,
        _: &subscribe_types::Reserved,
        _: &subscribe_client::AnswerDigest,
        _: std::time::SystemTime,
        _: std::time::SystemTime,
    ) -> Result<subscribe_client::StateUse, subscribe_client::UsedStatesError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(subscribe_client::UsedStatesError::new("connection refused"))
    }
    async fn seal(
        &self,
        _: &subscribe_types::Reserved,
        _: &subscribe_client::AnswerDigest,
    ) -> Result<(), subscribe_client::UsedStatesError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_hanging_store_of_used_states_records_nothing_and_is_retryable() {
    for hang in [false, true] {
        let clock = clock();
        let client = builder(&MockTransport::new(), &clock)
            .used_states(BrokenUsedStates { hang })
            .store_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let ledger = InMemoryGrantLedger::new();
        let err = client.complete_and_record(&confirm(&link(&client), "oAlice"), &ledger).await.unwrap_err();
        assert!(
            matches!(
                err,
                subscribe_client::RecordError::Authorization(
                    subscribe_client::AuthorizationError::UsedStates(_)
                )
            ),
            "hang={hang}: {err:?}"
        );
        assert_eq!(err.kind(), subscribe_client::ErrorKind::Retryable);
        assert_eq!(ledger.counts(&scope(), t0()).await.unwrap().pending, 0, "nothing recorded");
    }
}

#[tokio::test]
async fn each_outcome_settles_the_grant_as_it_should() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).respond_with(|req| {
        let v: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        match v["touser"].as_str().unwrap() {
            "oDelivered" => ok_reply(),
            "oRefused" => errcode_reply(43101, "user refuse to accept the msg"),
            "oInvalid" => errcode_reply(40003, "invalid openid"),
            "oBusy" => errcode_reply(-1, "system error"),
            "oQuota" => errcode_reply(45009, "reach max api daily quota limit"),
            _ => MockReply::error(TransportErrorKind::Timeout),
        }
    });
    let users = ["oBusy", "oDelivered", "oInvalid", "oQuota", "oRefused", "oTimeout"];
    let ledger = ledger_with(&users).await;
    let client = builder(&mock, &clock()).build().unwrap();
    let report = Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
        .run()
        .await
        .unwrap();
    let by_user: HashMap<&str, &RecipientOutcome> =
        report.outcomes.iter().map(|o| (o.openid.as_str(), o)).collect();
    let expect = [
        ("oDelivered", OutcomeKind::Delivered, GrantStatus::Delivered),
        ("oBusy", OutcomeKind::Failed, GrantStatus::Pending),
        ("oQuota", OutcomeKind::Failed, GrantStatus::Pending),
    ];
    for (u, kind, status) in expect {
        assert_eq!(by_user[u].kind, kind, "{u}");
        assert_eq!(
            ledger.get(&scope().key(OpenId::new(u).unwrap())).await.unwrap().unwrap().status,
            status,
            "{u}"
        );
    }
    for (u, kind) in [
        ("oRefused", OutcomeKind::Dropped),
        ("oInvalid", OutcomeKind::Dropped),
        ("oTimeout", OutcomeKind::Unknown),
    ] {
        assert_eq!(by_user[u].kind, kind, "{u}");
        let status = ledger.get(&scope().key(OpenId::new(u).unwrap())).await.unwrap().unwrap().status;
        let want_review = kind == OutcomeKind::Unknown;
        assert_eq!(matches!(status, GrantStatus::Review { .. }), want_review, "{u}: {status:?}");
        assert_eq!(matches!(status, GrantStatus::Dropped { .. }), !want_review, "{u}: {status:?}");
    }
    assert_eq!(by_user["oRefused"].errcode.map(subscribe_types::ErrCode::get), Some(43101));
    let p = report.progress;
    assert_eq!((p.sent, p.delivered, p.failed, p.unknown, p.dropped, p.remaining), (6, 1, 2, 1, 2, 0));
    // The unknown one was sent exactly once and is never resent automatically.
    assert_eq!(sends_per_user(&mock)["oTimeout"], 1);
}

/// Cancels the dispatch once `after` outcomes have been seen.
struct CancelAfter {
    after: u64,
    cancel: CancellationToken,
    progress: Arc<std::sync::Mutex<Vec<Progress>>>,
}

impl DispatchObserver for CancelAfter {
    fn on_progress(&mut self, p: &Progress) {
        self.progress.lock().unwrap().push(*p);
        if p.delivered >= self.after {
            self.cancel.cancel();
        }
    }
}

#[tokio::test]
async fn cancellation_then_a_second_dispatch_delivers_each_grant_exactly_once() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let users: Vec<String> = (0..200).map(|i| format!("oUser{i:04}")).collect();
    let ledger = ledger_with(&users.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let client = builder(&mock, &clock()).build().unwrap();

    let cancel = CancellationToken::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observer = CancelAfter { after: 50, cancel: cancel.clone(), progress: Arc::clone(&seen) };
    let first =
        Dispatcher::one_time(client.clone(), Arc::clone(&ledger), scope().template_id, scope().scene, build)
            .concurrency(8)
            .page_size(16)
            .observer(observer)
            .cancellation(cancel.clone())
            .run()
            .await
            .unwrap();
    assert!(first.cancelled);
    assert!(first.progress.delivered >= 50 && first.progress.delivered < 200, "{:?}", first.progress);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, first.progress.sent, "progress after every outcome");
    assert!(seen.windows(2).all(|w| w[1].delivered >= w[0].delivered));
    let c = ledger.counts(&scope(), t0()).await.unwrap();
    assert_eq!(
        (c.delivered, c.pending, c.reserved),
        (first.progress.delivered, 200 - first.progress.delivered, 0),
        "nothing lost"
    );

    let second = Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
        .run()
        .await
        .unwrap();
    assert_eq!(first.progress.delivered + second.progress.delivered, 200);
    let per_user = sends_per_user(&mock);
    assert_eq!(per_user.len(), 200);
    assert!(per_user.values().all(|n| *n == 1), "each grant sent exactly once");
}

#[tokio::test]
async fn a_lapsed_reservation_is_retaken_and_a_refusal_then_goes_to_review() {
    // A crashed sender reserved the grant (and may have delivered) and never settled it.
    let ledger = ledger_with(&["oCrash"]).await;
    let key = scope().key(OpenId::new("oCrash").unwrap());
    ledger.reserve(&key, "crashed", Duration::from_secs(120), t0()).await.unwrap().unwrap();
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(errcode_reply(43101, "user refuse to accept the msg"));
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    let mut dispatcher =
        Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build);

    let early = dispatcher.run().await.unwrap();
    assert_eq!(early.progress.sent, 0, "a live lease keeps the grant out");

    clock.advance(Duration::from_secs(121));
    let late = dispatcher.run().await.unwrap();
    assert_eq!(late.progress.unknown, 1);
    let status = ledger.get(&key).await.unwrap().unwrap().status;
    assert!(
        matches!(&status, GrantStatus::Review { reason } if reason.contains("probably delivered")),
        "{status:?}"
    );
}

#[tokio::test]
async fn after_a_definite_failure_a_refusal_is_a_refusal_not_probably_delivered() {
    // The first dispatch fails before anything leaves (the connection is refused): the grant is
    // released. The second one is answered 43101: an honest refusal, since nothing was delivered.
    let ledger = ledger_with(&["oOutage"]).await;
    let key = scope().key(OpenId::new("oOutage").unwrap());
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).times(1).reply(MockReply::error(TransportErrorKind::Connect));
    mock.route("POST", SEND_PATH).reply(errcode_reply(43101, "user refuse to accept the msg"));
    let clock = clock();
    let client = builder(&mock, &clock).retry_policy(subscribe_client::RetryPolicy::none()).build().unwrap();
    let mut dispatcher =
        Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build);

    let first = dispatcher.run().await.unwrap();
    assert_eq!(first.progress.failed, 1, "{:?}", first.progress);
    let record = ledger.get(&key).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (GrantStatus::Pending, 0), "released, attempts reset");

    let second = dispatcher.run().await.unwrap();
    assert_eq!(second.outcomes[0].kind, OutcomeKind::Dropped, "{:?}", second.outcomes);
    let status = ledger.get(&key).await.unwrap().unwrap().status;
    assert!(matches!(status, GrantStatus::Dropped { .. }), "refused, not sent to review: {status:?}");
}

#[tokio::test]
async fn a_long_errmsg_is_cut_before_it_is_stored_as_a_reason() {
    let ledger = ledger_with(&["oLong"]).await;
    let mock = mock_with_stable_token("T1", 7200);
    let errmsg = "参数错误".repeat(2500); // 10,000 characters, 30,000 bytes
    mock.route("POST", SEND_PATH).reply(errcode_reply(40003, &errmsg));
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    let report = Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
        .run()
        .await
        .unwrap();
    let detail = report.outcomes[0].detail.clone().unwrap();
    assert!(
        detail.chars().count() <= subscribe_client::MAX_REASON_CHARS + 1,
        "{} chars",
        detail.chars().count()
    );
    assert!(detail.ends_with('…'));
    let status = ledger.get(&scope().key(OpenId::new("oLong").unwrap())).await.unwrap().unwrap().status;
    let GrantStatus::Dropped { reason } = status else { panic!("{status:?}") };
    assert!(
        reason.chars().count() <= subscribe_client::MAX_REASON_CHARS + 1,
        "{} chars",
        reason.chars().count()
    );
}

#[tokio::test]
async fn the_rate_limit_paces_sends_on_the_clock() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let users: Vec<String> = (0..10).map(|i| format!("oRate{i}")).collect();
    let ledger = ledger_with(&users.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    Dispatcher::one_time(client, ledger, scope().template_id, scope().scene, build)
        .rate_limit(5.0)
        .run()
        .await
        .unwrap();
    let slept: Duration = clock.sleeps().iter().sum();
    // 10 sends at 5 a second: 9 intervals of 200 ms.
    assert_eq!(slept, Duration::from_millis(1800), "{:?}", clock.sleeps());
}

#[tokio::test]
async fn messages_for_the_wrong_grant_are_not_sent_and_builder_errors_release() {
    let mock = mock_with_stable_token("T1", 7200);
    let ledger = ledger_with(&["oA", "oB"]).await;
    let client = builder(&mock, &clock()).build().unwrap();
    let report = Dispatcher::one_time(
        client,
        Arc::clone(&ledger),
        scope().template_id,
        scope().scene,
        |to: &OpenId| {
            if to.as_str() == "oA" {
                Err(ValidationError::Empty { field: "title" })
            } else {
                SubscribeMessage::builder(to.clone(), TemplateId::new(TEMPLATE)?, Scene::new(9)?)
                    .title("t")
                    .content("c")
                    .build()
            }
        },
    )
    .keep_outcomes(false)
    .run()
    .await
    .unwrap();
    assert_eq!(report.progress.failed, 2);
    assert!(report.outcomes.is_empty(), "keep_outcomes(false) keeps no per-recipient list");
    assert_eq!(mock.count(SEND_PATH), 0);
    assert_eq!(ledger.counts(&scope(), t0()).await.unwrap().pending, 2, "both grants are usable again");
}

#[tokio::test]
async fn a_grant_key_from_a_confirmation() {
    let c = subscribe_types::Confirmed {
        openid: OpenId::new("o1").unwrap(),
        template_id: TemplateId::new("t").unwrap(),
        scene: Scene::new(3).unwrap(),
        reserved: subscribe_types::Reserved::default(),
    };
    let key = GrantKey::confirmed(appid(), &c);
    assert_eq!(key.scope().scene.get(), 3);
    assert_eq!(key.scope().key(c.openid.clone()), key);
}

#[tokio::test]
async fn a_panicking_message_function_fails_its_grant_and_the_dispatch_goes_on() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let ledger = ledger_with(&["oA", "oB", "oC"]).await;
    let client = builder(&mock, &clock()).build().unwrap();
    let report = Dispatcher::one_time(
        client,
        Arc::clone(&ledger),
        scope().template_id,
        scope().scene,
        |to: &OpenId| {
            assert!(to.as_str() != "oB", "a bug in the integrator's message function");
            build(to)
        },
    )
    .concurrency(1)
    .run()
    .await
    .unwrap();
    let p = report.progress;
    assert_eq!((p.sent, p.delivered, p.failed), (3, 2, 1), "{p:?}");
    let failed = report.outcomes.iter().find(|o| o.kind == OutcomeKind::Failed).unwrap();
    assert_eq!(failed.openid.as_str(), "oB");
    assert_eq!(ledger.counts(&scope(), t0()).await.unwrap().pending, 1, "the failed grant is usable again");
}

/// A ledger whose `pending_page` ignores its cursor and always returns the first page: a bug
/// that once made the contract suite page forever.
#[derive(Debug, Default)]
struct CursorIgnoring(InMemoryGrantLedger);

#[subscribe_client::async_trait]
impl GrantLedger for CursorIgnoring {
    async fn record(&self, key: &GrantKey, now: std::time::SystemTime) -> Result<Recorded, LedgerError> {
        self.0.record(key, now).await
    }
    async fn pending_page(
        &self,
        scope: &GrantScope,
        _after: Option<&OpenId>,
        limit: usize,
        now: std::time::SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        let mut all = self.0.pending_page(scope, None, usize::MAX, now).await?;
        // One grant stays listed whatever its status, as a careless ledger might list it.
        all.extend(self.0.get(&scope.key(OpenId::new("oA").unwrap())).await?.map(|r| r.key.openid));
        all.sort();
        all.dedup();
        all.truncate(limit);
        Ok(all)
    }
    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: std::time::SystemTime,
    ) -> Result<Option<subscribe_client::Reservation>, LedgerError> {
        self.0.reserve(key, holder, lease, now).await
    }
    async fn settle(
        &self,
        reservation: &subscribe_client::Reservation,
        settlement: subscribe_client::Settlement,
    ) -> Result<(), LedgerError> {
        self.0.settle(reservation, settlement).await
    }
    async fn get(&self, key: &GrantKey) -> Result<Option<subscribe_client::GrantRecord>, LedgerError> {
        self.0.get(key).await
    }
    async fn counts(
        &self,
        scope: &GrantScope,
        now: std::time::SystemTime,
    ) -> Result<subscribe_client::GrantCounts, LedgerError> {
        self.0.counts(scope, now).await
    }
}

#[tokio::test]
async fn a_ledger_that_ignores_its_cursor_fails_the_contract_instead_of_paging_forever() {
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::spawn(grant_ledger_contract(Arc::new(CursorIgnoring::default()))),
    )
    .await
    .expect("the contract suite ends")
    .unwrap_err();
    let text = panic_text(failed);
    assert!(text.contains("did not advance past"), "{text}");
}

#[tokio::test]
async fn a_dispatch_over_a_ledger_that_ignores_its_cursor_stops_with_an_error() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let ledger = Arc::new(CursorIgnoring::default());
    for u in ["oA", "oB", "oC"] {
        ledger.record(&scope().key(OpenId::new(u).unwrap()), t0()).await.unwrap();
    }
    let client = builder(&mock, &clock()).build().unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
            .page_size(2)
            .run(),
    )
    .await
    .expect("the dispatch ends");
    let err = result.unwrap_err();
    assert!(err.to_string().contains("grant ledger"), "{err}");
    assert!(mock.count(SEND_PATH) <= 3, "nothing is sent twice");
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_of_the_used_states_store_loses_no_grant_and_lets_no_other_openid_in() {
    let clock = clock();
    let lossy = Arc::new(LostAnswers::new(Arc::new(subscribe_client::InMemoryUsedStates::new())));
    let client = builder(&MockTransport::new(), &clock).used_states(Arc::clone(&lossy)).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let link = link(&client);
    lossy.lose_next_mark();
    let err = client.complete_and_record(&confirm(&link, "oAlice"), &ledger).await.unwrap_err();
    assert_eq!(err.kind(), subscribe_client::ErrorKind::Retryable, "{err:?}");
    assert_eq!(lossy.lost(), 1, "the mark was made and its answer lost");
    let (_, rec) = client
        .complete_and_record(&confirm(&link, "oAlice"), &ledger)
        .await
        .expect("the user's retry of the same answer is accepted");
    assert_eq!(rec, Some(Recorded::Added));
    for other in ["oMallory", "oALICE", "oalice"] {
        assert!(
            matches!(
                client.complete_and_record(&confirm(&link, other), &ledger).await,
                Err(subscribe_client::RecordError::Authorization(
                    subscribe_client::AuthorizationError::ReplayedState
                ))
            ),
            "{other:?}: another openid (case counts) is a replay"
        );
    }
    assert!(
        matches!(
            client.complete_and_record(&confirm(&link, "oAlice"), &ledger).await,
            Err(subscribe_client::RecordError::Authorization(
                subscribe_client::AuthorizationError::ReplayedState
            ))
        ),
        "once recorded, the same answer is a replay"
    );
    assert_eq!(ledger.counts(&scope(), t0()).await.unwrap().pending, 1, "Alice's grant only");
}

#[tokio::test]
async fn a_lost_lease_is_invalid_and_a_ledger_outage_retryable_wherever_they_show() {
    use subscribe_client::{DispatchError, ErrorKind, RecordError, Settlement};
    let ledger = InMemoryGrantLedger::new();
    let key = scope().key(OpenId::new("oAlice").unwrap());
    ledger.record(&key, t0()).await.unwrap();
    let lease = Duration::from_secs(30);
    let slow = ledger.reserve(&key, "slow", lease, t0()).await.unwrap().expect("pending");
    let later = t0() + Duration::from_secs(60);
    let fast =
        ledger.reserve(&key, "fast", lease, later).await.unwrap().expect("the lapsed lease is retaken");

    // The slow sender's lease lapsed and another took the grant: leave it to that one.
    let lost = ledger.settle(&slow, Settlement::Delivered).await.unwrap_err();
    assert!(matches!(lost, LedgerError::LeaseLost), "{lost:?}");
    assert_eq!(lost.kind(), ErrorKind::Invalid);
    assert!(!lost.kind().may_have_delivered());
    // Settling it again fails the same way; so does settling a reservation settled already.
    assert_eq!(ledger.settle(&slow, Settlement::Release).await.unwrap_err().kind(), ErrorKind::Invalid);
    ledger.settle(&fast, Settlement::Delivered).await.unwrap();
    assert_eq!(ledger.settle(&fast, Settlement::Delivered).await.unwrap_err().kind(), ErrorKind::Invalid);
    let batch = ledger.settle_many(vec![(fast, Settlement::Release)]).await;
    assert!(matches!(&batch[..], [Err(e)] if e.kind() == ErrorKind::Invalid), "{batch:?}");

    // The backend is out: try again later.
    let down = DownLedger::default();
    down.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = down.record(&key, t0()).await.unwrap_err();
    assert!(matches!(out, LedgerError::Backend(_)), "{out:?}");
    assert_eq!(out.kind(), ErrorKind::Retryable);
    assert_eq!(out.to_string(), "grant ledger unavailable");

    // The operations' errors that carry a ledger error answer with its kind.
    assert_eq!(RecordError::from(LedgerError::backend("down")).kind(), ErrorKind::Retryable);
    assert_eq!(RecordError::from(LedgerError::LeaseLost).kind(), ErrorKind::Invalid);
    assert_eq!(DispatchError::from(LedgerError::backend("down")).kind(), ErrorKind::Retryable);
    assert_eq!(DispatchError::from(LedgerError::LeaseLost).kind(), ErrorKind::Invalid);
}
