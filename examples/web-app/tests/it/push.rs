//! The server URL: the sandbox pushes what users do, encrypted, to `/wechat/push`, and the app
//! turns it into grants, withdrawals and results; a forged or replayed push changes nothing.

use std::time::Duration;

use subscribe_client::GrantScope;
use subscribe_client::events::{ChangeItem, Event, EventKind, Format, Mode, PopupItem, Push, PushConfig};
use subscribe_sandbox::{DEMO_APPID, DEMO_LONG_TERM_TEMPLATE, DEMO_MP_TEMPLATE, PushSettings};
use subscribe_types::{AppId, TemplateId};

use crate::*;

const PUSH_TOKEN: &str = "webAppPushToken2026";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

async fn with_push(mode: &str, format: &str) -> World {
    with_push_on(mode, format, &[]).await
}

async fn with_push_on(mode: &str, format: &str, extra: &[(&'static str, &str)]) -> World {
    let mut env =
        vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN), ("WECHAT_PUSH_AES_KEY", AES_KEY), ("WECHAT_PUSH_MODE", mode)];
    env.extend_from_slice(extra);
    let w = start_with(&env).await;
    // What the operator does in the account's console: the server URL and its settings.
    let settings: PushSettings = serde_json::from_value(serde_json::json!({
        "appid": DEMO_APPID, "url": w.url("/wechat/push"), "token": PUSH_TOKEN, "aes_key": AES_KEY,
        "mode": mode, "format": format,
    }))
    .unwrap();
    w.sandbox.state().configure_push(&settings).unwrap();
    w
}

fn scope(template: &str) -> GrantScope {
    GrantScope::mini_program(AppId::new(DEMO_APPID).unwrap(), TemplateId::new(template).unwrap())
}

