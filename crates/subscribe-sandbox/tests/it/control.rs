use subscribe_sandbox::{DEMO_SECRET, SandboxConfig};

use crate::*;

#[tokio::test]
async fn inbox_as_html_and_json() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    let base = s.base_url();
    let empty = http.get(format!("{base}/sandbox/inbox/{ALICE}")).send().await.unwrap().text().await.unwrap();
    assert!(empty.contains("id=\"empty\""));
    grant(&s, 5);
    send(&s, &http, &t, message(5)).await;
    let html = http.get(format!("{base}/sandbox/inbox/{ALICE}")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("class=\"card message\"") && html.contains("您关注的商品已到货"));
    let json = body(http.get(format!("{base}/sandbox/api/inbox/{ALICE}")).send().await.unwrap()).await;
    assert_eq!(json["messages"][0]["content"], "您关注的商品已到货");
    assert_eq!(json["messages"][0]["scene"], 5);
    assert_eq!(http.get(format!("{base}/sandbox/api/inbox/oNobody")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn log_masks_tokens_and_secrets() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let t = classic_token(&s, &http).await;
    grant(&s, 1);
    send(&s, &http, &t, message(1)).await;
    let log =
        http.get(format!("{}/sandbox/api/log", s.base_url())).send().await.unwrap().text().await.unwrap();
    assert!(log.contains("/cgi-bin/token?grant_type=client_credential"), "{log}");
    assert!(log.contains("access_token=[redacted]") && log.contains("secret=[redacted]"), "{log}");
    assert!(!log.contains(&t) && !log.contains(DEMO_SECRET), "{log}");
}

#[tokio::test]
async fn log_keeps_headers_with_credentials_masked() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let t = classic_token(&s, &http).await;
    grant(&s, 1);
    let r = http
        .post(format!("{}/cgi-bin/message/template/subscribe?access_token={t}", s.base_url()))
        .header("x-trace-id", "trace-42")
        .header("authorization", "Bearer hunter2-credential")
        .header("x-api-key", "key-material-9")
        .header("cookie", "sid=cookie-value-7")
        .body(message(1))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["errcode"], 0);
    let entry = s.state().log().pop().unwrap();
    let header = |name: &str| entry.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(header("x-trace-id"), Some("trace-42"), "{entry:?}");
    for secret in ["authorization", "x-api-key", "cookie"] {
        assert_eq!(header(secret), Some("[redacted]"), "{secret}: {entry:?}");
    }
    let log =
        http.get(format!("{}/sandbox/api/log", s.base_url())).send().await.unwrap().text().await.unwrap();
    assert!(log.contains("trace-42"), "{log}");
    for secret in ["hunter2-credential", "key-material-9", "cookie-value-7", t.as_str()] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
    }
}

#[tokio::test]
async fn faults_reset_and_state_over_the_control_api() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    let set = http
        .post(format!("{base}/sandbox/api/faults"))
        .header("content-type", "application/json")
        .body(r#"{"busy_every":2,"latency_ms":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    assert_eq!(s.state().faults().busy_every, Some(2));
    let bad = http
        .post(format!("{base}/sandbox/api/faults"))
        .header("content-type", "application/json")
        .body(r#"{"busy_every":0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = http
        .post(format!("{base}/sandbox/api/faults"))
        .header("content-type", "application/json")
        .body(r#"{"nope":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);

    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    grant(&s, 1);
    assert_eq!(send(&s, &http, &t, message(1)).await["errcode"], 0); // 1st: processed
    grant(&s, 1);
    assert_eq!(send(&s, &http, &t, message(1)).await["errcode"], -1); // 2nd: busy, not processed
    assert_eq!(s.state().unused_grants(), 1);

    let g = http
        .post(format!("{base}/sandbox/api/grants"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"appid":"{}","openid":"{ALICE}","template_id":"{}","scene":"8"}}"#,
            subscribe_sandbox::DEMO_APPID,
            subscribe_sandbox::DEMO_TEMPLATE
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(body(g).await["added"], true);

    let state = body(http.get(format!("{base}/sandbox/api/state")).send().await.unwrap()).await;
    assert_eq!(state["stats"]["deliveries"], 1);
    assert_eq!(state["unused_grants"], 2);
    assert_eq!(
        http.post(format!("{base}/sandbox/api/reset"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(s.state().stats().deliveries, 0);
    assert!(s.state().inbox(ALICE).is_empty());
    assert_eq!(s.state().faults(), subscribe_sandbox::Faults::default());
}

#[tokio::test]
async fn faults_answer_as_configured() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/cgi-bin/message/template/subscribe?access_token={t}", s.base_url());
    s.state().set_faults(subscribe_sandbox::Faults { http_502_every: Some(1), ..Default::default() });
    assert_eq!(http.post(&url).body(message(1)).send().await.unwrap().status(), 502);
    s.state().set_faults(subscribe_sandbox::Faults { malformed_every: Some(1), ..Default::default() });
    let text = http.post(&url).body(message(1)).send().await.unwrap().text().await.unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err(), "{text}");
    s.state().set_faults(subscribe_sandbox::Faults { drop_every: Some(1), ..Default::default() });
    let dropped = match http.post(&url).body(message(1)).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(dropped, "the connection is cut");
    assert_eq!(s.state().stats().deliveries, 0);
}

#[tokio::test]
async fn delivered_faults_deliver_first_and_then_lose_the_answer() {
    use subscribe_sandbox::Faults;
    let (s, http) = start(SandboxConfig::demo()).await;
    let t = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/cgi-bin/message/template/subscribe?access_token={t}", s.base_url());

    s.state().set_faults(Faults { delivered_502_every: Some(1), ..Faults::default() });
    grant(&s, 1);
    assert_eq!(http.post(&url).body(message(1)).send().await.unwrap().status(), 502);
    assert_eq!(s.state().inbox(ALICE).len(), 1, "delivered before the 502");

    s.state().set_faults(Faults { delivered_malformed_every: Some(1), ..Faults::default() });
    grant(&s, 2);
    let text = http.post(&url).body(message(2)).send().await.unwrap().text().await.unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err(), "{text}");
    assert_eq!(s.state().inbox(ALICE).len(), 2, "delivered before the malformed answer");

    s.state().set_faults(Faults { delivered_drop_every: Some(1), ..Faults::default() });
    grant(&s, 3);
    let dropped = match http.post(&url).body(message(3)).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(dropped, "the connection is cut");
    assert_eq!(s.state().inbox(ALICE).len(), 3, "delivered before the connection was cut");

    // A stall past the client's patience: the client gives up, the delivery stands.
    s.state().set_faults(Faults {
        delivered_stall_every: Some(1),
        stall_ms: Some(5_000),
        ..Faults::default()
    });
    grant(&s, 4);
    let gave_up =
        http.post(&url).body(message(4)).timeout(std::time::Duration::from_millis(300)).send().await.is_err();
    assert!(gave_up, "the client timed out");
    assert_eq!(s.state().inbox(ALICE).len(), 4, "delivered although the client hung up");

    // A send the sandbox refuses (no grant left) is refused, then its answer is lost all the same.
    s.state().set_faults(Faults { delivered_502_every: Some(1), ..Faults::default() });
    assert_eq!(http.post(&url).body(message(1)).send().await.unwrap().status(), 502);
    assert_eq!(s.state().stats().deliveries, 4);
    assert_eq!(s.state().log().last().unwrap().errcode, Some(43101), "processed: 43101 behind the 502");
}
