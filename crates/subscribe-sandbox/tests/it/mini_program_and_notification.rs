//! The mini-program and notification endpoints and the template
//! library, with WeChat's errcodes.

use serde_json::{Value, json};
use subscribe_sandbox::{
    DEMO_APPID, DEMO_LONG_TERM_TEMPLATE, DEMO_MP_TEMPLATE, SandboxConfig, SandboxHandle,
};

use crate::*;

async fn token(s: &SandboxHandle, http: &reqwest::Client) -> String {
    stable_token(s, http, false).await["access_token"].as_str().unwrap().to_owned()
}

async fn post(s: &SandboxHandle, http: &reqwest::Client, path: &str, token: &str, body: &Value) -> Value {
    let r =
        http.post(format!("{}{path}?access_token={token}", s.base_url())).body(body.to_string()).send().await;
    crate::body(r.unwrap()).await
}

async fn get(s: &SandboxHandle, http: &reqwest::Client, path: &str, token: &str, query: &str) -> Value {
    let r = http.get(format!("{}{path}?access_token={token}{query}", s.base_url())).send().await;
    crate::body(r.unwrap()).await
}

fn restock(to: &str, thing: &str) -> Value {
    json!({
        "touser": to, "template_id": DEMO_MP_TEMPLATE, "page": "pages/item?id=7",
        "data": {"thing1": {"value": thing}, "time2": {"value": "2019-10-01 15:01"}, "amount3": {"value": "¥199.00"}},
    })
}

const MP: &str = "/cgi-bin/message/subscribe/send";
const BIZ: &str = "/cgi-bin/message/subscribe/bizsend";

#[tokio::test]
async fn a_one_time_acceptance_allows_one_mini_program_message() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token = token(&s, &http).await;
    assert_eq!(
        post(&s, &http, MP, &token, &restock(ALICE, "亚麻衬衫")).await["errcode"],
        43101,
        "not accepted yet"
    );
    s.state().subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
    s.state().subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
    assert_eq!(s.state().unused_acceptances(), 2, "each acceptance of a one-time template adds one");
    for _ in 0..2 {
        assert_eq!(
            post(&s, &http, MP, &token, &restock(ALICE, "亚麻衬衫")).await,
            json!({"errcode": 0, "errmsg": "ok"})
        );
    }
    assert_eq!(post(&s, &http, MP, &token, &restock(ALICE, "亚麻衬衫")).await["errcode"], 43101, "used up");
    let inbox = s.state().inbox(ALICE);
    assert_eq!(inbox.len(), 2);
    assert_eq!((inbox[0].kind.as_str(), inbox[0].data["thing1"].as_str()), ("mini_program", "亚麻衬衫"));
    assert_eq!(inbox[0].page.as_deref(), Some("pages/item?id=7"));
    let page = http
        .get(format!("{}/sandbox/inbox/{ALICE}", s.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("亚麻衬衫") && page.contains("mini program"), "the inbox page shows the data");
}

#[tokio::test]
async fn a_value_breaking_its_rule_is_47003_naming_the_field_and_uses_nothing() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token = token(&s, &http).await;
    s.state().subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
    let long =
        post(&s, &http, MP, &token, &restock(ALICE, "一个超过二十个字符的商品名称会被微信拒绝的哦")).await;
    assert_eq!(long["errcode"], 47003);
    assert!(
        long["errmsg"].as_str().unwrap().starts_with("argument invalid! data.thing1.value invalid"),
        "{long}"
    );
    let mut missing = restock(ALICE, "衬衫");
    missing["data"].as_object_mut().unwrap().remove("time2");
    assert!(
        post(&s, &http, MP, &token, &missing).await["errmsg"].as_str().unwrap().contains("data.time2.value")
    );
    let mut bad_state = restock(ALICE, "衬衫");
    bad_state["miniprogram_state"] = json!("release");
    assert!(
        post(&s, &http, MP, &token, &bad_state).await["errmsg"]
            .as_str()
            .unwrap()
            .contains("miniprogram_state")
    );
    assert_eq!(s.state().unused_acceptances(), 1, "a refused send uses nothing");
    let unknown_user = post(&s, &http, MP, &token, &restock("oNobody", "衬衫")).await;
    assert_eq!(unknown_user["errcode"], 40003);
    let mut other = restock(ALICE, "衬衫");
    other["template_id"] = json!("NotOneOfTheAppsTemplates");
    assert_eq!(post(&s, &http, MP, &token, &other).await["errcode"], 40037);
    let raw = http
        .post(format!("{}{MP}?access_token={token}", s.base_url()))
        .body("{\"touser\":")
        .send()
        .await
        .unwrap();
    assert_eq!(crate::body(raw).await["errcode"], 47001);
}

