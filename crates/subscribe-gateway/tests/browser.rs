//! The web flow through the gateway in a real browser (#36): headless Chromium, driven through
//! chromedriver, against the sandbox.
//!
//! Run by `cargo xtask e2e` (which `cargo xtask ci` runs), not by `cargo test`: it needs
//! Debian's `chromium` and `chromium-driver` (`CHROME_BIN` and `CHROMEDRIVER` override where
//! they are). Screenshots go to `target/e2e/gateway-*.png`.
//!
//! A caller's shop (a few lines here, as a PHP or Java site would be: it only calls the
//! gateway's API) asks the gateway for the authorization link in the user's session; the user
//! confirms on WeChat's page; WeChat sends the browser to the gateway's callback, which sends it
//! on to the shop, which completes the answer in the session and tells the user. Then a dispatch
//! job started through the API delivers the message, which the user's inbox in the sandbox
//! shows, and the status page, opened with the browser's own login (Basic), shows the job.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::print_stderr)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::response::{Html, IntoResponse, Response};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use subscribe_gateway::{Config, Gateway, KeyHash, ServeLimits, serve};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, SandboxConfig, SandboxHandle};

// The web app's Chromium helpers: one copy for both browser tests.
#[path = "../../../examples/web-app/tests/chrome/mod.rs"]
mod chrome;

use chrome::{browser, chromedriver, screenshots_dir, shot};

const ALICE: &str = "oSandbox_Alice_00000000001";
/// The shop's key: `grants` (the consent routes), `dispatch` and `status`.
const KEY: &str = "gw-browser-test-key-2f5a8d1c4e7b0a3f6d9c2e5b8a1d4f7c";

/// The caller's shop: its own session cookie, and the gateway's API.
#[derive(Clone)]
struct Shop {
    gateway: String,
    http: reqwest::Client,
}

/// The session the browser holds at the shop (a cookie it set), as the gateway is given it: a
/// digest, never the cookie itself.
fn session(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(COOKIE)?.to_str().ok()?;
    let sid = cookies.split(';').find_map(|c| c.trim().strip_prefix("sid="))?;
    Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sid.as_bytes())))
}

async fn product(headers: HeaderMap) -> Response {
    let page = Html(
        "<!doctype html><meta charset=utf-8><title>Shop</title><h1>亚麻衬衫</h1>\
         <p>Out of stock. <a id=notify href=/subscribe>Notify me when it is back</a></p>",
    );
    if session(&headers).is_some() {
        return page.into_response();
    }
    let mut sid = [0u8; 16];
    getrandom::fill(&mut sid).unwrap();
    let cookie = format!("sid={}; HttpOnly; SameSite=Lax; Path=/", hex::encode(sid));
    ([(SET_COOKIE, cookie)], page).into_response()
}

async fn subscribe(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    let Some(session) = session(&headers) else {
        return (axum::http::StatusCode::BAD_REQUEST, "no session").into_response();
    };
    let ask =
        json!({"template_id": SandboxConfig::demo_template().as_str(), "scene": 1000, "session": session});
    let url = format!("{}/v1/apps/{DEMO_APPID}/consent/web", shop.gateway);
    let link: Value =
        shop.http.post(url).bearer_auth(KEY).json(&ask).send().await.unwrap().json().await.unwrap();
    (axum::http::StatusCode::SEE_OTHER, [(LOCATION, link["url"].as_str().unwrap().to_owned())])
        .into_response()
}

