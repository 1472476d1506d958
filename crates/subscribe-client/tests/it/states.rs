//! Single-use authorization states: the in-memory store's contract, replays, and a failing,
//! hanging or answer-losing store of used states.

use std::sync::Arc;
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::{Answer, GrantLedger, GrantStatus, InMemoryGrantLedger, Recorded};
use subscribe_types::OpenId;

use crate::grants::{confirm, link, scope};
use crate::*;

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
        let claim = subscribe_client::Claim::new(Duration::from_secs(30));
        let first = store.mark_used(&state, &by, &claim, now + Duration::from_secs(900), now).await.unwrap();
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
        match record_redirect(&client, &confirm(&link, &format!("oForged{i:04}")), &ledger).await {
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
    record_redirect(&client, &confirm(&link, "oAlice"), &ledger).await.unwrap();
    let key = scope().key(OpenId::new("oAlice").unwrap());
    let r = ledger.reserve(&key, "h", Duration::from_secs(60), t0()).await.unwrap().unwrap();
    ledger.settle(&r, subscribe_client::Settlement::Review("timeout".into())).await.unwrap();

    assert!(record_redirect(&client, &confirm(&link, "oAlice"), &ledger).await.is_err());
    assert_eq!(
        ledger.get(&key).await.unwrap().unwrap().status,
        GrantStatus::Review { reason: "timeout".into() },
        "the evidence stays"
    );
    // A fresh confirmation, with a fresh state, is a new grant.
    let (_, rec) = record_redirect(&client, &confirm(&self::link(&client), "oAlice"), &ledger).await.unwrap();
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
    a.complete(Answer::Redirect(&confirm(&link, "oAlice")), &SESSION).await.unwrap().accept().await;
    assert!(matches!(
        b.complete(Answer::Redirect(&confirm(&link, "oMallory")), &SESSION).await,
        Err(subscribe_client::AuthorizationError::ReplayedState)
    ));
    // An instance with a store of its own cannot know: share one (Redis) across a fleet.
    alone.complete(Answer::Redirect(&confirm(&link, "oMallory")), &SESSION).await.unwrap().accept().await;
    // Cancellations use up nothing.
    let cancel =
        confirm(&link, "oAlice").replace("openid=oAlice&", "").replace("action=confirm", "action=cancel");
    b.complete(Answer::Redirect(&cancel), &SESSION).await.unwrap().accept().await;
    b.complete(Answer::Redirect(&cancel), &SESSION).await.unwrap().accept().await;
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
        _: &subscribe_client::Claim,
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
    async fn release(
        &self,
        _: &subscribe_types::Reserved,
        _: &subscribe_client::AnswerDigest,
        _: &subscribe_client::Claim,
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
        let err = record_redirect(&client, &confirm(&link(&client), "oAlice"), &ledger).await.unwrap_err();
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

#[tokio::test(start_paused = true)]
async fn a_lost_answer_of_the_used_states_store_loses_no_grant_and_lets_no_other_openid_in() {
    let clock = clock();
    let lossy = Arc::new(LostAnswers::new(Arc::new(subscribe_client::InMemoryUsedStates::new())));
    let client = builder(&MockTransport::new(), &clock).used_states(Arc::clone(&lossy)).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let link = link(&client);
    lossy.lose_next_mark();
    let err = record_redirect(&client, &confirm(&link, "oAlice"), &ledger).await.unwrap_err();
    assert_eq!(err.kind(), subscribe_client::ErrorKind::Retryable, "{err:?}");
    assert_eq!(lossy.lost(), 1, "the mark was made and its answer lost");
    let (_, rec) = record_redirect(&client, &confirm(&link, "oAlice"), &ledger)
        .await
        .expect("the user's retry of the same answer is accepted");
    assert_eq!(rec, Some(Recorded::Added));
    for other in ["oMallory", "oALICE", "oalice"] {
        assert!(
            matches!(
                record_redirect(&client, &confirm(&link, other), &ledger).await,
                Err(subscribe_client::RecordError::Authorization(
                    subscribe_client::AuthorizationError::ReplayedState
                ))
            ),
            "{other:?}: another openid (case counts) is a replay"
        );
    }
    assert!(
        matches!(
            record_redirect(&client, &confirm(&link, "oAlice"), &ledger).await,
            Err(subscribe_client::RecordError::Authorization(
                subscribe_client::AuthorizationError::AlreadyAccepted
            ))
        ),
        "once recorded, the same answer is already accepted"
    );
    assert_eq!(ledger.counts(&scope(), t0()).await.unwrap().pending, 1, "Alice's grant only");
}

/// The security review's sequence: two completions of one answer at once (a double submit, a
/// reloaded webview); the first records the grant and the grant is delivered; the second must
/// not renew it. Before claims, the second was a `Retry` and recorded `Renewed`.
#[tokio::test]
async fn a_double_submit_never_renews_a_delivered_grant() {
    let clock = clock();
    let client = builder(&MockTransport::new(), &clock).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let link = link(&client);
    let callback = confirm(&link, "oAlice");
    let a = client.complete(Answer::Redirect(&callback), &SESSION).await.unwrap();
    let b = client.complete(Answer::Redirect(&callback), &SESSION).await;
    let b = b.expect_err("the second completion while the first holds its claim");
    assert!(matches!(b, subscribe_client::AuthorizationError::InProgress), "{b:?}");
    assert_eq!(b.kind(), subscribe_client::ErrorKind::Retryable);
    let (_, rec) = a.record(&ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Added));
    let key = scope().key(OpenId::new("oAlice").unwrap());
    let r = ledger.reserve(&key, "dispatch", Duration::from_secs(60), t0()).await.unwrap().unwrap();
    ledger.settle(&r, subscribe_client::Settlement::Delivered).await.unwrap();
    // B's user retries: the answer was accepted, so it is refused as such, whenever it comes.
    for wait in [Duration::ZERO, Duration::from_secs(60)] {
        clock.advance(wait);
        let again = record_redirect(&client, &callback, &ledger).await.unwrap_err();
        assert!(
            matches!(
                again,
                subscribe_client::RecordError::Authorization(
                    subscribe_client::AuthorizationError::AlreadyAccepted
                )
            ),
            "{again:?}"
        );
        assert_eq!(again.kind(), subscribe_client::ErrorKind::Invalid);
    }
    assert_eq!(
        ledger.get(&key).await.unwrap().unwrap().status,
        GrantStatus::Delivered,
        "the grant stays used"
    );
}

#[tokio::test]
async fn a_dropped_completions_claim_lapses_and_then_the_retry_goes_through() {
    let clock = clock();
    let client = builder(&MockTransport::new(), &clock).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let link = link(&client);
    let callback = confirm(&link, "oAlice");
    drop(client.complete(Answer::Redirect(&callback), &SESSION).await.unwrap());
    clock.advance(subscribe_client::Claim::CLAIM_PERIOD.checked_sub(Duration::from_secs(1)).unwrap());
    assert!(matches!(
        client.complete(Answer::Redirect(&callback), &SESSION).await,
        Err(subscribe_client::AuthorizationError::InProgress)
    ));
    clock.advance(Duration::from_secs(2));
    let (_, rec) = record_redirect(&client, &callback, &ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Added), "the claim lapsed: the user's retry is recorded");
}