#[tokio::test]
async fn two_sends_to_one_user_at_once_get_43108_for_one_of_them() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token = token(&s, &http).await;
    for _ in 0..2 {
        s.state().subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
    }
    // Each send takes 300 ms: the two overlap however the machine schedules them.
    s.state().set_faults(subscribe_sandbox::Faults { latency_ms: Some(300), ..Default::default() });
    let body = restock(ALICE, "衬衫");
    let (a, b) = tokio::join!(post(&s, &http, MP, &token, &body), post(&s, &http, MP, &token, &body));
    let mut codes = [a["errcode"].as_i64().unwrap(), b["errcode"].as_i64().unwrap()];
    codes.sort_unstable();
    assert_eq!(codes, [0, 43108]);
    assert_eq!(s.state().unused_acceptances(), 1, "the refused one used nothing");
}

#[tokio::test]
async fn a_long_term_subscription_is_not_used_up_and_a_notification_has_a_msgid() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token = token(&s, &http).await;
    let body = json!({
        "touser": ALICE, "template_id": DEMO_LONG_TERM_TEMPLATE, "page": "https://shop.example.com/member",
        "data": {"enum1": {"value": "黄金会员"}, "date2": {"value": "2019-10-01"}},
    });
    assert_eq!(post(&s, &http, BIZ, &token, &body).await["errcode"], 43101);
    s.state().subscribe(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE, true).unwrap();
    let first = post(&s, &http, BIZ, &token, &body).await;
    let second = post(&s, &http, BIZ, &token, &body).await;
    assert_eq!((first["errcode"].as_i64(), second["errcode"].as_i64()), (Some(0), Some(0)), "not used up");
    assert_ne!(first["msgid"], second["msgid"]);
    assert_eq!(s.state().inbox(ALICE)[1].msgid, second["msgid"].as_u64());
    let mut off_list = body.clone();
    off_list["data"]["enum1"]["value"] = json!("白银会员");
    assert!(
        post(&s, &http, BIZ, &token, &off_list).await["errmsg"]
            .as_str()
            .unwrap()
            .contains("data.enum1.value")
    );
    let mut bad_page = body.clone();
    bad_page["page"] = json!("pages/index");
    assert!(post(&s, &http, BIZ, &token, &bad_page).await["errmsg"].as_str().unwrap().contains("page"));
    s.state().subscribe(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE, false).unwrap();
    assert_eq!(post(&s, &http, BIZ, &token, &body).await["errcode"], 43101, "a rejection withdraws it");
}

