//! The dispatcher over real HTTP against the sandbox: exactly once, with faults and cancellation.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use subscribe_client::{
    CancellationToken, Client, DispatchObserver, Dispatcher, GrantLedger, GrantScope, InMemoryGrantLedger,
    OutcomeKind, Progress, RecipientOutcome,
};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, Faults, SandboxConfig, SandboxHandle};
use subscribe_types::{AppId, AppSecret, OneTimeMessage, OpenId, Scene, TemplateId, ValidationError};

const SCENE: u32 = 7;

/// Wall-clock time: these tests run against a real server with the client's system clock.
#[allow(clippy::disallowed_methods)]
fn now() -> SystemTime {
    SystemTime::now()
}

fn client(s: &SandboxHandle) -> Client {
    Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(s.base_url())
        .mp_base(s.base_url())
        .build()
        .unwrap()
}

fn scope() -> GrantScope {
    GrantScope {
        appid: AppId::new(DEMO_APPID).unwrap(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(SCENE).unwrap(),
    }
}

fn restock(to: &OpenId) -> Result<OneTimeMessage, ValidationError> {
    OneTimeMessage::builder(to.clone(), TemplateId::new(DEMO_TEMPLATE)?, Scene::new(SCENE)?)
        .title("到货提醒")
        .content("您关注的商品已到货")
        .build()
}

/// A sandbox with `n` generated users, each of whom confirmed once (in the sandbox and in the
/// ledger, as the callback would have recorded it).
async fn confirmed_users(n: usize) -> (SandboxHandle, Arc<InMemoryGrantLedger>, Vec<OpenId>) {
    let s = SandboxHandle::start(SandboxConfig::demo().with_generated_users(n)).await.unwrap();
    let ledger = Arc::new(InMemoryGrantLedger::new());
    let users: Vec<OpenId> = (0..n).map(|i| OpenId::new(format!("oUser{i:010}")).unwrap()).collect();
    for u in &users {
        assert!(s.state().add_grant(
            &SandboxConfig::demo_appid(),
            u,
            &SandboxConfig::demo_template(),
            Scene::new(SCENE).unwrap()
        ));
        ledger.record(&scope().key(u.clone()), now()).await.unwrap();
    }
    (s, ledger, users)
}

/// Every user received at most one message; returns how many received one.
fn inbox_total(s: &SandboxHandle, users: &[OpenId]) -> u64 {
    let mut total = 0;
    for u in users {
        let n = s.state().inbox(u.as_str()).len();
        assert!(n <= 1, "{u} received {n} messages");
        total += n as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_grants_with_busy_and_dropped_connections_deliver_each_at_most_once() {
    const N: usize = 10_000;
    let (s, ledger, users) = confirmed_users(N).await;
    s.state().set_faults(Faults { busy_every: Some(9), drop_every: Some(101), ..Faults::default() });

    let last = Arc::new(std::sync::Mutex::new(Progress::default()));
    let seen = Arc::clone(&last);
    let mut dispatcher =
        Dispatcher::one_time(client(&s), Arc::clone(&ledger), scope().template_id, scope().scene, restock)
            .concurrency(32)
            .progress(move |p: &Progress| *seen.lock().unwrap() = *p);
    let report = dispatcher.run().await.unwrap();
    let p = report.progress;

    // Every grant was taken once and ended in exactly one stated state.
    assert_eq!(p.sent, N as u64);
    assert_eq!(p.delivered + p.failed + p.unknown + p.dropped, N as u64);
    assert_eq!(*last.lock().unwrap(), p, "the observer saw the final counts");
    let distinct: HashSet<_> = report.outcomes.iter().map(|o| o.openid.clone()).collect();
    assert_eq!((report.outcomes.len(), distinct.len()), (N, N));
    assert!(report.outcomes.iter().all(|o| o.ledger_error.is_none()));
    assert!(
        report.outcomes.iter().all(|o| (o.kind == OutcomeKind::Delivered) == o.detail.is_none()),
        "every non-delivery carries its reason"
    );

    // The faults happened and were reported, not hidden: dropped connections are "unknown"
    // (the sandbox did not process them, but the client cannot know that).
    assert!(p.unknown >= 50, "{p:?}");
    assert_eq!(p.dropped, 0, "{p:?}");
    // The sandbox's own count equals the report's, and nobody got two messages.
    assert_eq!(s.state().stats().deliveries, p.delivered);
    assert_eq!(inbox_total(&s, &users), p.delivered);

    // The ledger agrees: delivered grants are used, unknown ones await review, failed ones are
    // pending again.
    let counts = ledger.counts(&scope(), now()).await.unwrap();
    assert_eq!((counts.delivered, counts.review, counts.pending), (p.delivered, p.unknown, p.failed));

    // A second dispatch without faults sends only what definitely failed, never a grant under
    // review, and never a delivered one again.
    s.state().set_faults(Faults::default());
    let second = dispatcher.run().await.unwrap();
    assert_eq!(second.progress.sent, p.failed);
    assert_eq!(second.progress.delivered, p.failed);
    assert_eq!(s.state().stats().deliveries, p.delivered + p.failed);
    assert_eq!(inbox_total(&s, &users), p.delivered + p.failed);
}

/// Cancels after a number of outcomes.
struct CancelAfter {
    after: u64,
    seen: u64,
    cancel: CancellationToken,
}

impl DispatchObserver for CancelAfter {
    fn on_outcome(&mut self, _: &RecipientOutcome) {
        self.seen += 1;
        if self.seen == self.after {
            self.cancel.cancel();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_midway_then_resumed_delivers_each_grant_exactly_once() {
    const N: usize = 2_000;
    let (s, ledger, users) = confirmed_users(N).await;
    let cancel = CancellationToken::new();
    let observer = CancelAfter { after: 300, seen: 0, cancel: cancel.clone() };
    let first =
        Dispatcher::one_time(client(&s), Arc::clone(&ledger), scope().template_id, scope().scene, restock)
            .concurrency(16)
            .page_size(64)
            .observer(observer)
            .cancellation(cancel)
            .run()
            .await
            .unwrap();
    assert!(first.cancelled);
    let p = first.progress;
    // Sends in flight at the cancellation were finished and recorded, nothing more was taken.
    // Outcomes are reported once settled, so when the 300th is seen the workers' sends and the
    // settlements still being written (up to a batch) had started before it.
    assert!(p.sent >= 300 && p.sent < 300 + 16 + 256, "{p:?}");
    assert_eq!(p.delivered, p.sent);
    assert_eq!(s.state().stats().deliveries, p.delivered);
    let counts = ledger.counts(&scope(), now()).await.unwrap();
    assert_eq!((counts.delivered, counts.pending, counts.reserved), (p.sent, N as u64 - p.sent, 0));

    // A fresh dispatcher (another process, as far as the ledger knows) finishes the rest.
    let second =
        Dispatcher::one_time(client(&s), Arc::clone(&ledger), scope().template_id, scope().scene, restock)
            .run()
            .await
            .unwrap();
    assert!(!second.cancelled);
    assert_eq!(second.progress.delivered, N as u64 - p.sent);
    let first_users: HashSet<_> = first.outcomes.iter().map(|o| o.openid.clone()).collect();
    assert!(second.outcomes.iter().all(|o| !first_users.contains(&o.openid)), "nobody twice");

    // The union: each user exactly one message, as the sandbox counts it.
    assert_eq!(s.state().stats().deliveries, N as u64);
    for u in &users {
        assert_eq!(s.state().inbox(u.as_str()).len(), 1, "{u}");
    }
    assert_eq!(s.state().unused_grants(), 0);
}

/// Answers lost after the sandbox delivered (a gateway's 502, a reset, a malformed body): each
/// grant goes to review, none is released for re-sending, and a second dispatch sends nothing.
/// With replays of unknown outcomes switched on, each replay meets 43101 and is reviewed as
/// "probably delivered", never counted as a new delivery. The sandbox counts the send requests:
/// one per grant, plus (with replays on) exactly one per reset that hid a delivery; a 502 or a
/// malformed answer is never replayed, whatever the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_whose_answers_are_lost_are_reviewed_and_never_sent_again() {
    const N: usize = 2_000;
    for replay in [false, true] {
        let (s, ledger, users) = confirmed_users(N).await;
        s.state().set_faults(Faults {
            delivered_502_every: Some(97),
            delivered_drop_every: Some(89),
            delivered_malformed_every: Some(83),
            ..Faults::default()
        });
        let mut policy = subscribe_client::RetryPolicy::default();
        if replay {
            policy = policy.unknown_outcome_retries(1);
        }
        let c = Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
            .api_base(s.base_url())
            .retry_policy(policy)
            .build()
            .unwrap();
        let mut dispatcher =
            Dispatcher::one_time(c, Arc::clone(&ledger), scope().template_id, scope().scene, restock)
                .concurrency(16);
        let report = dispatcher.run().await.unwrap();
        let p = report.progress;

        // Every send reached the sandbox and was delivered; the client knows that of the ones
        // whose answer came back, and reports the rest unknown, never failed.
        let stats = s.state().stats();
        assert_eq!(stats.deliveries, N as u64, "replay={replay}");
        let lost = stats.lost_after_delivery;
        assert!(lost.http_502 > 0 && lost.dropped > 0 && lost.malformed > 0, "every fault struck: {lost:?}");
        // Replayed: only a reset that hid a delivery (a first attempt: each grant is sent once,
        // and a replay meets 43101, so delivers nothing to hide), once. Never a 502 nor a
        // malformed answer.
        let replays = if replay { lost.dropped } else { 0 };
        // At most one replay per reset that hid a delivery, and no fewer but for a replay that
        // was itself a first delivery (its first attempt, on a pooled connection the sandbox had
        // just closed, never reached it) and drew a reset it has no replay left for: rare, at
        // most two here. Replaying a 5xx or a malformed answer adds about 40.
        let least = N as u64 + replays.saturating_sub(2);
        assert!(
            (least..=N as u64 + replays).contains(&stats.send_requests),
            "replay={replay}: {} send requests, want one per grant plus one per reset after delivery, \
             {least} to {} ({lost:?})",
            stats.send_requests,
            N as u64 + replays
        );
        assert_eq!(inbox_total(&s, &users), N as u64, "replay={replay}: one message each");
        assert_eq!((p.failed, p.dropped), (0, 0), "replay={replay}: {p:?}");
        assert!(p.unknown >= 50, "replay={replay}: the faults struck: {p:?}");
        assert_eq!(p.delivered + p.unknown, N as u64, "replay={replay}");
        if replay {
            let probably = report
                .outcomes
                .iter()
                .filter(|o| o.kind == OutcomeKind::Unknown)
                .filter(|o| o.detail.as_deref().is_some_and(|d| d.contains("probably delivered")))
                .count() as u64;
            // Only resets are replayed (a 5xx or a malformed answer never is), and a replay after
            // a delivered-then-reset send meets 43101: "probably delivered". Not every one: a
            // replay can draw a fault itself, and a send on a pooled connection the sandbox had
            // just closed fails without reaching it, so its replay is the first delivery. Both
            // depend on timing; at least half of the ~22 resets always end this way.
            let resets = (N / 89) as u64;
            assert!(probably * 2 >= resets, "replay: {probably} probably delivered for ~{resets} resets");
        }

        // No grant came back for re-sending: the unknown ones are under review.
        let counts = ledger.counts(&scope(), now()).await.unwrap();
        assert_eq!((counts.delivered, counts.review, counts.pending), (p.delivered, p.unknown, 0));
        s.state().set_faults(Faults::default());
        let second = dispatcher.run().await.unwrap();
        assert_eq!(second.progress.sent, 0, "replay={replay}: nothing is sent again");
        assert_eq!(s.state().stats().deliveries, N as u64);
    }
}

/// A TCP proxy in front of `to` that counts the connections it accepts.
async fn counting_proxy(to: std::net::SocketAddr) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_on_the_hyper_transport_opens_no_more_connections_than_its_concurrency() {
    const N: usize = 2_000;
    const CONCURRENCY: usize = 64;
    let (s, ledger, users) = confirmed_users(N).await;
    // WeChat answers in tens of milliseconds: every send holds its connection that long.
    s.state().set_faults(Faults { latency_ms: Some(20), ..Faults::default() });
    let sandbox: std::net::SocketAddr = s.base_url().trim_start_matches("http://").parse().unwrap();
    let (base, accepted) = counting_proxy(sandbox).await;
    let c = Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(&base)
        .transport(subscribe_client::transport::HyperTransport::new().unwrap())
        .build()
        .unwrap();
    let report = Dispatcher::one_time(c, Arc::clone(&ledger), scope().template_id, scope().scene, restock)
        .concurrency(CONCURRENCY)
        .run()
        .await
        .unwrap();
    assert_eq!(report.progress.delivered, N as u64);
    assert_eq!(inbox_total(&s, &users), N as u64);
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(opened <= CONCURRENCY, "{opened} connections for {N} sends, {CONCURRENCY} in flight");
}
