//! The web app over real HTTP, against the sandbox, as a browser without JavaScript would use
//! it (the browser test, `tests/browser.rs`, does the same in Chromium).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod admin;
mod app_api;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use subscribe_client::GrantLedger;
use subscribe_sandbox::{SandboxConfig, SandboxHandle};
use web_app::{AppState, Config};

const ALICE: &str = "oSandbox_Alice_00000000001";
const BOB: &str = "oSandbox_Bob_0000000000002";
/// The admin credential the tests start the app with.
const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";
/// The key app session tokens are signed with in the tests.
const APP_SESSION_KEY: &str = "test-app-session-key-0123456789abcdef";

struct World {
    sandbox: SandboxHandle,
    app: SocketAddr,
    http: reqwest::Client,
    state: AppState,
}

async fn start() -> World {
    start_with(&[]).await
}

async fn start_with(extra: &[(&'static str, &str)]) -> World {
    start_full(SandboxConfig::demo(), extra, None).await
}

/// A sandbox on `sandbox`, and the app with the test environment plus `extra` (which wins; an
/// empty value unsets a variable), on `ledger` or an in-memory one.
async fn start_full(
    sandbox: SandboxConfig,
    extra: &[(&'static str, &str)],
    ledger: Option<Arc<dyn GrantLedger>>,
) -> World {
    let sandbox = SandboxHandle::start(sandbox).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let mut env: HashMap<&str, String> = HashMap::new();
    env.insert("WEBAPP_LISTEN", app.to_string());
    env.insert("WEBAPP_PUBLIC_URL", format!("http://{app}"));
    env.insert("WECHAT_API_BASE", sandbox.base_url());
    env.insert("WEBAPP_ADMIN_TOKEN", ADMIN_TOKEN.to_owned());
    env.insert("WEBAPP_APP_SESSION_KEY", APP_SESSION_KEY.to_owned());
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let config = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let state = match ledger {
        Some(ledger) => AppState::with_ledger(config, ledger).unwrap(),
        // What `main` does: the ledger the configuration names.
        None if env.contains_key("DATABASE_URL") => AppState::open(config).await.unwrap(),
        None => AppState::new(config).unwrap(),
    };
    tokio::spawn(web_app::serve(listener, state.clone(), std::future::pending()));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    World { sandbox, app, http, state }
}

/// The value of hidden field `name` in a page's form.
fn field(html: &str, name: &str) -> String {
    let at = html.find(&format!(r#"name="{name}" value=""#)).unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// `name=value` of a response's `Set-Cookie` for cookie `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
}

impl World {
    /// Posts the sign-in form with `cookie` (the session), `token` and `csrf`.
    async fn login(&self, cookie: Option<&str>, token: &str, csrf: &str) -> reqwest::Response {
        let mut r = self.http.post(self.url("/admin/login")).form(&[("token", token), ("csrf", csrf)]);
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.unwrap()
    }

    /// Signs in as the admin in a fresh browser: returns its `Cookie` header and the page's
    /// CSRF token.
    async fn admin_login(&self) -> (String, String) {
        let r = self.http.get(self.url("/admin")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let sid = set_cookie(&r, "sid").unwrap().split(';').next().unwrap().to_owned();
        let csrf = field(&r.text().await.unwrap(), "csrf");
        let r = self.login(Some(&sid), ADMIN_TOKEN, &csrf).await;
        assert_eq!(r.status(), 303, "login");
        let admin = set_cookie(&r, "wa_admin").unwrap();
        let cookies = format!("{sid}; {}", admin.split(';').next().unwrap());
        let (status, page) = self.get(&self.url("/admin"), Some(&cookies)).await;
        assert_eq!(status, 200, "{page}");
        (cookies, field(&page, "csrf"))
    }

    /// Posts the dispatch form as a signed-in admin. A refused form's answer is returned as
    /// is; an accepted one is followed to its job's page until the job finishes.
    async fn dispatch(&self, title: &str, content: &str) -> (StatusCode, String) {
        let (cookies, csrf) = self.admin_login().await;
        let r = self
            .post_dispatch(&cookies, &[("title", title), ("content", content), ("url", ""), ("csrf", &csrf)])
            .await;
        if r.status() != StatusCode::SEE_OTHER {
            return (r.status(), r.text().await.unwrap());
        }
        let job = self.url(r.headers()[LOCATION].to_str().unwrap());
        self.finished(&job, &cookies).await
    }

    async fn post_dispatch(&self, cookies: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url("/admin/dispatch")).header(COOKIE, cookies).form(form).send().await.unwrap()
    }

    /// Reloads a job's page until its report shows (at most 20 s).
    async fn finished(&self, job: &str, cookies: &str) -> (StatusCode, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, page) = self.get(job, Some(cookies)).await;
            if !page.contains(r#"data-state="running""#) {
                return (status, page);
            }
            assert!(std::time::Instant::now() < deadline, "the dispatch did not finish: {page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app)
    }

    /// `/subscribe` → the authorization page → the user's decision → WeChat's redirect back.
    /// Returns the session cookie and the callback URL.
    async fn authorize(&self, cookie: Option<&str>, openid: &str, decision: &str) -> (String, String) {
        let mut req = self.http.get(self.url("/subscribe"));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_redirection(), "{}", r.status());
        let cookie = match r.headers().get(SET_COOKIE) {
            Some(v) => {
                let v = v.to_str().unwrap();
                assert!(v.contains("HttpOnly") && v.contains("SameSite=Lax"), "{v}");
                v.split(';').next().unwrap().to_owned()
            }
            None => cookie.unwrap().to_owned(),
        };
        let page_url = r.headers()[LOCATION].to_str().unwrap().split('#').next().unwrap().to_owned();
        assert!(page_url.starts_with(&format!("{}/mp/subscribemsg?", self.sandbox.base_url())), "{page_url}");
        assert_eq!(self.http.get(&page_url).send().await.unwrap().status(), 200);
        let q = page_url.split_once('?').unwrap().1;
        let r = self
            .http
            .post(format!("{}/mp/subscribemsg/decide", self.sandbox.base_url()))
            .form(&[("q", q), ("openid", openid), ("decision", decision)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let callback = r.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(callback.starts_with(&self.url("/callback?")), "{callback}");
        (cookie, callback)
    }

    async fn get(&self, url: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let mut req = self.http.get(url);
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn health(&self) -> serde_json::Value {
        serde_json::from_str(&self.http.get(self.url("/health")).send().await.unwrap().text().await.unwrap())
            .unwrap()
    }
}

pub(crate) fn cell(html: &str, id: &str) -> u64 {
    let start = html.find(&format!(r#"id="{id}">"#)).unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[start + id.len() + 6..];
    rest[..rest.find('<').unwrap()].parse().unwrap()
}

#[tokio::test]
async fn confirm_cancel_dispatch_and_exactly_one_message() {
    let w = start().await;
    let (status, index) = w.get(&w.url("/"), None).await;
    assert_eq!(status, 200);
    assert!(index.contains(r#"href="/subscribe""#));

    // Alice confirms: the grant is recorded once; the answer replayed is refused.
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    let (status, page) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"data-action="confirm""#), "{page}");
    let (status, again) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 409);
    assert!(again.contains("already used"), "{again}");
    // Subscribing again (a fresh state) finds her grant still waiting.
    let (_, callback) = w.authorize(Some(&alice), ALICE, "confirm").await;
    let (status, again) = w.get(&callback, Some(&alice)).await;
    assert_eq!(status, 200);
    assert!(again.contains("already on the list"), "{again}");
    assert_eq!(w.health().await["grants"]["pending"], 1);

    // Bob cancels.
    let (bob, callback) = w.authorize(None, BOB, "cancel").await;
    assert_ne!(bob, alice);
    let (status, page) = w.get(&callback, Some(&bob)).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-action="cancel""#), "{page}");

    // A message that breaks a rule is refused before any grant is touched.
    let (status, page) = w.dispatch("这个标题一共有十六个字符长度超过限制", "到货了").await;
    assert_eq!(status, 400);
    assert!(page.contains("title"), "{page}");
    assert_eq!(w.sandbox.state().stats().send_requests, 0);
    assert_eq!(w.health().await["grants"]["pending"], 1);

    // The dispatch sends Alice her one message, and Bob nothing.
    let (status, report) = w.dispatch("到货提醒", "您关注的亚麻衬衫已到货").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((cell(&report, "sent"), cell(&report, "delivered")), (1, 1));
    assert!(report.contains(ALICE));
    assert_eq!(w.sandbox.state().inbox(ALICE).len(), 1);
    assert_eq!(w.sandbox.state().inbox(ALICE)[0].content, "您关注的亚麻衬衫已到货");
    assert!(w.sandbox.state().inbox(BOB).is_empty());

    // Nobody is waiting any more: a second dispatch sends nothing.
    let (_, report) = w.dispatch("到货提醒", "again").await;
    assert_eq!(cell(&report, "sent"), 0);
    assert_eq!(w.sandbox.state().stats().deliveries, 1);
    let (cookies, _) = w.admin_login().await;
    let (_, admin) = w.get(&w.url("/admin"), Some(&cookies)).await;
    assert_eq!((cell(&admin, "pending"), cell(&admin, "delivered")), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_kept_in_sqlite_survive_a_restart_of_the_app() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("web-app-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The directory does not exist yet: the app creates it, as `data/` on a fresh machine.
    let url = format!("sqlite:{}/data/grants.db", dir.display());
    let w = start_with(&[("DATABASE_URL", &url)]).await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    assert_eq!(w.health().await["grants"]["pending"], 1);

    // The process restarts: a new app on the same file finds Alice's grant and sends it.
    let restarted = start_with(&[("DATABASE_URL", &url), ("WECHAT_API_BASE", &w.sandbox.base_url())]).await;
    assert_eq!(restarted.health().await["grants"]["pending"], 1, "the grant survived the restart");
    let (status, report) = restarted.dispatch("到货提醒", "您关注的亚麻衬衫已到货").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(cell(&report, "delivered"), 1);
    assert_eq!(w.sandbox.state().inbox(ALICE).len(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the first app's cached counts
    assert_eq!(w.health().await["grants"]["delivered"], 1, "both see one database");
}

#[test]
fn the_database_url_defaults_to_sqlite_in_the_data_dir_and_stays_out_of_debug() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        Config::from_lookup(move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))
            .unwrap()
    };
    assert_eq!(env(&[]).database_url.as_deref(), Some("sqlite:data/grants.db"));
    assert_eq!(
        env(&[("WEBAPP_DATA_DIR", "/var/lib/shop")]).database_url.as_deref(),
        Some("sqlite:/var/lib/shop/grants.db")
    );
    assert_eq!(env(&[("DATABASE_URL", "memory")]).database_url, None);
    let pg = env(&[("DATABASE_URL", "postgres://shop:s3cr3t@db/shop")]);
    assert_eq!(pg.database_url.as_deref(), Some("postgres://shop:s3cr3t@db/shop"));
    assert!(!format!("{pg:?}").contains("s3cr3t"));
}

/// `url` with the value of query parameter `key` replaced by `value`.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let pairs: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k == key => format!("{k}={value}"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[tokio::test]
async fn an_answer_from_another_session_or_a_forged_one_is_refused() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;

    // The same answer in another browser (an attacker's link opened by a victim).
    let (other, _) = w.authorize(None, BOB, "cancel").await;
    let (status, page) = w.get(&callback, Some(&other)).await;
    assert_eq!(status, 400);
    assert!(page.contains(r#"id="error""#), "{page}");
    // Without any session.
    assert_eq!(w.get(&callback, None).await.0, 400);
    // A tampered scene or template in Alice's own session: the session matches, so only the
    // signed state can refuse them (it names the scene and template it was issued for).
    let scene = callback.split("scene=").nth(1).unwrap().split('&').next().unwrap();
    let other_scene = if scene == "2" { "3" } else { "2" };
    for forged in [
        with_param(&callback, "scene", other_scene),
        with_param(&callback, "template_id", "another_template"),
    ] {
        assert_ne!(forged, callback);
        let (status, page) = w.get(&forged, Some(&alice)).await;
        assert_eq!(status, 400, "{forged}");
        assert!(page.contains("not valid for this app, template, scene and session"), "{page}");
    }
    assert_eq!(w.health().await["grants"]["pending"], 0);
    // Garbage.
    assert_eq!(w.get(&w.url("/callback?<script>"), Some(&other)).await.0, 400);
    // The genuine answer in Alice's session is still good: the refusals were the tampering's.
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    assert_eq!(w.health().await["grants"]["pending"], 1);
}

#[tokio::test]
async fn one_answer_replayed_with_made_up_openids_records_one_grant() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    let mut accepted = 0;
    for i in 0..30 {
        let forged = with_param(&callback, "openid", &format!("oForged{i:04}"));
        let (status, _) = w.get(&forged, Some(&alice)).await;
        accepted += usize::from(status == StatusCode::OK);
        assert!(status == StatusCode::OK || status == StatusCode::CONFLICT, "{status}");
    }
    assert_eq!(accepted, 1, "one state, one grant");
    assert_eq!(w.health().await["grants"]["pending"], 1);
    // Alice's own answer came too late: the state was used by the first forged openid.
    assert_eq!(w.get(&callback, Some(&alice)).await.0, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_shed_and_a_normal_request_still_answers() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = start_with(&[("WEBAPP_HEADER_TIMEOUT_MS", "1000")]).await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(w.app).await.unwrap();
        c.write_all(b"POST /admin/dispatch HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
        slow.push(c);
    }
    let started = std::time::Instant::now();
    assert_eq!(w.get(&w.url("/health"), None).await.0, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    for c in &mut slow {
        let mut buf = [0u8; 1024];
        let closed = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => {}
                Err(_) => break false,
            }
        };
        assert!(closed, "a connection that never finished its headers was kept");
    }
}

#[test]
fn configuration_errors_name_the_variable_and_the_secret_never_prints() {
    let secret = "a-very-private-secret-value-1234";
    let key = "a-state-key-of-at-least-32-bytes-5678";
    let cfg = Config::from_lookup(|k| match k {
        "WECHAT_SECRET" => Some(secret.to_owned()),
        "WEBAPP_STATE_KEY" => Some(key.to_owned()),
        "WEBAPP_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        "WEBAPP_APP_SESSION_KEY" => Some(APP_SESSION_KEY.to_owned()),
        _ => None,
    })
    .unwrap();
    let state = AppState::new(cfg.clone()).unwrap();
    let shown = format!("{cfg:?} {state:?} {cfg:#?}");
    for private in [secret, key, ADMIN_TOKEN, APP_SESSION_KEY] {
        assert!(!shown.contains(private), "{shown}");
    }
    // Neither as bytes: `Vec<u8>`'s Debug would print the key as numbers.
    let bytes = format!("{:?}", key.as_bytes());
    assert!(!shown.contains(&bytes[1..20]), "{shown}");
    assert!(shown.contains("state_key: Some(\"[redacted]\")"), "{shown}");

    for (var, value) in [
        ("WEBAPP_LISTEN", "nowhere"),
        ("WEBAPP_PUBLIC_URL", "ftp://x"),
        ("WECHAT_APPID", "wx bad"),
        ("WEBAPP_SCENE", "10001"),
        ("WEBAPP_STATE_KEY", "short"),
        ("WEBAPP_ADMIN_TOKEN", "short"),
        ("WEBAPP_APP_SESSION_KEY", "short"),
        ("WEBAPP_APP_RATE_PER_MINUTE", "0"),
        ("WEBAPP_ADMIN_TOKEN", "a token with spaces in it, long enough though"),
        ("WEBAPP_HEADER_TIMEOUT_MS", "0"),
        ("WEBAPP_MAX_CONNECTIONS", "lots"),
        ("WECHAT_TEMPLATE_ID", "bad template"),
    ] {
        let e = Config::from_lookup(|k| (k == var).then(|| value.to_owned())).unwrap_err();
        assert!(e.to_string().starts_with(var), "{var}: {e}");
    }
}
