//! The whole flow in a real browser: headless Chromium, driven through chromedriver.
//!
//! Run by `cargo xtask e2e` (which `cargo xtask ci` runs), not by `cargo test`: it needs
//! Debian's `chromium` and `chromium-driver`. `CHROME_BIN` and `CHROMEDRIVER` override where
//! they are. Screenshots of every page go to `target/e2e/`.
//!
//! One user confirms and lands on the app's result page; a second user cancels; the admin
//! page without a credential shows only its login; a cross-site page that posts the dispatch
//! form is refused, and one that posts the sandbox's authorization form records no grant; the
//! admin signs in and dispatches; the first user's inbox in the sandbox
//! shows the message and the second's none. Then a third user allows a subscription in
//! WeChat's popup: the sandbox pushes it, encrypted, to the app's server URL, and the admin page
//! counts the grant.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use subscribe_sandbox::{SandboxConfig, SandboxHandle};
use web_app::{AppState, Config};

const ALICE: &str = "oSandbox_Alice_00000000001";
const BOB: &str = "oSandbox_Bob_0000000000002";
const CAROL: &str = "oSandbox_Carol_00000000003";
const ADMIN_TOKEN: &str = "browser-test-admin-token-0123456789abcdef";
const PUSH_TOKEN: &str = "browserPushToken2026";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"), PathBuf::from);
    target.join("e2e")
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = tokio::process::Command::new(&bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (apt-get install chromium chromium-driver)"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { _child: child, url: format!("http://127.0.0.1:{port}") }
}

async fn browser(driver: &Driver) -> Client {
    let binary = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1000,1000",
            ],
        }
    });
    let serde_json::Value::Object(caps) = caps else { unreachable!() };
    ClientBuilder::rustls().unwrap().capabilities(caps).connect(&driver.url).await.unwrap()
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text_of(c: &Client, id: &str) -> String {
    c.wait().for_element(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

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
    let env = [
        ("WEBAPP_LISTEN", app.to_string()),
        ("WEBAPP_PUBLIC_URL", format!("http://{app}")),
        ("WECHAT_API_BASE", base.clone()),
        ("WEBAPP_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("WECHAT_PUSH_TOKEN", PUSH_TOKEN.to_owned()),
        ("WECHAT_PUSH_AES_KEY", AES_KEY.to_owned()),
    ];
    let config =
        Config::from_lookup(|k| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone())).unwrap();
    tokio::spawn(web_app::serve(listener, AppState::new(config).unwrap(), std::future::pending()));
    // The account's server URL, as its console sets it: safe mode, encrypted XML.
    sandbox
        .state()
        .configure_push(&subscribe_sandbox::PushSettings {
            appid: subscribe_sandbox::DEMO_APPID.into(),
            url: format!("http://{app}/wechat/push"),
            token: PUSH_TOKEN.into(),
            aes_key: Some(AES_KEY.into()),
            mode: "safe".into(),
            format: "xml".into(),
        })
        .unwrap();

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
    assert_eq!(shots, 16, "screenshots in {}", dir.display());
    eprintln!("screenshots: {}", dir.display());
}

/// Another site (`localhost`, not `127.0.0.1`: another site to the browser) whose page posts
/// the app's dispatch form as soon as it loads, and whose `/grant` posts the sandbox's
/// authorization form for Bob. Returns its address.
async fn attacker_site(app: SocketAddr, sandbox: &str) -> SocketAddr {
    let page = format!(
        r#"<!doctype html><title>Win a prize</title>
<form method="post" action="http://{app}/admin/dispatch">
<input type="hidden" name="title" value="中奖通知"><input type="hidden" name="content" value="click here">
<input type="hidden" name="csrf" value="guessed"></form>
<script>document.forms[0].submit()</script>"#
    );
    let q = format!(
        "action=get_confirm&appid={}&scene=1000&template_id={}&redirect_url=http%3A%2F%2F{app}%2Fcallback&reserved=x",
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
        .route("/", axum::routing::get(move || async move { axum::response::Html(page) }))
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

    // Without the credential the admin page is only its login.
    c.goto(&format!("http://{app}/admin")).await.unwrap();
    c.wait().for_element(Locator::Id("login")).await.unwrap();
    assert!(c.find_all(Locator::Id("pending")).await.unwrap().is_empty(), "no counts before signing in");
    shot(&c, "3a-admin-login").await;
    c.find(Locator::Id("token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    c.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    assert_eq!(text_of(&c, "pending").await, "1");
    shot(&c, "3b-admin").await;

    // The signed-in admin opens another site, whose page posts the dispatch form: refused
    // (its cookies stay home, SameSite, and it cannot know the form's CSRF token).
    c.goto(&format!("http://localhost:{}/", evil.port())).await.unwrap();
    c.wait().for_element(Locator::Id("error")).await.unwrap();
    let here = c.current_url().await.unwrap();
    assert!(here.as_str().starts_with(&format!("http://{app}/admin/dispatch")), "{here}");
    shot(&c, "3c-cross-site-post-refused").await;
    assert_eq!(sandbox.stats().send_requests, 0, "nothing was sent");

    // Another site's page posts the sandbox's authorization form (Bob confirming): Chromium
    // says it is cross-site, and the sandbox refuses it (403) before recording anything.
    let grants = sandbox.stats().grants_recorded;
    c.goto(&format!("http://localhost:{}/grant", evil.port())).await.unwrap();
    let error = c.wait().for_element(Locator::Id("error")).await.unwrap();
    assert!(error.text().await.unwrap().contains("cross-site request refused"));
    let here = c.current_url().await.unwrap();
    assert!(here.as_str().starts_with(&format!("{base}/mp/subscribemsg/decide")), "{here}");
    shot(&c, "3c-cross-site-sandbox-form-refused").await;
    assert_eq!(sandbox.stats().grants_recorded, grants, "no grant for Bob");

    // The admin's own form: the job page follows the dispatch until its report.
    c.goto(&format!("http://{app}/admin")).await.unwrap();
    assert_eq!(text_of(&c, "pending").await, "1");
    c.find(Locator::Id("dispatch")).await.unwrap().click().await.unwrap();
    // Wait for `#report`, which only the finished job's page has: the admin page being left
    // and the running job's page have cells with the same ids, which would be read stale.
    c.wait().for_element(Locator::Id("report")).await.unwrap();
    assert_eq!(text_of(&c, "delivered").await, "1");
    assert_eq!(text_of(&c, "sent").await, "1");
    shot(&c, "3d-dispatch-report").await;

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

    // Carol allows the mini program's subscription in WeChat's popup.
    let template = subscribe_sandbox::DEMO_MP_TEMPLATE;
    c.goto(&format!("{base}/sandbox/popup?appid={}&template_id={template}", subscribe_sandbox::DEMO_APPID))
        .await
        .unwrap();
    c.find(Locator::Css(&format!(r#"input[name="openid"][value="{CAROL}"]"#)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shot(&c, "5a-subscription-popup").await;
    c.find(Locator::Id("accept")).await.unwrap().click().await.unwrap();
    assert!(text_of(&c, "answered").await.contains("allowed"));
    shot(&c, "5b-popup-answered").await;
    // WeChat's encrypted push reached the app, which recorded the grant.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.goto(&format!("http://{app}/admin")).await.unwrap();
        if text_of(&c, "pushed-pending-0").await == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the pushed grant never showed: {:?}", sandbox.pushes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pushes = sandbox.pushes();
    assert_eq!((pushes.len(), pushes[0].mode, pushes[0].delivered), (1, "safe", true), "{pushes:?}");
    shot(&c, "5c-admin-pushed-grant").await;
}