/// In-memory used states whose first seal takes `delay` (a slow store), the rest as the inner
/// store's.
#[derive(Debug)]
struct SlowFirstSeal {
    inner: subscribe_client::InMemoryUsedStates,
    delay: Duration,
    seals: std::sync::atomic::AtomicUsize,
}

#[subscribe_client::async_trait]
impl subscribe_client::UsedStates for SlowFirstSeal {
    async fn mark_used(
        &self,
        state: &subscribe_types::Reserved,
        by: &subscribe_client::AnswerDigest,
        claim: &subscribe_client::Claim,
        expires: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<subscribe_client::StateUse, subscribe_client::UsedStatesError> {
        self.inner.mark_used(state, by, claim, expires, now).await
    }
    async fn seal(
        &self,
        state: &subscribe_types::Reserved,
        by: &subscribe_client::AnswerDigest,
    ) -> Result<(), subscribe_client::UsedStatesError> {
        if self.seals.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.seal(state, by).await
    }
    async fn release(
        &self,
        state: &subscribe_types::Reserved,
        by: &subscribe_client::AnswerDigest,
        claim: &subscribe_client::Claim,
    ) -> Result<(), subscribe_client::UsedStatesError> {
        self.inner.release(state, by, claim).await
    }
}

/// A `record` dropped after the ledger's write and before the seal (the request timed out, the
/// user closed the page) still seals: the same answer later is `AlreadyAccepted`, never a retry
/// that could renew the grant once its message was delivered.
#[tokio::test]
async fn a_record_dropped_after_the_ledger_wrote_still_seals_its_answer() {
    let clock = clock();
    let used = Arc::new(SlowFirstSeal {
        inner: subscribe_client::InMemoryUsedStates::new(),
        delay: Duration::from_millis(300),
        seals: std::sync::atomic::AtomicUsize::new(0),
    });
    let client = builder(&MockTransport::new(), &clock).used_states(Arc::clone(&used)).build().unwrap();
    let ledger = InMemoryGrantLedger::new();
    let callback = confirm(&link(&client), "oAlice");
    let completion = client.complete(Answer::Redirect(&callback), &SESSION).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(50), completion.record(&ledger)).await;
    assert!(cut.is_err(), "dropped while sealing");
    let key = scope().key(OpenId::new("oAlice").unwrap());
    assert_eq!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Pending, "written");
    // The seal the dropped future could not finish runs on its own task.
    let mut sealed = false;
    for _ in 0..100 {
        if used.seals.load(std::sync::atomic::Ordering::SeqCst) >= 2 {
            sealed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sealed, "the guard sealed again from a task of its own");
    let r = ledger.reserve(&key, "dispatch", Duration::from_secs(60), t0()).await.unwrap().unwrap();
    ledger.settle(&r, subscribe_client::Settlement::Delivered).await.unwrap();
    clock.advance(subscribe_client::Claim::CLAIM_PERIOD + Duration::from_secs(1));
    let again = record_redirect(&client, &callback, &ledger).await.unwrap_err();
    assert!(
        matches!(
            again,
            subscribe_client::RecordError::Authorization(
                subscribe_client::AuthorizationError::AlreadyAccepted
            )
        ),
        "{again:?}"
    );
    assert_eq!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Delivered, "not renewed");
}

