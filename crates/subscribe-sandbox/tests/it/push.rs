//! Event push: the sandbox pushes what users do to the app's server URL, signed and encrypted
//! as WeChat does, and an integrator's handler (subscribe-events' axum endpoint) reads every
//! mode and format; unanswered pushes are resent; bad settings are refused by name.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use subscribe_events::axum::PushEndpoint;
use subscribe_events::{EncodingAesKey, Event, EventKind, Mode, Push, PushConfig};
use subscribe_sandbox::{
    DEMO_APPID, DEMO_LONG_TERM_TEMPLATE, DEMO_MP_TEMPLATE, SandboxConfig, SandboxHandle,
};

use crate::*;

const TOKEN: &str = "sandboxPushToken2026";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

type Got = Arc<Mutex<Vec<Event>>>;

/// A server URL on 127.0.0.1 handing events to a list; answers 500 to the first `fail`
/// pushes.
async fn receiver(mode: Mode, fail: usize) -> (String, Got) {
    let got: Got = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(fail));
    let g = got.clone();
    let push = Push::new(PushConfig::new(TOKEN, DEMO_APPID, mode).aes_key(EncodingAesKey::new(KEY).unwrap()));
    let endpoint = PushEndpoint::new(push, move |event: Event| {
        let (g, failures) = (g.clone(), failures.clone());
        async move {
            if failures
                .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                    n.checked_sub(1)
                })
                .is_ok()
            {
                return Err(std::io::Error::other("not yet"));
            }
            g.lock().unwrap().push(event);
            Ok(())
        }
    });
    let app = axum::Router::new().route("/wechat/push", endpoint.method_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wechat/push", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn configure(s: &SandboxHandle, http: &reqwest::Client, settings: &Value) -> reqwest::Response {
    http.post(format!("{}/sandbox/api/push", s.base_url()))
        .header("content-type", "application/json")
        .body(settings.to_string())
        .send()
        .await
        .unwrap()
}

