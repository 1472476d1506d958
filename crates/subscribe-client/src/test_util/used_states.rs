//! [`used_states_contract`]: the rules every store of used authorization states keeps, also
//! when its answers are lost.

use std::time::Duration;

use super::{LostAnswers, MockTransport};

/// The [`UsedStates`](crate::UsedStates) contract. Panics, naming the broken rule, when the
/// store breaks it. Same calling convention as
/// [`token_store_contract`](super::token_store_contract); uses fresh random states, with
/// expiries relative to now (a store may keep marks by its own clock, as Redis and SQL
/// databases do).
///
/// It checks that `mark_used` marks a state as its answer's and claims it (a new state is
/// [`First`](crate::StateUse::First); the same answer again is
/// [`InProgress`](crate::StateUse::InProgress) while another claim is live, and a
/// [`Retry`](crate::StateUse::Retry), taking the claim, once it was released; another answer is
/// [`Used`](crate::StateUse::Used); states are independent), that `release` ends only the
/// claim it names, that `seal` by the answer that made the mark makes it
/// [`Accepted`](crate::StateUse::Accepted) for that answer and by another answer changes
/// nothing, that of 64 concurrent uses of one state by two answers exactly one is the first and
/// no other goes on, that a claim lapses after its period (1 s, checked 2 s later), and that a
/// mark is kept for its lifetime: a state marked with a lifetime of 4 s is still used 2 s
/// later, waited for in real time (so a store that keeps marks for a second, or reads a
/// lifetime in seconds as milliseconds, fails).
///
/// Then, through a [`Client`](crate::Client) on the store: two completions of one answer at
/// once (a double submit) record one grant, and once it is delivered the other cannot renew
/// it; and, on the store wrapped in [`LostAnswers`], when a mark lands and its answer is lost
/// (the store times out), the user's retry of the same answer is recorded and every other
/// answer with that state (another openid, the same one in another case) is refused; when the
/// seal lands and its answer is lost, the grant is recorded and the same answer later is
/// refused. The suite takes about three seconds.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// subscribe_client::test_util::used_states_contract(Arc::new(subscribe_client::InMemoryUsedStates::new())).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
pub async fn used_states_contract<S: crate::UsedStates + ?Sized + 'static>(store: std::sync::Arc<S>) {
    use crate::{AnswerDigest, Clock as _, StateUse};
    let now = crate::SystemClock.now();
    let expires = now + Duration::from_secs(600);
    let state = contract_state;
    let by = |state: &subscribe_types::Reserved, openid: &str| {
        AnswerDigest::of(state, &subscribe_types::OpenId::new(openid).unwrap_or_else(|e| panic!("{e}")))
    };
    let (a, b, c) = (state(), state(), state());
    let (alice, mallory) = (by(&a, CONTRACT_ALICE), by(&a, CONTRACT_MALLORY));
    let claim = || crate::Claim::new(Duration::from_secs(60));
    let mark_with = |s: &subscribe_types::Reserved, d: &AnswerDigest, claim: &crate::Claim| {
        let (store, state, digest, claim) =
            (std::sync::Arc::clone(&store), s.clone(), d.clone(), claim.clone());
        async move { store.mark_used(&state, &digest, &claim, expires, now).await.expect("mark_used") }
    };
    let mark = |s: &subscribe_types::Reserved, d: &AnswerDigest| mark_with(s, d, &claim());
    let release = |s: &subscribe_types::Reserved, d: &AnswerDigest, claim: &crate::Claim| {
        let (store, state, digest, claim) =
            (std::sync::Arc::clone(&store), s.clone(), d.clone(), claim.clone());
        async move { store.release(&state, &digest, &claim).await.expect("release") }
    };
    let (first, second) = (claim(), claim());
    assert_eq!(mark_with(&a, &alice, &first).await, StateUse::First, "mark_used: a new state is unused");
    assert_eq!(
        mark_with(&a, &alice, &second).await,
        StateUse::InProgress,
        "mark_used: the same answer again, while the first call's claim is live, is in progress"
    );
    assert_eq!(mark(&a, &mallory).await, StateUse::Used, "mark_used: another answer finds the state used");
    release(&a, &alice, &second).await;
    release(&a, &mallory, &first).await;
    assert_eq!(
        mark(&a, &alice).await,
        StateUse::InProgress,
        "release: by a claim that is not the mark's, or by another answer, nothing changes"
    );
    release(&a, &alice, &first).await;
    assert_eq!(
        mark_with(&a, &alice, &second).await,
        StateUse::Retry,
        "mark_used: the same answer again is a retry once the claim was released"
    );
    assert_eq!(
        mark(&a, &alice).await,
        StateUse::InProgress,
        "mark_used: a retry takes the claim (a third call is in progress)"
    );
    release(&a, &alice, &second).await;
    assert_eq!(mark(&b, &by(&b, CONTRACT_ALICE)).await, StateUse::First, "mark_used: states are independent");
    store.seal(&a, &mallory).await.expect("seal");
    let third = claim();
    assert_eq!(
        mark_with(&a, &alice, &third).await,
        StateUse::Retry,
        "seal: by another answer, nothing changes"
    );
    store.seal(&a, &alice).await.expect("seal");
    assert_eq!(
        mark(&a, &alice).await,
        StateUse::Accepted,
        "seal: once sealed, the same answer finds the state accepted"
    );
    release(&a, &alice, &third).await;
    assert_eq!(mark(&a, &alice).await, StateUse::Accepted, "release: a sealed mark stays sealed");
    assert_eq!(mark(&a, &mallory).await, StateUse::Used, "seal: once sealed, another answer finds it used");
    store.seal(&c, &by(&c, CONTRACT_ALICE)).await.expect("seal: a state never used is no error");
    assert_eq!(
        mark(&c, &by(&c, CONTRACT_ALICE)).await,
        StateUse::First,
        "seal: a state never used stays unused"
    );

    concurrent_uses(&store, expires, now).await;

    lifetimes(&store, expires).await;

    double_submit_renews_nothing(std::sync::Arc::clone(&store)).await;
    lost_answers_lose_no_grant(store).await;
}

