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
/// It checks that `mark_used` marks a state as its answer's (a new state is
/// [`First`](crate::StateUse::First); the same answer again is a
/// [`Retry`](crate::StateUse::Retry); another answer is [`Used`](crate::StateUse::Used); states
/// are independent), that `seal` by the answer that made the mark makes it `Used` for that
/// answer too and by another answer changes nothing, that of 64 concurrent uses of one state by
/// two answers exactly one is the first and only its answer's uses are accepted, and that a
/// mark is kept for its lifetime: a state marked with a lifetime of 4 s is still used 2 s
/// later, waited for in real time (so a store that keeps marks for a second, or reads a
/// lifetime in seconds as milliseconds, fails).
///
/// Then, through a [`Client`](crate::Client) on the store wrapped in [`LostAnswers`]: when a
/// mark lands and its answer is lost (the store times out), the user's retry of the same answer
/// is recorded and every other answer with that state (another openid, the same one in
/// another case) is refused; when the seal lands and its answer is lost, the grant is recorded
/// and the same answer later is refused. The suite takes about three seconds.
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
    let state = || {
        let mut n = [0u8; 16];
        let _ = getrandom::fill(&mut n);
        subscribe_types::Reserved::new(format!("1{}", hex::encode(n)))
            .unwrap_or_else(|e| panic!("contract state: {e}"))
    };
    let by = |state: &subscribe_types::Reserved, openid: &str| {
        AnswerDigest::of(state, &subscribe_types::OpenId::new(openid).unwrap_or_else(|e| panic!("{e}")))
    };
    let (a, b, c) = (state(), state(), state());
    let (alice, mallory) = (by(&a, CONTRACT_ALICE), by(&a, CONTRACT_MALLORY));
    let mark = |s: &subscribe_types::Reserved, d: &AnswerDigest| {
        let (store, state, digest) = (std::sync::Arc::clone(&store), s.clone(), d.clone());
        async move { store.mark_used(&state, &digest, expires, now).await.expect("mark_used") }
    };
    assert_eq!(mark(&a, &alice).await, StateUse::First, "mark_used: a new state is unused");
    assert_eq!(mark(&a, &alice).await, StateUse::Retry, "mark_used: the same answer again is a retry");
    assert_eq!(mark(&a, &mallory).await, StateUse::Used, "mark_used: another answer finds the state used");
    assert_eq!(
        mark(&a, &alice).await,
        StateUse::Retry,
        "mark_used: another answer leaves the mark as it was"
    );
    assert_eq!(mark(&b, &by(&b, CONTRACT_ALICE)).await, StateUse::First, "mark_used: states are independent");
    store.seal(&a, &mallory).await.expect("seal");
    assert_eq!(mark(&a, &alice).await, StateUse::Retry, "seal: by another answer, nothing changes");
    store.seal(&a, &alice).await.expect("seal");
    assert_eq!(
        mark(&a, &alice).await,
        StateUse::Used,
        "seal: once sealed, the same answer finds the state used"
    );
    assert_eq!(mark(&a, &mallory).await, StateUse::Used, "seal: once sealed, another answer finds it used");
    store.seal(&c, &by(&c, CONTRACT_ALICE)).await.expect("seal: a state never used is no error");
    assert_eq!(
        mark(&c, &by(&c, CONTRACT_ALICE)).await,
        StateUse::First,
        "seal: a state never used stays unused"
    );

    // 64 concurrent uses of one state, by two answers in turn: one is the first, and only its
    // answer's uses are accepted.
    let raced = state();
    let answers = [by(&raced, CONTRACT_ALICE), by(&raced, CONTRACT_MALLORY)];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let use_ = mark(&raced, &answers[i % 2]);
        tasks.spawn(async move { (i % 2, use_.await) });
    }
    let (mut firsts, mut accepted) = (0, [0usize; 2]);
    while let Some(joined) = tasks.join_next().await {
        let (answer, use_) = joined.expect("task");
        firsts += usize::from(use_ == StateUse::First);
        accepted[answer] += usize::from(use_.accepts());
    }
    assert_eq!(firsts, 1, "mark_used: exactly one of 64 concurrent uses of a state is the first");
    accepted.sort_unstable();
    assert_eq!(accepted, [0, 32], "mark_used: the first answer's 32 uses are accepted, the other's none");

    // A mark outlives 2 s of a 4 s lifetime, waited for in real time: a store that keeps marks
    // by its own clock, in the wrong unit or for a fixed second, has dropped it by then.
    let kept = state();
    let (first, other) = (by(&kept, CONTRACT_ALICE), by(&kept, CONTRACT_MALLORY));
    let marked = crate::SystemClock.now();
    let lifetime = Duration::from_secs(4);
    assert_eq!(
        store.mark_used(&kept, &first, marked + lifetime, marked).await.expect("mark_used"),
        StateUse::First,
        "mark_used: a new state"
    );
    tokio::time::sleep(MARK_CHECKED_AFTER).await;
    assert_eq!(
        store.mark_used(&kept, &other, marked + lifetime, crate::SystemClock.now()).await.expect("mark_used"),
        StateUse::Used,
        "mark_used: a mark is kept until its state expires (marked with a lifetime of {lifetime:?}, \
         the state was unused again {MARK_CHECKED_AFTER:?} later)"
    );

    lost_answers_lose_no_grant(store).await;
}

/// Two users of [`used_states_contract`]: openids as WeChat issues them (28 characters).
const CONTRACT_ALICE: &str = "oContract_Alice_00000000001";
const CONTRACT_MALLORY: &str = "oContract_Mallory_000000001";

/// The client part of [`used_states_contract`]: a mark or a seal that lands with its answer
/// lost.
async fn lost_answers_lose_no_grant<S: crate::UsedStates + ?Sized + 'static>(store: std::sync::Arc<S>) {
    use crate::{AuthorizationError, ErrorKind, GrantLedger as _, GrantScope, RecordError, Recorded};
    use subscribe_types::{AppId, AppSecret, HttpUrl, OpenId, Scene, TemplateId};
    let lossy = std::sync::Arc::new(LostAnswers::new(store));
    let appid = AppId::new("wx0000000000c0de5a").unwrap_or_else(|e| panic!("{e}"));
    let client = crate::Client::builder(
        appid.clone(),
        AppSecret::new("contract-app-secret-0123456789abcdef").unwrap_or_else(|e| panic!("{e}")),
    )
    .transport(MockTransport::new())
    .used_states(std::sync::Arc::clone(&lossy))
    .store_timeout(Duration::from_millis(300))
    .build()
    .unwrap_or_else(|e| panic!("contract client: {e}"));
    let scope = GrantScope {
        appid,
        template_id: TemplateId::new("ContractTemplate_0000000000000000000000001")
            .unwrap_or_else(|e| panic!("{e}")),
        scene: Scene::new(1).unwrap_or_else(|e| panic!("{e}")),
    };
    let ledger = crate::InMemoryGrantLedger::new();
    let redirect = HttpUrl::new("https://contract.example/cb").unwrap_or_else(|e| panic!("{e}"));
    let session = "contract-session";
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
        replayed(record(&confirm(&first, CONTRACT_ALICE)).await),
        "lost answers: the same answer after it was recorded is a replay"
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
        replayed(record(&confirm(&second, CONTRACT_MALLORY)).await),
        "lost answers: the seal landed, so the same answer again is a replay"
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