async fn answer(s: &SandboxHandle, http: &reqwest::Client, template: &str, decision: &str) {
    let r = http
        .post(format!("{}/sandbox/api/subscribe", s.base_url()))
        .header("content-type", "application/json")
        .body(
            json!({"appid": DEMO_APPID, "openid": ALICE, "template_id": template, "decision": decision})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Waits until `got` holds `n` events.
async fn wait_for(got: &Got, n: usize) -> Vec<Event> {
    for _ in 0..200 {
        if got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    got.lock().unwrap().clone()
}

#[tokio::test]
async fn every_mode_and_format_reaches_the_handler_popup_sent_and_change() {
    for (mode, mode_name) in [(Mode::Plain, "plain"), (Mode::Compatible, "compatible"), (Mode::Safe, "safe")]
    {
        for format in ["xml", "json"] {
            let (s, http) = start(SandboxConfig::demo()).await;
            let (url, got) = receiver(mode, 0).await;
            let settings = json!({"appid": DEMO_APPID, "url": url, "token": TOKEN, "aes_key": KEY, "mode": mode_name, "format": format});
            assert_eq!(configure(&s, &http, &settings).await.status(), 200);

            answer(&s, &http, DEMO_LONG_TERM_TEMPLATE, "accept").await;
            let token = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
            let sent: Value = body(
                http.post(format!("{}/cgi-bin/message/subscribe/bizsend?access_token={token}", s.base_url()))
                    .body(json!({
                        "touser": ALICE, "template_id": DEMO_LONG_TERM_TEMPLATE, "page": "https://shop.example.com/member",
                        "data": {"enum1": {"value": "黄金会员"}, "date2": {"value": "2019-10-01"}},
                    }).to_string())
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(sent["errcode"], 0, "{sent}");
            let events = wait_for(&got, 2).await;
            answer(&s, &http, DEMO_LONG_TERM_TEMPLATE, "withdraw").await;
            let events = [events, wait_for(&got, 3).await.split_off(2)].concat();
            let case = format!("{mode_name} {format}");
            assert_eq!(events.len(), 3, "{case}: {events:?}");
            assert!(events.iter().all(|e| e.from_user == ALICE), "{case}");
            // The popup and the sent event race only if the push is slower than the send; the
            // popup was pushed first, so match by kind.
            let popup = events.iter().find_map(|e| match &e.kind {
                EventKind::Popup(i) => Some(i.clone()),
                _ => None,
            });
            let popup = popup.unwrap_or_else(|| panic!("{case}: no popup in {events:?}"));
            assert_eq!(
                (popup[0].template_id.as_str(), popup[0].status.as_str()),
                (DEMO_LONG_TERM_TEMPLATE, "accept"),
                "{case}"
            );
            let sent_items = events
                .iter()
                .find_map(|e| match &e.kind {
                    EventKind::Sent(i) => Some(i.clone()),
                    _ => None,
                })
                .unwrap();
            assert_eq!(
                Some(sent_items[0].msg_id),
                sent["msgid"].as_u64(),
                "{case}: the result is matched by msgid"
            );
            assert_eq!(
                (sent_items[0].error_code, sent_items[0].error_status.as_str()),
                (0, "success"),
                "{case}"
            );
            let EventKind::Change(change) = &events[2].kind else { panic!("{case}: {:?}", events[2]) };
            assert_eq!(
                (change[0].template_id.as_str(), change[0].status.as_str()),
                (DEMO_LONG_TERM_TEMPLATE, "reject")
            );

            let records: Value =
                body(http.get(format!("{}/sandbox/api/pushes", s.base_url())).send().await.unwrap()).await;
            let records = records.as_array().unwrap();
            assert_eq!(records.len(), 3, "{case}");
            assert!(
                records
                    .iter()
                    .all(|r| r["delivered"] == true && r["mode"] == mode_name && r["format"] == format),
                "{records:?}"
            );
            let shown = format!("{records:?} {:?}", s.state().config());
            assert!(!shown.contains(TOKEN) && !shown.contains(KEY), "the Token or key printed: {shown}");
            s.shutdown().await;
        }
    }
}

/// The `i`-th push record once `done` holds for it, or as it is after 5 s.
async fn record_once(
    s: &SandboxHandle,
    i: usize,
    done: impl Fn(&subscribe_sandbox::PushRecord) -> bool,
) -> subscribe_sandbox::PushRecord {
    for _ in 0..100 {
        if s.state().pushes().get(i).is_some_and(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.state().pushes().get(i).cloned().unwrap_or_else(|| panic!("no push record {i}"))
}

#[tokio::test]
async fn a_push_answered_500_is_resent_until_answered_and_an_unreachable_url_gives_up() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let (url, got) = receiver(Mode::Safe, 2).await;
    let settings = json!({"appid": DEMO_APPID, "url": url, "token": TOKEN, "aes_key": KEY, "mode": "safe"});
    assert_eq!(configure(&s, &http, &settings).await.status(), 200);
    answer(&s, &http, DEMO_MP_TEMPLATE, "accept").await;
    let events = wait_for(&got, 1).await;
    assert_eq!(events.len(), 1, "handled once, after two failures");
    // The receiver has the event before the sandbox has read its answer.
    let first = record_once(&s, 0, |r| r.delivered).await;
    assert_eq!((first.attempts, first.delivered), (3, true), "{first:?}");

    // A server URL nobody listens on: four attempts, then the sandbox gives up and goes on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/push", closed.local_addr().unwrap());
    drop(closed);
    let settings = json!({"appid": DEMO_APPID, "url": dead, "token": TOKEN, "mode": "plain"});
    assert_eq!(configure(&s, &http, &settings).await.status(), 200);
    answer(&s, &http, DEMO_MP_TEMPLATE, "reject").await;
    let last = record_once(&s, 1, |r| r.attempts == subscribe_sandbox::PUSH_ATTEMPTS).await;
    assert_eq!(
        (last.attempts, last.delivered, last.error.as_deref()),
        (subscribe_sandbox::PUSH_ATTEMPTS, false, Some("could not connect"))
    );

    // A server URL that answers 500 every time: four attempts, each recorded with its status.
    let (refusing, _) = receiver(Mode::Plain, usize::MAX).await;
    let settings = json!({"appid": DEMO_APPID, "url": refusing, "token": TOKEN, "mode": "plain"});
    assert_eq!(configure(&s, &http, &settings).await.status(), 200);
    answer(&s, &http, DEMO_MP_TEMPLATE, "accept").await;
    let refused = record_once(&s, 2, |r| r.attempts == subscribe_sandbox::PUSH_ATTEMPTS).await;
    assert_eq!(
        (refused.attempts, refused.status, refused.delivered, refused.error.as_deref()),
        (subscribe_sandbox::PUSH_ATTEMPTS, Some(500), false, Some("answered HTTP 500"))
    );
    assert_eq!(stable_token(&s, &http, false).await["expires_in"], 7200, "the sandbox still answers");
}

/// An `https://` server URL is pushed to over TLS, its certificate checked: a receiver whose
/// authority the platform does not trust is refused (and named so), never sent the event.
#[tokio::test]
async fn an_https_server_url_is_reached_over_tls_and_an_untrusted_certificate_refused() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let ca = subscribe_transport::test_util::TestAuthority::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/push", listener.local_addr().unwrap());
    let handshakes = Arc::new(Mutex::new(0_usize));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // The sandbox starts a TLS handshake, then refuses the certificate.
            *counted.lock().unwrap() += 1;
            let _ = acceptor.accept(stream).await;
        }
    });
    let settings = json!({"appid": DEMO_APPID, "url": url, "token": TOKEN, "mode": "plain"});
    assert_eq!(configure(&s, &http, &settings).await.status(), 200);
    answer(&s, &http, DEMO_MP_TEMPLATE, "accept").await;
    let record = record_once(&s, 0, |r| r.attempts == subscribe_sandbox::PUSH_ATTEMPTS).await;
    assert_eq!(
        (record.delivered, record.error.as_deref()),
        (false, Some("the server URL's TLS certificate was refused")),
        "{record:?}"
    );
    assert!(*handshakes.lock().unwrap() >= 1, "a TLS handshake was started");
}

/// A server URL that answers a redirect has not taken the push: the sandbox does not follow
/// it (as WeChat does not), so a receiver cannot point the sandbox at another host.
#[tokio::test]
async fn a_redirecting_server_url_is_a_failed_push_and_is_not_followed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (s, http) = start(SandboxConfig::demo()).await;
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/internal", elsewhere.local_addr().unwrap());
    let reached = Arc::new(Mutex::new(0_usize));
    let counted = Arc::clone(&reached);
    tokio::spawn(async move {
        while let Ok((_stream, _)) = elsewhere.accept().await {
            *counted.lock().unwrap() += 1;
        }
    });
    let redirecting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", redirecting.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = redirecting.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 65536];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    let settings = json!({"appid": DEMO_APPID, "url": url, "token": TOKEN, "mode": "plain"});
    assert_eq!(configure(&s, &http, &settings).await.status(), 200);
    answer(&s, &http, DEMO_MP_TEMPLATE, "accept").await;
    let record = record_once(&s, 0, |r| r.attempts == subscribe_sandbox::PUSH_ATTEMPTS).await;
    assert_eq!(
        (record.delivered, record.status, record.error.as_deref()),
        (false, Some(307), Some("answered HTTP 307")),
        "{record:?}"
    );
    assert_eq!(*reached.lock().unwrap(), 0, "the redirect was not followed");
}

