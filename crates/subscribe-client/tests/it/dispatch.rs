//! The dispatcher: each outcome's settlement, cancellation, lapsed leases, the rate limit,
//! messages for the wrong grant, and ledgers that misbehave.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::transport::TransportErrorKind;
use subscribe_client::{
    CancellationToken, DispatchObserver, Dispatcher, GrantLedger, GrantStatus, OutcomeKind, Progress,
    RecipientOutcome,
};
use subscribe_types::{OneTimeMessage, OpenId, Scene, TemplateId, ValidationError};

use crate::grants::{CursorIgnoring, build, ledger_with, scope, sends_per_user};
use crate::*;

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

/// Dropping `run`'s future (a timeout, a `select!`, an aborted task) stops the dispatch as
/// cancelling does: nothing more is started, what was reserved and not started is given back,
/// and what was in flight is recorded. Before, the dispatch's tasks went on sending unobserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_stops_the_dispatch_and_loses_nothing() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).respond_with(|_| {
        std::thread::sleep(Duration::from_millis(2)); // a send takes a while
        ok_reply()
    });
    let users: Vec<String> = (0..400).map(|i| format!("oUser{i:04}")).collect();
    let ledger = ledger_with(&users.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let client = builder(&mock, &clock()).build().unwrap();
    let mut first =
        Dispatcher::one_time(client.clone(), Arc::clone(&ledger), scope().template_id, scope().scene, build)
            .concurrency(4)
            .page_size(16);
    let cut = tokio::time::timeout(Duration::from_millis(60), first.run()).await;
    assert!(cut.is_err(), "dropped mid-dispatch");
    // What was in flight finishes and is recorded; then nothing more is sent.
    let mut last = usize::MAX;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let (sent, c) = (mock.count(SEND_PATH), ledger.counts(&scope(), t0()).await.unwrap());
        if sent == last && c.reserved == 0 {
            break;
        }
        last = sent;
    }
    let sent = mock.count(SEND_PATH);
    assert!(sent > 0 && sent < 400, "stopped part way: {sent}");
    let c = ledger.counts(&scope(), t0()).await.unwrap();
    let sent_u64 = u64::try_from(sent).unwrap();
    assert_eq!((c.delivered, c.pending, c.reserved), (sent_u64, 400 - sent_u64, 0), "nothing lost");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mock.count(SEND_PATH), sent, "no send after the dispatch stopped");

    let second = Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
        .run()
        .await
        .unwrap();
    assert_eq!(second.progress.delivered + sent_u64, 400);
    assert!(sends_per_user(&mock).values().all(|n| *n == 1), "each grant sent exactly once");
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
                OneTimeMessage::builder(to.clone(), TemplateId::new(TEMPLATE)?, Scene::new(9)?)
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

/// A ledger whose settlements fail the first `failures` times, as a backend that lost its
/// connection, restarted or timed out does: before writing (`writes_first` false) or after the
/// write landed, its acknowledgement lost (`writes_first` true).
#[derive(Debug)]
struct FlakySettlements {
    inner: subscribe_client::InMemoryGrantLedger,
    failures: std::sync::atomic::AtomicU32,
    writes_first: bool,
    calls: std::sync::atomic::AtomicU32,
    /// After the failures, every settlement is refused as another sender's (nothing written).
    then_lease_lost: bool,
    /// The size of each `settle_many` batch, in order.
    batches: std::sync::Mutex<Vec<usize>>,
    /// When set, the first two `settle_many` calls (both of the dispatcher's writers) wait for
    /// it to open.
    gate: Option<tokio::sync::Semaphore>,
}

impl FlakySettlements {
    fn new(failures: u32, writes_first: bool) -> Self {
        Self {
            inner: subscribe_client::InMemoryGrantLedger::new(),
            failures: failures.into(),
            writes_first,
            calls: 0.into(),
            then_lease_lost: false,
            batches: std::sync::Mutex::default(),
            gate: None,
        }
    }
}