/// The timed part of [`used_states_contract`]: a claim lapses after its period, a mark is kept
/// for its lifetime, both waited for in real time.
async fn lifetimes<S: crate::UsedStates + ?Sized + 'static>(
    store: &std::sync::Arc<S>,
    expires: std::time::SystemTime,
) {
    use crate::{AnswerDigest, Clock as _, StateUse};
    let state = contract_state;
    let by = |state: &subscribe_types::Reserved, openid: &str| {
        AnswerDigest::of(state, &subscribe_types::OpenId::new(openid).unwrap_or_else(|e| panic!("{e}")))
    };
    // A claim lapses after its period, on the store's clock: a claim of 1 s taken now, and an
    // answer that comes back 2 s later (below) goes on.
    let lapsing = state();
    let lapsing_by = by(&lapsing, CONTRACT_ALICE);
    let short = crate::Claim::new(Duration::from_secs(1));
    assert_eq!(
        store
            .mark_used(&lapsing, &lapsing_by, &short, expires, crate::SystemClock.now())
            .await
            .expect("mark_used"),
        StateUse::First,
        "mark_used: a new state"
    );

    // A mark outlives 2 s of a 4 s lifetime, waited for in real time: a store that keeps marks
    // by its own clock, in the wrong unit or for a fixed second, has dropped it by then.
    let kept = state();
    let (first, other) = (by(&kept, CONTRACT_ALICE), by(&kept, CONTRACT_MALLORY));
    let marked = crate::SystemClock.now();
    let lifetime = Duration::from_secs(4);
    assert_eq!(
        store
            .mark_used(&kept, &first, &crate::Claim::new(Duration::from_secs(60)), marked + lifetime, marked)
            .await
            .expect("mark_used"),
        StateUse::First,
        "mark_used: a new state"
    );
    tokio::time::sleep(MARK_CHECKED_AFTER).await;
    assert_eq!(
        store
            .mark_used(
                &kept,
                &other,
                &crate::Claim::new(Duration::from_secs(60)),
                marked + lifetime,
                crate::SystemClock.now()
            )
            .await
            .expect("mark_used"),
        StateUse::Used,
        "mark_used: a mark is kept until its state expires (marked with a lifetime of {lifetime:?}, \
         the state was unused again {MARK_CHECKED_AFTER:?} later)"
    );
    assert_eq!(
        store
            .mark_used(
                &lapsing,
                &lapsing_by,
                &crate::Claim::new(Duration::from_secs(60)),
                expires,
                crate::SystemClock.now()
            )
            .await
            .expect("mark_used"),
        StateUse::Retry,
        "mark_used: a claim lapses after its period (a claim of 1 s was still live {MARK_CHECKED_AFTER:?} later)"
    );
}