#[tokio::test]
async fn bad_push_settings_are_refused_naming_the_setting() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let good = json!({"appid": DEMO_APPID, "url": "http://127.0.0.1:9/push", "token": TOKEN, "aes_key": KEY, "mode": "safe", "format": "xml"});
    for (field, value, expected) in [
        ("appid", json!("wx0000000000000000"), "unknown appid"),
        ("url", json!("ftp://127.0.0.1/push"), "url must be http or https"),
        ("url", json!("push"), "url must be an absolute URL"),
        ("token", json!("a!"), "token must be 3 to 32 letters and digits"),
        ("aes_key", json!("short"), "aes_key must be 43 base64 characters"),
        ("aes_key", Value::Null, "the compatible and safe modes need an aes_key"),
        ("mode", json!("secret"), "mode must be plain, compatible or safe"),
        ("format", json!("yaml"), "format must be xml or json"),
    ] {
        let mut settings = good.clone();
        settings[field] = value;
        let r = configure(&s, &http, &settings).await;
        assert_eq!(r.status(), 400, "{field}");
        let text = r.text().await.unwrap();
        assert!(text.contains(expected), "{field}: {text}");
        assert!(!text.contains(TOKEN) && !text.contains(KEY), "{text}");
    }
    assert_eq!(configure(&s, &http, &good).await.status(), 200);
}

#[tokio::test]
async fn the_popup_page_records_the_answer_and_pushes_it() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let (url, got) = receiver(Mode::Safe, 0).await;
    let settings = json!({"appid": DEMO_APPID, "url": url, "token": TOKEN, "aes_key": KEY, "mode": "safe", "format": "json"});
    assert_eq!(configure(&s, &http, &settings).await.status(), 200);
    let page = http
        .get(format!("{}/sandbox/popup?appid={DEMO_APPID}&template_id={DEMO_MP_TEMPLATE}", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("到货提醒"));
    let decided = http
        .post(format!("{}/sandbox/popup/decide", s.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("appid={DEMO_APPID}&template_id={DEMO_MP_TEMPLATE}&openid={ALICE}&decision=accept"))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    assert_eq!(s.state().unused_acceptances(), 1);
    let events = wait_for(&got, 1).await;
    assert!(matches!(&events[0].kind, EventKind::Popup(i) if i[0].status == "accept"), "{events:?}");
    let unknown = http
        .get(format!("{}/sandbox/popup?appid={DEMO_APPID}&template_id=nope", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn an_answer_recorded_outside_the_runtime_is_kept_and_its_push_dropped_without_a_panic() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let settings =
        json!({"appid": DEMO_APPID, "url": "http://127.0.0.1:9/push", "token": TOKEN, "mode": "plain"});
    assert_eq!(configure(&s, &http, &settings).await.status(), 200);
    let state = s.state().clone();
    std::thread::spawn(move || state.subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(s.state().unused_acceptances(), 1);
    assert!(s.state().pushes().is_empty());
}

#[tokio::test]
async fn a_server_url_in_the_configuration_file_is_pushed_to() {
    let (url, got) = receiver(Mode::Safe, 0).await;
    let mut config = serde_json::to_value(SandboxConfig::demo()).unwrap();
    config["push"] =
        json!([{"appid": DEMO_APPID, "url": url, "token": TOKEN, "aes_key": KEY, "mode": "safe"}]);
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("push-{}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).unwrap();
    let (s, http) = start(SandboxConfig::from_json_file(&path).unwrap()).await;
    answer(&s, &http, DEMO_MP_TEMPLATE, "accept").await;
    assert_eq!(wait_for(&got, 1).await.len(), 1);
}
