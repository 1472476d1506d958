//! The send API against the sandbox: each kind delivered, each value rule refused before
//! anything is sent, each outcome typed, the scopes.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use subscribe_gateway::KeyHash;
use subscribe_sandbox::{
    DEMO_APPID, DEMO_MP_TEMPLATE, DEMO_TEMPLATE, Faults, SandboxConfig, SandboxHandle, TokenFault,
};
use subscribe_types::{OpenId, Scene};

use crate::*;

/// Key S: `send` on the demo app.
pub(crate) const KEY_S: &str = "gw-test-key-s-5b8e2f1a9c4d7e0b3f6a9d2c5e8b1f4a";
/// Key T: `send` on the demo app too (another caller).
pub(crate) const KEY_T: &str = "gw-test-key-t-0d3a6c9f2e5b8d1a4c7f0e3b6d9a2c5f";
/// The sandbox's first user.
pub(crate) const ALICE: &str = "oSandbox_Alice_00000000001";

/// The test configuration with keys S and T (`send` on the demo app) added.
pub(crate) fn with_senders(text: &str) -> String {
    let (s, t) = (KeyHash::of(KEY_S.as_bytes()).to_hex(), KeyHash::of(KEY_T.as_bytes()).to_hex());
    format!(
        "{text}\n[[keys]]\nname = \"sender\"\nsha256 = \"{s}\"\nscopes = {{ {DEMO_APPID} = [\"send\"] }}\n\
         \n[[keys]]\nname = \"other-sender\"\nsha256 = \"{t}\"\nscopes = {{ {DEMO_APPID} = [\"send\"] }}\n"
    )
}

/// A gateway (and its sandbox) with keys S and T.
pub(crate) async fn start() -> Running {
    Running::start_with(|text| with_senders(&text), None).await
}

/// The route of `kind` for `app`.
pub(crate) fn route(app: &str, kind: &str) -> String {
    format!("/v1/apps/{app}/messages/{kind}")
}

/// A one-time message to Alice for the demo template and scene 1000.
pub(crate) fn one_time() -> Value {
    json!({
        "touser": ALICE,
        "template_id": DEMO_TEMPLATE,
        "scene": "1000",
        "title": "到货提醒",
        "data": {"content": {"value": "您关注的商品已到货"}},
    })
}

/// A mini-program message (or, without `page`'s path form, a notification) to Alice with the
/// demo mini-program template.
pub(crate) fn mini_program() -> Value {
    json!({
        "touser": ALICE,
        "template_id": DEMO_MP_TEMPLATE,
        "page": "pages/item?id=42",
        "miniprogram_state": "formal",
        "lang": "zh_CN",
        "data": {"thing1": {"value": "手冲咖啡壶"}, "time2": {"value": "2019-10-01 15:01"}, "amount3": {"value": "¥199.00"}},
    })
}

/// A notification to Alice with the demo mini-program template (the sandbox keeps one library).
pub(crate) fn notification() -> Value {
    json!({
        "touser": ALICE,
        "template_id": DEMO_MP_TEMPLATE,
        "page": "https://shop.example.com/orders/42",
        "miniprogram": {"appid": "wx0123456789abcdef", "pagepath": "pages/order?id=42"},
        "data": {"thing1": {"value": "手冲咖啡壶"}, "time2": {"value": "15:01"}, "amount3": {"value": "¥199.00"}},
    })
}

/// Alice confirms the one-time message of the demo template, scene 1000.
pub(crate) fn grant(g: &Running) {
    grant_on(&g.sandbox);
}

/// As [`grant`], on `sandbox`.
pub(crate) fn grant_on(sandbox: &SandboxHandle) {
    let alice = OpenId::new(ALICE).unwrap();
    let scene = Scene::new(1000).unwrap();
    sandbox.state().add_grant(&SandboxConfig::demo_appid(), &alice, &SandboxConfig::demo_template(), scene);
}

/// Alice accepts the demo mini-program template once (one more message).
pub(crate) fn accept(g: &Running) {
    g.sandbox.state().subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
}

/// POSTs `body` to `path` of `g` with `key` and, when given, an `Idempotency-Key`: the status,
/// the headers and the JSON body.
pub(crate) async fn post(
    g: &Running,
    path: &str,
    key: &str,
    idempotency: Option<&str>,
    body: &Value,
) -> (u16, HeaderMap, Value) {
    post_to(&g.http, &g.url(path), key, idempotency, body).await
}