#[tokio::test]
async fn the_template_library_lists_adds_and_deletes_with_its_errcodes() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token = token(&s, &http).await;
    let lib = "/wxaapi/newtmpl";
    let categories = get(&s, &http, &format!("{lib}/getcategory"), &token, "").await;
    assert!(categories["data"].as_array().unwrap().len() >= 3);
    let titles =
        get(&s, &http, &format!("{lib}/getpubtemplatetitles"), &token, "&ids=616,617&start=0&limit=30").await;
    assert_eq!(titles["count"], 3);
    for (query, code) in [
        ("&start=0&limit=30", 200_018),
        ("&ids=999&start=0&limit=30", 200_019),
        ("&ids=616&start=x&limit=30", 200_016),
        ("&ids=616&start=0&limit=31", 200_017),
    ] {
        assert_eq!(
            get(&s, &http, &format!("{lib}/getpubtemplatetitles"), &token, query).await["errcode"],
            code,
            "{query}"
        );
    }
    let keywords = get(&s, &http, &format!("{lib}/getpubtemplatekeywords"), &token, "&tid=1002").await;
    assert_eq!(keywords["data"][1]["rule"], "phrase");
    assert_eq!(
        get(&s, &http, &format!("{lib}/getpubtemplatekeywords"), &token, "&tid=1").await["errcode"],
        200_014
    );

    let added = post(
        &s,
        &http,
        &format!("{lib}/addtemplate"),
        &token,
        &json!({"tid": "1002", "kidList": [1, 2, 4], "sceneDesc": "发货"}),
    )
    .await;
    let id = added["priTmplId"].as_str().unwrap().to_owned();
    let listed = get(&s, &http, &format!("{lib}/gettemplate"), &token, "").await;
    let mine =
        listed["data"].as_array().unwrap().iter().find(|t| t["priTmplId"] == id.as_str()).unwrap().clone();
    let template: subscribe_types::Template = serde_json::from_value(mine).unwrap();
    assert_eq!(template.keys(), ["character_string1", "phrase2", "date4"]);
    for (body, code) in [
        (json!({"tid": "1002", "kidList": [1]}), 200_020),
        (json!({"tid": "1002", "kidList": [1, 99]}), 200_020),
        (
            json!({"tid": "1002", "kidList": [1, 2], "sceneDesc": "一个超过十五个字的场景描述会被拒绝的"}),
            200_021,
        ),
        (json!({"tid": "77", "kidList": [1, 2]}), 200_014),
    ] {
        assert_eq!(
            post(&s, &http, &format!("{lib}/addtemplate"), &token, &body).await["errcode"],
            code,
            "{body}"
        );
    }
    // 25 at most: two seeded, one added above, 22 more fit.
    for _ in 0..22 {
        let r =
            post(&s, &http, &format!("{lib}/addtemplate"), &token, &json!({"tid": 1001, "kidList": [1, 2]}))
                .await;
        assert_eq!(r["errcode"], 0, "{r}");
    }
    let full =
        post(&s, &http, &format!("{lib}/addtemplate"), &token, &json!({"tid": 1001, "kidList": [1, 2]}))
            .await;
    assert_eq!(full["errcode"], 200_012);
    assert_eq!(
        post(&s, &http, &format!("{lib}/deltemplate"), &token, &json!({"priTmplId": id})).await["errcode"],
        0
    );
    assert_eq!(
        post(&s, &http, &format!("{lib}/deltemplate"), &token, &json!({"priTmplId": id})).await["errcode"],
        40037
    );
    assert_eq!(get(&s, &http, &format!("{lib}/gettemplate"), "bad-token", "").await["errcode"], 40014);
}

#[tokio::test]
async fn the_control_api_takes_a_users_answer() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let answer = |decision: &str, template: &str| {
        json!({"appid": DEMO_APPID, "openid": ALICE, "template_id": template, "decision": decision})
            .to_string()
    };
    let url = format!("{}/sandbox/api/subscribe", s.base_url());
    let post = |body: String| http.post(&url).header("content-type", "application/json").body(body).send();
    assert_eq!(post(answer("accept", DEMO_MP_TEMPLATE)).await.unwrap().status(), 200);
    assert_eq!(s.state().unused_acceptances(), 1);
    assert_eq!(post(answer("maybe", DEMO_MP_TEMPLATE)).await.unwrap().status(), 400);
    assert_eq!(post(answer("accept", "NoSuchTemplate")).await.unwrap().status(), 400);
}

/// A send whose handler is dropped mid-way (a shutdown, a connection gone) leaves the user free:
/// the next send is processed, not refused with 43108.
#[tokio::test]
async fn a_send_dropped_mid_way_leaves_the_user_free() {
    use tower::ServiceExt as _;
    let (app, state) = subscribe_sandbox::router(SandboxConfig::demo());
    state.subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
    let token = {
        let r = axum_request(
            "POST",
            "/cgi-bin/stable_token",
            &json!({"grant_type": "client_credential", "appid": DEMO_APPID, "secret": subscribe_sandbox::DEMO_SECRET}),
        );
        let body = app.clone().oneshot(r).await.unwrap().into_body();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["access_token"].as_str().unwrap().to_owned()
    };
    let send = || axum_request("POST", &format!("{MP}?access_token={token}"), &restock(ALICE, "衬衫"));
    state.set_faults(subscribe_sandbox::Faults { latency_ms: Some(5_000), ..Default::default() });
    let dropped =
        tokio::time::timeout(std::time::Duration::from_millis(100), app.clone().oneshot(send())).await;
    assert!(dropped.is_err(), "the first send was still being processed when dropped");
    state.set_faults(subscribe_sandbox::Faults::default());
    let answer = app.oneshot(send()).await.unwrap().into_body();
    let answer: Value =
        serde_json::from_slice(&axum::body::to_bytes(answer, 1 << 16).await.unwrap()).unwrap();
    assert_eq!(answer["errcode"], 0, "{answer}");
}

fn axum_request(method: &str, uri: &str, body: &Value) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}