/// The race part of [`used_states_contract`]: 64 concurrent uses of one state.
async fn concurrent_uses<S: crate::UsedStates + ?Sized + 'static>(
    store: &std::sync::Arc<S>,
    expires: std::time::SystemTime,
    now: std::time::SystemTime,
) {
    use crate::{AnswerDigest, StateUse};
    let raced = contract_state();
    let by = |openid: &str| {
        AnswerDigest::of(&raced, &subscribe_types::OpenId::new(openid).unwrap_or_else(|e| panic!("{e}")))
    };
    let answers = [by(CONTRACT_ALICE), by(CONTRACT_MALLORY)];
    let mark = |d: &AnswerDigest| {
        let (store, state, digest) = (std::sync::Arc::clone(store), raced.clone(), d.clone());
        let claim = crate::Claim::new(Duration::from_secs(60));
        async move { store.mark_used(&state, &digest, &claim, expires, now).await.expect("mark_used") }
    };
    // 64 concurrent uses of one state, by two answers in turn, each with its own claim: one is
    // the first, and no other use goes on while its claim is live (the same answer's are in
    // progress, the other answer's are used).
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let use_ = mark(&answers[i % 2]);
        tasks.spawn(async move { (i % 2, use_.await) });
    }
    let (mut firsts, mut accepted, mut in_progress) = (0, [0usize; 2], [0usize; 2]);
    while let Some(joined) = tasks.join_next().await {
        let (answer, use_) = joined.expect("task");
        firsts += usize::from(use_ == StateUse::First);
        accepted[answer] += usize::from(use_.accepts());
        in_progress[answer] += usize::from(use_ == StateUse::InProgress);
    }
    assert_eq!(firsts, 1, "mark_used: exactly one of 64 concurrent uses of a state is the first");
    accepted.sort_unstable();
    assert_eq!(accepted, [0, 1], "mark_used: of 64 concurrent uses of a state, only the first goes on");
    in_progress.sort_unstable();
    assert_eq!(in_progress, [0, 31], "mark_used: the first answer's other 31 uses are in progress");
}

/// A fresh random state, as the client signs them (digits and hex).
fn contract_state() -> subscribe_types::Reserved {
    let mut n = [0u8; 16];
    let _ = getrandom::fill(&mut n);
    subscribe_types::Reserved::new(format!("1{}", hex::encode(n)))
        .unwrap_or_else(|e| panic!("contract state: {e}"))
}

/// Two users of [`used_states_contract`]: openids as WeChat issues them (28 characters).
const CONTRACT_ALICE: &str = "oContract_Alice_00000000001";
const CONTRACT_MALLORY: &str = "oContract_Mallory_000000001";

