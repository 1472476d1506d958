//! The HTTP server, one file per face: WeChat's endpoints (`wechat.rs`), the pages a person
//! sees (`pages.rs`), the control API for tests and demos (`control.rs`). This file holds the
//! shared state, the router and the answers every face uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use subscribe_types::encoding::redact_uri;
use subscribe_types::{AppId, ErrCode, OpenId, QueryError, Scene, TemplateId};

use crate::clock::{Now, SharedSandboxClock, SystemClock};
use crate::config::SandboxConfig;
use crate::push::{PushRecord, PushSettings, Pusher};
use crate::state::{Delivered, Faults, Inner, LogEntry, Stats, rid};

mod control;
mod library;
mod pages;
mod phone;
mod subscribe;
mod wechat;

pub use wechat::check_send_body;

/// A handle on a sandbox's state, for tests and embedding: the same operations as the
/// control API, without HTTP.
#[derive(Clone)]
pub struct SandboxState {
    cfg: Arc<SandboxConfig>,
    inner: Arc<Mutex<Inner>>,
    clock: SharedSandboxClock,
    pusher: Arc<Pusher>,
}

impl std::fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxState")
            .field("apps", &self.cfg.apps.len())
            .field("users", &self.cfg.users.len())
            .finish_non_exhaustive()
    }
}

impl SandboxState {
    fn new(cfg: SandboxConfig, clock: SharedSandboxClock) -> Self {
        let pusher = Arc::new(Pusher::new());
        for settings in &cfg.push {
            if let Err(e) = pusher.configure(settings) {
                tracing::warn!(appid = %settings.appid, error = %e, "a server URL was not set");
            }
        }
        Self { cfg: Arc::new(cfg), inner: Arc::new(Mutex::new(Inner::default())), clock, pusher }
    }

    /// Both clock readings, now.
    pub(crate) fn now(&self) -> Now {
        Now::of(&*self.clock)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// Counters since start or the last reset.
    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// What `openid` has received, oldest first.
    pub fn inbox(&self, openid: &str) -> Vec<Delivered> {
        self.lock().inbox(openid)
    }

    /// Replaces the fault settings (a timed token fault starts now).
    pub fn set_faults(&self, faults: Faults) {
        let mut inner = self.lock();
        inner.faults = faults;
        inner.faults_set = Some(self.clock.now());
    }

    /// The fault settings.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Revokes every token; after `grace` they answer 40001.
    pub fn revoke_tokens(&self, grace: Duration) {
        self.lock().revoke_tokens(self.clock.now(), grace);
    }

    /// Expires every token now; they answer 42001.
    pub fn expire_tokens(&self) {
        self.lock().expire_tokens(self.clock.now());
    }

    /// Records a confirmation as if the user had confirmed on the page. Returns whether it
    /// added a grant (a repeated confirmation of an unused grant does not). A send needs one:
    /// without it the send endpoint answers 43101, as WeChat does.
    ///
    /// ```
    /// use subscribe_sandbox::{SandboxConfig, SandboxHandle};
    /// use subscribe_types::{OpenId, Scene};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let sandbox = SandboxHandle::start(SandboxConfig::demo()).await?;
    /// let (app, template) = (SandboxConfig::demo_appid(), SandboxConfig::demo_template());
    /// let alice = OpenId::new("oSandbox_Alice_00000000001").unwrap();
    /// assert!(sandbox.state().add_grant(&app, &alice, &template, Scene::new(1000).unwrap()));
    /// assert_eq!(sandbox.state().unused_grants(), 1);
    /// # sandbox.shutdown().await;
    /// # Ok::<(), std::io::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn add_grant(&self, appid: &AppId, openid: &OpenId, template_id: &TemplateId, scene: Scene) -> bool {
        self.lock().grant(appid.as_str(), openid.as_str(), template_id.as_str(), scene)
    }

    /// Unused grants.
    pub fn unused_grants(&self) -> usize {
        self.lock().unused_grants()
    }

    /// The request log, oldest first (tokens and secrets masked).
    pub fn log(&self) -> Vec<LogEntry> {
        self.lock().log_entries()
    }

    /// Forgets tokens, grants, inboxes, the log, faults, counters and the pushes made (the
    /// apps' server URLs stay, as configuration does).
    pub fn reset(&self) {
        self.lock().reset();
        self.pusher.clear_records();
    }

    /// Sets (or replaces) an app's server URL, as its console does: pushes go there from now
    /// on.
    ///
    /// # Errors
    /// Which setting is wrong (url, token, mode, format, `aes_key`).
    pub fn configure_push(&self, settings: &PushSettings) -> Result<(), String> {
        if self.cfg.app(&settings.appid).is_none() {
            return Err(format!("unknown appid {}", settings.appid));
        }
        self.pusher.configure(settings)
    }

    /// The pushes made, oldest first, with what each was answered.
    pub fn pushes(&self) -> Vec<PushRecord> {
        self.pusher.records()
    }

