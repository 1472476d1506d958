//! The web app over real HTTP, against the sandbox, as a browser without JavaScript would use
//! it (the browser test, `tests/browser.rs`, does the same in Chromium).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod admin;
mod app_api;
mod push;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::COOKIE;
use subscribe_client::GrantLedger;
use subscribe_sandbox::{SandboxConfig, SandboxHandle};
use web_app::{AppState, Config};

#[path = "../common/mod.rs"]
mod common;
use common::*;

#[tokio::test]
async fn confirm_cancel_dispatch_and_exactly_one_message() {
    let w = start().await;
    let (status, index) = w.get(&w.url("/"), None).await;
    assert_eq!(status, 200);
    assert!(index.contains(r#"href="/subscribe""#));

    // Alice confirms: the grant is recorded once; the answer replayed is refused.
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    let (status, page) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"data-action="confirm""#), "{page}");
    let (status, again) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 409);
    assert!(again.contains("already used"), "{again}");
    // Subscribing again (a fresh state) finds her grant still waiting.
    let (_, callback) = w.authorize(Some(&alice), ALICE, "confirm").await;
    let (status, again) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 200);
    assert!(again.contains("already on the list"), "{again}");
    assert_eq!(w.health().await["grants"]["pending"], 1);

    // Bob cancels.
    let (bob, callback) = w.authorize(None, BOB, "cancel").await;
    assert_ne!(bob, alice);
    let (status, page) = w.get(&callback, Some(&bob)).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-action="cancel""#), "{page}");

    // A message that breaks a rule is refused before any grant is touched.
    let (status, page) = w.dispatch("这个标题一共有十六个字符长度超过限制", "到货了").await;
    assert_eq!(status, 400);
    assert!(page.contains("title"), "{page}");
    assert_eq!(w.sandbox.state().stats().send_requests, 0);
    assert_eq!(w.health().await["grants"]["pending"], 1);

    // The dispatch sends Alice her one message, and Bob nothing.
    let (status, report) = w.dispatch("到货提醒", "您关注的亚麻衬衫已到货").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((cell(&report, "sent"), cell(&report, "delivered")), (1, 1));
    assert!(report.contains(ALICE));
    assert_eq!(w.sandbox.state().inbox(ALICE).len(), 1);
    assert_eq!(w.sandbox.state().inbox(ALICE)[0].content, "您关注的亚麻衬衫已到货");
    assert!(w.sandbox.state().inbox(BOB).is_empty());

    // Nobody is waiting any more: a second dispatch sends nothing.
    let (_, report) = w.dispatch("到货提醒", "again").await;
    assert_eq!(cell(&report, "sent"), 0);
    assert_eq!(w.sandbox.state().stats().deliveries, 1);
    let (cookies, _) = w.admin_login().await;
    let (_, admin) = w.get(&w.url("/admin"), Some(&cookies)).await;
    assert_eq!((cell(&admin, "pending"), cell(&admin, "delivered")), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_kept_in_sqlite_survive_a_restart_of_the_app() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("web-app-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The directory does not exist yet: it is created, as `data/` on a fresh machine, for the
    // owner alone, and so is the file (it holds the access token).
    let url = format!("sqlite:{}/data/grants.db", dir.display());
    let w = start_with(&[("DATABASE_URL", &url)]).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: std::path::PathBuf| {
            format!("{:o}", std::fs::metadata(p).unwrap().permissions().mode() & 0o777)
        };
        assert_eq!((mode(dir.join("data")), mode(dir.join("data/grants.db"))), ("700".into(), "600".into()));
    }
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    assert_eq!(w.health().await["grants"]["pending"], 1);

    // The process restarts: a new app on the same file finds Alice's grant and sends it.
    let restarted = start_with(&[("DATABASE_URL", &url), ("WECHAT_API_BASE", &w.sandbox.base_url())]).await;
    assert_eq!(restarted.health().await["grants"]["pending"], 1, "the grant survived the restart");
    let (status, report) = restarted.dispatch("到货提醒", "您关注的亚麻衬衫已到货").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(cell(&report, "delivered"), 1);
    assert_eq!(w.sandbox.state().inbox(ALICE).len(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the first app's cached counts
    assert_eq!(w.health().await["grants"]["delivered"], 1, "both see one database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_answer_is_refused_by_a_second_instance_and_after_a_restart_on_sqlite() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("web-app-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite:{}/grants.db", dir.display());
    let a = start_with(&[("DATABASE_URL", &url)]).await;
    let (alice, callback) = a.authorize(None, ALICE, "confirm").await;
    assert_eq!(a.get(&callback, Some(&alice)).await.0, 200);

    // Another instance on the same file, as a restarted process finds it: the used state is in
    // the file, not in the first process's memory.
    let b = start_with(&[("DATABASE_URL", &url), ("WECHAT_API_BASE", &a.sandbox.base_url())]).await;
    let at_b = callback.replace(&a.url(""), &b.url(""));
    let (status, page) = b.get(&at_b, Some(&alice)).await;
    assert_eq!(status, 409, "the same answer, replayed after the restart: {page}");
    for forged in
        [with_param(&at_b, "openid", "oForged0001"), with_param(&at_b, "openid", &ALICE.to_lowercase())]
    {
        let (status, page) = b.get(&forged, Some(&alice)).await;
        assert_eq!(status, 409, "another openid with the used state: {page}");
    }
    assert_eq!(b.health().await["grants"]["pending"], 1, "Alice's grant, once");
}

#[test]
fn the_database_url_defaults_to_sqlite_in_the_data_dir_and_stays_out_of_debug() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        Config::from_lookup(move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))
            .unwrap()
    };
    assert_eq!(env(&[]).database_url.as_deref(), Some("sqlite:data/grants.db"));
    assert_eq!(
        env(&[("WEBAPP_DATA_DIR", "/var/lib/shop")]).database_url.as_deref(),
        Some("sqlite:/var/lib/shop/grants.db")
    );
    assert_eq!(env(&[("DATABASE_URL", "memory")]).database_url, None);
    let pg = env(&[("DATABASE_URL", "postgres://shop:s3cr3t@db/shop")]);
    assert_eq!(pg.database_url.as_deref(), Some("postgres://shop:s3cr3t@db/shop"));
    assert!(!format!("{pg:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_stops_the_start_without_printing_its_password() {
    for url in ["postgres://shop:s3cr3t@127.0.0.1:1/shop", "redis://:s3cr3t@127.0.0.1:1"] {
        let config = Config::from_lookup(|k| (k == "DATABASE_URL").then(|| url.to_owned())).unwrap();
        let e = AppState::open(config).await.expect_err(url);
        let (shown, debug) = (e.to_string(), format!("{e:?}"));
        assert!(shown.starts_with("grant database: "), "{shown}");
        assert!(!shown.contains("s3cr3t") && !debug.contains("s3cr3t"), "{shown} / {debug}");
    }
}

/// `url` with the value of query parameter `key` replaced by `value`.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let pairs: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k == key => format!("{k}={value}"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[tokio::test]
async fn an_answer_from_another_session_or_a_forged_one_is_refused() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;

    // The same answer in another browser (an attacker's link opened by a victim).
    let (other, _) = w.authorize(None, BOB, "cancel").await;
    let (status, page) = w.get(&callback, Some(&other)).await;
    assert_eq!(status, 400);
    assert!(page.contains(r#"id="error""#), "{page}");
    // Without any session.
    assert_eq!(w.get(&callback, None).await.0, 400);
    // A tampered scene or template in Alice's own session: the session matches, so only the
    // signed state can refuse them (it names the scene and template it was issued for).
    let scene = callback.split("scene=").nth(1).unwrap().split('&').next().unwrap();
    let other_scene = if scene == "2" { "3" } else { "2" };
    for forged in [
        with_param(&callback, "scene", other_scene),
        with_param(&callback, "template_id", "another_template"),
    ] {
        assert_ne!(forged, callback);
        let (status, page) = w.get(&forged, Some(&alice)).await;
        assert_eq!(status, 400, "{forged}");
        assert!(page.contains("not valid for this app, template, scene and session"), "{page}");
    }
    assert_eq!(w.health().await["grants"]["pending"], 0);
    // Garbage.
    assert_eq!(w.get(&w.url("/callback?<script>"), Some(&other)).await.0, 400);
    // The genuine answer in Alice's session is still good: the refusals were the tampering's.
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    assert_eq!(w.health().await["grants"]["pending"], 1);
}

/// The callback is read as the request says to every reader of it (the browser, a proxy's
/// log): a `?` inside its query is part of a value, not the start of another answer.
#[tokio::test]
async fn a_question_mark_inside_the_callback_query_is_part_of_a_value() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    let (status, page) = w.get(&format!("{callback}&note=?action=cancel"), Some(&alice)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"data-action="confirm""#), "{page}");
    assert_eq!(w.health().await["grants"]["pending"], 1);
}

#[tokio::test]
async fn one_answer_replayed_with_made_up_openids_records_one_grant() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    let mut accepted = 0;
    for i in 0..30 {
        let forged = with_param(&callback, "openid", &format!("oForged{i:04}"));
        let (status, _) = w.get(&forged, Some(&alice)).await;
        accepted += usize::from(status == StatusCode::OK);
        assert!(status == StatusCode::OK || status == StatusCode::CONFLICT, "{status}");
    }
    assert_eq!(accepted, 1, "one state, one grant");
    assert_eq!(w.health().await["grants"]["pending"], 1);
    // Alice's own answer came too late: the state was used by the first forged openid.
    assert_eq!(w.get(&callback, Some(&alice)).await.0, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_shed_and_a_normal_request_still_answers() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = start_with(&[("WEBAPP_HEADER_TIMEOUT_MS", "1000")]).await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(w.app).await.unwrap();
        c.write_all(b"POST /admin/dispatch HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
        slow.push(c);
    }
    let started = std::time::Instant::now();
    assert_eq!(w.get(&w.url("/health"), None).await.0, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    for c in &mut slow {
        let mut buf = [0u8; 1024];
        let closed = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => {}
                Err(_) => break false,
            }
        };
        assert!(closed, "a connection that never finished its headers was kept");
    }
}

#[test]
fn configuration_errors_name_the_variable_and_the_secret_never_prints() {
    let secret = "a-very-private-secret-value-1234";
    let key = "a-state-key-of-at-least-32-bytes-5678";
    let cfg = Config::from_lookup(|k| match k {
        "WECHAT_SECRET" => Some(secret.to_owned()),
        "WEBAPP_STATE_KEY" => Some(key.to_owned()),
        "WEBAPP_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        "WEBAPP_APP_SESSION_KEY" => Some(APP_SESSION_KEY.to_owned()),
        _ => None,
    })
    .unwrap();
    let state = AppState::new(cfg.clone()).unwrap();
    let shown = format!("{cfg:?} {state:?} {cfg:#?}");
    for private in [secret, key, ADMIN_TOKEN, APP_SESSION_KEY] {
        assert!(!shown.contains(private), "{shown}");
    }
    // Neither as bytes: `Vec<u8>`'s Debug would print the key as numbers.
    let bytes = format!("{:?}", key.as_bytes());
    assert!(!shown.contains(&bytes[1..20]), "{shown}");
    assert!(shown.contains("state_key: Some(\"[redacted]\")"), "{shown}");

    for (var, value) in [
        ("WEBAPP_LISTEN", "nowhere"),
        ("WEBAPP_PUBLIC_URL", "ftp://x"),
        ("WECHAT_APPID", "wx bad"),
        ("WEBAPP_SCENE", "10001"),
        ("WEBAPP_STATE_KEY", "short"),
        ("WEBAPP_ADMIN_TOKEN", "short"),
        ("WEBAPP_APP_SESSION_KEY", "short"),
        ("WEBAPP_APP_RATE_PER_MINUTE", "0"),
        ("WEBAPP_ADMIN_TOKEN", "a token with spaces in it, long enough though"),
        ("WEBAPP_HEADER_TIMEOUT_MS", "0"),
        ("WEBAPP_MAX_CONNECTIONS", "lots"),
        ("WECHAT_TEMPLATE_ID", "bad template"),
    ] {
        let e = Config::from_lookup(|k| (k == var).then(|| value.to_owned())).unwrap_err();
        assert!(e.to_string().starts_with(var), "{var}: {e}");
    }
}