/// The client part of [`used_states_contract`]: two completions of one answer at once (a
/// double submit, a reloaded webview). The first records the grant, the grant is delivered,
/// and the second, refused while the first held its claim, is refused again once it was
/// accepted: the delivered grant is not renewed.
async fn double_submit_renews_nothing<S: crate::UsedStates + ?Sized + 'static>(store: std::sync::Arc<S>) {
    use crate::{AuthorizationError, ErrorKind, GrantLedger as _, GrantStatus, Recorded, Settlement};
    let (client, scope) = contract_client(store, Duration::from_secs(3));
    let ledger = crate::InMemoryGrantLedger::new();
    let session = &crate::Session::new("contract-session").unwrap_or_else(|e| panic!("{e}"));
    let redirect =
        subscribe_types::RedirectUrl::new("https://contract.example/cb").unwrap_or_else(|e| panic!("{e}"));
    let link = client.authorize_url(&scope.template_id, scope.scene, &redirect, session);
    let callback = format!(
        "openid={CONTRACT_ALICE}&template_id={}&action=confirm&scene=1&reserved={}",
        scope.template_id.as_str(),
        link.request.reserved.as_str()
    );
    let complete = || client.complete(crate::Answer::Redirect(&callback), session);
    let (a, b) = tokio::join!(complete(), complete());
    let (a, b) = match (a, b) {
        (Ok(a), Err(b)) | (Err(b), Ok(a)) => (a, b),
        (a, b) => panic!("double submit: exactly one of two concurrent completions goes on: {a:?}, {b:?}"),
    };
    assert!(
        matches!(b, AuthorizationError::InProgress) && b.kind() == ErrorKind::Retryable,
        "double submit: the other completion is in progress, retryable: {b:?}"
    );
    let (_, recorded) = a.record(&ledger).await.unwrap_or_else(|e| panic!("double submit: record: {e:?}"));
    assert_eq!(recorded, Some(Recorded::Added), "double submit: the first completion records the grant");
    let key = scope.key(subscribe_types::OpenId::new(CONTRACT_ALICE).unwrap_or_else(|e| panic!("{e}")));
    let now = crate::Clock::now(&crate::SystemClock);
    let reservation = ledger
        .reserve(&key, "contract-dispatch", Duration::from_secs(60), now)
        .await
        .expect("reserve")
        .expect("double submit: the grant is pending");
    ledger.settle(&reservation, Settlement::Delivered).await.expect("settle");
    let again = complete().await;
    assert!(
        matches!(again, Err(AuthorizationError::AlreadyAccepted)),
        "double submit: the other completion's retry finds the answer already accepted: {again:?}"
    );
    let record = ledger.get(&key).await.expect("get").expect("the grant");
    assert_eq!(record.status, GrantStatus::Delivered, "double submit: the delivered grant is not renewed");
}

/// A client on `store` for the contract, and the grant scope its answers confirm.
fn contract_client<S: crate::UsedStates + ?Sized + 'static>(
    store: std::sync::Arc<S>,
    store_timeout: Duration,
) -> (crate::Client, crate::GrantScope) {
    use subscribe_types::{AppId, AppSecret, Scene, TemplateId};
    let appid = AppId::new("wx0000000000c0de5a").unwrap_or_else(|e| panic!("{e}"));
    let client = crate::Client::builder(
        appid.clone(),
        AppSecret::new("contract-app-secret-0123456789abcdef").unwrap_or_else(|e| panic!("{e}")),
    )
    .transport(MockTransport::new())
    .used_states(store)
    .store_timeout(store_timeout)
    .build()
    .unwrap_or_else(|e| panic!("contract client: {e}"));
    let scope = crate::GrantScope {
        appid,
        template_id: TemplateId::new("ContractTemplate_0000000000000000000000001")
            .unwrap_or_else(|e| panic!("{e}")),
        scene: Scene::new(1).unwrap_or_else(|e| panic!("{e}")),
    };
    (client, scope)
}