async fn answer(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Query(_): Query<std::collections::HashMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    let Some(session) = session(&headers) else {
        return (axum::http::StatusCode::BAD_REQUEST, "no session").into_response();
    };
    let query = uri.query().unwrap_or_default().to_owned();
    let url = format!("{}/v1/apps/{DEMO_APPID}/consent/complete", shop.gateway);
    let body = json!({"session": session, "redirect_query": query});
    let done: Value =
        shop.http.post(url).bearer_auth(KEY).json(&body).send().await.unwrap().json().await.unwrap();
    let (action, said) = match done["action"].as_str() {
        Some("confirm") => ("confirm", "You are on the list: one message when it is back."),
        Some("cancel") => ("cancel", "Nothing will be sent."),
        _ => ("error", "That answer could not be used."),
    };
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Shop</title><p id=result data-action={action}>{said}</p>"
    ))
    .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_flow_a_dispatch_and_the_status_page_through_the_gateway_in_chromium() {
    std::fs::create_dir_all(screenshots_dir()).unwrap();
    let sandbox = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let base = sandbox.base_url();

    // The shop and the gateway, each on a port of its own (bound first: each names the other).
    let shop_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shop_addr = shop_listener.local_addr().unwrap();
    let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = gw_listener.local_addr().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(dir.path().join("secret"), DEMO_SECRET).unwrap();
    let text = format!(
        r#"[server]
public_url = "http://{gw_addr}"

[store]
path = "gateway.db"

[[apps]]
appid = "{DEMO_APPID}"
kind = "official_account"
api_base = "{base}"
secret_file = "secret"
consent_return_url = "http://{shop_addr}/answer"

[[keys]]
name = "shop"
sha256 = "{}"
scopes = {{ {DEMO_APPID} = ["grants", "dispatch", "status"] }}
"#,
        KeyHash::of(KEY.as_bytes()).to_hex()
    );
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
    let gateway = Gateway::start(&config).await.unwrap();
    let limits = ServeLimits::from(&config.server);
    tokio::spawn(serve(gw_listener, gateway.router(), limits, std::future::pending()));
    tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.run_background(std::future::pending()).await }
    });
    let shop = Shop { gateway: format!("http://{gw_addr}"), http: reqwest::Client::new() };
    let router = axum::Router::new()
        .route("/", axum::routing::get(product))
        .route("/subscribe", axum::routing::get(subscribe))
        .route("/answer", axum::routing::get(answer))
        .with_state(shop);
    tokio::spawn(async move { axum::serve(shop_listener, router).await });

    let driver = chromedriver().await;
    let c = browser(&driver).await;
    let outcome = flow(c.clone(), shop_addr, gw_addr, base, sandbox.state().clone());
    // Close the browser even when an assertion fails, then report the failure.
    let result = tokio::spawn(outcome).await;
    c.close().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!(sandbox.state().stats().deliveries, 1);
    eprintln!("screenshots: {}/gateway-*.png", screenshots_dir().display());
}

async fn flow(
    c: Client,
    shop: SocketAddr,
    gw: SocketAddr,
    base: String,
    sandbox: subscribe_sandbox::SandboxState,
) {
    // The shop's product page; "notify me" goes to WeChat's authorization page by the gateway's link.
    c.goto(&format!("http://{shop}/")).await.unwrap();
    shot(&c, "gateway-1-shop").await;
    c.find(Locator::Id("notify")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("confirm")).await.unwrap();
    let here = c.current_url().await.unwrap();
    assert!(here.as_str().starts_with(&format!("{base}/mp/subscribemsg?")), "{here}");
    assert!(
        here.as_str().contains(&format!("redirect_url=http%3A%2F%2F{}", gw.to_string().replace(':', "%3A"))),
        "{here}"
    );
    c.find(Locator::Css(&format!(r#"input[name="openid"][value="{ALICE}"]"#)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shot(&c, "gateway-2-authorization-page").await;
    c.find(Locator::Id("confirm")).await.unwrap().click().await.unwrap();

    // WeChat → the gateway's callback → the shop's page, which completed the answer.
    let result = c.wait().for_element(Locator::Id("result")).await.unwrap();
    assert_eq!(result.attr("data-action").await.unwrap().as_deref(), Some("confirm"));
    let here = c.current_url().await.unwrap();
    assert!(here.as_str().starts_with(&format!("http://{shop}/answer?")), "{here}");
    shot(&c, "gateway-3-shop-told-the-outcome").await;

    // The shop's operator starts a dispatch job through the API; it delivers Alice's message.
    let http = reqwest::Client::new();
    let start = json!({"kind": "one_time", "message": {"template_id": SandboxConfig::demo_template().as_str(),
        "scene": "1000", "title": "到货提醒", "data": {"content": {"value": "您关注的亚麻衬衫已到货"}}}});
    let job: Value = http
        .post(format!("http://{gw}/v1/apps/{DEMO_APPID}/dispatches"))
        .bearer_auth(KEY)
        .json(&start)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job: Value = http
            .get(format!("http://{gw}/v1/apps/{DEMO_APPID}/dispatches/{id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["state"] == "finished" {
            assert_eq!(job["progress"]["delivered"], 1, "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sandbox.stats().deliveries, 1);

    // Alice's WeChat shows it.
    c.goto(&format!("{base}/sandbox/inbox/{ALICE}")).await.unwrap();
    let messages = c.find_all(Locator::Css(".card.message")).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].text().await.unwrap().contains("亚麻衬衫"));
    shot(&c, "gateway-4-inbox").await;

    // The status page, with the browser's own login: the job, finished, and its grant delivered.
    c.goto(&format!("http://shop:{KEY}@{gw}/status")).await.unwrap();
    let row = c.wait().for_element(Locator::Css(&format!(r#"tr[data-job="{id}"]"#))).await.unwrap();
    assert_eq!(row.attr("data-state").await.unwrap().as_deref(), Some("finished"));
    let grants = c.find(Locator::Css("table.grants")).await.unwrap().text().await.unwrap();
    assert!(grants.contains("1000"), "{grants}");
    shot(&c, "gateway-5-status-page").await;
}
