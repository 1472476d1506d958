//! The web app over real HTTP, against the sandbox, as a browser without JavaScript would use
//! it (the browser test, `tests/browser.rs`, does the same in Chromium), and the dispatch as an
//! operator's script calls it.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE, WWW_AUTHENTICATE};
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
    assert_eq!(w.get(&w.url("/health"), None).await, (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()));

    // Alice confirms: the grant is recorded once; the same answer again (a reload) is refused as
    // already accepted, which tells her page it took.
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    let (status, page) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"data-action="confirm""#) && page.contains("on the list"), "{page}");
    let (status, again) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 409);
    assert!(again.contains("already accepted") && again.contains(r#"id="error""#), "{again}");
    // Subscribing again (a fresh state, the same session) finds her grant still waiting.
    let (same, callback) = w.authorize(Some(&alice), ALICE, "confirm").await;
    assert_eq!(same, alice, "the session is kept");
    let (status, again) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 200);
    assert!(again.contains("already on the list"), "{again}");

    // Bob cancels: nothing is recorded for him.
    let (bob, callback) = w.authorize(None, BOB, "cancel").await;
    assert_ne!(bob, alice);
    let (status, page) = w.get(&callback, Some(&bob)).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-action="cancel""#), "{page}");
    assert_eq!(w.pending().await, 1);

    // The dispatch sends Alice her one message, and Bob nothing.
    let report = w.dispatch().await;
    assert_eq!((report["sent"].as_u64(), report["delivered"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["outcomes"][0]["openid"], ALICE, "{report}");
    assert_eq!(report["outcomes"][0]["outcome"], "delivered", "{report}");
    let inbox = w.sandbox.state().inbox(ALICE);
    assert_eq!((inbox.len(), inbox[0].content.as_str()), (1, web_app::MESSAGE.1));
    assert!(w.sandbox.state().inbox(BOB).is_empty());

    // Nobody is waiting any more: a second dispatch sends nothing.
    assert_eq!(w.dispatch().await["sent"], 0);
    assert_eq!((w.sandbox.state().stats().deliveries, w.pending().await), (1, 0));
}

#[tokio::test]
async fn the_dispatch_route_refuses_a_missing_or_wrong_token_and_is_off_without_one() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);

    let almost = &DISPATCH_TOKEN[..DISPATCH_TOKEN.len() - 1];
    for authorization in [
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {almost}")),
        Some(format!("Bearer {DISPATCH_TOKEN}x")),
        Some(format!("Bearer  {DISPATCH_TOKEN}")),
        Some(format!("Basic {DISPATCH_TOKEN}")),
        Some(DISPATCH_TOKEN.to_owned()),
    ] {
        let mut req = w.http.post(w.url("/dispatch"));
        if let Some(a) = &authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{authorization:?}");
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
    }
    // Only a POST dispatches.
    assert_eq!(w.get(&w.url("/dispatch"), None).await.0, 405);
    assert_eq!(w.sandbox.state().stats().send_requests, 0, "nothing was sent");
    assert_eq!(w.pending().await, 1);

    // Without a token configured the route is off, whatever the request says.
    let off = start_with(&[("WEBAPP_DISPATCH_TOKEN", "")]).await;
    for authorization in [None, Some(format!("Bearer {DISPATCH_TOKEN}")), Some("Bearer ".to_owned())] {
        let (status, text) = off.dispatch_with(authorization.as_deref()).await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("WEBAPP_DISPATCH_TOKEN"), "{text}");
    }

    // The token sends, once per grant.
    assert_eq!(w.dispatch().await["delivered"], 1);
    assert_eq!(w.dispatch().await["sent"], 0);
    assert_eq!(w.sandbox.state().inbox(ALICE).len(), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_unread() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    let r = w
        .http
        .post(w.url("/dispatch"))
        .header(AUTHORIZATION, format!("Bearer {DISPATCH_TOKEN}"))
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!((w.sandbox.state().stats().send_requests, w.pending().await), (0, 1));
}

