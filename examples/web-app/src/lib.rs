//! What an integrator writes: a small axum service that asks its users for a one-time
//! subscription and later sends each of them exactly one message.
//!
//! | Route            | What it does                                                             |
//! |------------------|--------------------------------------------------------------------------|
//! | `GET /`          | the product page with a "notify me" link                                 |
//! | `GET /subscribe` | redirects to WeChat's authorization page, the state bound to the session |
//! | `GET /callback`  | completes the authorization, records the grant, shows the result         |
//! | `POST /dispatch` | with `Authorization: Bearer $WEBAPP_DISPATCH_TOKEN`: one message to each pending grant; the report as JSON |
//! | `GET /health`    | `{"status":"ok"}`                                                        |
//!
//! Configuration comes from the environment ([`Config::from_env`]) and defaults to the sandbox
//! `wxsub sandbox` serves on `127.0.0.1:8080`, with its demo app. Grants, the access token and
//! the used authorization states are kept in a SQLite file, so a restart loses nothing and
//! `wxsub grants dispatch` can send from the same file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, PreEscaped, Render, html};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subscribe_client::{
    Answer, AuthorizationError, Client, Dispatcher, ErrorKind, RecipientOutcome, RecordError, Recorded,
};
use subscribe_sql::{Sql, SqlGrantLedger, SqlTokenStore, SqlUsedStates};
use subscribe_types::secrecy::{ExposeSecret as _, SecretString};
use subscribe_types::{
    AppId, AppSecret, AuthorizationAnswer, OneTimeMessage, OpenId, RedirectUrl, Scene, TemplateId,
};
use subtle::ConstantTimeEq as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// The sandbox's demo app id (`wxsub sandbox` and `SandboxConfig::demo()`).
pub const SANDBOX_APPID: &str = "wx5a1db0c0ffee0001";
/// The sandbox's demo secret. Not a secret: it only opens the local sandbox.
pub const SANDBOX_SECRET: &str = "sandbox-demo-secret-0123456789ab";
/// The sandbox's demo one-time template.
pub const SANDBOX_TEMPLATE: &str = "SandboxRestockAlert_0000000000000000000001";
/// Where `wxsub sandbox` listens by default.
pub const SANDBOX_BASE: &str = "http://127.0.0.1:8080";
/// The message each waiting user gets, once: its title and content.
pub const MESSAGE: (&str, &str) = ("到货提醒", "您关注的亚麻衬衫已到货");

const SESSION_COOKIE: &str = "sid";
/// How long a page request may take (the dispatch is not cut: it runs to its report).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No route reads a body: a request announcing a bigger one is refused (413) unread.
const MAX_BODY: usize = 1024;

/// The service's configuration. Its `Debug` shows none of the secrets.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// `WEBAPP_LISTEN`: where to listen (default `127.0.0.1:3000`).
    pub listen: SocketAddr,
    /// `WEBAPP_PUBLIC_URL`: how browsers reach it (default `http://{listen}`; https: `Secure` cookies).
    pub public_url: String,
    /// `WECHAT_APPID` (default: the sandbox's demo app).
    pub appid: AppId,
    /// `WECHAT_SECRET` (default: the sandbox's demo secret).
    pub secret: AppSecret,
    /// `WECHAT_API_BASE` (default: the sandbox; for WeChat, `https://api.weixin.qq.com`).
    pub api_base: String,
    /// `WECHAT_MP_BASE`: the authorization page's (default `api_base`; WeChat's `https://mp.weixin.qq.com`).
    pub mp_base: String,
    /// `WECHAT_TEMPLATE_ID` (default: the sandbox's demo template).
    pub template_id: TemplateId,
    /// `WEBAPP_SCENE`: the scene this page asks for (default 1).
    pub scene: Scene,
    /// `WEBAPP_STATE_KEY`: ≥ 32 bytes signing the authorization state (default: derived from the secret).
    pub state_key: Option<SecretString>,
    /// `WEBAPP_DISPATCH_TOKEN`: at least 32 bytes opening `POST /dispatch`; unset, it is off.
    pub dispatch_token: Option<SecretString>,
    /// The SQLite file: `sqlite:{WEBAPP_DATA_DIR}/grants.db` (default `data`).
    pub database_url: String,
}

