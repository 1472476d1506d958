//! The grant ledger: its contract on the in-memory ledger, recording confirmations, grant
//! keys, and the ledger's errors; helpers the dispatch and used-state tests share.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::{
    GrantKey, GrantLedger, GrantScope, GrantStatus, InMemoryGrantLedger, LedgerError, Recorded,
};
use subscribe_types::{OneTimeMessage, OpenId, Scene, TemplateId, ValidationError};

use crate::*;
pub(crate) fn scope() -> GrantScope {
    GrantScope {
        appid: appid(),
        template_id: TemplateId::new(TEMPLATE).unwrap(),
        scene: Scene::new(1000).unwrap(),
    }
}

pub(crate) fn build(to: &OpenId) -> Result<OneTimeMessage, ValidationError> {
    OneTimeMessage::builder(to.clone(), TemplateId::new(TEMPLATE)?, Scene::new(1000)?)
        .title("到货提醒")
        .content("到货了")
        .build()
}

pub(crate) async fn ledger_with(users: &[&str]) -> Arc<InMemoryGrantLedger> {
    let ledger = Arc::new(InMemoryGrantLedger::new());
    for u in users {
        ledger.record(&scope().key(OpenId::new(*u).unwrap()), t0()).await.unwrap();
    }
    ledger
}

/// Counts sends per recipient (from the request bodies).
pub(crate) fn sends_per_user(mock: &MockTransport) -> HashMap<String, usize> {
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
        &subscribe_types::RedirectUrl::new("https://a.example/cb").unwrap(),
        &SESSION,
    );
    let cb = |action: &str| {
        format!(
            "https://a.example/cb?openid=oAlice&template_id={TEMPLATE}&action={action}&scene=1000&reserved={}",
            link.request.reserved.as_str()
        )
    };
    let (_, rec) = record_redirect(&client, &cb("confirm"), &ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Added));
    let replay = record_redirect(&client, &cb("confirm"), &ledger).await.unwrap_err();
    assert!(
        matches!(
            replay,
            subscribe_client::RecordError::Authorization(
                subscribe_client::AuthorizationError::AlreadyAccepted
            )
        ),
        "a state confirms once: {replay:?}"
    );
    let (answer, rec) = record_redirect(&client, &cb("cancel"), &ledger).await.unwrap();
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
    let err = record_redirect(&client, &forged, &ledger).await.unwrap_err();
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
pub(crate) fn confirm(link: &subscribe_client::AuthorizationLink, openid: &str) -> String {
    format!(
        "https://a.example/cb?openid={openid}&template_id={TEMPLATE}&action=confirm&scene=1000&reserved={}",
        link.request.reserved.as_str()
    )
}

pub(crate) fn link(client: &subscribe_client::Client) -> subscribe_client::AuthorizationLink {
    client.authorize_url(
        &TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(1000).unwrap(),
        &subscribe_types::RedirectUrl::new("https://a.example/cb").unwrap(),
        &SESSION,
    )
}

/// A ledger whose backend is down.
#[derive(Debug, Default)]
pub(crate) struct DownLedger(InMemoryGrantLedger, pub(crate) std::sync::atomic::AtomicBool);

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
    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<subscribe_client::ReviewItem>, LedgerError> {
        self.0.reviews(scope, after, limit).await
    }
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: subscribe_client::Resolution,
        note: &str,
        now: std::time::SystemTime,
    ) -> Result<bool, LedgerError> {
        self.0.resolve(key, resolution, note, now).await
    }
}

#[tokio::test]
async fn when_the_ledger_fails_the_same_answer_can_be_retried_and_no_other() {
    let clock = clock();
    let client = builder(&MockTransport::new(), &clock).build().unwrap();
    let ledger = DownLedger::default();
    ledger.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let link = link(&client);
    let err = record_redirect(&client, &confirm(&link, "oAlice"), &ledger).await.unwrap_err();
    assert!(matches!(err, subscribe_client::RecordError::Ledger(_)), "{err:?}");
    assert_eq!(err.kind(), subscribe_client::ErrorKind::Retryable);
    // The failure gave nobody else the state: it stays Alice's answer's (the client used to
    // forget the mark, and then any openid could use it).
    let other = record_redirect(&client, &confirm(&link, "oMallory"), &ledger).await.unwrap_err();
    assert!(
        matches!(
            other,
            subscribe_client::RecordError::Authorization(subscribe_client::AuthorizationError::ReplayedState)
        ),
        "{other:?}"
    );
    ledger.1.store(false, std::sync::atomic::Ordering::SeqCst);
    let (_, rec) = record_redirect(&client, &confirm(&link, "oAlice"), &ledger).await.unwrap();
    assert_eq!(rec, Some(Recorded::Added), "the user's retry of the same answer is recorded");
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

/// A ledger whose `pending_page` ignores its cursor and always returns the first page: a bug
/// that once made the contract suite page forever.
#[derive(Debug, Default)]
pub(crate) struct CursorIgnoring(InMemoryGrantLedger);

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
    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<subscribe_client::ReviewItem>, LedgerError> {
        self.0.reviews(scope, after, limit).await
    }
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: subscribe_client::Resolution,
        note: &str,
        now: std::time::SystemTime,
    ) -> Result<bool, LedgerError> {
        self.0.resolve(key, resolution, note, now).await
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
