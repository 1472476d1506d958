//! Event push through the gateway against the sandbox: WeChat's pushes (the sandbox's, signed and
//! encrypted in the safe mode) verified at the app's server URL, fed to the grants, and posted to
//! the caller's webhook, signed; kept while the webhook is down and delivered once each, in
//! order, when it is back, by whichever gateway of a fleet holds the delivery; a replayed push
//! taken once; the push keys checked at start.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;
use subscribe_client::{GrantScope, GrantStatus};
use subscribe_events::{EncodingAesKey, Mode, Push, PushConfig};
use subscribe_gateway::{Config, open_stores, webhook_signature};
use subscribe_sandbox::{DEMO_APPID, DEMO_MP_TEMPLATE, PushSettings, SandboxConfig, SandboxHandle};
use subscribe_types::{OpenId, TemplateId};
use tempfile::TempDir;

use crate::dispatch::{Served, served, unique};
use crate::*;

const TOKEN: &str = "gwPushToken2026abcdefghij";
const AES: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const HOOK_SECRET: &str = "whsec-gateway-test-0123456789abcdef";

/// The caller's webhook: what it took, and a switch that makes it answer 503.
struct Hook {
    url: String,
    taken: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    refused: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

async fn hook() -> Hook {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let (refused, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post({
            let (taken, refused, down) = (Arc::clone(&taken), Arc::clone(&refused), Arc::clone(&down));
            move |headers: HeaderMap, body: String| async move {
                if down.load(Ordering::Acquire) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                taken.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Hook { url, taken, refused, down }
}

impl Hook {
    fn bodies(&self) -> Vec<Value> {
        self.taken.lock().unwrap().iter().map(|(_, b)| serde_json::from_str(b).unwrap()).collect()
    }

    async fn until(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.taken.lock().unwrap().len() < n {
            assert!(tokio::time::Instant::now() < deadline, "the webhook took {:?}", self.bodies());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The test configuration with the demo app's push keys and webhook, `[store]` as `store`.
fn push_config(dir: &TempDir, sandbox: &SandboxHandle, hook: &str, store: &str, url: &str) -> Config {
    let text = config_text(dir.path(), &sandbox.base_url()).replace("path = \"tokens.db\"", store).replacen(
        "secret_file = \"secret-a\"\n",
        &format!(
            "secret_file = \"secret-a\"\npush_token_env = \"GW_PUSH_TOKEN\"\npush_aes_key_env = \"GW_PUSH_AES\"\n\
             webhook_url = \"{hook}\"\nwebhook_secret_env = \"GW_HOOK_SECRET\"\n"
        ),
        1,
    );
    let url = url.to_owned();
    let env = move |name: &str| {
        match name {
            "GW_PUSH_TOKEN" => Some(TOKEN.to_owned()),
            "GW_PUSH_AES" => Some(AES.to_owned()),
            "GW_HOOK_SECRET" => Some(HOOK_SECRET.to_owned()),
            "GW_TEST_STORE_URL" => Some(url.clone()),
            _ => None,
        }
        .map(Into::into)
    };
    Config::parse(&text, dir.path(), &env).unwrap()
}

/// The sandbox pushes the demo app's events to `gateway`, as its console was told.
fn point_sandbox_at(sandbox: &SandboxHandle, gateway: SocketAddr) {
    let settings = PushSettings {
        appid: DEMO_APPID.to_owned(),
        url: format!("http://{gateway}/v1/apps/{DEMO_APPID}/push"),
        token: TOKEN.to_owned(),
        aes_key: Some(AES.to_owned()),
        mode: "safe".to_owned(),
        format: "xml".to_owned(),
    };
    sandbox.state().configure_push(&settings).unwrap();
}

fn user(i: usize) -> OpenId {
    OpenId::new(format!("oUser{i:010}")).unwrap()
}

/// Every post the webhook took is signed with its secret over its timestamp and body.
fn check_signatures(hook: &Hook) {
    for (headers, body) in hook.taken.lock().unwrap().iter() {
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        let timestamp: u64 = header("x-subscribe-timestamp").parse().unwrap();
        assert_eq!(
            header("x-subscribe-signature"),
            webhook_signature(HOOK_SECRET.as_bytes(), timestamp, body)
        );
        assert_eq!(header("content-type"), "application/json");
        let delivery: Value = serde_json::from_str(body).unwrap();
        assert_eq!(delivery["delivery"].as_str(), Some(header("x-subscribe-delivery").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_event_feeds_the_grants_and_reaches_the_webhook_signed() {
    let sandbox = sandbox_of(SandboxConfig::demo().with_generated_users(3)).await;
    let hook = hook().await;
    let dir = TempDir::new().unwrap();
    let config = push_config(&dir, &sandbox, &hook.url, "path = \"tokens.db\"", "");
    let gw = served(&config).await;
    point_sandbox_at(&sandbox, gw.addr);

    sandbox.state().subscribe(DEMO_APPID, user(0).as_str(), DEMO_MP_TEMPLATE, true).unwrap();
    hook.until(1, Duration::from_secs(10)).await;
    check_signatures(&hook);
    let event = &hook.bodies()[0];
    assert_eq!(event["delivery"].as_str().map(str::len), Some(32), "{event}");
    assert_eq!((event["appid"].as_str(), event["seq"].as_u64()), (Some(DEMO_APPID), Some(1)));
    assert_eq!(event["event"]["event"], "subscribe_msg_popup_event");
    assert_eq!(event["event"]["from_user"], user(0).as_str());
    assert_eq!(event["event"]["items"][0]["status"], "accept", "{event}");

    // The acceptance is a grant, as the library's `apply_event` records it.
    let ledger = open_stores(&config.store).await.unwrap().grants;
    let scope =
        GrantScope::mini_program(SandboxConfig::demo_appid(), TemplateId::new(DEMO_MP_TEMPLATE).unwrap());
    let grant = ledger.get(&scope.key(user(0))).await.unwrap().expect("recorded");
    assert_eq!(grant.status, GrantStatus::Pending);
    drop(gw.stop);
}

/// Six events while the webhook answers 503 for `down`: each kept, posted again with a backoff,
/// and once it is back delivered once each, in the order WeChat pushed them.
async fn kept_while_down(store: &str, url: &str, gateways: usize, down: Duration) {
    let sandbox = sandbox_of(SandboxConfig::demo().with_generated_users(6)).await;
    let hook = hook().await;
    let dir = TempDir::new().unwrap();
    let config = push_config(&dir, &sandbox, &hook.url, store, url);
    let mut fleet: Vec<Served> = Vec::new();
    for _ in 0..gateways {
        fleet.push(served(&config).await);
    }
    point_sandbox_at(&sandbox, fleet[0].addr);
    hook.down.store(true, Ordering::Release);
    // One after another (the sandbox pushes each on a task of its own, as WeChat may: their
    // order is the order the gateway took them in).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for i in 0..6 {
        sandbox.state().subscribe(DEMO_APPID, user(i).as_str(), DEMO_MP_TEMPLATE, i % 2 == 0).unwrap();
        // WeChat was answered (the event kept).
        while sandbox.state().pushes().iter().filter(|p| p.delivered).count() < i + 1 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", sandbox.state().pushes());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The webhook refused posts meanwhile.
    while hook.refused.load(Ordering::Relaxed) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the webhook was not asked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(down.saturating_sub(Duration::from_secs(2))).await;
    assert!(hook.taken.lock().unwrap().is_empty());
    hook.down.store(false, Ordering::Release);
    // The next attempt comes within the backoff's longest wait (60 s).
    hook.until(6, Duration::from_secs(90)).await;
    // Nothing more arrives: each once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    check_signatures(&hook);
    let bodies = hook.bodies();
    let seqs: Vec<u64> = bodies.iter().map(|b| b["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<u64>>(), "once each, in order");
    let deliveries: std::collections::HashSet<&str> =
        bodies.iter().map(|b| b["delivery"].as_str().unwrap()).collect();
    assert_eq!(deliveries.len(), 6, "each event its own delivery id");
    let users: Vec<&str> = bodies.iter().map(|b| b["event"]["from_user"].as_str().unwrap()).collect();
    let pushed: Vec<OpenId> = (0..6).map(user).collect();
    assert_eq!(users, pushed.iter().map(OpenId::as_str).collect::<Vec<_>>());
    for served in fleet {
        drop(served.stop);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_kept_while_the_webhook_is_down_for_a_minute_are_delivered_once_each_in_order_on_sqlite() {
    kept_while_down("path = \"tokens.db\"", "", 1, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_postgres_deliver_the_kept_events_once_each_in_order() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let store =
        format!("kind = \"postgres\"\nurl_env = \"GW_TEST_STORE_URL\"\nschema = \"{}\"", unique("gwp"));
    kept_while_down(&store, &url, 2, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_redis_deliver_the_kept_events_once_each_in_order() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = format!("kind = \"redis\"\nurl_env = \"GW_TEST_STORE_URL\"\nprefix = \"{}\"", unique("gwp"));
    kept_while_down(&store, &url, 2, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_forged_push_records_nothing_more() {
    let sandbox = sandbox_of(SandboxConfig::demo().with_generated_users(1)).await;
    let hook = hook().await;
    let dir = TempDir::new().unwrap();
    let config = push_config(&dir, &sandbox, &hook.url, "path = \"tokens.db\"", "");
    let gw = served(&config).await;
    let push =
        Push::new(PushConfig::new(TOKEN, DEMO_APPID, Mode::Safe).aes_key(EncodingAesKey::new(AES).unwrap()));
    #[allow(clippy::disallowed_methods)] // The gateway checks the timestamp against its wall clock.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_5a1db0c0ffee]]></ToUserName><FromUserName><![CDATA[{}]]></FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event>\
         <SubscribeMsgPopupEvent><List><TemplateId><![CDATA[{DEMO_MP_TEMPLATE}]]></TemplateId>\
         <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>1</PopupScene></List>\
         </SubscribeMsgPopupEvent></xml>",
        user(0).as_str()
    );
    let sealed = push.seal(&xml, now, "nonce-1", [9; 16]).unwrap();
    let http = reqwest::Client::new();
    let post = |query: String, body: String| {
        let url = format!("http://{}/v1/apps/{DEMO_APPID}/push?{query}", gw.addr);
        let r = http.post(url).body(body);
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(post(sealed.query.clone(), sealed.body.clone()).await, (200, "success".to_owned()));
    // The same push again (WeChat's retry, or someone who saw it): answered, nothing more.
    assert_eq!(post(sealed.query.clone(), sealed.body.clone()).await, (200, "success".to_owned()));
    // Its query with another body, or a signature made without the Token: refused.
    let other = push.seal(&xml.replace("accept", "reject"), now, "nonce-2", [3; 16]).unwrap();
    assert_eq!(post(sealed.query.clone(), other.body).await.0, 401);
    let forged = sealed.query.replace("signature=", "signature=0");
    assert_eq!(post(forged, sealed.body.clone()).await.0, 401);
    // An app without push keys has no push endpoint.
    let r = http
        .post(format!("http://{}/v1/apps/{APP_B}/push?{}", gw.addr, sealed.query))
        .body(sealed.body.clone());
    assert_eq!(r.send().await.unwrap().status(), 404);
    hook.until(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.bodies().len(), 1, "{:?}", hook.bodies());
    drop(gw.stop);
}

#[test]
fn the_push_keys_are_checked_at_start_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let base = config_text(dir.path(), "http://127.0.0.1:1");
    let env = |name: &str| {
        match name {
            "T" => Some(TOKEN),
            "SHORT_T" => Some("ab"),
            "K" => Some(AES),
            "BAD_K" => Some("not-a-key"),
            "S" => Some(HOOK_SECRET),
            "SHORT_S" => Some("short"),
            _ => None,
        }
        .map(Into::into)
    };
    let cases = [
        ("push_aes_key_env = \"K\"", "apps[0]"),
        ("push_token_env = \"SHORT_T\"\npush_aes_key_env = \"K\"", "apps[0].push_token_env"),
        ("push_token_env = \"T\"", "apps[0]"),
        ("push_token_env = \"T\"\npush_aes_key_env = \"BAD_K\"", "apps[0].push_aes_key_env"),
        (
            "push_token_env = \"T\"\npush_mode = \"plain\"\npush_aes_key_env = \"K\"",
            "apps[0].push_aes_key_env",
        ),
        ("push_token_env = \"T\"\npush_mode = \"secure\"", "apps[0].push_mode"),
        (
            "push_token_env = \"T\"\npush_aes_key_env = \"K\"\nwebhook_secret_env = \"S\"",
            "apps[0].webhook_url",
        ),
        (
            "push_token_env = \"T\"\npush_aes_key_env = \"K\"\nwebhook_url = \"ftp://x\"\nwebhook_secret_env = \"S\"",
            "apps[0].webhook_url",
        ),
        (
            "push_token_env = \"T\"\npush_aes_key_env = \"K\"\nwebhook_url = \"https://x.example/h\"",
            "apps[0]",
        ),
        (
            "push_token_env = \"T\"\npush_aes_key_env = \"K\"\nwebhook_url = \"https://u:p@x.example/h\"\nwebhook_secret_env = \"S\"",
            "apps[0].webhook_url",
        ),
        (
            "push_token_env = \"T\"\npush_aes_key_env = \"K\"\nwebhook_url = \"https://\"\nwebhook_secret_env = \"S\"",
            "apps[0].webhook_url",
        ),
        (
            "push_token_env = \"T\"\npush_aes_key_env = \"K\"\nwebhook_url = \"https://x.example/h\"\nwebhook_secret_env = \"SHORT_S\"",
            "apps[0].webhook_secret_env",
        ),
    ];
    for (keys, at) in cases {
        let text = base.replacen(
            "secret_file = \"secret-a\"\n",
            &format!("secret_file = \"secret-a\"\n{keys}\n"),
            1,
        );
        let e = Config::parse(&text, dir.path(), &env).unwrap_err();
        assert_eq!(e.key, at, "{keys}: {e}");
        for secret in [TOKEN, AES, HOOK_SECRET] {
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }
    let ok = "push_token_env = \"T\"\npush_aes_key_env = \"K\"\nwebhook_url = \"https://x.example/h?token=abc\"\nwebhook_secret_env = \"S\"";
    let text =
        base.replacen("secret_file = \"secret-a\"\n", &format!("secret_file = \"secret-a\"\n{ok}\n"), 1);
    let config = Config::parse(&text, dir.path(), &env).unwrap();
    let shown = format!("{config:?}");
    for secret in [TOKEN, AES, HOOK_SECRET] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("https://x.example/h?…") && !shown.contains("token=abc"), "{shown}");
}

/// The manual's Python webhook (standard library) takes the pushes the gateway forwards, each
/// once, and refuses a post the gateway did not sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_webhook_takes_the_forwarded_pushes_and_refuses_a_forgery() {
    use tokio::io::AsyncBufReadExt;

    let mut receiver = tokio::process::Command::new("python3")
        .arg(crate::callers::caller("webhook_receiver.py"))
        .env("WEBHOOK_SECRET", HOOK_SECRET)
        .env("PORT", "0")
        .env("EVENTS", "3")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let port = first.strip_prefix("listening on ").expect(&first).to_owned();
    let url = format!("http://127.0.0.1:{port}/wechat-events");

    // A post not signed with the secret.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("x-subscribe-timestamp", "1796631572")
        .header(
            "x-subscribe-signature",
            webhook_signature(b"another-secret-of-32-characters-xx", 1_796_631_572, "{}"),
        )
        .body("{}");
    assert_eq!(forged.send().await.unwrap().status(), 401);

    let sandbox = sandbox_of(SandboxConfig::demo().with_generated_users(3)).await;
    let dir = TempDir::new().unwrap();
    let config = push_config(&dir, &sandbox, &url, "path = \"tokens.db\"", "");
    let gw = served(&config).await;
    point_sandbox_at(&sandbox, gw.addr);
    for i in 0..3 {
        sandbox.state().subscribe(DEMO_APPID, user(i).as_str(), DEMO_MP_TEMPLATE, true).unwrap();
        while sandbox.state().pushes().iter().filter(|p| p.delivered).count() < i + 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(30), receiver.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        out.push(line);
    }
    let expected: Vec<String> =
        std::iter::once("refused: not signed by the gateway".to_owned())
            .chain((0..3).map(|i| {
                format!("{DEMO_APPID} #{}: subscribe_msg_popup_event from {}", i + 1, user(i).as_str())
            }))
            .collect();
    assert_eq!(out, expected);
    drop(gw.stop);
}

#[test]
fn the_manual_quotes_the_python_webhook_whole() {
    let text = std::fs::read_to_string(crate::callers::caller("webhook_receiver.py")).unwrap();
    assert!(
        crate::callers::manual().contains(&format!("```python\n{text}```\n")),
        "docs/gateway.md must quote webhook_receiver.py whole"
    );
}