/// A configuration variable is unusable: `VAR: the rule it breaks` (never its value).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

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
    /// assert_eq!((c.listen.to_string(), c.api_base), ("127.0.0.1:3000".into(), web_app::SANDBOX_BASE.into()));
    /// assert_eq!(c.database_url, "sqlite:data/grants.db");
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable and the rule it breaks.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // `var`'s value (or `default`), parsed by `parse`.
        fn read<T, E: std::fmt::Display>(
            get: &dyn Fn(&str) -> Option<String>,
            (var, default): (&'static str, &str),
            parse: impl FnOnce(String) -> Result<T, E>,
        ) -> Result<T, ConfigError> {
            let value = get(var).filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned());
            parse(value).map_err(|e| ConfigError(format!("{var}: {e}")))
        }
        let get: &dyn Fn(&str) -> Option<String> = &lookup;
        let listen: SocketAddr = read(get, ("WEBAPP_LISTEN", "127.0.0.1:3000"), |v| v.parse())?;
        let public_url = read(get, ("WEBAPP_PUBLIC_URL", &format!("http://{listen}")), |v| {
            let v = v.trim_end_matches('/').to_owned();
            RedirectUrl::new(format!("{v}/callback")).map(|_| v)
        })?;
        let api_base = read(get, ("WECHAT_API_BASE", SANDBOX_BASE), Ok::<_, String>)?;
        let key = |var| {
            read(get, (var, ""), |k| match k.len() {
                0 => Ok(None),
                1..32 => Err("must be at least 32 bytes (openssl rand -hex 32)"),
                _ => Ok(Some(SecretString::from(k))),
            })
        };
        Ok(Self {
            appid: read(get, ("WECHAT_APPID", SANDBOX_APPID), AppId::new)?,
            secret: read(get, ("WECHAT_SECRET", SANDBOX_SECRET), AppSecret::new)?,
            mp_base: read(get, ("WECHAT_MP_BASE", &api_base), Ok::<_, String>)?,
            template_id: read(get, ("WECHAT_TEMPLATE_ID", SANDBOX_TEMPLATE), TemplateId::new)?,
            scene: read(get, ("WEBAPP_SCENE", "1"), |v| v.parse())?,
            state_key: key("WEBAPP_STATE_KEY")?,
            dispatch_token: key("WEBAPP_DISPATCH_TOKEN")?,
            database_url: read(get, ("WEBAPP_DATA_DIR", "data"), |d| {
                Ok::<_, String>(format!("sqlite:{d}/grants.db"))
            })?,
            listen,
            public_url,
            api_base,
        })
    }
}

/// What every handler shares: the client, the grant ledger and the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    client: Client,
    ledger: SqlGrantLedger,
    config: Arc<Config>,
}

impl AppState {
    /// Opens (creating it `0600`, in directories created `0700`: it holds the access token) and
    /// migrates the SQLite file, which keeps the grants, the access token and the used
    /// authorization states: a restart forgets nobody waiting, and a used answer stays used.
    ///
    /// # Errors
    /// When the file cannot be opened or the client cannot be built from `config`.
    pub async fn open(config: Config) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let sql = Sql::builder(config.database_url.clone()).connect().await?;
        let mut builder = Client::builder(config.appid.clone(), config.secret.clone())
            .api_base(config.api_base.clone())
            .mp_base(config.mp_base.clone())
            .token_store(SqlTokenStore::new(sql.clone()))
            .used_states(SqlUsedStates::new(sql.clone()));
        if let Some(key) = &config.state_key {
            builder = builder.state_key(key.expose_secret().as_bytes());
        }
        Ok(Self { client: builder.build()?, ledger: SqlGrantLedger::new(sql), config: Arc::new(config) })
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The grant ledger.
    pub fn ledger(&self) -> &SqlGrantLedger {
        &self.ledger
    }
}

/// The service's routes, with a request timeout and a body limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/subscribe", get(subscribe))
        .route("/callback", get(callback))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        // Outside the timeout: a dispatch cut short would leave its grants reserved until their
        // lease ends. It runs to its report, and a graceful shutdown waits for it.
        .route("/dispatch", post(dispatch))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(state)
}

/// The session from the request's cookie, if it has a well-formed one.
fn session_of(headers: &HeaderMap) -> Option<subscribe_client::Session> {
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    cookies
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|v| subscribe_client::Session::new(v).ok())
}