#[tokio::test]
async fn the_session_cookie_is_http_only_same_site_lax_and_secure_behind_https() {
    let w = start().await;
    let cookie = |r: &reqwest::Response| r.headers().get(SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
    let r = w.http.get(w.url("/subscribe")).send().await.unwrap();
    let set = cookie(&r).unwrap();
    assert!(set.starts_with("sid=") && set.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{set}");
    assert_eq!(set.split(';').next().unwrap().len(), 4 + 32, "128 bits in hex: {set}");
    // A browser that has one keeps it; a malformed one is replaced.
    let sid = set.split(';').next().unwrap();
    let r = w.http.get(w.url("/subscribe")).header(COOKIE, sid).send().await.unwrap();
    assert_eq!(cookie(&r), None);
    let r = w.http.get(w.url("/subscribe")).header(COOKIE, "sid=chosen-by-an-attacker").send().await.unwrap();
    assert!(cookie(&r).is_some_and(|c| !c.contains("chosen")));

    let https = start_with(&[("WEBAPP_PUBLIC_URL", "https://shop.example.com")]).await;
    let r = https.http.get(https.url("/subscribe")).send().await.unwrap();
    assert!(cookie(&r).unwrap().ends_with("; HttpOnly; SameSite=Lax; Secure"));
    assert!(r.headers()["location"].to_str().unwrap().contains("shop.example.com%2Fcallback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_kept_in_sqlite_survive_a_restart_of_the_app() {
    // The directory does not exist yet: it is created, as `data/` on a fresh machine, for the
    // owner alone, and so is the file (it holds the access token).
    let dir = fresh_data_dir().join("data");
    let data = dir.display().to_string();
    let w = start_with(&[("WEBAPP_DATA_DIR", &data)]).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: std::path::PathBuf| {
            format!("{:o}", std::fs::metadata(p).unwrap().permissions().mode() & 0o777)
        };
        assert_eq!((mode(dir.clone()), mode(dir.join("grants.db"))), ("700".into(), "600".into()));
    }
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);

    // The process restarts: a new app on the same file finds Alice's grant and sends it.
    let restarted =
        start_with(&[("WEBAPP_DATA_DIR", &data), ("WECHAT_API_BASE", &w.sandbox.base_url())]).await;
    assert_eq!(restarted.pending().await, 1, "the grant survived the restart");
    assert_eq!(restarted.dispatch().await["delivered"], 1);
    assert_eq!(w.sandbox.state().inbox(ALICE).len(), 1);
    assert_eq!(w.pending().await, 0, "both see one file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_answer_is_refused_by_a_second_instance_and_after_a_restart_on_sqlite() {
    let data = fresh_data_dir().display().to_string();
    let a = start_with(&[("WEBAPP_DATA_DIR", &data)]).await;
    let (alice, callback) = a.authorize(None, ALICE, "confirm").await;
    assert_eq!(a.get(&callback, Some(&alice)).await.0, 200);

    // Another instance on the same file, as a restarted process finds it: the used state is in
    // the file, not in the first process's memory.
    let b = start_with(&[("WEBAPP_DATA_DIR", &data), ("WECHAT_API_BASE", &a.sandbox.base_url())]).await;
    let at_b = callback.replace(&a.url(""), &b.url(""));
    let (status, page) = b.get(&at_b, Some(&alice)).await;
    assert_eq!(status, 409, "the same answer, replayed after the restart: {page}");
    for forged in
        [with_param(&at_b, "openid", "oForged0001"), with_param(&at_b, "openid", &ALICE.to_lowercase())]
    {
        let (status, page) = b.get(&forged, Some(&alice)).await;
        assert_eq!(status, 409, "another openid with the used state: {page}");
    }
    assert_eq!(b.pending().await, 1, "Alice's grant, once");
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
    // Without any session, or with a malformed one.
    assert_eq!(w.get(&callback, None).await.0, 400);
    assert_eq!(w.get(&callback, Some("sid=")).await.0, 400);
    // A tampered scene or template in Alice's own session: the session matches, so only the
    // signed state can refuse them (it names the scene and template it was issued for).
    for forged in
        [with_param(&callback, "scene", "2"), with_param(&callback, "template_id", "another_template")]
    {
        assert_ne!(forged, callback);
        let (status, page) = w.get(&forged, Some(&alice)).await;
        assert_eq!(status, 400, "{forged}");
        assert!(page.contains("not valid for this app, template, scene and session"), "{page}");
    }
    assert_eq!(w.pending().await, 0);
    // Garbage.
    assert_eq!(w.get(&w.url("/callback?<script>"), Some(&other)).await.0, 400);
    // The genuine answer in Alice's session is still good: the refusals were the tampering's.
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    assert_eq!(w.pending().await, 1);
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
    assert_eq!(w.pending().await, 1);
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
    assert_eq!(w.pending().await, 1);
    // Alice's own answer came too late: the state was used by the first forged openid.
    assert_eq!(w.get(&callback, Some(&alice)).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn configuration_errors_name_the_variable_and_the_secret_never_prints() {
    let secret = "a-very-private-secret-value-1234";
    let key = "a-state-key-of-at-least-32-bytes-5678";
    let data = fresh_data_dir().display().to_string();
    let cfg = Config::from_lookup(|k| match k {
        "WECHAT_SECRET" => Some(secret.to_owned()),
        "WEBAPP_STATE_KEY" => Some(key.to_owned()),
        "WEBAPP_DISPATCH_TOKEN" => Some(DISPATCH_TOKEN.to_owned()),
        "WEBAPP_DATA_DIR" => Some(data.clone()),
        _ => None,
    })
    .unwrap();
    let state = AppState::open(cfg.clone()).await.unwrap();
    let shown = format!("{cfg:?} {state:?} {cfg:#?}");
    for private in [secret, key, DISPATCH_TOKEN] {
        assert!(!shown.contains(private), "{shown}");
    }
    // Neither as bytes: `Vec<u8>`'s Debug would print the key as numbers.
    let bytes = format!("{:?}", key.as_bytes());
    assert!(!shown.contains(&bytes[1..20]), "{shown}");

    for (var, value) in [
        ("WEBAPP_LISTEN", "nowhere"),
        ("WEBAPP_PUBLIC_URL", "ftp://x"),
        ("WECHAT_APPID", "wx bad"),
        ("WECHAT_SECRET", "a secret with spaces"),
        ("WECHAT_TEMPLATE_ID", "bad template"),
        ("WEBAPP_SCENE", "10001"),
        ("WEBAPP_SCENE", "one"),
        ("WEBAPP_STATE_KEY", "short"),
        ("WEBAPP_DISPATCH_TOKEN", "a-token-of-31-bytes-0123456789a"),
    ] {
        let e = Config::from_lookup(|k| (k == var).then(|| value.to_owned())).unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("{var}: ")), "{var}: {shown}");
        let secret = ["WECHAT_SECRET", "WEBAPP_STATE_KEY", "WEBAPP_DISPATCH_TOKEN"].contains(&var);
        assert!(!(secret && shown.contains(value)), "a secret's value shown: {shown}");
    }
}
