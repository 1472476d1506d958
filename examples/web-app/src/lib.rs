//! What an integrator writes: a small axum service that asks its users for a one-time
//! subscription and later sends each of them exactly one message.
//!
//! | Route                  | What it does                                                        |
//! |------------------------|---------------------------------------------------------------------|
//! | `GET /`                | the product page with a "notify me" link                            |
//! | `GET /subscribe`       | redirects to WeChat's authorization page, state bound to the session |
//! | `GET /callback`        | completes the authorization, records the grant, shows the result     |
//! | `GET /admin`           | how many users are waiting, and the dispatch form (signed-in admins) |
//! | `POST /admin/login`    | signs in with `WEBAPP_ADMIN_TOKEN`                                   |
//! | `POST /admin/dispatch` | starts a dispatch job: one message to everyone waiting               |
//! | `GET /admin/jobs/{id}` | a dispatch's progress, then its report                               |
//! | `POST /admin/logout`   | signs out                                                            |
//! | `GET /health`          | liveness and the grant counts (cached for a second), as JSON         |
//! | `POST /api/subscriptions/request` | a mobile app: the Open SDK request for its signed-in user |
//! | `POST /api/subscriptions/answer`  | a mobile app: the SDK's answer forwarded → the grant recorded |
//! | `GET, POST /wechat/push` | the server URL: WeChat's pushed subscription events → grants, withdrawals, results |
//!
//! Configuration comes from the environment ([`Config::from_env`]) and defaults to the sandbox
//! `wxsub sandbox` serves on `127.0.0.1:8080`, with its demo app. The binary (`src/main.rs`) is
//! ten lines; tests start the same [`router`] in-process.

mod admin;
mod app_api;
mod html;
mod push;

pub use admin::AdminToken;
pub use app_api::{AppSessionKey, MAX_BODY};
pub use push::{PushSettings, SANDBOX_PUSH_TEMPLATES};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use subscribe_client::{
    Answer, AuthorizationError, Client, ErrorKind, GrantCounts, GrantLedger, GrantScope, InMemoryGrantLedger,
    InMemoryNotificationResults, NotificationResults, RecordError, Recorded,
};
use subscribe_events::replay::{MemoryReplayCache, ReplayCache};
use subscribe_types::{AppId, AppSecret, AuthorizationAnswer, HttpUrl, Scene, TemplateId};
use zeroize::Zeroizing;

use crate::html::page;
use maud::html;

/// The sandbox's demo app id (`wxsub sandbox` and `SandboxConfig::demo()`).
pub const SANDBOX_APPID: &str = "wx5a1db0c0ffee0001";
/// The sandbox's demo secret. Not a secret: it only opens the local sandbox.
pub const SANDBOX_SECRET: &str = "sandbox-demo-secret-0123456789ab";
/// The sandbox's demo one-time template.
pub const SANDBOX_TEMPLATE: &str = "SandboxRestockAlert_0000000000000000000001";
/// Where `wxsub sandbox` listens by default.
pub const SANDBOX_BASE: &str = "http://127.0.0.1:8080";

const SESSION_COOKIE: &str = "sid";

