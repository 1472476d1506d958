//! The world the web app's HTTP tests share: the sandbox, the app on a port of its own, and
//! what a browser without JavaScript does with them. Each test binary uses part of it.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use subscribe_client::GrantLedger;
use subscribe_sandbox::{SandboxConfig, SandboxHandle};
use web_app::{AppState, Config};

pub(crate) const ALICE: &str = "oSandbox_Alice_00000000001";
pub(crate) const BOB: &str = "oSandbox_Bob_0000000000002";
/// The admin credential the tests start the app with.
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";
/// The key app session tokens are signed with in the tests.
pub(crate) const APP_SESSION_KEY: &str = "test-app-session-key-0123456789abcdef";

pub(crate) struct World {
    pub(crate) sandbox: SandboxHandle,
    pub(crate) app: SocketAddr,
    pub(crate) http: reqwest::Client,
    pub(crate) state: AppState,
}

pub(crate) async fn start() -> World {
    start_with(&[]).await
}

pub(crate) async fn start_with(extra: &[(&'static str, &str)]) -> World {
    start_full(SandboxConfig::demo(), extra, None).await
}

/// A sandbox on `sandbox`, and the app with the test environment plus `extra` (which wins; an
/// empty value unsets a variable), on `ledger` or an in-memory one.
pub(crate) async fn start_full(
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
pub(crate) fn field(html: &str, name: &str) -> String {
    let at = html.find(&format!(r#"name="{name}" value=""#)).unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// `name=value` of a response's `Set-Cookie` for cookie `name`.
pub(crate) fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
}

impl World {
    /// Posts the sign-in form with `cookie` (the session), `token` and `csrf`.
    pub(crate) async fn login(&self, cookie: Option<&str>, token: &str, csrf: &str) -> reqwest::Response {
        let mut r = self.http.post(self.url("/admin/login")).form(&[("token", token), ("csrf", csrf)]);
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.unwrap()
    }

    /// Signs in as the admin in a fresh browser: returns its `Cookie` header and the page's
    /// CSRF token.
    pub(crate) async fn admin_login(&self) -> (String, String) {
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
    pub(crate) async fn dispatch(&self, title: &str, content: &str) -> (StatusCode, String) {
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

    pub(crate) async fn post_dispatch(&self, cookies: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url("/admin/dispatch")).header(COOKIE, cookies).form(form).send().await.unwrap()
    }

    /// Reloads a job's page until its report shows (at most 20 s).
    pub(crate) async fn finished(&self, job: &str, cookies: &str) -> (StatusCode, String) {
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

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app)
    }

    /// `/subscribe` → the authorization page → the user's decision → WeChat's redirect back.
    /// Returns the session cookie and the callback URL.
    pub(crate) async fn authorize(
        &self,
        cookie: Option<&str>,
        openid: &str,
        decision: &str,
    ) -> (String, String) {
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

    pub(crate) async fn get(&self, url: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let mut req = self.http.get(url);
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    pub(crate) async fn health(&self) -> serde_json::Value {
        serde_json::from_str(&self.http.get(self.url("/health")).send().await.unwrap().text().await.unwrap())
            .unwrap()
    }
}

pub(crate) fn cell(html: &str, id: &str) -> u64 {
    let start = html.find(&format!(r#"id="{id}">"#)).unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[start + id.len() + 6..];
    rest[..rest.find('<').unwrap()].parse().unwrap()
}

/// Two instances of the app on one shared backend (`DATABASE_URL=url`), as behind a load
/// balancer, then a third started later (a restart): a confirmation taken at one is sent by
/// the other, once; the access token one fetched is the one the other uses; the restarted
/// instance finds everything, and a replayed answer is refused by every instance, the restarted
/// one included (the used authorization states are in the backend too). `sandbox` is the
/// WeChat both talk to (give it an AppID of its own when the backend outlives the test, as Redis
/// does).
pub(crate) async fn two_instances_and_a_restart_share_one_backend(url: &str, sandbox: SandboxConfig) {
    let app = &sandbox.apps[0];
    let (appid, secret) = (app.appid.as_str().to_owned(), app.secret.clone());
    let env = |base: &str| {
        vec![
            ("DATABASE_URL", url.to_owned()),
            ("WECHAT_APPID", appid.clone()),
            ("WECHAT_SECRET", secret.clone()),
            ("WECHAT_API_BASE", base.to_owned()),
        ]
    };
    let a = start_owned(sandbox, env("")).await;
    let wechat = a.sandbox.base_url();
    let b = start_owned(SandboxConfig::demo(), env(&wechat)).await;

    // Alice confirms at A: both instances count her grant.
    let (alice, callback) = a.authorize(None, ALICE, "confirm").await;
    let (status, page) = a.get(&callback, Some(&alice)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(a.health().await["grants"]["pending"], 1);
    assert_eq!(b.health().await["grants"]["pending"], 1, "B reads the grant A recorded");
    // The same answer replayed at B records nothing more.
    let (status, page) = b.get(&callback.replace(&a.url(""), &b.url("")), Some(&alice)).await;
    assert_eq!(status, 409, "B knows A used the state: {page}");
    tokio::time::sleep(Duration::from_millis(1100)).await; // past B's cached counts
    assert_eq!(b.health().await["grants"]["pending"], 1, "still one grant: {page}");

    // B sends it, once, fetching the access token.
    let (status, report) = b.dispatch("到货提醒", "您关注的亚麻衬衫已到货").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(cell(&report, "delivered"), 1, "{report}");
    let tokens = |w: &World| {
        let s = w.sandbox.state().stats();
        s.classic_token_requests + s.stable_token_requests
    };
    assert_eq!(tokens(&a), 1);

    // Bob confirms at A, and A sends: with the token B stored, and not Alice again.
    let (bob, callback) = a.authorize(None, BOB, "confirm").await;
    assert_eq!(a.get(&callback, Some(&bob)).await.0, 200);
    let (status, report) = a.dispatch("到货提醒", "您关注的亚麻衬衫已到货").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((cell(&report, "sent"), cell(&report, "delivered")), (1, 1), "{report}");
    assert_eq!(tokens(&a), 1, "A used the token B fetched");
    let inbox = a.sandbox.state();
    assert_eq!((inbox.inbox(ALICE).len(), inbox.inbox(BOB).len()), (1, 1), "each got one message");

    // A third instance, started afterwards, finds both delivered.
    let c = start_owned(SandboxConfig::demo(), env(&wechat)).await;
    let (status, page) = c.get(&callback.replace(&a.url(""), &c.url("")), Some(&bob)).await;
    assert_eq!(status, 409, "the restarted instance knows Bob's state was used: {page}");
    let health = c.health().await;
    assert_eq!(
        (health["grants"]["pending"].as_u64(), health["grants"]["delivered"].as_u64()),
        (Some(0), Some(2))
    );
    let (_, report) = c.dispatch("到货提醒", "again").await;
    assert_eq!(cell(&report, "sent"), 0, "nothing is sent twice: {report}");
    assert_eq!(tokens(&a), 1);

    // A notification's result WeChat pushed to A is there for B and C.
    let result = subscribe_client::NotificationResult {
        msgid: 1_700_000_000_000_000_001,
        openid: BOB.to_owned(),
        template_id: "ResultTemplate_000000000000000000000000001".to_owned(),
        error_code: 43101,
        error_status: "failed:user refuse to accept the msg".to_owned(),
        // Now, to the millisecond: stores may keep results by their own clocks.
        at: {
            #[allow(clippy::disallowed_methods)] // a real store's clock is the system's
            let now = std::time::SystemTime::now();
            let ms = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap())
        },
    };
    a.state.results().record_result(&result).await.unwrap();
    for other in [&b, &c] {
        assert_eq!(other.state.results().result(result.msgid).await.unwrap().as_ref(), Some(&result));
    }
}

/// [`start_full`] with owned values for `extra` (an empty value is left out, so the sandbox
/// started here is the one used).
async fn start_owned(sandbox: SandboxConfig, extra: Vec<(&'static str, String)>) -> World {
    let extra: Vec<(&'static str, &str)> =
        extra.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (*k, v.as_str())).collect();
    start_full(sandbox, &extra, None).await
}