/// As [`post`], to any `url`.
pub(crate) async fn post_to(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    idempotency: Option<&str>,
    body: &Value,
) -> (u16, HeaderMap, Value) {
    let mut req = http.post(url).bearer_auth(key).json(body);
    if let Some(k) = idempotency {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, headers, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_is_delivered_and_lands_in_the_inbox() {
    let g = start().await;
    grant(&g);
    accept(&g);
    accept(&g);
    let (status, _, answer) = post(&g, &route(DEMO_APPID, "one_time"), KEY_S, None, &one_time()).await;
    assert_eq!((status, answer.clone()), (200, json!({"outcome": "delivered"})));
    let (status, _, answer) =
        post(&g, &route(DEMO_APPID, "mini_program"), KEY_S, None, &mini_program()).await;
    assert_eq!((status, answer.clone()), (200, json!({"outcome": "delivered"})));
    let (status, _, answer) =
        post(&g, &route(DEMO_APPID, "notification"), KEY_S, None, &notification()).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("delivered")));
    let msgid = answer["msgid"].as_u64().expect("a notification's msgid");

    let inbox = g.sandbox.state().inbox(ALICE);
    let kinds: Vec<&str> = inbox.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["one_time", "mini_program", "notification"]);
    assert_eq!((inbox[0].title.as_str(), inbox[0].content.as_str()), ("到货提醒", "您关注的商品已到货"));
    assert_eq!(inbox[1].data["thing1"], "手冲咖啡壶");
    assert_eq!(inbox[1].page.as_deref(), Some("pages/item?id=42"));
    assert_eq!(inbox[2].msgid, Some(msgid));
    assert_eq!(inbox[2].miniprogram, Some(("wx0123456789abcdef".to_owned(), "pages/order?id=42".to_owned())));
    assert_eq!(g.sandbox.state().stats().send_requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_value_rule_is_refused_naming_the_field_and_nothing_is_sent() {
    let g = start().await;
    grant(&g);
    accept(&g);
    let edit = |base: fn() -> Value, pointer: &str, value: Value| {
        let mut body = base();
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        body.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(last.to_owned(), value);
        body
    };
    let cases = [
        ("one_time", edit(one_time, "/title", json!("这个标题比十五个字符还要长得多得多")), "title"),
        ("one_time", edit(one_time, "/data/content/value", json!("")), "data.content.value"),
        ("one_time", edit(one_time, "/data/content/value", json!("长".repeat(201))), "data.content.value"),
        ("one_time", edit(one_time, "/data/content/color", json!("red")), "data.content.color"),
        ("one_time", edit(one_time, "/scene", json!("10001")), "scene"),
        ("one_time", edit(one_time, "/scene", json!("-1")), "scene"),
        ("one_time", edit(one_time, "/url", json!("javascript:alert(1)")), "url"),
        (
            "one_time",
            edit(one_time, "/miniprogram", json!({"appid": "wx0123456789abcdef"})),
            "miniprogram.pagepath",
        ),
        (
            "one_time",
            edit(one_time, "/miniprogram", json!({"appid": "not an appid", "pagepath": "p"})),
            "miniprogram.appid",
        ),
        ("one_time", edit(one_time, "/touser", json!("")), "touser"),
        ("one_time", edit(one_time, "/template_id", json!("has space")), "template_id"),
        ("one_time", edit(one_time, "/titel", json!("typo")), "titel"),
        (
            "mini_program",
            edit(mini_program, "/data/thing1/value", json!("一个超过二十个字符的商品名称会被微信拒绝的哦")),
            "data.thing1.value",
        ),
        ("mini_program", edit(mini_program, "/data/time2/value", json!("25:61")), "data.time2.value"),
        ("mini_program", edit(mini_program, "/data/amount3/value", json!("a lot")), "data.amount3.value"),
        ("mini_program", edit(mini_program, "/data/colour4", json!({"value": "x"})), "data.colour4"),
        ("mini_program", edit(mini_program, "/data", json!({})), "data"),
        ("mini_program", edit(mini_program, "/page", json!("has space")), "page"),
        ("mini_program", edit(mini_program, "/miniprogram_state", json!("beta")), "miniprogram_state"),
        ("mini_program", edit(mini_program, "/lang", json!("fr_FR")), "lang"),
        ("mini_program", edit(mini_program, "/data/thing1/color", json!("#000000")), "data.thing1.color"),
        ("notification", edit(notification, "/page", json!("pages/not-a-url")), "page"),
        ("notification", edit(notification, "/data/thing1/value", json!("")), "data.thing1.value"),
        ("notification", edit(notification, "/lang", json!("zh_CN")), "lang"),
    ];
    for (kind, body, field) in cases {
        let (status, _, answer) = post(&g, &route(DEMO_APPID, kind), KEY_S, Some("rule-check"), &body).await;
        assert_eq!(status, 422, "{kind} {field}: {answer}");
        assert_eq!(answer["error"], "invalid_message", "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(answer["message"].as_str().unwrap().contains(field), "the rule names its field: {answer}");
    }
    let counts = g.sandbox.state().stats();
    assert_eq!(
        (counts.send_requests, counts.stable_token_requests),
        (0, 0),
        "nothing sent, no token fetched"
    );
    // The same Idempotency-Key served every refusal: none recorded anything, so it still sends.
    let (status, headers, answer) =
        post(&g, &route(DEMO_APPID, "one_time"), KEY_S, Some("rule-check"), &one_time()).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("delivered")));
    assert!(headers.get("idempotent-replayed").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_of_the_right_type_and_size_is_refused() {
    let g = start().await;
    let url = g.url(&route(DEMO_APPID, "one_time"));
    let send = |ct: Option<&'static str>, body: String| {
        let mut req = g.http.post(&url).bearer_auth(KEY_S).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let answer =
        |r: reqwest::Response| async move { (r.status().as_u16(), r.json::<Value>().await.unwrap()) };
    let (status, body) = answer(send(Some("application/json"), "{\"touser\":".into()).await.unwrap()).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_json")), "{body}");
    let (status, body) = answer(send(Some("application/json"), "[1, 2]".into()).await.unwrap()).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_json")), "{body}");
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let (status, body) = answer(send(ct, one_time().to_string()).await.unwrap()).await;
        assert_eq!((status, &body["error"]), (415, &json!("unsupported_media_type")), "{ct:?}");
    }
    let (status, _) =
        answer(send(Some("application/json; charset=utf-8"), one_time().to_string()).await.unwrap()).await;
    assert_ne!(status, 415, "a charset parameter is fine");
    let big = one_time().to_string().replace("您关注的商品已到货", &"长".repeat(1000));
    let r = send(Some("application/json"), big).await.unwrap();
    assert_eq!(r.status(), 413);
    for key in ["has space", &"k".repeat(256), ""] {
        let r = g
            .http
            .post(&url)
            .bearer_auth(KEY_S)
            .header("idempotency-key", key)
            .json(&one_time())
            .send()
            .await
            .unwrap();
        let (status, body) = answer(r).await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_idempotency_key")), "{key:?}");
    }
    // One send went out: the charset one (refused 43101: Alice has no grant).
    assert_eq!(g.sandbox.state().stats().send_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_grant_is_refused_typed_and_counted() {
    let g = start().await;
    grant(&g);
    let path = route(DEMO_APPID, "one_time");
    assert_eq!(post(&g, &path, KEY_S, None, &one_time()).await.2["outcome"], "delivered");
    let (status, _, answer) = post(&g, &path, KEY_S, None, &one_time()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "refused");
    assert_eq!(answer["class"], "user_refused");
    assert_eq!(answer["errcode"], 43101);
    assert!(answer["errmsg"].is_string());
    // A template the app does not have: refused as a configuration fault.
    let mut other = mini_program();
    other["template_id"] = json!("NoSuchTemplate_000000000000000000000000000001");
    let (status, _, answer) = post(&g, &route(DEMO_APPID, "mini_program"), KEY_S, None, &other).await;
    assert_eq!(
        (status, &answer["outcome"], &answer["errcode"]),
        (200, &json!("refused"), &json!(40037)),
        "{answer}"
    );
    assert_eq!(g.sandbox.state().stats().deliveries, 1);
    // Each send counted by kind and outcome, WeChat's errcodes apart.
    let text = g.gateway.metrics().render();
    for series in [
        format!(
            r#"subscribe_gateway_sends_total{{app="{DEMO_APPID}",kind="one_time",outcome="delivered"}} 1"#
        ),
        format!(r#"subscribe_gateway_sends_total{{app="{DEMO_APPID}",kind="one_time",outcome="refused"}} 1"#),
        format!(
            r#"subscribe_gateway_sends_total{{app="{DEMO_APPID}",kind="mini_program",outcome="refused"}} 1"#
        ),
        format!(
            r#"subscribe_gateway_send_errcodes_total{{app="{DEMO_APPID}",kind="one_time",errcode="43101"}} 1"#
        ),
        format!(
            r#"subscribe_gateway_send_errcodes_total{{app="{DEMO_APPID}",kind="mini_program",errcode="40037"}} 1"#
        ),
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_unknown_and_never_retried() {
    let g = start().await;
    grant(&g);
    g.sandbox.state().set_faults(Faults { delivered_502_every: Some(1), ..Faults::default() });
    let (status, _, answer) = post(&g, &route(DEMO_APPID, "one_time"), KEY_S, None, &one_time()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["outcome"], &answer["cause"]),
        (&json!("unknown"), &json!("server_error")),
        "{answer}"
    );
    let counts = g.sandbox.state().stats();
    assert_eq!((counts.send_requests, counts.deliveries), (1, 1), "delivered once, asked once: no replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_not_sent_and_safe_to_retry() {
    let g = start().await;
    grant(&g);
    g.sandbox.state().set_faults(Faults { token_fault: Some(TokenFault::Quota), ..Faults::default() });
    let (status, _, answer) = post(&g, &route(DEMO_APPID, "one_time"), KEY_S, Some("k1"), &one_time()).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!((&answer["outcome"], &answer["reason"]), (&json!("not_sent"), &json!("no_token")), "{answer}");
    assert_eq!(answer["retryable"], true);
    assert_eq!(g.sandbox.state().stats().send_requests, 0);
}

/// A token endpoint slower than the request's budget: the wait for the token sent nothing, so
/// the answer is `not_sent` (safe to retry), not `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_slower_than_the_budget_is_not_sent_not_unknown() {
    // A 1 s request timeout: the send's budget is 800 ms; the token endpoint takes 5 s.
    let g = Running::start_with(
        |text| with_senders(&text.replacen("[server]\n", "[server]\nrequest_timeout_ms = 1000\n", 1)),
        None,
    )
    .await;
    grant(&g);
    g.sandbox.state().set_faults(Faults {
        token_fault: Some(TokenFault::Stall),
        token_stall_ms: Some(5000),
        ..Faults::default()
    });
    let (status, _, answer) = post(&g, &route(DEMO_APPID, "one_time"), KEY_S, Some("k1"), &one_time()).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!((&answer["outcome"], &answer["reason"]), (&json!("not_sent"), &json!("no_token")), "{answer}");
    assert_eq!(answer["retryable"], true);
    assert_eq!(g.sandbox.state().stats().send_requests, 0);
    // Not stored: once the token is there, the same key sends.
    g.sandbox.state().set_faults(Faults::default());
    let read = async {
        loop {
            // Waits for the stalled token request (408 after the 1 s request timeout, until the
            // stall ends).
            let r = g.http.get(g.token_url(DEMO_APPID)).bearer_auth(KEY_A).send().await.unwrap();
            if r.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("a token once the stall ends");
    let (status, _, answer) = post(&g, &route(DEMO_APPID, "one_time"), KEY_S, Some("k1"), &one_time()).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("delivered")), "{answer}");
    assert_eq!(g.sandbox.state().stats().deliveries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_send_only_where_its_scope_says() {
    let g = start().await;
    grant(&g);
    let forbidden = |app: &str, key: &'static str| {
        let path = route(app, "one_time");
        let g = &g;
        async move {
            let r = g.http.post(g.url(&path)).bearer_auth(key).json(&one_time()).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let s_on_b = forbidden(APP_B, KEY_S).await;
    assert_eq!(s_on_b.0, 403);
    assert_eq!(
        s_on_b,
        forbidden("wxffffffffffffffff", KEY_S).await,
        "the same for an app that does not exist"
    );
    assert_eq!(s_on_b, forbidden(DEMO_APPID, KEY_A).await, "token:read is not send");
    assert_eq!(forbidden(DEMO_APPID, "wrong-key-wrong-key-wrong-key-wrong").await.0, 401);
    // Key S may not read the token with `send` alone either.
    assert_eq!(g.get_token(DEMO_APPID, KEY_S).await.0, 403);
    assert_eq!(g.sandbox.state().stats().send_requests, 0);
}