/// The service's configuration. Its `Debug` shows neither the secret nor the state key.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// `WEBAPP_LISTEN`: where to listen (default `127.0.0.1:3000`).
    pub listen: SocketAddr,
    /// `WEBAPP_PUBLIC_URL`: how browsers reach this service; the callback is
    /// `{public_url}/callback` (default `http://{listen}`).
    pub public_url: String,
    /// `WECHAT_APPID` (default: the sandbox's demo app).
    pub appid: AppId,
    /// `WECHAT_SECRET` (default: the sandbox's demo secret). Never printed.
    pub secret: AppSecret,
    /// `WECHAT_API_BASE` (default: the sandbox at `127.0.0.1:8080`; for WeChat,
    /// `https://api.weixin.qq.com`).
    pub api_base: String,
    /// `WECHAT_MP_BASE`: where the authorization page is (default: the same sandbox; for
    /// WeChat, `https://mp.weixin.qq.com`).
    pub mp_base: String,
    /// `WECHAT_TEMPLATE_ID` (default: the sandbox's demo template).
    pub template_id: TemplateId,
    /// `WEBAPP_SCENE`: the scene this page asks for (default 1).
    pub scene: Scene,
    /// `WEBAPP_STATE_KEY`: the key signing the authorization state, at least 32 bytes. Needed
    /// when several instances serve the same users; by default it is derived from the secret.
    /// Zeroed when dropped.
    pub state_key: Option<Zeroizing<Vec<u8>>>,
    /// `WEBAPP_DISPATCH_CONCURRENCY`: sends in flight during a dispatch (default 16).
    pub dispatch_concurrency: usize,
    /// `WEBAPP_HEADER_TIMEOUT_MS`: how long a connection may take to send a request's headers,
    /// and how long an idle keep-alive connection is kept (default 10 000 ms).
    pub header_read_timeout: std::time::Duration,
    /// `WEBAPP_MAX_CONNECTIONS`: connections served at once (default 1024).
    pub max_connections: usize,
    /// `WEBAPP_ADMIN_TOKEN`: the credential that opens `/admin` (at least 32 characters).
    /// Without it the admin is off. Never printed.
    pub admin_token: Option<AdminToken>,
    /// `WEBAPP_APP_SESSION_KEY`: the key (at least 32 bytes) app session tokens are signed with;
    /// without it the app API is off. Never printed.
    pub app_session_key: Option<AppSessionKey>,
    /// `WEBAPP_APP_RATE_PER_MINUTE`: app API requests per user and minute (default 30).
    pub app_rate_per_minute: std::num::NonZeroU32,
    /// Where grants are kept: `DATABASE_URL` (`postgres://…`, `sqlite:…` or `redis://…`), or
    /// by default the SQLite file `grants.db` in `WEBAPP_DATA_DIR` (default `data`), so a
    /// restart loses nothing. `DATABASE_URL=memory` keeps them in memory (lost on restart).
    /// `None`: memory. See [`AppState::open`] for what else each keeps.
    pub database_url: Option<String>,
    /// The server URL's settings (`WECHAT_PUSH_TOKEN`, `WECHAT_PUSH_AES_KEY`, …; see
    /// [`PushSettings`]): with a Token, `/wechat/push` takes WeChat's pushed events. Never
    /// printed.
    pub push: Option<PushSettings>,
}

impl Config {
    /// Whether cookies get `Secure`: when browsers reach the service over https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("appid", &self.appid)
            .field("secret", &self.secret)
            .field("api_base", &self.api_base)
            .field("mp_base", &self.mp_base)
            .field("template_id", &self.template_id)
            .field("scene", &self.scene)
            .field("state_key", &self.state_key.as_ref().map(|_| "[redacted]"))
            .field("dispatch_concurrency", &self.dispatch_concurrency)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("admin_token", &self.admin_token)
            .field("app_session_key", &self.app_session_key)
            .field("app_rate_per_minute", &self.app_rate_per_minute)
            // The URL may hold the database's password.
            .field("database_url", &self.database_url.as_ref().map(|_| "[redacted]"))
            .field("push", &self.push)
            .finish()
    }
}

/// The service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The client cannot be built from the configuration.
    #[error("client: {0}")]
    Client(#[from] subscribe_client::ConfigError),
    /// The grant database cannot be opened or migrated (the URL is not shown: it may hold a
    /// password).
    #[error("grant database: {0}")]
    Database(#[from] subscribe_sql::SqlError),
    /// Redis cannot be reached (the URL is not shown: it may hold a password).
    #[error("grant database: {0}")]
    Redis(#[from] subscribe_redis::RedisError),
}

/// A configuration variable is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The variable's value breaks a rule.
    #[error("{var}: {reason}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// What is wrong (never the value of a secret).
        reason: String,
    },
}