/// The send faults strike the mini-program and notification endpoints as they strike the 2017 message's: one
/// before processing delivers nothing; one after processing loses the answer of a delivery,
/// which the stats count; and every request counts towards "every Nth".
#[tokio::test]
async fn send_faults_strike_mini_program_messages_and_notifications_too() {
    use subscribe_sandbox::{Faults, LostAnswers};
    let (s, http) = start(SandboxConfig::demo()).await;
    let first = token(&s, &http).await;
    s.state().subscribe(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE, true).unwrap();
    let member = |to: &str| {
        json!({
            "touser": to, "template_id": DEMO_LONG_TERM_TEMPLATE,
            "data": {"enum1": {"value": "黄金会员"}, "date2": {"value": "2019-10-01"}},
        })
    };
    let url = |path: &str| format!("{}{path}?access_token={first}", s.base_url());
    let lost = |r: Result<reqwest::Response, reqwest::Error>| async move {
        match r {
            Err(_) => "dropped".to_owned(),
            Ok(r) if r.status() != 200 => format!("HTTP {}", r.status().as_u16()),
            Ok(r) => match r.bytes().await {
                Err(_) => "dropped".to_owned(),
                Ok(b) if serde_json::from_slice::<Value>(&b).is_err() => "malformed".to_owned(),
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            },
        }
    };

    // Before processing: nothing is delivered, whichever endpoint.
    for (path, fault, want) in [
        (MP, Faults { http_502_every: Some(1), ..Faults::default() }, "HTTP 502"),
        (BIZ, Faults { malformed_every: Some(1), ..Faults::default() }, "malformed"),
        (MP, Faults { drop_every: Some(1), ..Faults::default() }, "dropped"),
    ] {
        s.state().set_faults(fault);
        let r = http.post(url(path)).body(member(ALICE).to_string()).send().await;
        assert_eq!(lost(r).await, want, "{path}");
    }
    s.state().set_faults(Faults { busy_every: Some(1), ..Faults::default() });
    assert_eq!(post(&s, &http, BIZ, &first, &member(ALICE)).await["errcode"], -1);
    assert!(s.state().inbox(ALICE).is_empty(), "nothing processed");
    assert_eq!(s.state().stats().lost_after_delivery, LostAnswers::default());

    // After processing: each send is delivered, then its answer is lost.
    for (path, fault, want) in [
        (MP, Faults { delivered_502_every: Some(1), ..Faults::default() }, "HTTP 502"),
        (BIZ, Faults { delivered_malformed_every: Some(1), ..Faults::default() }, "malformed"),
        (BIZ, Faults { delivered_drop_every: Some(1), ..Faults::default() }, "dropped"),
    ] {
        s.state().set_faults(fault);
        let r = http.post(url(path)).body(member(ALICE).to_string()).send().await;
        assert_eq!(lost(r).await, want, "{path}");
    }
    let kinds: Vec<String> = s.state().inbox(ALICE).into_iter().map(|d| d.kind).collect();
    assert_eq!(kinds, ["mini_program", "notification", "notification"], "delivered, then lost");
    let counted = s.state().stats().lost_after_delivery;
    assert_eq!((counted.http_502, counted.malformed, counted.dropped, counted.stalled), (1, 1, 1, 0));

    // A refused send's answer is lost all the same, and is no lost delivery.
    s.state().set_faults(Faults { delivered_502_every: Some(1), ..Faults::default() });
    let r = http.post(url(MP)).body(member("oSandbox_Bob_0000000000002").to_string()).send().await;
    assert_eq!(lost(r).await, "HTTP 502");
    assert_eq!(s.state().log().last().unwrap().errcode, Some(43101), "processed: 43101 behind the 502");
    assert_eq!(s.state().stats().lost_after_delivery.total(), 3);

    // "Every Nth" counts the requests to every send endpoint: the 2nd, 4th, … are struck.
    s.state().reset();
    let second = token(&s, &http).await;
    s.state().subscribe(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE, true).unwrap();
    s.state().set_faults(Faults { http_502_every: Some(2), ..Faults::default() });
    let mut answers = Vec::new();
    for path in [MP, BIZ, BIZ, MP] {
        let r = http
            .post(format!("{}{path}?access_token={second}", s.base_url()))
            .body(member(ALICE).to_string())
            .send()
            .await;
        answers.push(lost(r).await.get(..8).unwrap_or_default().to_owned());
    }
    assert_eq!(answers, ["{\"errcod", "HTTP 502", "{\"errcod", "HTTP 502"]);
    assert_eq!((s.state().stats().send_requests, s.state().inbox(ALICE).len()), (4, 2));
}
