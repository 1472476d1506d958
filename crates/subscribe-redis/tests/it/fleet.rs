//! Several instances on one Redis, against the sandbox over real HTTP: one token request per
//! rotation for the whole fleet, one refresh after a revocation, each grant delivered once by
//! several dispatchers, and a killed dispatcher's grants finished by another.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use subscribe_client::{
    Client, DispatchObserver, Dispatcher, GrantLedger, GrantScope, OutcomeKind, RecipientOutcome,
};
use subscribe_redis::{Redis, RedisGrantLedger, RedisTokenStore};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};
use subscribe_types::{AppId, AppSecret, OneTimeMessage, OpenId, Scene, TemplateId, ValidationError};

use crate::{now, redis, redis_url};

/// Another instance's own connection to the same Redis, with the same prefix.
async fn same_redis(r: &Redis) -> Redis {
    Redis::builder(redis_url()).prefix(r.prefix()).connect().await.unwrap()
}

async fn instance(s: &SandboxHandle, shared: &Redis) -> Client {
    Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(s.base_url())
        .token_store(RedisTokenStore::new(same_redis(shared).await))
        .build()
        .unwrap()
}

fn message(user: &str, scene: u32) -> OneTimeMessage {
    OneTimeMessage::builder(
        OpenId::new(user).unwrap(),
        TemplateId::new(DEMO_TEMPLATE).unwrap(),
        Scene::new(scene).unwrap(),
    )
    .title("到货提醒")
    .content("您关注的商品已到货")
    .build()
    .unwrap()
}