fn invalid(var: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { var, reason: reason.to_string() }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable and the rule it breaks.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration from `lookup` (the environment, or a map in tests).
    ///
    /// ```
    /// let c = web_app::Config::from_lookup(|_| None).unwrap();
    /// assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
    /// assert_eq!(c.api_base, web_app::SANDBOX_BASE);
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable and the rule it breaks.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let listen: SocketAddr = get("WEBAPP_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:3000".into())
            .parse()
            .map_err(|e| invalid("WEBAPP_LISTEN", e))?;
        let public_url = get("WEBAPP_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_owned();
        HttpUrl::new(format!("{public_url}/callback")).map_err(|e| invalid("WEBAPP_PUBLIC_URL", e))?;
        let appid = AppId::new(get("WECHAT_APPID").unwrap_or_else(|| SANDBOX_APPID.into()))
            .map_err(|e| invalid("WECHAT_APPID", e))?;
        let secret = AppSecret::new(get("WECHAT_SECRET").unwrap_or_else(|| SANDBOX_SECRET.into()))
            .map_err(|e| invalid("WECHAT_SECRET", e))?;
        let api_base = get("WECHAT_API_BASE").unwrap_or_else(|| SANDBOX_BASE.into());
        let mp_base = get("WECHAT_MP_BASE").unwrap_or_else(|| api_base.clone());
        let template_id =
            TemplateId::new(get("WECHAT_TEMPLATE_ID").unwrap_or_else(|| SANDBOX_TEMPLATE.into()))
                .map_err(|e| invalid("WECHAT_TEMPLATE_ID", e))?;
        let scene = get("WEBAPP_SCENE")
            .map_or(Ok(1), |s| s.parse::<u32>().map_err(|e| invalid("WEBAPP_SCENE", e)))
            .and_then(|n| Scene::new(n).map_err(|e| invalid("WEBAPP_SCENE", e)))?;
        let state_key = match get("WEBAPP_STATE_KEY") {
            Some(k) if k.len() < 32 => return Err(invalid("WEBAPP_STATE_KEY", "must be at least 32 bytes")),
            k => k.map(|k| Zeroizing::new(k.into_bytes())),
        };
        let dispatch_concurrency = get("WEBAPP_DISPATCH_CONCURRENCY")
            .map_or(Ok(16), |s| s.parse::<usize>().map_err(|e| invalid("WEBAPP_DISPATCH_CONCURRENCY", e)))?;
        let header_read_timeout = get("WEBAPP_HEADER_TIMEOUT_MS")
            .map_or(Ok(10_000), |s| s.parse::<u64>().map_err(|e| invalid("WEBAPP_HEADER_TIMEOUT_MS", e)))
            .and_then(|ms| match ms {
                0 => Err(invalid("WEBAPP_HEADER_TIMEOUT_MS", "must be more than 0")),
                ms => Ok(std::time::Duration::from_millis(ms)),
            })?;
        let max_connections = get("WEBAPP_MAX_CONNECTIONS")
            .map_or(Ok(1024), |s| s.parse::<usize>().map_err(|e| invalid("WEBAPP_MAX_CONNECTIONS", e)))
            .and_then(|n| match n {
                0 => Err(invalid("WEBAPP_MAX_CONNECTIONS", "must be at least 1")),
                n => Ok(n),
            })?;
        let admin_token = get("WEBAPP_ADMIN_TOKEN")
            .map(|t| AdminToken::new(&t).map_err(|rule| invalid("WEBAPP_ADMIN_TOKEN", rule)))
            .transpose()?;
        let app_session_key = get("WEBAPP_APP_SESSION_KEY")
            .map(|k| AppSessionKey::new(k.as_bytes()).map_err(|rule| invalid("WEBAPP_APP_SESSION_KEY", rule)))
            .transpose()?;
        let app_rate_per_minute = get("WEBAPP_APP_RATE_PER_MINUTE")
            .map_or(Ok(30), |s| s.parse::<u32>().map_err(|e| invalid("WEBAPP_APP_RATE_PER_MINUTE", e)))
            .and_then(|n| {
                std::num::NonZeroU32::new(n)
                    .ok_or_else(|| invalid("WEBAPP_APP_RATE_PER_MINUTE", "must be at least 1"))
            })?;
        let database_url = match get("DATABASE_URL") {
            Some(url) if url == "memory" => None,
            Some(url) => Some(url),
            None => {
                Some(format!("sqlite:{}/grants.db", get("WEBAPP_DATA_DIR").unwrap_or_else(|| "data".into())))
            }
        };
        let push = PushSettings::from_lookup(&get)?;
        Ok(Self {
            listen,
            public_url,
            appid,
            secret,
            api_base,
            mp_base,
            template_id,
            scene,
            state_key,
            dispatch_concurrency,
            header_read_timeout,
            max_connections,
            admin_token,
            app_session_key,
            app_rate_per_minute,
            database_url,
            push,
        })
    }
}

