//! The consent routes against the sandbox: a link signed for a session, the user's answer on
//! WeChat's page, the gateway's callback sending the browser on to the caller's page, and the
//! answer completed there in the session: recorded once in the shared ledger, refused in any
//! other session, in any other spelling, or a second time, on either of two gateways on one
//! store. The mobile flow the same way, through the sandbox's phone.

use std::net::SocketAddr;

use reqwest::redirect::Policy;
use serde_json::{Value, json};
use subscribe_gateway::{Config, KeyHash};
use subscribe_sandbox::{DEMO_APPID, SandboxConfig, SandboxHandle};
use subscribe_types::{Action, MobileSubscribeRequest, OpenId};
use tempfile::TempDir;

use crate::*;

/// Key G: `grants` on the demo app.
const KEY_G: &str = "gw-test-key-g-5c8e1f4a7d0b3e6c9f2a5d8b1e4c7f0a";
const RETURN: &str = "https://shop.example.com/wechat/answer?shop=7";
const ALICE: &str = "oSandbox_Alice_00000000001";

/// Two gateways on one store, with web consent for the demo app.
struct Consent {
    sandbox: SandboxHandle,
    addrs: Vec<SocketAddr>,
    http: reqwest::Client,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Consent {
    /// On one SQLite file.
    async fn start() -> Self {
        Self::start_on("path = \"tokens.db\"", "").await
    }

    /// On the store `store` (the `[store]` keys) at `url` (its `url_env`).
    async fn start_on(store: &str, url: &str) -> Self {
        let mut config = SandboxConfig::demo();
        config.apps[0].redirect_domains = vec!["gw.example.com".to_owned()];
        let sandbox = sandbox_of(config).await;
        let dir = TempDir::new().unwrap();
        let text = config_text(dir.path(), &sandbox.base_url())
            .replace(
                "max_body_bytes = 1024\n",
                "max_body_bytes = 1024\npublic_url = \"https://gw.example.com/\"\n",
            )
            .replacen(
                "secret_file = \"secret-a\"\n",
                &format!("secret_file = \"secret-a\"\nconsent_return_url = \"{RETURN}\"\n"),
                1,
            )
            .replace("path = \"tokens.db\"", store);
        let hash = KeyHash::of(KEY_G.as_bytes()).to_hex();
        let text = format!(
            "{text}\n[[keys]]\nname = \"consent\"\nsha256 = \"{hash}\"\nscopes = {{ {DEMO_APPID} = [\"grants\", \"grants:review\"] }}\n"
        );
        let url = url.to_owned();
        let env = move |name: &str| (name == "GW_TEST_STORE_URL").then(|| url.clone().into());
        let config = Config::parse(&text, dir.path(), &env).unwrap();
        let (addrs, stops) = serve_gateways(&config, 2).await;
        let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Self { sandbox, addrs, http, _stops: stops, _dir: dir }
    }

    fn url(&self, gateway: usize, path: &str) -> String {
        format!("http://{}/v1/apps/{DEMO_APPID}/consent/{path}", self.addrs[gateway])
    }

    /// POSTs `body` to the consent route `path` of gateway `gateway` with `key`.
    async fn post(&self, gateway: usize, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(self.url(gateway, path)).bearer_auth(key).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The authorization page's address for `session`, from gateway 0.
    async fn link(&self, session: &str) -> String {
        let ask = json!({"template_id": SandboxConfig::demo_template().as_str(), "scene": 1000, "session": session});
        let (status, body) = self.post(0, "web", KEY_G, &ask).await;
        assert_eq!(status, 200, "{body}");
        body["url"].as_str().unwrap().to_owned()
    }

    /// The user decides on `link` on the sandbox's page; WeChat redirects to the gateway's
    /// callback (the browser's request is made to gateway 0, whatever its public URL); the
    /// gateway's answer, a redirect to the caller's page.
    async fn decide(&self, link: &str, decision: &str) -> reqwest::Response {
        let query = link.split_once('?').unwrap().1.split('#').next().unwrap();
        let form = [("q", query), ("decision", decision), ("openid", ALICE)];
        let page = format!("{}/mp/subscribemsg/decide", self.sandbox.base_url());
        let form = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let r = self
            .http
            .post(page)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        assert_eq!(status, 302, "{}", r.text().await.unwrap());
        let location = location.unwrap();
        let callback =
            location.strip_prefix("https://gw.example.com").expect("the gateway is the redirect_url");
        assert!(callback.starts_with(&format!("/v1/apps/{DEMO_APPID}/consent/callback?")), "{callback}");
        self.callback(callback).await
    }

    async fn callback(&self, path_and_query: &str) -> reqwest::Response {
        self.http.get(format!("http://{}{path_and_query}", self.addrs[0])).send().await.unwrap()
    }

    /// The pending grants of the demo template and scene 1000, as gateway 1 counts them.
    async fn pending(&self) -> u64 {
        let url = format!(
            "http://{}/v1/apps/{DEMO_APPID}/grants?template_id={}&scene=1000",
            self.addrs[1],
            SandboxConfig::demo_template().as_str()
        );
        let counts: Value = self.http.get(url).bearer_auth(KEY_G).send().await.unwrap().json().await.unwrap();
        counts["pending"].as_u64().unwrap()
    }
}

/// The query the caller's page was sent to with.
fn returned_query(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let location = r.headers()["location"].to_str().unwrap();
    let query = location.strip_prefix("https://shop.example.com/wechat/answer?shop=7&").expect(location);
    query.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_answer_is_recorded_once_in_the_session_it_was_asked_for_on_either_gateway() {
    recorded_once(Consent::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_answer_is_recorded_once_by_two_gateways_on_postgres() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let store =
        format!("kind = \"postgres\"\nurl_env = \"GW_TEST_STORE_URL\"\nschema = \"{}\"", unique("gwc"));
    recorded_once(Consent::start_on(&store, &url).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_answer_is_recorded_once_by_two_gateways_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = format!("kind = \"redis\"\nurl_env = \"GW_TEST_STORE_URL\"\nprefix = \"{}\"", unique("gwc"));
    recorded_once(Consent::start_on(&store, &url).await).await;
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Alice's answer, delivered into another session, then into hers on the other gateway, then
/// again on both.
async fn recorded_once(c: Consent) {
    let link = c.link("session-of-alice").await;
    assert!(link.contains("redirect_url=https%3A%2F%2Fgw.example.com%2Fv1%2Fapps%2F"), "{link}");
    let query = returned_query(&c.decide(&link, "confirm").await);
    assert!(query.starts_with(&format!("action=confirm&openid={ALICE}&template_id=")), "{query}");

    // Delivered into another session (login CSRF): refused, nothing recorded, nothing used up.
    let elsewhere = json!({"session": "session-of-mallory", "redirect_query": query});
    let (status, body) = c.post(0, "complete", KEY_G, &elsewhere).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("answer_refused")), "{body}");
    assert_eq!(c.pending().await, 0);

    // In the session it was asked for, on the other gateway: recorded.
    let mine = json!({"session": "session-of-alice", "redirect_query": format!("?{query}")});
    let (status, body) = c.post(1, "complete", KEY_G, &mine).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"action": "confirm", "openid": ALICE, "template_id": SandboxConfig::demo_template().as_str(),
               "scene": 1000, "recorded": "added"})
    );
    assert_eq!(c.pending().await, 1);

    // Again, on either gateway: accepted before (the store of used states is shared).
    for gateway in [0, 1] {
        let (status, body) = c.post(gateway, "complete", KEY_G, &mine).await;
        assert_eq!((status, body["error"].as_str()), (409, Some("answer_accepted")), "{body}");
    }
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_answer_records_nothing() {
    let c = Consent::start().await;
    let link = c.link("session-of-alice").await;
    let query = returned_query(&c.decide(&link, "cancel").await);
    assert!(query.starts_with("action=cancel&template_id="), "{query}");
    let (status, body) =
        c.post(0, "complete", KEY_G, &json!({"session": "session-of-alice", "redirect_query": query})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["action"].as_str(), body.get("openid"), body.get("recorded")),
        (Some("cancel"), None, None)
    );
    assert_eq!(c.pending().await, 0);
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_answer_is_recorded_once_in_its_session() {
    let c = Consent::start().await;
    let ask = json!({"template_id": SandboxConfig::demo_template().as_str(), "scene": 1000, "session": "app-session-7"});
    let (status, request) = c.post(0, "mobile", KEY_G, &ask).await;
    assert_eq!(status, 200, "{request}");
    let request: MobileSubscribeRequest = serde_json::from_value(request).unwrap();
    let alice = OpenId::new(ALICE).unwrap();
    let answer = c.sandbox.state().phone_answer(DEMO_APPID, &request, Action::Confirm, Some(&alice)).unwrap();
    let sdk_answer = serde_json::to_value(&answer).unwrap();

    let elsewhere = json!({"session": "app-session-8", "sdk_answer": sdk_answer});
    let (status, body) = c.post(1, "complete", KEY_G, &elsewhere).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("answer_refused")), "{body}");
    // The SDK's answer as a string, as some apps forward it.
    let mine = json!({"session": "app-session-7", "sdk_answer": sdk_answer.to_string()});
    let (status, body) = c.post(1, "complete", KEY_G, &mine).await;
    assert_eq!((status, body["recorded"].as_str()), (200, Some("added")), "{body}");
    assert_eq!(c.pending().await, 1);
    let (status, body) = c.post(0, "complete", KEY_G, &mine).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("answer_accepted")), "{body}");
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_another_spelling_is_refused_and_uses_nothing_up() {
    let c = Consent::start().await;
    let link = c.link("session-of-alice").await;
    let query = returned_query(&c.decide(&link, "confirm").await);
    let shared = &c;
    let complete = |query: String| async move {
        shared
            .post(0, "complete", KEY_G, &json!({"session": "session-of-alice", "redirect_query": query}))
            .await
    };
    let other_scene = query.replace("scene=1000", "scene=1001");
    let other_user = query.replace(ALICE, "oSandbox_Bob_000000000002");
    let repeated = format!("{query}&openid={ALICE}");
    let upper = query.replace("action=confirm", "action=CONFIRM");
    let dropped = query.split('&').filter(|p| !p.starts_with("reserved=")).collect::<Vec<_>>().join("&");
    for (tampered, (status, error, field)) in [
        (other_scene, (422, "answer_refused", None)),
        (repeated, (422, "invalid_answer", Some("openid"))),
        (upper, (422, "invalid_answer", Some("action"))),
        (dropped, (422, "answer_refused", None)),
    ] {
        let (got, body) = complete(tampered.clone()).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{tampered}: {body}");
        assert_eq!(body["field"].as_str(), field, "{tampered}: {body}");
    }
    // Another user's openid under Alice's state is the state's first confirmation: the state
    // is bound to the app, template, scene and session, not to the user WeChat names.
    // Alice's own answer afterwards is then a replay.
    let (status, _) = complete(other_user).await;
    assert_eq!(status, 200);
    let (status, body) = complete(query).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("answer_replayed")), "{body}");
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_passes_on_only_an_answer_and_only_to_the_configured_page() {
    let c = Consent::start().await;
    let base = format!("/v1/apps/{DEMO_APPID}/consent/callback");
    for junk in [
        "",
        "?action=confirm",
        "?openid=a&openid=b",
        "?%zz",
        "?action=confirm&openid=o&template_id=t&scene=99999",
    ] {
        let r = c.callback(&format!("{base}{junk}")).await;
        assert_eq!(returned_query(&r), "error=invalid_answer", "{junk}");
    }
    // A parameter the answer does not have is not passed on; values are encoded anew.
    let template = SandboxConfig::demo_template();
    let r = c
        .callback(&format!(
            "{base}?action=cancel&template_id={}&scene=1&reserved=abc&next=https%3A%2F%2Fevil.example",
            template.as_str()
        ))
        .await;
    assert_eq!(
        returned_query(&r),
        format!("action=cancel&template_id={}&scene=1&reserved=abc", template.as_str())
    );
    // No consent for app B, and no such app: 404, no redirect.
    for app in [APP_B, "wx0000000000000000"] {
        let r = c
            .http
            .get(format!("http://{}/v1/apps/{app}/consent/callback?action=cancel", c.addrs[0]))
            .send()
            .await;
        assert_eq!(r.unwrap().status(), 404, "{app}");
    }
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_routes_check_the_key_the_scope_and_every_field() {
    let c = Consent::start().await;
    let template = SandboxConfig::demo_template();
    let ask = |scene: Value, session: &str| json!({"template_id": template.as_str(), "scene": scene, "session": session});
    // A key without `grants` for the app, and a key for another app.
    for key in [KEY_A, KEY_B] {
        for path in ["web", "mobile", "complete"] {
            let (status, body) = c.post(0, path, key, &ask(json!(1), "s")).await;
            assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{path}");
        }
    }
    let (status, _) =
        c.post(0, "web", "gw-test-key-unknown-0000000000000000000000", &ask(json!(1), "s")).await;
    assert_eq!(status, 401);
    for (body, field) in [
        (ask(json!(10_001), "s"), "scene"),
        (ask(json!(1), ""), "session"),
        (json!({"template_id": "no spaces allowed", "scene": 1, "session": "s"}), "template_id"),
    ] {
        for path in ["web", "mobile"] {
            let (status, answer) = c.post(0, path, KEY_G, &body).await;
            assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{path} {body}: {answer}");
        }
    }
    for body in [
        json!({"template_id": template.as_str(), "scene": "1", "session": "s"}),
        json!({"template_id": template.as_str(), "scene": 1, "session": "s", "extra": 1}),
        json!({"session": "s"}),
        json!({"session": "s", "redirect_query": "action=cancel", "sdk_answer": {}}),
    ] {
        let path = if body.get("template_id").is_some() { "web" } else { "complete" };
        let (status, answer) = c.post(0, path, KEY_G, &body).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_body")), "{body}: {answer}");
    }
    let (status, answer) = c.post(0, "complete", KEY_G, &json!({"session": "", "redirect_query": "x"})).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("session")), "{answer}");
    let (status, answer) =
        c.post(0, "complete", KEY_G, &json!({"session": "s", "sdk_answer": "not json"})).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_answer")), "{answer}");
    // A field given twice in the SDK's answer reaches the library as sent, which refuses it
    // (a JSON value read first would keep the last one silently).
    let twice = format!(
        r#"{{"session":"s","sdk_answer":{{"openId":"oA","openId":"oB","templateId":"{}","scene":1,"action":"confirm","reserved":"x"}}}}"#,
        template.as_str()
    );
    let r = c.http.post(c.url(0, "complete")).bearer_auth(KEY_G).header("content-type", "application/json");
    let r = r.body(twice).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "openId");
    c.sandbox.shutdown().await;
}