/// The client part of [`used_states_contract`]: a mark or a seal that lands with its answer
/// lost.
async fn lost_answers_lose_no_grant<S: crate::UsedStates + ?Sized + 'static>(store: std::sync::Arc<S>) {
    use crate::{AuthorizationError, ErrorKind, GrantLedger as _, RecordError, Recorded};
    use subscribe_types::{OpenId, RedirectUrl};
    let lossy = std::sync::Arc::new(LostAnswers::new(store));
    let (client, scope) = contract_client(std::sync::Arc::clone(&lossy), Duration::from_millis(300));
    let ledger = crate::InMemoryGrantLedger::new();
    let redirect = RedirectUrl::new("https://contract.example/cb").unwrap_or_else(|e| panic!("{e}"));
    let session = &crate::Session::new("contract-session").unwrap_or_else(|e| panic!("{e}"));
    let link = || client.authorize_url(&scope.template_id, scope.scene, &redirect, session);
    let confirm = |link: &crate::AuthorizationLink, openid: &str| {
        format!(
            "openid={openid}&template_id={}&action=confirm&scene=1&reserved={}",
            scope.template_id.as_str(),
            link.request.reserved.as_str()
        )
    };
    let record = async |callback: &str| -> Result<_, RecordError> {
        client.complete(crate::Answer::Redirect(callback), session).await?.record(&ledger).await
    };
    let replayed = |r: Result<_, RecordError>| {
        matches!(r, Err(RecordError::Authorization(AuthorizationError::ReplayedState)))
    };
    let accepted = |r: Result<_, RecordError>| {
        matches!(r, Err(RecordError::Authorization(AuthorizationError::AlreadyAccepted)))
    };

    let first = link();
    lossy.lose_next_mark();
    let lost = record(&confirm(&first, CONTRACT_ALICE)).await;
    assert!(
        matches!(&lost, Err(e @ RecordError::Authorization(AuthorizationError::UsedStates(_))) if e.kind() == ErrorKind::Retryable),
        "lost answers: a mark whose answer is lost is a retryable error: {lost:?}"
    );
    assert_eq!(lossy.lost(), 1, "lost answers: the wrapper made the mark and lost its answer");
    let retried = record(&confirm(&first, CONTRACT_ALICE)).await;
    assert!(
        matches!(retried, Ok((_, Some(Recorded::Added)))),
        "lost answers: the retry of an answer whose mark landed (its answer lost) is recorded: {retried:?}"
    );
    for other in [CONTRACT_MALLORY.to_owned(), CONTRACT_ALICE.to_lowercase(), CONTRACT_ALICE.to_uppercase()] {
        assert!(
            replayed(record(&confirm(&first, &other)).await),
            "lost answers: another openid ({other}) with the state is a replay"
        );
    }
    assert!(
        accepted(record(&confirm(&first, CONTRACT_ALICE)).await),
        "lost answers: the same answer after it was recorded is already accepted"
    );

    let second = link();
    lossy.lose_next_seal();
    let sealed = record(&confirm(&second, CONTRACT_MALLORY)).await;
    assert!(
        matches!(sealed, Ok((_, Some(Recorded::Added)))),
        "lost answers: a lost answer to the seal loses nothing: {sealed:?}"
    );
    assert_eq!(lossy.lost(), 2, "lost answers: the wrapper made the seal and lost its answer");
    assert!(
        accepted(record(&confirm(&second, CONTRACT_MALLORY)).await),
        "lost answers: the seal landed, so the same answer again is already accepted"
    );
    let now = crate::SystemClock;
    let counts = ledger.counts(&scope, crate::Clock::now(&now)).await.expect("counts");
    assert_eq!(counts.pending, 2, "lost answers: one grant per state, none lost");
    for (openid, recorded) in [(CONTRACT_ALICE, true), (CONTRACT_MALLORY, true)] {
        let key = scope.key(OpenId::new(openid).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(ledger.get(&key).await.expect("get").is_some(), recorded, "lost answers: {openid}");
    }
}

/// How long [`used_states_contract`] waits before it checks that a mark is still there.
const MARK_CHECKED_AFTER: Duration = Duration::from_secs(2);