    fn record(&self, seen: Seen, errcode: Option<i64>) {
        let cap = self.cfg.log_capacity;
        let wall = self.clock.wall();
        self.lock().log(cap, seen, errcode, wall);
    }
}

/// What the request log keeps of a request: its method, its path and query with secrets
/// masked, and its headers with secret values masked.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<(String, String)>,
}

/// Header names whose values the log masks: credentials, cookies, and anything named like a
/// token, a secret or a key.
fn is_secret_header(name: &str) -> bool {
    matches!(name, "authorization" | "proxy-authorization" | "cookie" | "set-cookie")
        || ["token", "secret", "key", "auth", "session", "signature"].iter().any(|w| name.contains(w))
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Seen {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                let name = name.as_str().to_owned();
                let value = if is_secret_header(&name) {
                    "[redacted]".to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name, value)
            })
            .collect();
        Ok(Self {
            method: parts.method.as_str().to_owned(),
            uri: redact_uri(parts.uri.path_and_query().map_or("/", |p| p.as_str())),
            headers,
        })
    }
}

/// WeChat's answer: HTTP 200 with `{"errcode", "errmsg"}` (errmsg with a ` rid: …` suffix).
fn wx(code: ErrCode, msg: &str) -> Response {
    let body = if code.is_ok() {
        r#"{"errcode":0,"errmsg":"ok"}"#.to_owned()
    } else {
        serde_json::json!({"errcode": code.get(), "errmsg": format!("{msg} rid: {}", rid())}).to_string()
    };
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}
fn json(value: &impl serde::Serialize) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_string(value).unwrap_or_default())
        .into_response()
}
fn bad_request(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": msg}).to_string(),
    )
        .into_response()
}
/// The most a sandbox page's form may hold (the authorization page's form carries the request's
/// query, escaped once more).
const MAX_FORM: usize = 64 * 1024;

/// Reads the parameters `names` of a bare query or an HTML form with the workspace's one strict
/// reader ([`subscribe_types::query`]: `+` is a space, bad escapes are kept as they are, a `?`
/// is a character like any other, as for every other reader of the request): one
/// asked for twice is refused, whichever copy would pass, never resolved by "the last one
/// wins"; a value that is not UTF-8 is refused too.
fn params<const N: usize>(
    input: &str,
    names: [&'static str; N],
) -> Result<HashMap<String, String>, QueryError> {
    let values = subscribe_types::query::Query::parse_query_with_limit(input, MAX_FORM)?.read(names)?;
    Ok(names.into_iter().zip(values).filter_map(|(name, value)| Some((name.to_owned(), value?))).collect())
}

/// `40035`, WeChat's code for an invalid parameter (不合法的参数). Not in the protocol notes'
/// table of codes, so not one of `ErrCode`'s named ones: only the sandbox answers it.
const INVALID_ARGS: ErrCode = ErrCode::new(40035);

/// The answer to a query of WeChat's API that cannot be read (a repeated parameter):
/// `40035 invalid args`. What WeChat itself does with a repeated parameter is unknown; the
/// sandbox is strict, so an integrator's client that sends one finds out here.
fn invalid_args(e: &QueryError) -> (ErrCode, String) {
    (INVALID_ARGS, format!("invalid args: {e}"))
}

/// What every request passes before its handler, against a web page in the developer's
/// browser: a `Host` the sandbox does not answer to is 421 (DNS rebinding: a page on a name
/// it controls, pointed at 127.0.0.1); a `POST` the browser says a page of another origin
/// made is 403 (a cross-site form would otherwise confirm on the authorization page, answer
/// the popup or the phone, and so record grants and trigger pushes: see [`cross_origin`]);
/// and a control-API `POST` that is not `application/json` is 415 (an HTML form, which a
/// cross-site page can submit without a preflight, cannot send that type).
async fn guard(
    axum::extract::State(s): axum::extract::State<SandboxState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authority = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"))
        .or_else(|| req.uri().authority().map(axum::http::uri::Authority::as_str));
    if let Some(host) = authority {
        // Without the port: `[::1]:80` → `[::1]`, `localhost:80` → `localhost`.
        let name =
            if host.starts_with('[') { host.split_inclusive(']').next() } else { host.split(':').next() };
        let name = name.unwrap_or(host);
        if !s.cfg.allows_host(name) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"error": "this sandbox does not answer to that Host (see allowed_hosts)"})
                    .to_string(),
            )
                .into_response();
        }
    }
    let path = req.uri().path();
    // The APIs (WeChat's and the control API) are never a page's to call: a cross-site GET is
    // refused there too (`GET /cgi-bin/token` issues a token, ending the last one after its
    // grace and spending the day's quota), while the pages may be opened from anywhere.
    let api = ["/sandbox/api/", "/cgi-bin/", "/wxaapi/"].iter().any(|p| path.starts_with(p));
    if (!req.method().is_safe() || api)
        && let Some(why) = cross_origin(req.headers(), authority)
    {
        let message =
            format!("cross-site request refused: the sandbox takes this only from its own pages ({why})");
        // The pages' forms get an error page, as a person sees it; the APIs JSON.
        return if api {
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"error": message}).to_string(),
            )
                .into_response()
        } else {
            (StatusCode::FORBIDDEN, axum::response::Html(crate::html::error(&message))).into_response()
        };
    }
    if req.method() == axum::http::Method::POST && path.starts_with("/sandbox/api/") {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"the control API takes Content-Type: application/json"}"#,
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Why the browser that sent a request says a page of another origin made it, or `None`:
/// the same rule as Go's `http.CrossOriginProtection`. A browser's `Sec-Fetch-Site` (Fetch
/// Metadata, sent to `localhost`, loopback addresses and https) decides when present:
/// `same-origin` and `none` (the user's own navigation) pass, `same-site` (another port of
/// `localhost`) and `cross-site` do not. Without it (a plain-http name such as a container's
/// `http://sandbox:8080`, or an older browser), `Origin` must name this very host and port
/// (`null` never does). With neither header the request is not a web page's: curl, a test,
/// an SDK, which have no browser's cookies or position to abuse, so it passes (see
/// docs/security.md for what that leaves open).
fn cross_origin(headers: &axum::http::HeaderMap, authority: Option<&str>) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            _ => Some("the browser's Sec-Fetch-Site says a page of another origin sent it"),
        };
    }
    let origin = headers.get(header::ORIGIN)?;
    let same = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")))
        .zip(authority)
        .is_some_and(|(origin, host)| origin.eq_ignore_ascii_case(host));
    if same { None } else { Some("its Origin is not this sandbox") }
}