#[subscribe_client::async_trait]
impl GrantLedger for FlakySettlements {
    async fn record(
        &self,
        key: &subscribe_client::GrantKey,
        now: std::time::SystemTime,
    ) -> Result<subscribe_client::Recorded, subscribe_client::LedgerError> {
        self.inner.record(key, now).await
    }
    async fn pending_page(
        &self,
        scope: &subscribe_client::GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: std::time::SystemTime,
    ) -> Result<Vec<OpenId>, subscribe_client::LedgerError> {
        self.inner.pending_page(scope, after, limit, now).await
    }
    async fn reserve(
        &self,
        key: &subscribe_client::GrantKey,
        holder: &str,
        lease: Duration,
        now: std::time::SystemTime,
    ) -> Result<Option<subscribe_client::Reservation>, subscribe_client::LedgerError> {
        self.inner.reserve(key, holder, lease, now).await
    }
    async fn settle(
        &self,
        r: &subscribe_client::Reservation,
        s: subscribe_client::Settlement,
    ) -> Result<(), subscribe_client::LedgerError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        if self.failures.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            if self.writes_first {
                self.inner.settle(r, s).await?;
            }
            return Err(subscribe_client::LedgerError::backend("connection reset by peer"));
        }
        if self.then_lease_lost {
            return Err(subscribe_client::LedgerError::LeaseLost);
        }
        self.inner.settle(r, s).await
    }
    async fn settle_many(
        &self,
        items: Vec<(subscribe_client::Reservation, subscribe_client::Settlement)>,
    ) -> Vec<Result<(), subscribe_client::LedgerError>> {
        let call = {
            let mut batches = self.batches.lock().unwrap();
            batches.push(items.len());
            batches.len()
        };
        if let (Some(gate), true) = (&self.gate, call <= 2) {
            let _open = gate.acquire().await.unwrap();
        }
        let mut results = Vec::with_capacity(items.len());
        for (r, s) in items {
            results.push(self.settle(&r, s).await);
        }
        results
    }
    async fn get(
        &self,
        key: &subscribe_client::GrantKey,
    ) -> Result<Option<subscribe_client::GrantRecord>, subscribe_client::LedgerError> {
        self.inner.get(key).await
    }
    async fn counts(
        &self,
        scope: &subscribe_client::GrantScope,
        now: std::time::SystemTime,
    ) -> Result<subscribe_client::GrantCounts, subscribe_client::LedgerError> {
        self.inner.counts(scope, now).await
    }
    async fn reviews(
        &self,
        scope: &subscribe_client::GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<subscribe_client::ReviewItem>, subscribe_client::LedgerError> {
        self.inner.reviews(scope, after, limit).await
    }
    async fn resolve(
        &self,
        key: &subscribe_client::GrantKey,
        resolution: subscribe_client::Resolution,
        note: &str,
        now: std::time::SystemTime,
    ) -> Result<bool, subscribe_client::LedgerError> {
        self.inner.resolve(key, resolution, note, now).await
    }
}

/// A settlement the backend failed is written again while its reservation lasts, whether the
/// first write was lost before or after it landed: the delivery is recorded, not left to come
/// back as a second attempt and go to review.
#[tokio::test]
async fn a_settlement_the_backend_failed_is_written_again_while_the_reservation_lasts() {
    for writes_first in [false, true] {
        let mock = mock_with_stable_token("T1", 7200);
        mock.route("POST", SEND_PATH).reply(ok_reply());
        let ledger = Arc::new(FlakySettlements::new(2, writes_first));
        let key = scope().key(OpenId::new("oAlice").unwrap());
        ledger.record(&key, t0()).await.unwrap();
        let client = builder(&mock, &clock()).build().unwrap();
        let report =
            Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
                .run()
                .await
                .unwrap();
        let outcome = &report.outcomes[0];
        assert_eq!(outcome.kind, OutcomeKind::Delivered, "writes first: {writes_first}");
        assert_eq!(outcome.ledger_error, None, "recorded on a retry (writes first: {writes_first})");
        assert_eq!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Delivered);
        assert!(ledger.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2, "retried");
        assert_eq!(sends_per_user(&mock)["oAlice"], 1);
    }
}