async fn index(State(app): State<AppState>) -> Html<String> {
    let c = &app.config;
    page(
        "Back soon",
        html! {
            h1 { "Linen shirt, size M" }
            div.card {
                p { "Sold out. Want a WeChat message when it is back in stock?" }
                p { a.button #notify href="/subscribe" { "Notify me on WeChat" } }
                p { small { "You will get one message, once. WeChat asks you first." } }
            }
            p { small { "App " code { (c.appid.as_str()) } ", template " code { (c.template_id.as_str()) } "." } }
        },
    )
}

/// Sends the browser to the authorization page, with a state bound to its session (a new
/// random one in an `HttpOnly`, `SameSite=Lax` cookie when it has none).
async fn subscribe(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let random = || getrandom::u64().expect("the OS random source works");
    let id = format!("{:016x}{:016x}", random(), random()); // 128 random bits, for a new session
    let (session, fresh) = match session_of(&headers) {
        Some(session) => (session, false),
        None => (subscribe_client::Session::new(id.as_str()).expect("32 hex digits"), true),
    };
    let redirect = RedirectUrl::new(format!("{}/callback", app.config.public_url)).expect("checked at start");
    let link = app.client.authorize_url(&app.config.template_id, app.config.scene, &redirect, &session);
    let mut response = Redirect::to(&link.url).into_response();
    if fresh {
        let secure = if app.config.public_url.starts_with("https://") { "; Secure" } else { "" };
        let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax{secure}");
        response.headers_mut().insert(header::SET_COOKIE, cookie.parse().expect("hex is valid"));
    }
    response
}

/// WeChat's redirect: verify it belongs to this session, record the grant, tell the user.
async fn callback(State(app): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    // The path and query (a value may hold a `?`); no session cookie: as another session's state.
    let callback = uri.path_and_query().map_or("", axum::http::uri::PathAndQuery::as_str);
    let recorded = async {
        let session = session_of(&headers).ok_or(AuthorizationError::ForgedState)?;
        app.client.complete(Answer::Redirect(callback), &session).await?.record(&app.ledger).await
    };
    let (status, action, text) = match recorded.await {
        Ok((AuthorizationAnswer::Confirmed(c), recorded)) => {
            tracing::info!(scene = c.scene.get(), ?recorded, "subscription confirmed"); // no openid: personal data
            let text = match recorded {
                Some(Recorded::AlreadyPending) => "You were already on the list: you will get one message.",
                _ => "You are on the list. When the shirt is back, WeChat will bring you one message.",
            };
            (StatusCode::OK, Some("confirm"), text.to_owned())
        }
        Ok((AuthorizationAnswer::Cancelled(_), _)) => {
            (StatusCode::OK, Some("cancel"), "You chose not to be notified. Nothing will be sent.".to_owned())
        }
        Err(e) => {
            let status = match &e {
                RecordError::Authorization(
                    AuthorizationError::ReplayedState | AuthorizationError::AlreadyAccepted,
                ) => StatusCode::CONFLICT,
                e if e.kind() == ErrorKind::Invalid => StatusCode::BAD_REQUEST, // forged, expired, another session's
                _ => StatusCode::SERVICE_UNAVAILABLE, // the ledger or the used states failed: the user may retry
            };
            tracing::warn!(error = %e, %status, "callback refused");
            (status, None, format!("This answer cannot be accepted: {e}. Start again from the product page."))
        }
    };
    let (id, class, title) = match action {
        Some("confirm") => ("result", "ok", "Thanks!"),
        Some(_) => ("result", "warn", "No problem"),
        None => ("error", "error", "Sorry"),
    };
    let body = html! {
        div.card.(class) id=(id) data-action=[action] { h1 { (title) } p { (text) } }
        p { a href="/" { "Back to the shop" } }
    };
    (status, page(title, body)).into_response()
}

/// One message ([`MESSAGE`]) to each pending grant, for a caller with the dispatch token.
async fn dispatch(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = &app.config.dispatch_token else {
        return (StatusCode::FORBIDDEN, "the dispatch is off: set WEBAPP_DISPATCH_TOKEN\n").into_response();
    };
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let presented = auth.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
    // Digests of both: equal lengths for the constant-time comparison, so not even the
    // token's length leaks.
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(token.expose_secret().as_bytes()));
    if !bool::from(a.as_slice().ct_eq(b.as_slice())) {
        let www = [(header::WWW_AUTHENTICATE, "Bearer")];
        return (StatusCode::UNAUTHORIZED, www, "a valid bearer token is required\n").into_response();
    }
    let (template, scene) = (app.config.template_id.clone(), app.config.scene);
    let build = move |to: &OpenId| {
        OneTimeMessage::builder(to.clone(), template.clone(), scene)
            .title(MESSAGE.0)
            .content(MESSAGE.1)
            .build()
    };
    let (client, ledger, template) = (app.client.clone(), app.ledger.clone(), app.config.template_id.clone());
    match Dispatcher::one_time(client, ledger, template, scene, build).concurrency(16).run().await {
        Ok(report) => {
            let p = report.progress;
            tracing::info!(sent = p.sent, delivered = p.delivered, "dispatch finished");
            let outcome = |o: &RecipientOutcome| json!({ "openid": o.openid, "outcome": o.kind.as_str(), "errcode": o.errcode, "detail": o.detail });
            let outcomes: Vec<_> = report.outcomes.iter().map(outcome).collect();
            let json = json!({ "sent": p.sent, "delivered": p.delivered, "failed": p.failed,
                "unknown": p.unknown, "dropped": p.dropped, "outcomes": outcomes });
            Json(json).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "the dispatch stopped");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))).into_response()
        }
    }
}

const STYLE: &str = "body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
 .card { border: 1px solid #ddd; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }
 .ok { border-color: #07c160; } .warn { border-color: #fa9d3b; } .error { border-color: #fa5151; }
 a.button { display: inline-block; background: #07c160; color: #fff; border-radius: 6px; padding: .6rem 1.1rem; }";

/// A whole page around `body` (`maud` escapes every value put in).
fn page(title: &str, body: impl Render) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1";
                   title { (title) " · Example Shop" } style { (PreEscaped(STYLE)) } }
            body { p { a href="/" { "Example Shop" } } (body) }
        }
    };
    Html(page.into_string())
}
