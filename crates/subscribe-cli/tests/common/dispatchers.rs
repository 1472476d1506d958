//! Dispatcher processes (`wxsub grants dispatch`) against an in-process sandbox: the crash and
//! fleet proofs, on whichever database the caller gives.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::print_stderr, dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use subscribe_client::{GrantLedger, GrantScope, GrantStatus};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, Faults, SandboxConfig, SandboxHandle};
use subscribe_sql::SqlGrantLedger;
use subscribe_types::{AppId, OpenId, Scene, TemplateId};

pub const SCENE: u32 = 42;

pub fn scope() -> GrantScope {
    GrantScope {
        appid: AppId::new(DEMO_APPID).unwrap(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(SCENE).unwrap(),
    }
}

/// A sandbox whose `n` generated users each confirmed once, and the same grants in `ledger`.
pub async fn confirmed(n: usize, ledger: &SqlGrantLedger) -> (SandboxHandle, Vec<OpenId>) {
    let s = SandboxHandle::start(SandboxConfig::demo().with_generated_users(n)).await.unwrap();
    let users: Vec<OpenId> = (0..n).map(|i| OpenId::new(format!("oUser{i:010}")).unwrap()).collect();
    let scene = Scene::new(SCENE).unwrap();
    for u in &users {
        assert!(s.state().add_grant(&SandboxConfig::demo_appid(), u, &SandboxConfig::demo_template(), scene));
    }
    assert_eq!(ledger.record_many(&scope(), &users).await.unwrap(), n as u64);
    (s, users)
}

/// `wxsub grants dispatch` of the test's scope on `database`, started (not awaited).
pub fn dispatcher(s: &SandboxHandle, database: &str, lease_secs: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_wxsub"))
        .args(["grants", "--database", database, "dispatch", "--template-id", DEMO_TEMPLATE])
        .args(["--scene", &SCENE.to_string(), "--title", "到货提醒", "--content", "您关注的商品已到货"])
        .args(["--concurrency", "16", "--lease", lease_secs])
        .env("WXSUB_API_BASE", s.base_url())
        .env("WXSUB_APPID", DEMO_APPID)
        .env("WXSUB_SECRET", DEMO_SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit (within `limit`); returns its exit code and stderr.
pub async fn finish(child: tokio::process::Child, limit: Duration) -> (i32, String) {
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("the dispatcher finished")
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every grant ended delivered exactly once or in review, and the sandbox agrees: a grant the
/// ledger calls delivered is in its user's inbox; a user whose inbox is empty has a grant in
/// review (its first sender died before sending; none here); no inbox holds two. Returns
/// (delivered, in review).
pub async fn every_grant_once_or_in_review(
    s: &SandboxHandle,
    ledger: &SqlGrantLedger,
    users: &[OpenId],
) -> (u64, u64) {
    let (mut delivered, mut review, mut received) = (0, 0, 0);
    for u in users {
        let inbox = s.state().inbox(u.as_str()).len();
        assert!(inbox <= 1, "{u} received {inbox} messages");
        received += inbox as u64;
        match ledger.get(&scope().key(u.clone())).await.unwrap().unwrap().status {
            GrantStatus::Delivered => {
                assert_eq!(inbox, 1, "{u}: delivered in the ledger, absent from the inbox");
                delivered += 1;
            }
            GrantStatus::Review { reason } => {
                assert!(reason.contains("probably delivered"), "{u}: {reason}");
                review += 1;
            }
            other => panic!("{u}: {other:?}"),
        }
    }
    assert_eq!(s.state().stats().deliveries, received, "the sandbox's count is the inboxes'");
    assert!(received >= delivered && received <= delivered + review, "{received} vs {delivered} + {review}");
    (delivered, review)
}

/// The grants held at this moment: reserved and not settled, whether or not the lease has
/// lapsed (a lapsed reservation stays held until another sender takes it). Read grant by grant
/// (eight readers at once), so the answer does not depend on how long ago the holder claimed
/// them.
pub async fn held(ledger: &SqlGrantLedger, users: &[OpenId]) -> Vec<OpenId> {
    let mut readers = tokio::task::JoinSet::new();
    for chunk in users.chunks(users.len().div_ceil(8).max(1)) {
        let (ledger, chunk) = (ledger.clone(), chunk.to_vec());
        readers.spawn(async move {
            let mut held = Vec::new();
            for u in chunk {
                let grant = ledger.get(&scope().key(u.clone())).await.unwrap().unwrap();
                if let GrantStatus::Reserved { .. } = grant.status {
                    held.push(u);
                }
            }
            held
        });
    }
    let mut held = Vec::new();
    while let Some(part) = readers.join_next().await {
        held.extend(part.unwrap());
    }
    held
}

/// SIGKILL a dispatcher in the middle of `n` grants, start another once its leases lapse:
/// every grant ends delivered once or in review, the sandbox's count agrees, and each grant
/// the dead process held was taken again (its second reservation) and finished.
pub async fn killed_and_restarted(database: &str, ledger: &SqlGrantLedger, n: usize) {
    let (s, users) = confirmed(n, ledger).await;
    // Slow sends (at most 16 in flight, 20 ms each), so the kill lands with sends in flight and
    // their grants reserved, however loaded the machine.
    s.state().set_faults(Faults { latency_ms: Some(20), ..Faults::default() });
    // 2 s leases, short so the restart comes soon; not a bound load can break: nothing here
    // needs a lease still live (held is read from the grants' states, the lapse is awaited),
    // and a lease lapsing early, with one dispatcher at a time, is taken by nobody.
    let mut first = dispatcher(&s, database, "2");
    let started = Instant::now();
    while s.state().stats().deliveries < (n / 5) as u64 {
        assert!(started.elapsed() < Duration::from_secs(120), "the first dispatcher made no progress");
        assert!(first.try_wait().unwrap().is_none(), "the first dispatcher ended before it was killed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.start_kill().unwrap(); // SIGKILL: no cleanup, reservations left held
    first.wait().await.unwrap();
    let at_kill = s.state().stats().deliveries;
    assert!(at_kill < n as u64, "killed in the middle");
    let held = held(ledger, &users).await;
    assert!(!held.is_empty(), "the kill left no reservation held: lease recovery would go untested");
    s.state().set_faults(Faults::default());
    // Its leases lapse by the database's clock: wait for that rather than for a fixed time
    // (bounded only so a lease that never lapses fails the test instead of hanging it).
    let lapsing = Instant::now();
    while ledger.counts(&scope(), super::common_now()).await.unwrap().reserved > 0 {
        assert!(
            lapsing.elapsed() < Duration::from_secs(120),
            "the killed dispatcher's 2 s leases never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, stderr) = finish(dispatcher(&s, database, "2"), Duration::from_secs(120)).await;
    assert!(code == 0 || code == 1, "{code}: {stderr}");
    let (delivered, review) = every_grant_once_or_in_review(&s, ledger, &users).await;
    assert_eq!(delivered + review, n as u64);
    for u in &held {
        let grant = ledger.get(&scope().key(u.clone())).await.unwrap().unwrap();
        assert_eq!(grant.attempts, 2, "{u}, held at the kill, was taken again once its lease lapsed");
    }
    eprintln!(
        "killed after {at_kill} deliveries with {} held; then {delivered} delivered, {review} in review",
        held.len()
    );
}

/// Four dispatcher processes on one database share `n` grants: each delivered once.
pub async fn fleet_of_four(database: &str, ledger: &SqlGrantLedger, n: usize) {
    let (s, users) = confirmed(n, ledger).await;
    let fleet: Vec<_> = (0..4).map(|_| dispatcher(&s, database, "120")).collect();
    for child in fleet {
        let (code, stderr) = finish(child, Duration::from_secs(180)).await;
        assert_eq!(code, 0, "{stderr}");
    }
    let (delivered, review) = every_grant_once_or_in_review(&s, ledger, &users).await;
    assert_eq!((delivered, review), (n as u64, 0));
    assert_eq!(s.state().stats().deliveries, n as u64, "counted by the sandbox");
}