/// While both of the dispatcher's settlement writers are busy, what finishes waits for the
/// next free writer in one batch: a batch is taken when a writer is free, not when its first
/// settlement arrives (then it stayed as small as that moment, and a database committed one
/// settlement at a time while the rest queued behind it). Here `oA` and `oB` finish first and
/// hold both writers; `oC` finishes alone while they are busy, the twenty `oD…` later; once the
/// writers are free, `oC` and the twenty are written together.
#[tokio::test(start_paused = true)]
async fn settlements_that_finish_while_every_writer_is_busy_are_written_in_one_batch() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).respond_with(|req| {
        let v: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        let after = match v["touser"].as_str().unwrap() {
            "oA" => 0,
            "oB" => 100,
            "oC" => 300,
            _ => 600,
        };
        ok_reply().delay(Duration::from_millis(after))
    });
    let ledger = Arc::new(FlakySettlements {
        gate: Some(tokio::sync::Semaphore::new(0)),
        ..FlakySettlements::new(0, false)
    });
    let mut users = vec!["oA".to_owned(), "oB".to_owned(), "oC".to_owned()];
    users.extend((0..20).map(|i| format!("oD{i:02}")));
    for u in &users {
        ledger.record(&scope().key(OpenId::new(u.as_str()).unwrap()), t0()).await.unwrap();
    }
    let client = builder(&mock, &clock()).build().unwrap();
    let dispatch = tokio::spawn({
        let ledger = Arc::clone(&ledger);
        async move {
            Dispatcher::one_time(client, ledger, scope().template_id, scope().scene, build)
                .concurrency(users.len())
                .run()
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*ledger.batches.lock().unwrap(), [1, 1], "oA and oB each hold a writer");
    ledger.gate.as_ref().unwrap().add_permits(2);
    let report = dispatch.await.unwrap().unwrap();
    assert_eq!(report.outcomes.len(), 23);
    assert!(report.outcomes.iter().all(|o| o.kind == OutcomeKind::Delivered && o.ledger_error.is_none()));
    assert_eq!(*ledger.batches.lock().unwrap(), [1, 1, 21], "oC and the twenty in one batch");
}

/// A backend that stays down is not retried past the reservation: the outcome carries the
/// ledger's error and the dispatch ends (the grant comes back after its lease).
#[tokio::test]
async fn a_settlement_still_failing_near_the_end_of_its_lease_is_reported_unrecorded() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let ledger = Arc::new(FlakySettlements::new(u32::MAX, false));
    let key = scope().key(OpenId::new("oAlice").unwrap());
    ledger.record(&key, t0()).await.unwrap();
    let client = builder(&mock, &clock()).build().unwrap();
    let mut dispatcher =
        Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
            .lease(Duration::from_millis(1_500));
    let report =
        tokio::time::timeout(Duration::from_secs(10), dispatcher.run()).await.expect("bounded").unwrap();
    let outcome = &report.outcomes[0];
    assert_eq!(outcome.kind, OutcomeKind::Delivered);
    assert_eq!(outcome.ledger_error.as_deref(), Some("grant ledger unavailable"));
    assert!(matches!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Reserved { .. }));
    let calls = ledger.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=4).contains(&calls), "retried within the lease only: {calls} calls");
}

/// A retry refused as another sender's counts as written only when the grant stands as the
/// settlement would have left it: here it is still reserved (the first write never landed),
/// so the delivery is reported unrecorded (the reservation lost), not recorded, and the
/// refusal is not retried.
#[tokio::test]
async fn a_retry_refused_as_another_senders_is_not_taken_for_a_write_that_landed() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let ledger = Arc::new(FlakySettlements { then_lease_lost: true, ..FlakySettlements::new(1, false) });
    let key = scope().key(OpenId::new("oAlice").unwrap());
    ledger.record(&key, t0()).await.unwrap();
    let client = builder(&mock, &clock()).build().unwrap();
    let report = Dispatcher::one_time(client, Arc::clone(&ledger), scope().template_id, scope().scene, build)
        .run()
        .await
        .unwrap();
    let outcome = &report.outcomes[0];
    assert_eq!(outcome.kind, OutcomeKind::Delivered);
    let error = outcome.ledger_error.as_deref().unwrap_or("none");
    assert!(error.contains("reservation was lost"), "not taken for written: {error}");
    assert!(ledger.calls.load(std::sync::atomic::Ordering::SeqCst) <= 3, "a refusal is not retried");
    assert!(matches!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Reserved { .. }));
}