/// Waits until the sandbox's pushes are all answered.
async fn pushes_answered(w: &World, n: usize) {
    for _ in 0..200 {
        let pushes = w.sandbox.state().pushes();
        if pushes.len() >= n && pushes.iter().all(|p| p.attempts > 0) {
            assert!(pushes.iter().all(|p| p.delivered), "{pushes:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("pushes not answered: {:?}", w.sandbox.state().pushes());
}

#[tokio::test]
async fn an_accept_in_the_sandbox_becomes_a_grant_through_an_encrypted_push() {
    for (mode, format) in [("safe", "xml"), ("safe", "json"), ("compatible", "xml"), ("plain", "json")] {
        let w = with_push(mode, format).await;
        w.sandbox.state().subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
        w.sandbox.state().subscribe(DEMO_APPID, BOB, DEMO_MP_TEMPLATE, false).unwrap();
        pushes_answered(&w, 2).await;
        let now = w.state.client().clock().now();
        let counts = w.state.ledger().counts(&scope(DEMO_MP_TEMPLATE), now).await.unwrap();
        assert_eq!(counts.pending, 1, "{mode} {format}: Alice's acceptance, not Bob's rejection");
        let (cookies, _) = w.admin_login().await;
        let (_, admin) = w.get(&w.url("/admin"), Some(&cookies)).await;
        assert_eq!(cell(&admin, "pushed-pending-0"), 1, "{admin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_drops_the_grant_and_a_notifications_result_is_kept_by_msgid_across_a_restart() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("web-app-push-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite:{}/grants.db", dir.display());
    let w = with_push_on("safe", "xml", &[("DATABASE_URL", &url)]).await;
    w.sandbox.state().subscribe(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE, true).unwrap();
    pushes_answered(&w, 1).await;
    // A notification sent to Alice (by another service of the integrator's, say): its result
    // comes back by push.
    let token = w.state.client().access_token().await.unwrap();
    let sent = w
        .http
        .post(format!("{}/cgi-bin/message/subscribe/bizsend?access_token={}", w.sandbox.base_url(), token.expose_secret()))
        .body(
            serde_json::json!({
                "touser": ALICE, "template_id": DEMO_LONG_TERM_TEMPLATE, "page": "https://shop.example.com/member",
                "data": {"enum1": {"value": "黄金会员"}, "date2": {"value": "2019-10-01"}},
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent: serde_json::Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["errcode"], 0, "{sent}");
    pushes_answered(&w, 2).await;
    let msgid = sent["msgid"].as_u64().unwrap();
    let result = w.state.results().result(msgid).await.unwrap().unwrap();
    assert!(result.delivered() && result.openid == ALICE, "{result:?}");
    // The app restarts on the same file: the result is still there.
    let restarted = start_with(&[("DATABASE_URL", &url), ("WECHAT_API_BASE", &w.sandbox.base_url())]).await;
    assert_eq!(restarted.state.results().result(msgid).await.unwrap(), Some(result));

    w.sandbox.state().withdraw(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE).unwrap();
    pushes_answered(&w, 3).await;
    let now = w.state.client().clock().now();
    let counts = w.state.ledger().counts(&scope(DEMO_LONG_TERM_TEMPLATE), now).await.unwrap();
    assert_eq!((counts.pending, counts.dropped), (0, 1));
}

#[tokio::test]
async fn a_forged_or_replayed_push_changes_nothing() {
    let w = with_push("safe", "xml").await;
    let forged = w
        .http
        .post(w.url("/wechat/push?signature=0&timestamp=1800000000&nonce=1&encrypt_type=aes&msg_signature=0"))
        .body("<xml><Encrypt>AAAA</Encrypt></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let now = w.state.client().clock().now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let accept = Event::new(
        "gh_1",
        ALICE,
        now,
        EventKind::Popup(vec![PopupItem {
            template_id: DEMO_MP_TEMPLATE.into(),
            status: "accept".into(),
            popup_scene: Some(1),
        }]),
    )
    .to_wire(Format::Xml);
    // A plain push in safe mode, correctly signed with the Token: refused.
    let plain = Push::new(PushConfig::new(PUSH_TOKEN, DEMO_APPID, Mode::Plain))
        .seal(&accept, now, "77", [0; 16])
        .unwrap();
    let r =
        w.http.post(w.url(&format!("/wechat/push?{}", plain.query))).body(plain.body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let pending = || async {
        let counts =
            w.state.ledger().counts(&scope(DEMO_MP_TEMPLATE), w.state.client().clock().now()).await.unwrap();
        (counts.pending, counts.dropped)
    };
    assert_eq!(pending().await, (0, 0));

    // An acceptance, then a withdrawal; the acceptance captured and sent again is answered but
    // not applied: the grant stays withdrawn.
    let safe = Push::new(
        PushConfig::new(PUSH_TOKEN, DEMO_APPID, Mode::Safe)
            .aes_key(subscribe_client::events::EncodingAesKey::new(AES_KEY).unwrap()),
    );
    let withdraw = Event::new(
        "gh_1",
        ALICE,
        now,
        EventKind::Change(vec![ChangeItem { template_id: DEMO_MP_TEMPLATE.into(), status: "reject".into() }]),
    )
    .to_wire(Format::Xml);
    let accepted = safe.seal(&accept, now, "78", [1; 16]).unwrap();
    let withdrawn = safe.seal(&withdraw, now, "79", [2; 16]).unwrap();
    for (push, after) in [(&accepted, (1, 0)), (&withdrawn, (0, 1)), (&accepted, (0, 1))] {
        let r = w
            .http
            .post(w.url(&format!("/wechat/push?{}", push.query)))
            .body(push.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap().as_str()), (200, "success"));
        assert_eq!(pending().await, after);
    }

    // The URL check the console makes when the server URL is saved.
    let sig = subscribe_client::events::signature(&[PUSH_TOKEN, &now.to_string(), "5"]);
    let (status, echo) = w
        .get(&w.url(&format!("/wechat/push?signature={sig}&timestamp={now}&nonce=5&echostr=hi")), None)
        .await;
    assert_eq!((status.as_u16(), echo.as_str()), (200, "hi"));
}

/// Two instances of the app on one SQLite file (two pools, as two processes would have): a
/// push read by the first is answered `success` by the second and not applied again. Without
/// the shared replay cache the second would read the captured acceptance afresh and make the
/// withdrawn grant pending again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_read_by_one_instance_is_not_applied_again_by_another() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("web-app-push-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite:{}/grants.db", dir.display());
    let on_file = [("DATABASE_URL", url.as_str())];
    let (first, second) =
        (with_push_on("safe", "xml", &on_file).await, with_push_on("safe", "xml", &on_file).await);
    let now = first.state.client().clock().now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let safe = Push::new(
        PushConfig::new(PUSH_TOKEN, DEMO_APPID, Mode::Safe)
            .aes_key(subscribe_client::events::EncodingAesKey::new(AES_KEY).unwrap()),
    );
    let event = |kind| Event::new("gh_1", ALICE, now, kind).to_wire(Format::Xml);
    let accept = event(EventKind::Popup(vec![PopupItem {
        template_id: DEMO_MP_TEMPLATE.into(),
        status: "accept".into(),
        popup_scene: Some(1),
    }]));
    let withdraw = event(EventKind::Change(vec![ChangeItem {
        template_id: DEMO_MP_TEMPLATE.into(),
        status: "reject".into(),
    }]));
    let accepted = safe.seal(&accept, now, "81", [3; 16]).unwrap();
    let withdrawn = safe.seal(&withdraw, now, "82", [4; 16]).unwrap();
    let pending = |w: &World| {
        let state = w.state.clone();
        async move {
            let counts =
                state.ledger().counts(&scope(DEMO_MP_TEMPLATE), state.client().clock().now()).await.unwrap();
            (counts.pending, counts.dropped)
        }
    };
    // The acceptance and the withdrawal reach the first; the acceptance, captured, is sent to
    // the second, then to the first again.
    for (w, push, after) in [
        (&first, &accepted, (1, 0)),
        (&first, &withdrawn, (0, 1)),
        (&second, &accepted, (0, 1)),
        (&first, &accepted, (0, 1)),
    ] {
        let r = w
            .http
            .post(w.url(&format!("/wechat/push?{}", push.query)))
            .body(push.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap().as_str()), (200, "success"));
        assert_eq!(pending(&first).await, after);
        assert_eq!(pending(&second).await, after, "one file, one ledger");
    }
}

#[test]
fn push_settings_are_checked_by_name_and_never_printed() {
    let env = |pairs: Vec<(&'static str, &'static str)>| {
        Config::from_lookup(move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))
    };
    assert!(env(vec![]).unwrap().push.is_none(), "off without a Token");
    for (pairs, var) in [
        (vec![("WECHAT_PUSH_TOKEN", "a!")], "WECHAT_PUSH_TOKEN"),
        (vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN), ("WECHAT_PUSH_AES_KEY", "short")], "WECHAT_PUSH_AES_KEY"),
        (vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN), ("WECHAT_PUSH_MODE", "safe")], "WECHAT_PUSH_AES_KEY"),
        (vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN), ("WECHAT_PUSH_MODE", "secret")], "WECHAT_PUSH_MODE"),
        (
            vec![
                ("WECHAT_PUSH_TOKEN", PUSH_TOKEN),
                ("WECHAT_PUSH_MODE", "plain"),
                ("WECHAT_PUSH_TEMPLATES", "a b"),
            ],
            "WECHAT_PUSH_TEMPLATES",
        ),
    ] {
        let e = env(pairs).unwrap_err().to_string();
        assert!(e.starts_with(var), "{e}");
        assert!(!e.contains(PUSH_TOKEN), "{e}");
    }
    let c = env(vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN), ("WECHAT_PUSH_AES_KEY", AES_KEY)]).unwrap();
    assert_eq!(c.push.as_ref().unwrap().mode, subscribe_client::events::Mode::Safe);
    let shown = format!("{c:?}");
    assert!(!shown.contains(PUSH_TOKEN) && !shown.contains(AES_KEY), "{shown}");
}

#[test]
fn plain_mode_is_never_a_default_and_is_chosen_by_name() {
    let env = |pairs: Vec<(&'static str, &'static str)>| {
        Config::from_lookup(move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))
    };
    // A Token without a key: not quietly plain, but the safe mode asking for its key.
    let e = env(vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN)]).unwrap_err().to_string();
    assert!(e.starts_with("WECHAT_PUSH_AES_KEY") && e.contains("WECHAT_PUSH_MODE=plain"), "{e}");
    // Plain, said in so many words.
    let c = env(vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN), ("WECHAT_PUSH_MODE", "plain")]).unwrap();
    assert_eq!(c.push.as_ref().unwrap().mode, Mode::Plain);
    // Safe whenever the mode is not named.
    let c = env(vec![("WECHAT_PUSH_TOKEN", PUSH_TOKEN), ("WECHAT_PUSH_AES_KEY", AES_KEY)]).unwrap();
    assert_eq!(c.push.as_ref().unwrap().mode, Mode::Safe);
}