/// A ledger that never answers: `record` gives up after `store_timeout` (well within the claim,
/// which outlives the whole completion), releases the claim, and the user's retry goes through.
#[tokio::test]
async fn a_hanging_ledger_is_bounded_by_the_store_timeout_and_the_retry_goes_through() {
    let clock = clock();
    let client =
        builder(&MockTransport::new(), &clock).store_timeout(Duration::from_millis(100)).build().unwrap();
    let callback = confirm(&link(&client), "oAlice");
    let hanging = HangingLedger;
    let started = std::time::Instant::now();
    let e = record_redirect(&client, &callback, &hanging).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "bounded: {:?}", started.elapsed());
    assert!(matches!(e, subscribe_client::RecordError::Ledger(_)), "{e:?}");
    assert_eq!(e.kind(), subscribe_client::ErrorKind::Retryable);
    let ledger = InMemoryGrantLedger::new();
    let (_, rec) = record_redirect(&client, &callback, &ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Added), "the claim was released: the retry is recorded at once");
}

/// A grant ledger whose every call hangs.
#[derive(Debug)]
struct HangingLedger;

#[subscribe_client::async_trait]
impl GrantLedger for HangingLedger {
    async fn record(
        &self,
        _: &subscribe_client::GrantKey,
        _: std::time::SystemTime,
    ) -> Result<Recorded, subscribe_client::LedgerError> {
        std::future::pending().await
    }
    async fn pending_page(
        &self,
        _: &subscribe_client::GrantScope,
        _: Option<&OpenId>,
        _: usize,
        _: std::time::SystemTime,
    ) -> Result<Vec<OpenId>, subscribe_client::LedgerError> {
        std::future::pending().await
    }
    async fn reserve(
        &self,
        _: &subscribe_client::GrantKey,
        _: &str,
        _: Duration,
        _: std::time::SystemTime,
    ) -> Result<Option<subscribe_client::Reservation>, subscribe_client::LedgerError> {
        std::future::pending().await
    }
    async fn settle(
        &self,
        _: &subscribe_client::Reservation,
        _: subscribe_client::Settlement,
    ) -> Result<(), subscribe_client::LedgerError> {
        std::future::pending().await
    }
    async fn get(
        &self,
        _: &subscribe_client::GrantKey,
    ) -> Result<Option<subscribe_client::GrantRecord>, subscribe_client::LedgerError> {
        std::future::pending().await
    }
    async fn counts(
        &self,
        _: &subscribe_client::GrantScope,
        _: std::time::SystemTime,
    ) -> Result<subscribe_client::GrantCounts, subscribe_client::LedgerError> {
        std::future::pending().await
    }
    async fn reviews(
        &self,
        _: &subscribe_client::GrantScope,
        _: Option<&OpenId>,
        _: usize,
    ) -> Result<Vec<subscribe_client::ReviewItem>, subscribe_client::LedgerError> {
        std::future::pending().await
    }
    async fn resolve(
        &self,
        _: &subscribe_client::GrantKey,
        _: subscribe_client::Resolution,
        _: &str,
        _: std::time::SystemTime,
    ) -> Result<bool, subscribe_client::LedgerError> {
        std::future::pending().await
    }
}
