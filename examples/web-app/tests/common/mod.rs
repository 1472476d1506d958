//! The world the web app's HTTP tests share: the sandbox, the app on a port of its own with a
//! SQLite file of its own, and what a browser without JavaScript does with them.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use subscribe_client::{GrantLedger as _, GrantScope};
use subscribe_sandbox::{SandboxConfig, SandboxHandle};
use subscribe_types::{AppId, Scene, TemplateId};
use web_app::{AppState, Config};

pub(crate) const ALICE: &str = "oSandbox_Alice_00000000001";
pub(crate) const BOB: &str = "oSandbox_Bob_0000000000002";
/// The dispatch token the tests start the app with.
pub(crate) const DISPATCH_TOKEN: &str = "test-dispatch-token-0123456789abcdef0123";

pub(crate) struct World {
    pub(crate) sandbox: SandboxHandle,
    pub(crate) app: SocketAddr,
    pub(crate) http: reqwest::Client,
    pub(crate) state: AppState,
}

/// A data directory no other test uses (not created: the app creates it).
pub(crate) fn fresh_data_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("web-app-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) async fn start() -> World {
    start_with(&[]).await
}

/// A sandbox, and the app on it with the test environment plus `extra` (which wins; an empty
/// value unsets a variable): a fresh data directory, the dispatch token.
pub(crate) async fn start_with(extra: &[(&'static str, &str)]) -> World {
    let sandbox = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let mut env: HashMap<&str, String> = HashMap::new();
    env.insert("WEBAPP_LISTEN", app.to_string());
    env.insert("WEBAPP_PUBLIC_URL", format!("http://{app}"));
    env.insert("WECHAT_API_BASE", sandbox.base_url());
    env.insert("WEBAPP_DISPATCH_TOKEN", DISPATCH_TOKEN.to_owned());
    env.insert("WEBAPP_DATA_DIR", fresh_data_dir().display().to_string());
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let config = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let state = AppState::open(config).await.unwrap();
    let router = web_app::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    World { sandbox, app, http, state }
}

impl World {
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

    /// `POST /dispatch` with `authorization` as the header (none: no header); the answer's
    /// status and text.
    pub(crate) async fn dispatch_with(&self, authorization: Option<&str>) -> (StatusCode, String) {
        let mut req = self.http.post(self.url("/dispatch"));
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// A dispatch with the token: its report.
    pub(crate) async fn dispatch(&self) -> serde_json::Value {
        let (status, report) = self.dispatch_with(Some(&format!("Bearer {DISPATCH_TOKEN}"))).await;
        assert_eq!(status, 200, "{report}");
        serde_json::from_str(&report).unwrap()
    }

    /// The page's grants waiting for their message.
    pub(crate) async fn pending(&self) -> u64 {
        let scope = GrantScope {
            appid: AppId::new(web_app::SANDBOX_APPID).unwrap(),
            template_id: TemplateId::new(web_app::SANDBOX_TEMPLATE).unwrap(),
            scene: Scene::new(1).unwrap(),
        };
        let now = self.state.client().clock().now();
        self.state.ledger().counts(&scope, now).await.unwrap().pending
    }
}