fn user(i: usize) -> String {
    format!("oUser{i:010}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_make_one_token_request_per_rotation() {
    const LIFETIME: Duration = Duration::from_secs(4);
    const RUN: Duration = Duration::from_secs(9);
    // Rotation window: half the lifetime, so a request in a token's first half gets the same
    // token back and a redundant request shows as requests > tokens issued.
    let config = SandboxConfig::demo()
        .with_token_lifetime(LIFETIME)
        .with_stable_rotation(LIFETIME / 2)
        .with_generated_users(4);
    let s = SandboxHandle::start(config).await.unwrap();
    for i in 0..4 {
        for scene in 0..=10_000 {
            s.state().add_grant(
                &SandboxConfig::demo_appid(),
                &OpenId::new(user(i)).unwrap(),
                &SandboxConfig::demo_template(),
                Scene::new(scene).unwrap(),
            );
        }
    }
    let shared = redis("rotation").await;
    let mut fleet = Vec::new();
    for _ in 0..4 {
        fleet.push(instance(&s, &shared).await);
    }

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in fleet.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut sent = 0u32;
            while started.elapsed() < RUN {
                c.send_one_time(&message(&user(i), sent))
                    .await
                    .unwrap_or_else(|e| panic!("instance {i}: {e}"));
                sent += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            sent
        });
    }
    let mut sent = 0;
    while let Some(n) = tasks.join_next().await {
        sent += n.unwrap();
    }
    let stats = s.state().stats();
    eprintln!(
        "4 instances, {sent} sends over {RUN:?}, token lifetime {LIFETIME:?}: {} token requests, {} tokens issued",
        stats.stable_token_requests, stats.tokens_issued
    );
    assert_eq!(stats.deliveries, u64::from(sent));
    // Every token request produced a rotation: nobody asked while another had just asked.
    assert_eq!(stats.stable_token_requests, stats.tokens_issued);
    // A rotation every half-lifetime at most, plus the first token.
    let max = RUN.as_millis() / (LIFETIME.as_millis() / 2) + 1;
    assert!(
        u128::from(stats.tokens_issued) <= max,
        "{} tokens for at most {max} rotations",
        stats.tokens_issued
    );
    assert!(stats.tokens_issued >= 2, "the token rotated during the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_revocation_the_fleet_refreshes_exactly_once() {
    let s = SandboxHandle::start(SandboxConfig::demo().with_generated_users(4)).await.unwrap();
    for i in 0..4 {
        for scene in 0..200 {
            s.state().add_grant(
                &SandboxConfig::demo_appid(),
                &OpenId::new(user(i)).unwrap(),
                &SandboxConfig::demo_template(),
                Scene::new(scene).unwrap(),
            );
        }
    }
    let shared = redis("revoke").await;
    let mut fleet = Vec::new();
    for _ in 0..4 {
        fleet.push(instance(&s, &shared).await);
    }
    // Warm: every instance holds the shared token.
    for (i, c) in fleet.iter().enumerate() {
        c.send_one_time(&message(&user(i), 0)).await.unwrap();
    }
    assert_eq!(s.state().stats().stable_token_requests, 1, "one token for the whole fleet");

    s.state().revoke_tokens(Duration::ZERO);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in fleet.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut sends = Vec::new();
            for scene in 1..50 {
                let c = c.clone();
                sends.push(tokio::spawn(async move { c.send_one_time(&message(&user(i), scene)).await }));
            }
            for h in sends {
                h.await.unwrap().unwrap_or_else(|e| panic!("instance {i}: {e}"));
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let stats = s.state().stats();
    eprintln!("after revoking: {} token requests in all (1 before)", stats.stable_token_requests);
    assert_eq!(stats.stable_token_requests, 2, "exactly one refresh for 4 instances × 49 concurrent sends");
    assert_eq!(stats.deliveries, 4 * 50);
}

fn restock(to: &OpenId) -> Result<OneTimeMessage, ValidationError> {
    OneTimeMessage::builder(to.clone(), TemplateId::new(DEMO_TEMPLATE)?, Scene::new(9)?)
        .title("到货提醒")
        .content("您关注的商品已到货")
        .build()
}

fn scope() -> GrantScope {
    GrantScope {
        appid: AppId::new(DEMO_APPID).unwrap(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(9).unwrap(),
    }
}

/// A sandbox with `n` users who each confirmed once, recorded in the Redis ledger under `shared`.
async fn confirmed(n: usize, shared: &Redis) -> SandboxHandle {
    let s = SandboxHandle::start(SandboxConfig::demo().with_generated_users(n)).await.unwrap();
    let ledger = RedisGrantLedger::new(shared.clone());
    for i in 0..n {
        s.state().add_grant(
            &SandboxConfig::demo_appid(),
            &OpenId::new(user(i)).unwrap(),
            &SandboxConfig::demo_template(),
            Scene::new(9).unwrap(),
        );
        ledger.record(&scope().key(OpenId::new(user(i)).unwrap()), now()).await.unwrap();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_dispatchers_on_one_ledger_deliver_ten_thousand_grants_exactly_once() {
    const N: usize = 10_000;
    let shared = redis("dispatch4").await;
    let s = confirmed(N, &shared).await;
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut d = Dispatcher::one_time(
            instance(&s, &shared).await,
            RedisGrantLedger::new(same_redis(&shared).await),
            scope().template_id,
            scope().scene,
            restock,
        )
        .concurrency(16)
        .page_size(128);
        runs.spawn(async move { d.run().await.unwrap() });
    }
    let mut delivered = 0;
    let mut seen = HashSet::new();
    let mut per_dispatcher = Vec::new();
    while let Some(report) = runs.join_next().await {
        let report = report.unwrap();
        assert_eq!(report.progress.delivered, report.progress.sent, "{:?}", report.progress);
        for o in &report.outcomes {
            assert!(seen.insert(o.openid.clone()), "{} taken by two dispatchers", o.openid);
        }
        delivered += report.progress.delivered;
        per_dispatcher.push(report.progress.delivered);
    }
    eprintln!("4 dispatchers delivered {per_dispatcher:?}");
    assert_eq!(delivered, N as u64);
    assert_eq!(s.state().stats().deliveries, N as u64, "the sandbox counted each grant once");
    assert_eq!(s.state().unused_grants(), 0);
    let counts = RedisGrantLedger::new(shared).counts(&scope(), now()).await.unwrap();
    assert_eq!((counts.delivered, counts.pending, counts.reserved), (N as u64, 0, 0));
}

/// Signals once `after` outcomes were seen.
struct Tripwire {
    after: u64,
    seen: u64,
    tripped: Arc<AtomicBool>,
}

impl DispatchObserver for Tripwire {
    fn on_outcome(&mut self, _: &RecipientOutcome) {
        self.seen += 1;
        if self.seen >= self.after {
            self.tripped.store(true, Ordering::Release);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatchers_grants_are_finished_by_another_and_nothing_is_sent_twice() {
    const N: usize = 1_000;
    const LEASE: Duration = Duration::from_secs(1);
    let shared = redis("killed").await;
    let s = confirmed(N, &shared).await;
    // Slow sends, so the kill lands with sends in flight.
    s.state().set_faults(subscribe_sandbox::Faults { latency_ms: Some(20), ..Default::default() });

    let tripped = Arc::new(AtomicBool::new(false));
    let wire = Tripwire { after: 200, seen: 0, tripped: Arc::clone(&tripped) };
    let mut first = Dispatcher::one_time(
        instance(&s, &shared).await,
        RedisGrantLedger::new(same_redis(&shared).await),
        scope().template_id,
        scope().scene,
        restock,
    )
    .concurrency(16)
    .lease(LEASE)
    .observer(wire);
    // Its own runtime, so that a crash can be played: shutting that runtime down stops every
    // task of the dispatch where it stands (dropping the `run` future alone would cancel the
    // dispatch in order instead, giving back what it had not started).
    let crashing =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let killed = crashing.spawn(async move { first.run().await });
    // Bounded: a dispatcher that never reaches the tripwire fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(30), async {
        while !tripped.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the first dispatcher reached 200 outcomes within 30 s");
    crashing.shutdown_background(); // a crash: in-flight sends are dropped, their grants stay reserved
    assert!(killed.await.unwrap_err().is_cancelled());
    let after_kill = s.state().stats().deliveries;
    let counts = RedisGrantLedger::new(same_redis(&shared).await).counts(&scope(), now()).await.unwrap();
    assert!(counts.reserved > 0, "the kill left reservations behind: {counts:?}");

    // Within the lease nobody takes them; after it, another dispatcher finishes everything.
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    s.state().set_faults(subscribe_sandbox::Faults::default());
    let second = Dispatcher::one_time(
        instance(&s, &shared).await,
        RedisGrantLedger::new(same_redis(&shared).await),
        scope().template_id,
        scope().scene,
        restock,
    )
    .lease(LEASE)
    .run()
    .await
    .unwrap();
    let p = second.progress;
    eprintln!(
        "killed after {after_kill} deliveries with {} reserved; the second dispatcher: {p:?}",
        counts.reserved
    );

    // Each user exactly one message, as the sandbox counts it.
    assert_eq!(s.state().stats().deliveries, N as u64);
    for i in 0..N {
        assert_eq!(s.state().inbox(&user(i)).len(), 1, "{}", user(i));
    }
    // Grants the killed dispatcher delivered without recording are not resent: WeChat refuses
    // them (43101 on a second attempt) and they go to review as "probably delivered".
    assert!(second.outcomes.iter().all(|o| matches!(o.kind, OutcomeKind::Delivered | OutcomeKind::Unknown)));
    assert!(
        second
            .outcomes
            .iter()
            .filter(|o| o.kind == OutcomeKind::Unknown)
            .all(|o| o.detail.as_deref().is_some_and(|d| d.contains("probably delivered")))
    );
    let counts = RedisGrantLedger::new(shared).counts(&scope(), now()).await.unwrap();
    assert_eq!(counts.delivered + counts.review, N as u64, "{counts:?}");
    assert_eq!((counts.pending, counts.reserved), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_back_off_as_one_when_the_token_endpoint_fails() {
    use subscribe_sandbox::{Faults, TokenFault};
    let s = SandboxHandle::start(SandboxConfig::demo().with_generated_users(64)).await.unwrap();
    for i in 0..64 {
        s.state().add_grant(
            &SandboxConfig::demo_appid(),
            &OpenId::new(user(i)).unwrap(),
            &SandboxConfig::demo_template(),
            Scene::new(3).unwrap(),
        );
    }
    let shared = redis("outage").await;
    let backoff = (Duration::from_millis(100), Duration::from_millis(800));
    let wait = Duration::from_secs(2);
    let mut fleet = Vec::new();
    for _ in 0..4 {
        let c = Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
            .api_base(s.base_url())
            .token_store(RedisTokenStore::new(same_redis(&shared).await))
            .token_backoff(backoff.0, backoff.1)
            .token_wait(wait)
            .build()
            .unwrap();
        fleet.push(c);
    }

    // The endpoint is down for longer than anyone waits: 16 sends per instance all fail, and
    // the fleet's attempts follow one backoff schedule, not four.
    s.state().set_faults(Faults { token_fault: Some(TokenFault::Http502), ..Faults::default() });
    let mut tasks = tokio::task::JoinSet::new();
    for (n, c) in fleet.iter().enumerate() {
        for k in 0..16 {
            let c = c.clone();
            tasks.spawn(async move { c.send_one_time(&message(&user(n * 16 + k), 3)).await });
        }
    }
    let mut held_off = 0;
    while let Some(r) = tasks.join_next().await {
        let e = r.unwrap().unwrap_err();
        let subscribe_client::SendError::Token(subscribe_client::TokenError::Unavailable {
            last: Some(last),
            ..
        }) = &e
        else {
            panic!("{e:?}")
        };
        held_off += usize::from(matches!(**last, subscribe_client::TokenError::HeldOff { .. }));
    }
    let requests = s.state().stats().stable_token_requests;
    eprintln!(
        "4 instances, 2 s outage: {requests} token requests; {held_off} of 64 sends held off by the store"
    );
    // One instance alone: attempts at 0 and after 0.05–0.1, 0.1–0.2, 0.2–0.4, 0.4–0.8 s, then
    // every 0.4–0.8 s: at most 8 in 2 s (and its waiters give up at the first attempt
    // planned past their wait). Four uncoordinated instances would make up to 32.
    assert!(requests <= 9, "{requests} token requests from 4 instances in a 2 s outage");
    assert!(held_off > 0, "some instances learnt of the outage from the store");

    // The outage ends: every instance sends again, on one token.
    s.state().set_faults(Faults::default());
    tokio::time::sleep(backoff.1).await; // the last hold-off ends
    for (n, c) in fleet.iter().enumerate() {
        c.send_one_time(&message(&user(n * 16), 3)).await.unwrap();
    }
    assert_eq!(s.state().stats().tokens_issued, 1);
}
