//! The gateway's tests, in one binary: the configuration, the token service and the send API
//! against the sandbox, the idempotency records and their stores, the guards an attacker
//! meets, redaction, and operations (metrics, rate limits, the binary's logs and its stop).

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod binary;
mod callers;
mod config;
mod consent;
mod dispatch;
mod fleet;
mod grants;
mod guard;
mod idempotency;
mod jobs;
mod limits;
mod metrics;
mod processes;
mod push;
mod redaction;
mod send;
mod status;
mod stores;
mod tokens;

use std::net::SocketAddr;
use std::path::Path;

use subscribe_client::SharedTokenStore;
use subscribe_gateway::{Config, Gateway, KeyHash, ServeLimits, serve};
use subscribe_sandbox::{AppConfig, DEMO_APPID, DEMO_SECRET, SandboxConfig, SandboxHandle};
use subscribe_types::AppId;
use tempfile::TempDir;

/// Key A: `token:read` on the demo app.
pub const KEY_A: &str = "gw-test-key-a-3f9c2d7e1b8a4c6f0e5d9b2a7c1f8e3d";
/// Key B: `token:read` on app B.
pub const KEY_B: &str = "gw-test-key-b-8e1d4a7c0f3b6e9d2c5a8f1b4e7d0a3c";
/// A second app the sandbox knows.
pub const APP_B: &str = "wxb0b0b0b0b0b0b0b0";
/// App B's secret.
pub const SECRET_B: &str = "sandbox-secret-of-app-b-0000000001";

/// A sandbox with the demo app and app B.
pub async fn sandbox() -> SandboxHandle {
    sandbox_of(SandboxConfig::demo()).await
}

/// A sandbox with `config`'s apps and users, and app B.
pub async fn sandbox_of(mut config: SandboxConfig) -> SandboxHandle {
    let mut b: AppConfig = config.apps[0].clone();
    b.appid = AppId::new(APP_B).unwrap();
    b.secret = SECRET_B.into();
    config.apps.push(b);
    SandboxHandle::start(config).await.unwrap()
}

/// The test configuration, its files written into `dir`: the demo app and app B on
/// `sandbox`, key A (by its hash) for the demo app, key B (from a file) for app B.
pub fn config_text(dir: &Path, sandbox: &str) -> String {
    std::fs::write(dir.join("secret-a"), format!("{DEMO_SECRET}\n")).unwrap();
    std::fs::write(dir.join("secret-b"), SECRET_B).unwrap();
    std::fs::write(dir.join("key-b"), KEY_B).unwrap();
    let hash_a = KeyHash::of(KEY_A.as_bytes()).to_hex();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
header_read_timeout_ms = 300
max_body_bytes = 1024

[store]
path = "tokens.db"

[[apps]]
appid = "{DEMO_APPID}"
kind = "official_account"
api_base = "{sandbox}"
secret_file = "secret-a"

[[apps]]
appid = "{APP_B}"
kind = "mini_program"
api_base = "{sandbox}"
secret_file = "secret-b"

[[keys]]
name = "orders"
sha256 = "{hash_a}"
scopes = {{ {DEMO_APPID} = ["token:read"] }}

[[keys]]
name = "shop"
key_file = "key-b"
scopes = {{ {APP_B} = ["token:read", "send"] }}
"#
    )
}

/// `n` gateways started on `config` (each its own pool or connection to the store), each
/// serving on 127.0.0.1: their addresses, and the senders that stop them when dropped.
pub async fn serve_gateways(
    config: &Config,
    n: usize,
) -> (Vec<SocketAddr>, Vec<tokio::sync::oneshot::Sender<()>>) {
    let (mut addrs, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let gateway = Gateway::start(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, gateway.router(), ServeLimits::from(&config.server), async {
            let _ = rx.await;
        }));
        stops.push(tx);
    }
    (addrs, stops)
}

/// A gateway serving on 127.0.0.1 against a sandbox; both stop when it is dropped.
#[derive(Debug)]
pub struct Running {
    /// The sandbox it asks for tokens.
    pub sandbox: SandboxHandle,
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// The gateway (its metrics, its metrics router).
    pub gateway: Gateway,
    /// A client for it.
    pub http: reqwest::Client,
    /// Its configuration's directory (secrets, the SQLite file), removed when dropped.
    _dir: TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    /// Starts a sandbox and a gateway on it with the test configuration.
    pub async fn start() -> Self {
        Self::start_with(|text| text, None).await
    }

    /// Starts a sandbox and a gateway on it with the test configuration changed by `edit`,
    /// on `store` when given (else the configuration's).
    pub async fn start_with(edit: impl FnOnce(String) -> String, store: Option<SharedTokenStore>) -> Self {
        let sandbox = sandbox().await;
        let dir = TempDir::new().unwrap();
        let text = edit(config_text(dir.path(), &sandbox.base_url()));
        let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
        let gateway = match store {
            Some(store) => Gateway::with_store(&config, store).unwrap(),
            None => Gateway::start(&config).await.unwrap(),
        };
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = ServeLimits::from(&config.server);
        tokio::spawn(serve(listener, gateway.router(), limits, async {
            let _ = rx.await;
        }));
        Self { sandbox, addr, gateway, http: reqwest::Client::new(), _dir: dir, _stop: tx }
    }

    /// The gateway's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The token endpoint of `app`.
    pub fn token_url(&self, app: &str) -> String {
        self.url(&format!("/v1/apps/{app}/access_token"))
    }

    /// The invalidation endpoint of `app`.
    pub fn invalidate_url(&self, app: &str) -> String {
        self.url(&format!("/v1/apps/{app}/access_token/invalidate"))
    }

    /// GET the token of `app` with `key`: the status and the JSON body.
    pub async fn get_token(&self, app: &str, key: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(self.token_url(app)).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Reports `token` of `app` as rejected, with `key`.
    pub async fn report(&self, app: &str, key: &str, token: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.invalidate_url(app))
            .bearer_auth(key)
            .json(&serde_json::json!({ "access_token": token }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}