/// What every handler shares: the client, the ledger, the configuration, the dispatch jobs
/// and the cached grant counts.
#[derive(Clone, Debug)]
pub struct AppState {
    client: Client,
    ledger: Arc<dyn GrantLedger>,
    config: Arc<Config>,
    jobs: Arc<admin::Jobs>,
    app_limiter: Arc<app_api::AppLimiter>,
    counts: Arc<tokio::sync::Mutex<Option<(std::time::Instant, GrantCounts)>>>,
    results: Arc<dyn NotificationResults>,
    /// The event pushes read: `/wechat/push` reads each one once across every instance on
    /// the backend.
    replays: Arc<dyn ReplayCache>,
}

/// How long grant counts are reused: `/health` and `/admin` count at most once a second
/// however often they are asked (a count scans the ledger's scope), and changes made here (a
/// confirmation, a finished dispatch) show at once.
const COUNTS_TTL: Duration = Duration::from_secs(1);
/// How long a count may take before `/health` says the ledger is unavailable.
const COUNTS_TIMEOUT: Duration = Duration::from_secs(2);

impl AppState {
    /// The client for `config`, on the backend [`Config::database_url`] names:
    ///
    /// | `DATABASE_URL` | grants | access tokens | used authorization states | pushes read (replay cache) |
    /// |---|---|---|---|---|
    /// | `sqlite:…` (default `sqlite:data/grants.db`) | the file (created `0600`, its new directories `0700`) | the file | the file | the file |
    /// | `postgres://…` | the database | the database (shared refresh lease) | the database | the database |
    /// | `redis://…`, `rediss://…` | Redis | Redis | Redis | Redis |
    /// | `memory` | memory | memory | memory | memory |
    ///
    /// Pushed notification results ([`results`](Self::results)) are kept in the SQL database
    /// or in Redis (30 days) when there is one, in memory otherwise.
    ///
    /// Wherever the grants are kept, the used authorization states are kept too: a replayed
    /// confirmation is refused by every instance sharing the backend, and after a restart.
    /// So are the event pushes `/wechat/push` read: a push replayed to another instance (or,
    /// on SQL, after a restart) is answered `success` and not applied again.
    ///
    /// # Errors
    /// [`StartError`] when the client cannot be built or the database cannot be opened.
    pub async fn open(config: Config) -> Result<Self, StartError> {
        let Some(url) = config.database_url.clone() else {
            return Ok(Self::new(config)?);
        };
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            let redis = subscribe_redis::Redis::builder(url).connect().await?;
            let ledger = Arc::new(subscribe_redis::RedisGrantLedger::new(redis.clone()));
            let results =
                Arc::new(subscribe_redis::RedisNotificationResults::new(redis.clone(), config.appid.clone()));
            let replays = Arc::new(subscribe_redis::RedisReplayCache::new(redis.clone()));
            let mut state = Self::build(config, ledger, |b| {
                b.token_store(subscribe_redis::RedisTokenStore::new(redis.clone()))
                    .used_states(subscribe_redis::RedisUsedStates::new(redis))
            })?;
            state.results = results;
            state.replays = replays;
            return Ok(state);
        }
        // A SQLite file's missing directories are created (0700) by subscribe-sql, with the file.
        let sql = subscribe_sql::Sql::builder(url).connect().await?;
        let ledger = Arc::new(subscribe_sql::SqlGrantLedger::new(sql.clone()));
        let results = Arc::new(subscribe_sql::SqlNotificationResults::new(sql.clone(), config.appid.clone()));
        let replays = Arc::new(subscribe_sql::SqlReplayCache::new(sql.clone()));
        let mut state = Self::build(config, ledger, |b| {
            b.token_store(subscribe_sql::SqlTokenStore::new(sql.clone()))
                .used_states(subscribe_sql::SqlUsedStates::new(sql))
        })?;
        state.results = results;
        state.replays = replays;
        Ok(state)
    }

    /// The client for `config`, and an in-memory grant ledger (whatever
    /// [`Config::database_url`] says).
    ///
    /// # Errors
    /// [`subscribe_client::ConfigError`] when the client cannot be built from `config`.
    pub fn new(config: Config) -> Result<Self, subscribe_client::ConfigError> {
        Self::with_ledger(config, Arc::new(InMemoryGrantLedger::new()))
    }

    /// The client for `config`, with `ledger` (a Redis ledger when several instances run).
    ///
    /// # Errors
    /// [`subscribe_client::ConfigError`] when the client cannot be built from `config`.
    pub fn with_ledger(
        config: Config,
        ledger: Arc<dyn GrantLedger>,
    ) -> Result<Self, subscribe_client::ConfigError> {
        Self::build(config, ledger, |b| b)
    }

    /// The client for `config` (with what `backend` adds to its builder) and `ledger`.
    fn build(
        config: Config,
        ledger: Arc<dyn GrantLedger>,
        backend: impl FnOnce(subscribe_client::ClientBuilder) -> subscribe_client::ClientBuilder,
    ) -> Result<Self, subscribe_client::ConfigError> {
        let mut builder = backend(
            Client::builder(config.appid.clone(), config.secret.clone())
                .api_base(config.api_base.clone())
                .mp_base(config.mp_base.clone()),
        );
        if let Some(key) = &config.state_key {
            builder = builder.state_key(key.to_vec());
        }
        Ok(Self {
            client: builder.build()?,
            ledger,
            app_limiter: Arc::new(app_api::AppLimiter::per_minute(config.app_rate_per_minute)),
            config: Arc::new(config),
            jobs: Arc::default(),
            counts: Arc::default(),
            results: Arc::new(InMemoryNotificationResults::default()),
            replays: Arc::new(MemoryReplayCache::default()),
        })
    }

    /// The grant counts of this page's scope, counted at most once per [`COUNTS_TTL`]: one
    /// request counts while the others wait for its answer, so a flood of `/health` requests
    /// costs the ledger one count a second, not one each.
    async fn counts(&self) -> Result<GrantCounts, String> {
        let mut cached = self.counts.lock().await;
        if let Some((at, counts)) = *cached
            && at.elapsed() < COUNTS_TTL
        {
            return Ok(counts);
        }
        let counted = tokio::time::timeout(
            COUNTS_TIMEOUT,
            self.ledger.counts(&self.scope(), self.client.clock().now()),
        )
        .await
        .map_err(|_| "the ledger did not answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
        *cached = Some((std::time::Instant::now(), counted));
        Ok(counted)
    }

    /// The grant counts of each template the server URL's pushes feed (none without a push
    /// Token).
    async fn pushed_counts(&self) -> Result<Vec<(TemplateId, GrantCounts)>, String> {
        let Some(push) = &self.config.push else { return Ok(Vec::new()) };
        let mut counts = Vec::with_capacity(push.templates.len());
        for template in &push.templates {
            let scope = GrantScope::mini_program(self.config.appid.clone(), template.clone());
            let c =
                tokio::time::timeout(COUNTS_TIMEOUT, self.ledger.counts(&scope, self.client.clock().now()))
                    .await
                    .map_err(|_| "the ledger did not answer in time".to_owned())?
                    .map_err(|e| e.to_string())?;
            counts.push((template.clone(), c));
        }
        Ok(counts)
    }

    /// Forgets the cached counts after a change made here.
    fn counts_changed(&self) {
        if let Ok(mut cached) = self.counts.try_lock() {
            *cached = None;
        } else {
            // A count is running: its answer may predate the change; let it expire at once.
            let counts = Arc::clone(&self.counts);
            tokio::spawn(async move { *counts.lock().await = None });
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The grant ledger.
    pub fn ledger(&self) -> &Arc<dyn GrantLedger> {
        &self.ledger
    }

    /// The subscribe notifications' results WeChat pushed, by `msgid` (in the SQL database
    /// when there is one, in memory otherwise).
    pub fn results(&self) -> &Arc<dyn NotificationResults> {
        &self.results
    }

    /// An app session token for `user` (letters, digits, `_`, `-`; at most 64), valid for
    /// `ttl`: what your app's login hands the app, which sends it as `Authorization: Bearer …`
    /// to the app API. `None` when the app API is off or `user` is not a valid id.
    pub fn issue_app_session(&self, user: &str, ttl: Duration) -> Option<String> {
        let key = self.config.app_session_key.as_ref()?;
        let now = self.client.clock().now().duration_since(std::time::UNIX_EPOCH).ok()?;
        app_api::valid_user(user).then(|| key.issue(user, (now + ttl).as_secs()))
    }

    fn scope(&self) -> GrantScope {
        GrantScope {
            appid: self.config.appid.clone(),
            template_id: self.config.template_id.clone(),
            scene: self.config.scene,
        }
    }
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/subscribe", get(subscribe))
        .route("/callback", get(callback))
        .route("/admin", get(admin::admin))
        .route("/admin/login", post(admin::login))
        .route("/admin/logout", post(admin::logout))
        .route("/admin/dispatch", post(admin::dispatch))
        .route("/admin/jobs/{id}", get(admin::job_page))
        .route("/health", get(health))
        .merge(app_api::routes())
        .merge(push::routes(&state))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    // `axum::serve` has no header-read timeout and no connection limit, so a client that
    // trickles its headers (slowloris) could hold every connection: serve with hyper-util,
    // whose header-read timeout also ends idle keep-alive connections.
    let (timeout, max) = (state.config.header_read_timeout, state.config.max_connections);
    let jobs = Arc::clone(&state.jobs);
    let app = router(state);
    let permits = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first, then a connection: over the limit, clients wait in the listen queue.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
    // A running dispatch stops taking grants and settles what it sent.
    jobs.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}

/// The value of cookie `name` in the request, if it has one.
fn cookie_of<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session id from the request's cookie, if it has a well-formed one.
fn session_of(headers: &HeaderMap) -> Option<String> {
    cookie_of(headers, SESSION_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

fn new_session() -> String {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("the OS random source works");
    hex::encode(id)
}

/// The session cookie: never readable by scripts, not sent on cross-site subrequests or
/// posts, and only over https when the service is reached over https.
fn session_cookie(session: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax{secure}"))
        .expect("hex is a valid header value")
}

async fn index(State(app): State<AppState>) -> Html<String> {
    page(
        "Back soon",
        html! {
            h1 { "Linen shirt, size M" }
            div.card {
                p { "Sold out. Want a WeChat message when it is back in stock?" }
                p { a.button #notify href="/subscribe" { "Notify me on WeChat" } }
                p { small { "You will get one message, once. WeChat asks you first." } }
            }
            p { small {
                "App " code { (app.config.appid.as_str()) } ", template " code { (app.config.template_id.as_str()) }
                ", scene " (app.config.scene.get()) "."
            } }
        },
    )
}

/// Sends the browser to the authorization page, with a state bound to its session.
async fn subscribe(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let (session, fresh) = match session_of(&headers) {
        Some(s) => (s, false),
        None => (new_session(), true),
    };
    let redirect = HttpUrl::new(format!("{}/callback", app.config.public_url))
        .expect("checked when the configuration was read");
    let link = app.client.authorize_url(&app.config.template_id, app.config.scene, &redirect, &session);
    let mut response = Redirect::to(&link.url).into_response();
    if fresh {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, session_cookie(&session, app.config.secure_cookies()));
    }
    response
}

/// WeChat's redirect: verify it belongs to this session, record the grant, tell the user.
async fn callback(State(app): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(session) = session_of(&headers) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This answer does not belong to this browser: start again from the product page.",
        );
    };
    // The path and query, not the bare query: the client reads a callback as a URL (its query
    // starts after the first `?`), and a bare query may hold a `?` of its own inside a value.
    let callback = uri.path_and_query().map_or("", axum::http::uri::PathAndQuery::as_str);
    let recorded = async {
        app.client.complete(Answer::Redirect(callback), &session).await?.record(app.ledger.as_ref()).await
    };
    match recorded.await {
        Ok((AuthorizationAnswer::Confirmed(c), recorded)) => {
            tracing::info!(openid = %c.openid, scene = c.scene.get(), ?recorded, "subscription confirmed");
            app.counts_changed();
            let already = matches!(recorded, Some(Recorded::AlreadyPending));
            let text = if already {
                "You were already on the list: you will still get exactly one message."
            } else {
                "You are on the list. When the shirt is back, WeChat will bring you one message."
            };
            page(
                "Subscribed",
                html! {
                    div.card.ok #result data-action="confirm" { h1 { "Thanks!" } p { (text) } }
                    p { a href="/" { "Back to the shop" } }
                },
            )
            .into_response()
        }
        Ok((AuthorizationAnswer::Cancelled(_), _)) => page(
            "Not subscribed",
            html! {
                div.card.warn #result data-action="cancel" {
                    h1 { "No problem" }
                    p { "You chose not to be notified. Nothing will be sent." }
                }
                p { a href="/" { "Back to the shop" } }
            },
        )
        .into_response(),
        Err(RecordError::Authorization(
            AuthorizationError::ReplayedState | AuthorizationError::AlreadyAccepted,
        )) => {
            tracing::warn!("a used answer was replayed");
            error_page(
                StatusCode::CONFLICT,
                "This answer was already used: each one counts once. To be notified again, start again from the product page.",
            )
        }
        Err(e @ RecordError::Authorization(_)) if e.kind() == ErrorKind::Invalid => {
            tracing::warn!(error = %e, "callback rejected");
            error_page(StatusCode::BAD_REQUEST, &format!("This answer cannot be accepted: {e}."))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not record the grant");
            error_page(StatusCode::SERVICE_UNAVAILABLE, "We could not save your answer. Please try again.")
        }
    }
}

pub(crate) fn error_page(status: StatusCode, text: &str) -> Response {
    (
        status,
        page(
            "Something went wrong",
            html! {
                div.card.error #error { h1 { "Sorry" } p { (text) } }
                p { a href="/" { "Back to the shop" } }
            },
        ),
    )
        .into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    match app.counts().await {
        Ok(c) => Json(serde_json::json!({
            "status": "ok",
            "grants": { "pending": c.pending, "reserved": c.reserved, "delivered": c.delivered,
                        "review": c.review, "dropped": c.dropped },
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "error": e })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod zeroize_tests {
    /// Does not compile if the state key goes back to a plain `Vec`.
    #[test]
    fn the_state_key_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let key = "k".repeat(32);
        let config =
            super::Config::from_lookup(|var| (var == "WEBAPP_STATE_KEY").then(|| key.clone())).unwrap();
        zeroed_on_drop(config.state_key.as_ref().unwrap());
    }
}
