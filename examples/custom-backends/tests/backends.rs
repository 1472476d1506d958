//! The SDK's contract suites against this crate's backends, their files across a restart, and a
//! dispatch to the sandbox through all three.

// Test code unwraps: a panic names the failed step.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use custom_backends::{FileGrantLedger, FileTokenStore, TracingTransport};
use subscribe_client::test_util::{grant_ledger_contract, token_store_contract};
use subscribe_client::transport::test_util::transport_contract;
use subscribe_client::transport::{ReqwestTransport, SharedTransport};
use subscribe_client::{
    CachedToken, GrantKey, GrantLedger, GrantStatus, LedgerError, Settlement, TokenStore,
};
use subscribe_types::{AccessToken, AppId, OpenId, Scene, TemplateId};

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("custom-backends-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key(user: &str) -> GrantKey {
    GrantKey {
        appid: AppId::new("wxcustombackends01").unwrap(),
        openid: OpenId::new(user).unwrap(),
        template_id: TemplateId::new("restock").unwrap(),
        scene: Scene::new(1).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_wrapper_passes_the_transport_contract_and_counts() {
    let inner = ReqwestTransport::builder().timeout(Duration::from_secs(1)).build().unwrap();
    let wrapper = Arc::new(TracingTransport::new(inner, "contract").unwrap());
    transport_contract(Arc::clone(&wrapper)).await;
    let counters = wrapper.counters();
    assert!(counters.requests.load(std::sync::atomic::Ordering::Relaxed) >= 7);
    assert!(
        counters.failures.load(std::sync::atomic::Ordering::Relaxed) >= 3,
        "refusals, hang-ups, timeouts"
    );
}

#[tokio::test]
async fn the_wrapper_adds_its_header_to_every_request() {
    let mock = subscribe_client::test_util::mock_with_stable_token("T", 7200);
    mock.push(subscribe_client::test_util::ok_reply());
    let wrapper = TracingTransport::new(SharedTransport::new(mock.clone()), "svc-a").unwrap();
    let client = subscribe_client::Client::builder(
        AppId::new("wxcustombackends01").unwrap(),
        subscribe_types::AppSecret::new("secret").unwrap(),
    )
    .transport(wrapper)
    .build()
    .unwrap();
    let k = key("oUser");
    let msg = subscribe_types::OneTimeMessage::builder(k.openid, k.template_id, k.scene)
        .title("t")
        .content("c")
        .build()
        .unwrap();
    client.send_one_time(&msg).await.unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "a token request and the send");
    assert!(requests.iter().all(|r| r.headers()[TracingTransport::HEADER] == "svc-a"));
    assert!(TracingTransport::new(SharedTransport::new(mock), "bad\nvalue").is_err());
}

#[tokio::test]
async fn the_file_token_store_passes_the_token_store_contract() {
    let dir = scratch("tokens-contract");
    token_store_contract(Arc::new(FileTokenStore::new(dir.join("tokens.json")))).await;
}

#[tokio::test]
async fn tokens_survive_a_restart_and_a_corrupt_file_is_an_error_without_the_token() {
    let dir = scratch("tokens-restart");
    let path = dir.join("tokens.json");
    let app = AppId::new("wxcustombackends01").unwrap();
    let token = CachedToken::new(
        AccessToken::new("SECRET-TOKEN-123").unwrap(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    FileTokenStore::new(&path).save(&app, &token).await.unwrap();
    let reopened = FileTokenStore::new(&path);
    assert_eq!(reopened.load(&app).await.unwrap().unwrap().token().expose_secret(), "SECRET-TOKEN-123");
    assert!(!format!("{reopened:?}").contains("SECRET-TOKEN-123"));

    std::fs::write(&path, r#"{"wxcustombackends01":{"token":"SECRET-TOKEN-123","expires_at_ms":"#).unwrap();
    let err = reopened.load(&app).await.unwrap_err();
    let mut shown = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        shown = format!("{shown} {s} {s:?}");
        source = s.source();
    }
    assert!(!shown.contains("SECRET-TOKEN-123"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_ledger_passes_the_grant_ledger_contract() {
    let dir = scratch("ledger-contract");
    grant_ledger_contract(Arc::new(FileGrantLedger::open(dir.join("grants.json")).unwrap())).await;
}

#[tokio::test]
async fn grants_survive_a_restart_and_a_crashed_reservation_comes_back_after_its_lease() {
    let dir = scratch("ledger-restart");
    let path = dir.join("grants.json");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let lease = Duration::from_secs(60);
    {
        let ledger = FileGrantLedger::open(&path).unwrap();
        for user in ["oA", "oB", "oC"] {
            ledger.record(&key(user), t0).await.unwrap();
        }
        let a = ledger.reserve(&key("oA"), "run1", lease, t0).await.unwrap().unwrap();
        ledger.settle(&a, Settlement::Delivered).await.unwrap();
        // oB is reserved when the process "crashes": never settled.
        ledger.reserve(&key("oB"), "run1", lease, t0).await.unwrap().unwrap();
    }
    let ledger = FileGrantLedger::open(&path).unwrap();
    assert_eq!(ledger.get(&key("oA")).await.unwrap().unwrap().status, GrantStatus::Delivered);
    let scope = key("oA").scope();
    assert_eq!(
        ledger.pending_page(&scope, None, 10, t0).await.unwrap(),
        vec![OpenId::new("oC").unwrap()],
        "oB's lease is still live"
    );
    let after = t0 + lease + Duration::from_secs(1);
    let b =
        ledger.reserve(&key("oB"), "run2", lease, after).await.unwrap().expect("the lapsed lease is taken");
    assert_eq!(b.attempt, 2, "the crashed attempt counts");
}

#[tokio::test]
async fn a_ledger_that_cannot_write_fails_with_a_backend_error_and_changes_nothing() {
    let dir = scratch("ledger-unwritable");
    let path = dir.join("grants.json");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ledger = FileGrantLedger::open(&path).unwrap();
    ledger.record(&key("oA"), t0).await.unwrap();
    // The file's place becomes a directory: every later write fails.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(path.with_extension("json.tmp")).unwrap();

    let err = ledger.record(&key("oB"), t0).await.unwrap_err();
    assert!(matches!(err, LedgerError::Backend(_)), "{err:?}");
    assert_eq!(ledger.get(&key("oB")).await.unwrap(), None, "a failed record leaves no grant behind");
    assert!(
        matches!(
            ledger.reserve(&key("oA"), "h", Duration::from_secs(60), t0).await,
            Err(LedgerError::Backend(_))
        ),
        "a failed reserve is an error"
    );
    assert_eq!(
        ledger.get(&key("oA")).await.unwrap().unwrap().status,
        GrantStatus::Pending,
        "a failed reserve leaves the grant pending, not reserved by nobody"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_grants_dispatch_to_the_sandbox_through_all_three_backends() {
    let dir = scratch("dispatch");
    let r = custom_backends::dispatch_to_sandbox(&dir, 100).await.unwrap();
    assert_eq!((r.delivered, r.received, r.ledger_delivered), (100, 100, 100), "{r:?}");
    assert_eq!(r.requests, 101, "one token request, then one send per grant: {r:?}");
    assert_eq!(r.requests_with_header, 101, "the sandbox saw the wrapper's header on each: {r:?}");
    // The token and the grants are on disk for the next run.
    assert!(dir.join("tokens.json").is_file() && dir.join("grants.json").is_file());
}
