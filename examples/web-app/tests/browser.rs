//! The whole flow in a real browser: headless Chromium, driven through chromedriver.
//!
//! Run by `cargo xtask e2e` (which `cargo xtask ci` runs), not by `cargo test`: it needs
//! Debian's `chromium` and `chromium-driver`. `CHROME_BIN` and `CHROMEDRIVER` override where
//! they are. Screenshots of every page go to `target/e2e/`.
//!
//! One user confirms and lands on the app's result page; a second user cancels; a cross-site
//! page that posts the sandbox's authorization form records no grant; the operator's script
//! calls the guarded `POST /dispatch`; the first user's inbox in the sandbox shows the message
//! and the second's none.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::print_stderr)]

use std::net::SocketAddr;

use fantoccini::{Client, Locator};
use subscribe_sandbox::{SandboxConfig, SandboxHandle};
use web_app::{AppState, Config};

mod chrome;

use chrome::{browser, chromedriver, screenshots_dir, shot};

const ALICE: &str = "oSandbox_Alice_00000000001";
const BOB: &str = "oSandbox_Bob_0000000000002";
const DISPATCH_TOKEN: &str = "browser-test-dispatch-token-0123456789abcdef";

/// From the product page through WeChat's authorization page, choosing `openid` and pressing
/// `decision` (`confirm` or `cancel`), back to the app's result page.
async fn subscribe_as(c: &Client, app: SocketAddr, sandbox: &str, openid: &str, decision: &str, n: u32) {
    c.goto(&format!("http://{app}/")).await.unwrap();
    shot(c, &format!("{n}a-product-page-{openid}")).await;
    c.find(Locator::Id("notify")).await.unwrap().click().await.unwrap();

    c.wait().for_element(Locator::Id(decision)).await.unwrap();
    let here = c.current_url().await.unwrap();
    assert!(here.as_str().starts_with(&format!("{sandbox}/mp/subscribemsg?")), "{here}");
    c.find(Locator::Css(&format!(r#"input[name="openid"][value="{openid}"]"#)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shot(c, &format!("{n}b-authorization-page-{openid}")).await;
    c.find(Locator::Id(decision)).await.unwrap().click().await.unwrap();

    let result = c.wait().for_element(Locator::Id("result")).await.unwrap();
    assert_eq!(result.attr("data-action").await.unwrap().as_deref(), Some(decision));
    let said = result.text().await.unwrap();
    let expected = if decision == "confirm" { "You are on the list" } else { "Nothing will be sent" };
    assert!(said.contains(expected), "{said}");
    let here = c.current_url().await.unwrap();
    assert!(here.as_str().starts_with(&format!("http://{app}/callback?")), "{here}");
    shot(c, &format!("{n}c-result-page-{openid}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_cancel_dispatch_and_inboxes_in_chromium() {
    let dir = screenshots_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let sandbox = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let base = sandbox.base_url();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let data = screenshots_dir().with_file_name(format!("e2e-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let env = [
        ("WEBAPP_LISTEN", app.to_string()),
        ("WEBAPP_PUBLIC_URL", format!("http://{app}")),
        ("WECHAT_API_BASE", base.clone()),
        ("WEBAPP_DISPATCH_TOKEN", DISPATCH_TOKEN.to_owned()),
        ("WEBAPP_DATA_DIR", data.display().to_string()),
    ];
    let config =
        Config::from_lookup(|k| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone())).unwrap();
    let router = web_app::router(AppState::open(config).await.unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let evil = attacker_site(app, &base).await;

    let driver = chromedriver().await;
    let c = browser(&driver).await;
    let outcome = flow(c.clone(), app, base, evil, sandbox.state().clone());
    // Close the browser even when an assertion fails, then report the failure.
    let result = tokio::spawn(outcome).await;
    c.close().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!(sandbox.state().stats().deliveries, 1);
    let shots = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(shots, 9, "screenshots in {}", dir.display());
    let _ = std::fs::remove_dir_all(&data);
    eprintln!("screenshots: {}", dir.display());
}

/// Another site (`localhost`, not `127.0.0.1`: another site to the browser) whose page posts
/// the sandbox's authorization form for Bob (answering to `app`'s callback) as soon as it
/// loads. Returns its address.
async fn attacker_site(app: SocketAddr, sandbox: &str) -> SocketAddr {
    let q = format!(
        "action=get_confirm&appid={}&scene=1&template_id={}&redirect_url=http%3A%2F%2F{app}%2Fcallback&reserved=x",
        subscribe_sandbox::DEMO_APPID,
        subscribe_sandbox::DEMO_TEMPLATE
    );
    let grant = format!(
        r#"<!doctype html><title>Free shipping</title>
<form method="post" action="{sandbox}/mp/subscribemsg/decide">
<input type="hidden" name="q" value="{}"><input type="hidden" name="openid" value="{BOB}">
<input type="hidden" name="decision" value="confirm"></form>
<script>document.forms[0].submit()</script>"#,
        q.replace('&', "&amp;")
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/grant", axum::routing::get(move || async move { axum::response::Html(grant) }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn flow(
    c: Client,
    app: SocketAddr,
    base: String,
    evil: SocketAddr,
    sandbox: subscribe_sandbox::SandboxState,
) {
    // Alice confirms.
    subscribe_as(&c, app, &base, ALICE, "confirm", 1).await;
    // Bob, in a fresh session of his own, cancels.
    c.delete_all_cookies().await.unwrap();
    subscribe_as(&c, app, &base, BOB, "cancel", 2).await;

    // Another site's page posts the sandbox's authorization form (Bob confirming): Chromium
    // says it is cross-site, and the sandbox refuses it (403) before recording anything.
    let grants = sandbox.stats().grants_recorded;
    c.goto(&format!("http://localhost:{}/grant", evil.port())).await.unwrap();
    let error = c.wait().for_element(Locator::Id("error")).await.unwrap();
    assert!(error.text().await.unwrap().contains("cross-site request refused"));
    let here = c.current_url().await.unwrap();
    assert!(here.as_str().starts_with(&format!("{base}/mp/subscribemsg/decide")), "{here}");
    shot(&c, "3a-cross-site-sandbox-form-refused").await;
    assert_eq!(sandbox.stats().grants_recorded, grants, "no grant for Bob");
    assert_eq!(sandbox.stats().send_requests, 0, "nothing was sent yet");

    // The operator's script: the guarded dispatch, refused without the token, then with it
    // one message, Alice's.
    let http = reqwest::Client::new();
    let dispatch = |token: &str| http.post(format!("http://{app}/dispatch")).bearer_auth(token).send();
    assert_eq!(dispatch("guessed").await.unwrap().status(), 401);
    let r = dispatch(DISPATCH_TOKEN).await.unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!((report["sent"].as_u64(), report["delivered"].as_u64()), (Some(1), Some(1)), "{report}");
    eprintln!("dispatch report: {report}");

    // Alice's WeChat shows the message; Bob's shows none.
    c.goto(&format!("{base}/sandbox/inbox/{ALICE}")).await.unwrap();
    let messages = c.find_all(Locator::Css(".card.message")).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].text().await.unwrap().contains("亚麻衬衫"));
    shot(&c, "4a-inbox-alice").await;
    c.goto(&format!("{base}/sandbox/inbox/{BOB}")).await.unwrap();
    c.find(Locator::Id("empty")).await.unwrap();
    assert!(c.find_all(Locator::Css(".card.message")).await.unwrap().is_empty());
    shot(&c, "4b-inbox-bob").await;
}
