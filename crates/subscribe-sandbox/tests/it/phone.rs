//! The phone: WeChat's confirmation screen for an Open SDK request, answering with the JSON the
//! SDK hands the app, over the same grants and inboxes as the web flow.

use subscribe_sandbox::{DEMO_APPID, DEMO_TEMPLATE, SandboxConfig};

use crate::*;

fn sdk_request(scene: u16) -> String {
    serde_json::json!({"scene": scene, "templateId": DEMO_TEMPLATE, "reserved": "appState42"}).to_string()
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[tokio::test]
async fn the_screen_shows_the_request_and_its_buttons_answer_with_the_sdks_json() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    let request = sdk_request(1000);
    let page = http
        .get(format!("{base}/sandbox/phone?{}", form(&[("appid", DEMO_APPID), ("request", &request)])))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for needle in
        ["Sandbox Shop", "到货提醒", DEMO_TEMPLATE, ">1000<", "Alice", "id=\"confirm\"", "id=\"cancel\""]
    {
        assert!(html.contains(needle), "screen lacks {needle}");
    }

    let decide = |decision: &'static str| {
        let (http, base, request) = (http.clone(), base.clone(), request.clone());
        async move {
            let body = form(&[
                ("appid", DEMO_APPID),
                ("request", &request),
                ("openid", ALICE),
                ("decision", decision),
            ]);
            let r = http
                .post(format!("{base}/sandbox/phone/decide"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/json");
            body_of(r).await
        }
    };
    // Cancel: the SDK's answer has no openId, and nothing is granted.
    let cancel = decide("cancel").await;
    assert_eq!(
        cancel,
        serde_json::json!({"templateId": DEMO_TEMPLATE, "scene": 1000, "action": "cancel", "reserved": "appState42"})
    );
    assert_eq!(s.state().unused_grants(), 0);
    // Confirm: openId, and one message may be sent, exactly once.
    let confirm = decide("confirm").await;
    assert_eq!(
        confirm,
        serde_json::json!({"openId": ALICE, "templateId": DEMO_TEMPLATE, "scene": 1000, "action": "confirm", "reserved": "appState42"})
    );
    let token = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    let message = message(1000);
    assert_eq!(send(&s, &http, &token, message.clone()).await["errcode"], 0);
    assert_eq!(send(&s, &http, &token, message).await["errcode"], 43101, "one confirmation, one message");
    assert_eq!(s.state().inbox(ALICE).len(), 1);
}

async fn body_of(r: reqwest::Response) -> serde_json::Value {
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn what_wechat_would_not_show_is_an_error_page_or_400() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    for query in [
        form(&[("appid", "wxunknownapp"), ("request", &sdk_request(1))]),
        form(&[
            ("appid", DEMO_APPID),
            ("request", &sdk_request(1).replace(DEMO_TEMPLATE, "NotThisAppsTemplate")),
        ]),
        form(&[
            ("appid", DEMO_APPID),
            ("request", &sdk_request(1).replace("appState42", "not-alphanumeric!")),
        ]),
        form(&[("appid", DEMO_APPID), ("request", r#"{"scene":10001,"templateId":"x"}"#)]),
        form(&[("appid", DEMO_APPID)]),
    ] {
        let r = http.get(format!("{base}/sandbox/phone?{query}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert!(r.text().await.unwrap().contains("id=\"error\""));
    }
    // Over the control API: a confirmation needs a known user.
    let api = |body: serde_json::Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.post(format!("{base}/sandbox/api/phone"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
        }
    };
    let request: serde_json::Value = serde_json::from_str(&sdk_request(7)).unwrap();
    let r = api(serde_json::json!({"appid": DEMO_APPID, "request": request, "action": "confirm", "openid": "oNobody"})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(s.state().unused_grants(), 0);
    let r = api(
        serde_json::json!({"appid": DEMO_APPID, "request": request, "action": "confirm", "openid": ALICE}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_of(r).await["openId"], ALICE);
    assert_eq!(s.state().unused_grants(), 1);
}