/// Builds the router and its state, on the machine's clocks.
pub fn router(config: SandboxConfig) -> (Router, SandboxState) {
    router_with_clock(config, Arc::new(SystemClock))
}

/// Builds the router and its state on `clock` (a [`ManualClock`](crate::ManualClock) in tests).
pub fn router_with_clock(config: SandboxConfig, clock: SharedSandboxClock) -> (Router, SandboxState) {
    let state = SandboxState::new(config, clock);
    let app = Router::new()
        .route("/cgi-bin/token", get(wechat::classic_token).post(wechat::require_get))
        .route("/cgi-bin/stable_token", post(wechat::stable_token).get(wechat::require_post))
        .route("/cgi-bin/message/template/subscribe", post(wechat::send).get(wechat::require_post))
        .route(
            "/cgi-bin/message/subscribe/send",
            post(subscribe::mini_program_send).get(wechat::require_post),
        )
        .route(
            "/cgi-bin/message/subscribe/bizsend",
            post(subscribe::notification_send).get(wechat::require_post),
        )
        .route("/wxaapi/newtmpl/getcategory", get(library::get_category))
        .route("/wxaapi/newtmpl/getpubtemplatetitles", get(library::get_titles))
        .route("/wxaapi/newtmpl/getpubtemplatekeywords", get(library::get_keywords))
        .route("/wxaapi/newtmpl/gettemplate", get(library::get_templates))
        .route("/wxaapi/newtmpl/addtemplate", post(library::add_template).get(wechat::require_post))
        .route("/wxaapi/newtmpl/deltemplate", post(library::del_template).get(wechat::require_post))
        .route("/mp/subscribemsg", get(pages::authorize_page))
        .route("/mp/subscribemsg/decide", post(pages::decide))
        .route("/", get(|| async { Redirect::to("/sandbox") }))
        .route("/sandbox", get(pages::index))
        .route("/sandbox/inbox/{openid}", get(pages::inbox_page))
        .route("/sandbox/phone", get(phone::screen))
        .route("/sandbox/phone/decide", post(phone::decide))
        .route("/sandbox/api/phone", post(phone::api))
        .route("/sandbox/api/inbox/{openid}", get(control::inbox_json))
        .route("/sandbox/api/state", get(control::state_json))
        .route("/sandbox/api/log", get(control::log_json))
        .route("/sandbox/api/reset", post(control::reset))
        .route("/sandbox/api/faults", get(control::get_faults).post(control::set_faults))
        .route("/sandbox/api/tokens/revoke", post(control::revoke))
        .route("/sandbox/api/tokens/expire", post(control::expire))
        .route("/sandbox/api/grants", post(control::add_grant))
        .route("/sandbox/api/subscribe", post(subscribe::control_subscribe))
        .route("/sandbox/api/push", post(control::configure_push))
        .route("/sandbox/api/pushes", get(control::pushes_json))
        .route("/sandbox/popup", get(pages::popup_page))
        .route("/sandbox/popup/decide", post(pages::popup_decide))
        .fallback(control::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    (app, state)
}
