use std::time::Duration;

use subscribe_sandbox::SandboxConfig;

use crate::*;

#[tokio::test]
async fn a_send_consumes_the_grant_and_delivers_once() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    grant(&s, 1000);
    grant(&s, 1000); // repeated confirmations do not add up
    let ok = send(&s, &http, &token, message(1000)).await;
    assert_eq!(ok, serde_json::json!({"errcode":0,"errmsg":"ok"}));
    let again = send(&s, &http, &token, message(1000)).await;
    assert_eq!(again["errcode"], 43101);
    assert!(again["errmsg"].as_str().unwrap().contains("rid: "));
    let inbox = s.state().inbox(ALICE);
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].title, "到货提醒");
    assert_eq!(inbox[0].color.as_deref(), Some("#173177"));
    assert_eq!(s.state().stats().deliveries, 1);
    // Another scene needs its own grant.
    assert_eq!(send(&s, &http, &token, message(1001)).await["errcode"], 43101);
}

#[tokio::test]
async fn token_checks() {
    let (s, http) = start(SandboxConfig::demo()).await;
    grant(&s, 1);
    let base = s.base_url();
    let no_token = body(
        http.post(format!("{base}/cgi-bin/message/template/subscribe"))
            .body(message(1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(no_token["errcode"], 41001);
    assert_eq!(send(&s, &http, "not-a-token", message(1)).await["errcode"], 40014);
    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    s.state().expire_tokens();
    assert_eq!(send(&s, &http, &t, message(1)).await["errcode"], 42001);
    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    s.state().revoke_tokens(Duration::ZERO);
    assert_eq!(send(&s, &http, &t, message(1)).await["errcode"], 40001);
    assert_eq!(s.state().stats().deliveries, 0);
}

/// The token is the `access_token` every reader of the query sees (axum's `Query`, a proxy's
/// log, WeChat): a `?` inside the query is a character of a value, never a second start of the
/// query that would hide a real token behind a wrong one.
#[tokio::test]
async fn a_token_behind_a_question_mark_in_the_query_is_not_the_token() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let real = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    grant(&s, 1);
    for smuggled in [format!("wrong&y=?access_token={real}"), format!("wrong&?access_token={real}")] {
        let refused = send(&s, &http, &smuggled, message(1)).await;
        assert_eq!(refused["errcode"], 40014, "{refused}");
    }
    assert_eq!(s.state().stats().deliveries, 0);
    assert!(s.state().inbox(ALICE).is_empty());
    // The grant was not spent; the real token first, and a wrong one behind a `?` in another
    // parameter's value, is the real token (and the value of `y`).
    assert_eq!(send(&s, &http, &format!("{real}&y=?access_token=wrong"), message(1)).await["errcode"], 0);
    assert_eq!(s.state().stats().deliveries, 1);
}

#[tokio::test]
async fn body_checks_name_the_field() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    grant(&s, 1);
    assert_eq!(send(&s, &http, &t, String::new()).await["errcode"], 44002);
    assert_eq!(send(&s, &http, &t, "{not json".into()).await["errcode"], 47001);
    let long_title = message(1).replace("到货提醒", &"长".repeat(16));
    let v = send(&s, &http, &t, long_title).await;
    assert_eq!(v["errcode"], 47003);
    assert!(v["errmsg"].as_str().unwrap().starts_with("argument invalid! title"), "{v}");
    let no_scene = message(1).replace(r#""scene":"1","#, "");
    let v = send(&s, &http, &t, no_scene).await;
    assert_eq!(v["errcode"], 47003);
    assert!(v["errmsg"].as_str().unwrap().contains("scene"), "{v}");
    let unknown_template = message(1).replace(subscribe_sandbox::DEMO_TEMPLATE, "UnknownTemplate");
    assert_eq!(send(&s, &http, &t, unknown_template).await["errcode"], 40037);
    let unknown_user = message(1).replace(ALICE, "oNobody");
    assert_eq!(send(&s, &http, &t, unknown_user).await["errcode"], 40003);
    // None of it consumed the grant.
    assert_eq!(send(&s, &http, &t, message(1)).await["errcode"], 0);
}

#[tokio::test]
async fn bad_requests_of_every_kind_leave_the_server_running() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    let garbage: Vec<(reqwest::Method, String, Vec<u8>)> = vec![
        (
            reqwest::Method::POST,
            "/cgi-bin/message/template/subscribe?access_token=%ZZ".into(),
            vec![0xff, 0xfe],
        ),
        (reqwest::Method::GET, "/cgi-bin/message/template/subscribe".into(), vec![]),
        (reqwest::Method::POST, "/cgi-bin/stable_token".into(), vec![b'{'; 10_000]),
        (reqwest::Method::GET, "/cgi-bin/token?%%%&&==".into(), vec![]),
        (reqwest::Method::GET, "/mp/subscribemsg?action=get_confirm&scene=%FF".into(), vec![]),
        (reqwest::Method::POST, "/mp/subscribemsg/decide".into(), b"q=%%%".to_vec()),
        (reqwest::Method::POST, "/sandbox/api/faults".into(), b"[]".to_vec()),
        (reqwest::Method::POST, "/sandbox/api/grants".into(), b"{}".to_vec()),
        (reqwest::Method::DELETE, "/nowhere".into(), vec![]),
    ];
    for (m, path, b) in garbage {
        let r = http.request(m.clone(), format!("{base}{path}")).body(b).send().await.unwrap();
        assert!(r.status().as_u16() < 500, "{m} {path}: {}", r.status());
    }
    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    grant(&s, 9);
    assert_eq!(send(&s, &http, &t, message(9)).await["errcode"], 0, "still serving");
}