#[tokio::test]
async fn an_app_without_consent_return_url_has_no_web_link() {
    let running = Running::start_with(
        |text| {
            let hash = KeyHash::of(KEY_G.as_bytes()).to_hex();
            format!("{text}\n[[keys]]\nname = \"consent\"\nsha256 = \"{hash}\"\nscopes = {{ {DEMO_APPID} = [\"grants\", \"grants:review\"] }}\n")
        },
        None,
    )
    .await;
    let ask = json!({"template_id": SandboxConfig::demo_template().as_str(), "scene": 1, "session": "s"});
    let url = running.url(&format!("/v1/apps/{DEMO_APPID}/consent/web"));
    let r = running.http.post(&url).bearer_auth(KEY_G).json(&ask).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "consent_not_configured");
    // The mobile flow needs no return page.
    let url = running.url(&format!("/v1/apps/{DEMO_APPID}/consent/mobile"));
    let r = running.http.post(&url).bearer_auth(KEY_G).json(&ask).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn web_consent_needs_the_public_url_and_a_return_page_an_answer_can_be_added_to() {
    let dir = TempDir::new().unwrap();
    let text = config_text(dir.path(), "http://127.0.0.1:1");
    let with = |server: &str, app: &str| {
        text.replace("max_body_bytes = 1024\n", &format!("max_body_bytes = 1024\n{server}")).replacen(
            "secret_file = \"secret-a\"\n",
            &format!("secret_file = \"secret-a\"\n{app}"),
            1,
        )
    };
    let refused = |text: String| Config::parse(&text, dir.path(), &|_| None).unwrap_err();
    let e = refused(with("", "consent_return_url = \"https://shop.example.com/answer\"\n"));
    assert_eq!(e.key, "server.public_url", "{e}");
    for bad in [
        "https://shop.example.com/answer#done",
        "https://shop.example.com/answer?openid=o",
        "/answer",
        "https://shop.example.com/答复",
    ] {
        let e = refused(with(
            "public_url = \"https://gw.example.com\"\n",
            &format!("consent_return_url = \"{bad}\"\n"),
        ));
        assert_eq!(e.key, "apps[0].consent_return_url", "{bad}: {e}");
    }
    for bad in ["gw.example.com", "https://gw.example.com/?x=1", "https://gw.example.com/#top"] {
        let e = refused(with(&format!("public_url = \"{bad}\"\n"), ""));
        assert_eq!(e.key, "server.public_url", "{bad}: {e}");
    }
    let ok = with(
        "public_url = \"https://gw.example.com/base/\"\n",
        "consent_return_url = \"https://shop.example.com/a?shop=7\"\n",
    );
    let config = Config::parse(&ok, dir.path(), &|_| None).unwrap();
    assert_eq!(config.server.public_url.as_deref(), Some("https://gw.example.com/base"));
}
