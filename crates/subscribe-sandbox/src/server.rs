//! The HTTP server: WeChat's endpoints, the pages, the control API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;

/// Characters escaped in the redirect's parameters: everything but RFC 3986 unreserved.
use serde::Deserialize;
use subscribe_types::encoding::redact_uri;
use subscribe_types::{ApiError, AuthorizeRequest, ErrCode, MessageParseError, Scene, SubscribeMessage};

use crate::config::SandboxConfig;
use crate::html;
use crate::state::{AfterProcessing, Delivered, Faults, Injected, Inner, LogEntry, Stats, TokenFault, rid};

/// A handle on a sandbox's state, for tests and embedding: the same operations as the
/// control API, without HTTP.
#[derive(Clone)]
pub struct SandboxState {
    cfg: Arc<SandboxConfig>,
    inner: Arc<Mutex<Inner>>,
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
    fn new(cfg: SandboxConfig) -> Self {
        Self { cfg: Arc::new(cfg), inner: Arc::new(Mutex::new(Inner::default())) }
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
        inner.faults_set = Some(Instant::now());
    }

    /// The fault settings.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Revokes every token; after `grace` they answer 40001.
    pub fn revoke_tokens(&self, grace: Duration) {
        self.lock().revoke_tokens(Instant::now(), grace);
    }

    /// Expires every token now; they answer 42001.
    pub fn expire_tokens(&self) {
        self.lock().expire_tokens(Instant::now());
    }

    /// Records a confirmation as if the user had confirmed on the page. Returns whether it
    /// added a grant (a repeated confirmation of an unused grant does not).
    pub fn add_grant(&self, appid: &str, openid: &str, template_id: &str, scene: Scene) -> bool {
        self.lock().grant(appid, openid, template_id, scene)
    }

    /// Unused grants.
    pub fn unused_grants(&self) -> usize {
        self.lock().unused_grants()
    }

    /// The request log, oldest first (tokens and secrets masked).
    pub fn log(&self) -> Vec<LogEntry> {
        self.lock().log_entries()
    }

    /// Forgets tokens, grants, inboxes, the log, faults and counters.
    pub fn reset(&self) {
        self.lock().reset();
    }

    fn record(&self, method: &str, uri: &Uri, errcode: Option<i64>) {
        let shown = redact_uri(uri.path_and_query().map_or("/", |p| p.as_str()));
        let cap = self.cfg.log_capacity;
        self.lock().log(cap, method, shown, errcode);
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

/// Reads `a=b&c=d` leniently, as a form (`+` is a space, bad escapes are kept as they are,
/// bytes that are not UTF-8 become U+FFFD).
fn params(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// Builds the router and its state.
pub fn router(config: SandboxConfig) -> (Router, SandboxState) {
    let state = SandboxState::new(config);
    let app = Router::new()
        .route("/cgi-bin/token", get(classic_token).post(require_get))
        .route("/cgi-bin/stable_token", post(stable_token).get(require_post))
        .route("/cgi-bin/message/template/subscribe", post(send).get(require_post))
        .route("/mp/subscribemsg", get(authorize_page))
        .route("/mp/subscribemsg/decide", post(decide))
        .route("/", get(|| async { Redirect::to("/sandbox") }))
        .route("/sandbox", get(index))
        .route("/sandbox/inbox/{openid}", get(inbox_page))
        .route("/sandbox/api/inbox/{openid}", get(inbox_json))
        .route("/sandbox/api/state", get(state_json))
        .route("/sandbox/api/log", get(log_json))
        .route("/sandbox/api/reset", post(reset))
        .route("/sandbox/api/faults", get(get_faults).post(set_faults))
        .route("/sandbox/api/tokens/revoke", post(revoke))
        .route("/sandbox/api/tokens/expire", post(expire))
        .route("/sandbox/api/grants", post(add_grant))
        .fallback(not_found)
        .with_state(state.clone());
    (app, state)
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": format!("no such endpoint: {}", uri.path())}).to_string(),
    )
        .into_response()
}

async fn require_post(State(s): State<SandboxState>, uri: Uri) -> Response {
    s.record("GET", &uri, Some(43002));
    wx(ErrCode::REQUIRE_POST, "require POST method")
}

async fn require_get(State(s): State<SandboxState>, uri: Uri) -> Response {
    s.record("POST", &uri, Some(43002));
    wx(ErrCode::new(43001), "require GET method")
}

fn token_answer(
    s: &SandboxState,
    method: &str,
    uri: &Uri,
    answer: Result<(String, u64), (ErrCode, &str)>,
) -> Response {
    match answer {
        Ok((token, expires_in)) => {
            s.record(method, uri, None);
            json(&serde_json::json!({"access_token": token, "expires_in": expires_in}))
        }
        Err((code, msg)) => {
            s.record(method, uri, Some(code.get()));
            wx(code, msg)
        }
    }
}

/// The answer of a token request under a token fault; `None` to process it (after a stall).
async fn token_fault(s: &SandboxState, method: &str, uri: &Uri) -> Option<Response> {
    let (fault, stall) = {
        let inner = s.lock();
        (inner.token_fault(Instant::now()), inner.faults.token_stall_ms.unwrap_or(3000))
    };
    let response = match fault? {
        TokenFault::Stall => {
            tokio::time::sleep(Duration::from_millis(stall)).await;
            return None;
        }
        TokenFault::Http502 => {
            (StatusCode::BAD_GATEWAY, "<html><body>502 Bad Gateway</body></html>").into_response()
        }
        TokenFault::Drop => dropped(),
        TokenFault::Malformed => {
            ([(header::CONTENT_TYPE, "application/json")], "{\"access_token\":\"").into_response()
        }
        TokenFault::Busy => {
            s.record(method, uri, Some(-1));
            return Some(wx(ErrCode::SYSTEM_BUSY, "system error"));
        }
        TokenFault::Quota => {
            s.record(method, uri, Some(45009));
            return Some(wx(ErrCode::new(45009), "reach max api daily quota limit"));
        }
    };
    s.record(method, uri, None);
    Some(response)
}

async fn classic_token(State(s): State<SandboxState>, uri: Uri, RawQuery(q): RawQuery) -> Response {
    s.lock().stats.classic_token_requests += 1;
    if let Some(r) = token_fault(&s, "GET", &uri).await {
        return r;
    }
    let p = params(q.as_deref().unwrap_or(""));
    let answer = (|| {
        if p.get("grant_type").map(String::as_str) != Some("client_credential") {
            return Err((ErrCode::INVALID_GRANT_TYPE, "invalid grant_type"));
        }
        let appid =
            p.get("appid").filter(|a| !a.is_empty()).ok_or((ErrCode::APPID_MISSING, "appid missing"))?;
        let app = s.cfg.app(appid).ok_or((ErrCode::INVALID_APPID, "invalid appid"))?;
        let secret = p
            .get("secret")
            .filter(|a| !a.is_empty())
            .ok_or((ErrCode::APPSECRET_MISSING, "appsecret missing"))?;
        if *secret != app.secret {
            return Err((ErrCode::INVALID_CREDENTIAL, "invalid credential, AppSecret error"));
        }
        s.lock().classic_token(&s.cfg, appid, Instant::now())
    })();
    token_answer(&s, "GET", &uri, answer)
}

async fn stable_token(State(s): State<SandboxState>, uri: Uri, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Req {
        grant_type: Option<String>,
        appid: Option<String>,
        secret: Option<String>,
        #[serde(default)]
        force_refresh: bool,
    }
    s.lock().stats.stable_token_requests += 1;
    if let Some(r) = token_fault(&s, "POST", &uri).await {
        return r;
    }
    let answer = (|| {
        let req: Req =
            serde_json::from_slice(&body).map_err(|_| (ErrCode::APPID_MISSING, "appid missing"))?;
        let appid = req.appid.filter(|a| !a.is_empty()).ok_or((ErrCode::APPID_MISSING, "appid missing"))?;
        if req.grant_type.as_deref() != Some("client_credential") {
            return Err((ErrCode::INVALID_GRANT_TYPE, "invalid grant_type"));
        }
        let app = s.cfg.app(&appid).ok_or((ErrCode::INVALID_APPID, "invalid appid"))?;
        let secret =
            req.secret.filter(|a| !a.is_empty()).ok_or((ErrCode::APPSECRET_MISSING, "appsecret missing"))?;
        if secret != app.secret {
            return Err((ErrCode::INVALID_APPSECRET, "invalid appsecret"));
        }
        s.lock().stable_token(&s.cfg, &appid, req.force_refresh, Instant::now())
    })();
    token_answer(&s, "POST", &uri, answer)
}

/// A response whose body fails: the connection is cut without a complete answer.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox fault: connection dropped"))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn send(State(s): State<SandboxState>, uri: Uri, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let (fault, after, delay, stall) = {
        let mut inner = s.lock();
        inner.stats.send_requests += 1;
        let n = inner.stats.send_requests;
        (
            inner.fault_for(n),
            inner.after_fault_for(n),
            inner.delay_for(n),
            inner.faults.stall_ms.unwrap_or(20_000),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Injected::Drop) => {
            s.record("POST", &uri, None);
            return dropped();
        }
        Some(Injected::Http502) => {
            s.record("POST", &uri, None);
            return (StatusCode::BAD_GATEWAY, "<html><body>502 Bad Gateway</body></html>").into_response();
        }
        Some(Injected::Busy) => {
            s.record("POST", &uri, Some(-1));
            return wx(ErrCode::SYSTEM_BUSY, "system error");
        }
        Some(Injected::Malformed) => {
            s.record("POST", &uri, None);
            return ([(header::CONTENT_TYPE, "application/json")], "{\"errcode\":0,\"errm").into_response();
        }
        None => {}
    }
    let p = params(q.as_deref().unwrap_or(""));
    let result = (|| {
        let owned = |(c, m): (ErrCode, &str)| (c, m.to_owned());
        let appid =
            s.lock().check_token(p.get("access_token").map(String::as_str), Instant::now()).map_err(owned)?;
        let msg = check_send_body(&body).map_err(|e| (e.code(), e.message().to_owned()))?;
        s.lock().deliver(&s.cfg, &appid, &msg).map_err(owned)
    })();
    let answer = match result {
        Ok(()) => {
            s.record("POST", &uri, Some(0));
            wx(ErrCode::OK, "ok")
        }
        Err((code, msg)) => {
            s.record("POST", &uri, Some(code.get()));
            wx(code, &msg)
        }
    };
    // The send was processed (and delivered, if it could be): now its answer may be lost.
    match after {
        None => answer,
        Some(AfterProcessing::Http502) => {
            (StatusCode::BAD_GATEWAY, "<html><body>502 Bad Gateway</body></html>").into_response()
        }
        Some(AfterProcessing::Drop) => dropped(),
        Some(AfterProcessing::Malformed) => {
            ([(header::CONTENT_TYPE, "application/json")], "{\"errcode\":0,\"errm").into_response()
        }
        Some(AfterProcessing::Stall) => {
            tokio::time::sleep(Duration::from_millis(stall)).await;
            answer
        }
    }
}

/// Checks a send body the way the send endpoint does once the token is accepted: 44002 for an
/// empty body, 47001 for text that is not the message's JSON shape, 47003 (naming the field and
/// its rule) for a value that breaks a rule. Whether a grant and the user exist is checked
/// afterwards, against the sandbox's state.
///
/// ```
/// use subscribe_sandbox::check_send_body;
/// assert_eq!(check_send_body(b"").unwrap_err().code().get(), 44002);
/// assert_eq!(check_send_body(b"{\"touser\":").unwrap_err().code().get(), 47001);
/// let long_title = br#"{"touser":"oyAaTjt-xXvP87pubE4eUOF-ttD4","template_id":"7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM",
///     "scene":"1000","title":"sixteen chars...","data":{"content":{"value":"hi"}}}"#;
/// let err = check_send_body(long_title).unwrap_err();
/// assert_eq!(err.code().get(), 47003);
/// assert!(err.message().contains("title"));
/// ```
///
/// # Errors
/// The [`ApiError`] WeChat would answer.
pub fn check_send_body(body: &[u8]) -> Result<SubscribeMessage, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(ErrCode::EMPTY_POST_DATA, "empty post data"));
    }
    SubscribeMessage::from_json(body).map_err(|e| match e {
        MessageParseError::Invalid(e) => {
            ApiError::new(ErrCode::ARGUMENT_INVALID, format!("argument invalid! {}: {e}", e.field()))
        }
        _ => ApiError::new(ErrCode::DATA_FORMAT_ERROR, "data format error"),
    })
}

impl SandboxState {
    /// What the authorization page at `/mp/subscribemsg` answers for `query` (the URL's query
    /// string): the page's HTML, or the error message the error page shows instead (bad or
    /// missing parameters, an unknown app, a template that is not one of the app's one-time
    /// templates). Never a redirect.
    ///
    /// # Errors
    /// The message of the error page.
    pub fn authorization_page(&self, query: &str) -> Result<String, String> {
        let req = check_authorize(self, query)?;
        let app = self.cfg.app(req.appid.as_str()).unwrap_or(&self.cfg.apps[0]);
        let template = app.templates.iter().find(|t| t.id == req.template_id).unwrap_or(&app.templates[0]);
        Ok(html::authorize(&self.cfg, app, template, req.scene.get(), query))
    }
}

/// Checks an authorization query the way WeChat's page does.
fn check_authorize(s: &SandboxState, query: &str) -> Result<AuthorizeRequest, String> {
    let req = AuthorizeRequest::from_query(query).map_err(|e| format!("参数错误 invalid request: {e}"))?;
    let app = s.cfg.app(req.appid.as_str()).ok_or_else(|| format!("unknown appid {}", req.appid))?;
    if !app.templates.iter().any(|t| t.id == req.template_id) {
        return Err(format!("template {} is not a one-time template of {}", req.template_id, req.appid));
    }
    Ok(req)
}

async fn authorize_page(State(s): State<SandboxState>, uri: Uri, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    s.record("GET", &uri, None);
    match s.authorization_page(&q) {
        Ok(page) => Html(page).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Html(html::error(&e))).into_response(),
    }
}

async fn decide(State(s): State<SandboxState>, uri: Uri, body: Bytes) -> Response {
    s.record("POST", &uri, None);
    let form = params(&String::from_utf8_lossy(&body));
    let outcome = (|| {
        let q = form.get("q").ok_or("the form lost the request")?;
        let req = check_authorize(&s, q)?;
        let decision = form.get("decision").map(String::as_str);
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match decision {
            Some("confirm") => {
                let openid = form.get("openid").filter(|o| s.cfg.user(o).is_some()).ok_or("choose a user")?;
                s.lock().grant(req.appid.as_str(), openid, req.template_id.as_str(), req.scene);
                pairs.push(("openid", openid.clone()));
            }
            Some("cancel") => {}
            _ => return Err("unknown decision".to_owned()),
        }
        pairs.extend([
            ("template_id", req.template_id.as_str().to_owned()),
            ("action", decision.unwrap_or_default().to_owned()),
            ("scene", req.scene.to_string()),
            ("reserved", req.reserved.as_str().to_owned()),
        ]);
        Ok::<_, String>(redirect_location(req.redirect_url.as_str(), &pairs))
    })();
    match outcome {
        Ok(location) => {
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => (StatusCode::BAD_REQUEST, Html(html::error(&e))).into_response(),
    }
}

/// Appends the answer to `redirect_url`: `?` or `&` as its query needs, before any fragment.
pub(crate) fn redirect_location(redirect_url: &str, pairs: &[(&str, String)]) -> String {
    let (base, fragment) = match redirect_url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (redirect_url, None),
    };
    let mut out = base.to_owned();
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    out.push_str(sep);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        subscribe_types::encoding::push_component(&mut out, v);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

async fn index(State(s): State<SandboxState>) -> Html<String> {
    Html(html::index(&s.cfg, &s.stats()))
}

async fn inbox_page(State(s): State<SandboxState>, Path(openid): Path<String>) -> Response {
    match s.cfg.user(&openid) {
        Some(u) => Html(html::inbox(&s.cfg, &u.name, &openid, &s.inbox(&openid))).into_response(),
        None => (StatusCode::NOT_FOUND, Html(html::error("unknown user"))).into_response(),
    }
}

async fn inbox_json(State(s): State<SandboxState>, Path(openid): Path<String>) -> Response {
    if s.cfg.user(&openid).is_none() {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"unknown user"}"#,
        )
            .into_response();
    }
    json(&serde_json::json!({"openid": openid, "messages": s.inbox(&openid)}))
}

async fn state_json(State(s): State<SandboxState>) -> Response {
    let (classic, stable) = s.lock().live_tokens(Instant::now());
    json(&serde_json::json!({
        "stats": s.stats(),
        "faults": s.faults(),
        "unused_grants": s.unused_grants(),
        "live_tokens": {"classic": classic, "stable": stable},
        "apps": s.cfg.apps.iter().map(|a| serde_json::json!({
            "appid": a.appid, "name": a.name,
            "templates": a.templates.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "users": s.cfg.users,
    }))
}

async fn log_json(State(s): State<SandboxState>) -> Response {
    json(&s.log())
}

async fn reset(State(s): State<SandboxState>) -> Response {
    s.reset();
    json(&serde_json::json!({"reset": true}))
}

async fn get_faults(State(s): State<SandboxState>) -> Response {
    json(&s.faults())
}

async fn set_faults(State(s): State<SandboxState>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f)
            if [f.busy_every, f.http_502_every, f.drop_every, f.malformed_every, f.stall_every]
                .contains(&Some(0)) =>
        {
            bad_request("`*_every` must be at least 1")
        }
        Ok(f) => {
            s.set_faults(f.clone());
            json(&f)
        }
        Err(e) => bad_request(&format!("invalid faults: {e}")),
    }
}

async fn revoke(State(s): State<SandboxState>, body: Bytes) -> Response {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Req {
        #[serde(default)]
        grace_ms: u64,
    }
    let req = if body.is_empty() { Ok(Req::default()) } else { serde_json::from_slice::<Req>(&body) };
    match req {
        Ok(r) => {
            s.revoke_tokens(Duration::from_millis(r.grace_ms));
            json(&serde_json::json!({"revoked": true, "grace_ms": r.grace_ms}))
        }
        Err(e) => bad_request(&format!("invalid body: {e}")),
    }
}

async fn expire(State(s): State<SandboxState>) -> Response {
    s.expire_tokens();
    json(&serde_json::json!({"expired": true}))
}

async fn add_grant(State(s): State<SandboxState>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        appid: String,
        openid: String,
        template_id: String,
        scene: Scene,
    }
    let req = match serde_json::from_slice::<Req>(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("invalid grant: {e}")),
    };
    let Some(app) = s.cfg.app(&req.appid) else { return bad_request("unknown appid") };
    if !app.templates.iter().any(|t| t.id.as_str() == req.template_id) {
        return bad_request("unknown template for this app");
    }
    if s.cfg.user(&req.openid).is_none() {
        return bad_request("unknown openid");
    }
    let added = s.add_grant(&req.appid, &req.openid, &req.template_id, req.scene);
    json(&serde_json::json!({"added": added}))
}

/// A running sandbox. Dropping it stops the server.
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    state: SandboxState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SandboxHandle {
    /// Starts `config` on `127.0.0.1` and an ephemeral port.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(config: SandboxConfig) -> std::io::Result<Self> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts `config` on `addr`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start_on(config: SandboxConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (app, state) = router(config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        Ok(Self { addr, state, shutdown: Some(tx), task: Some(task) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the API base and the authorization page base at once.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state, for assertions and control without HTTP.
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Runs until the server stops (for the `wxsub sandbox` command).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::ops::Deref for SandboxHandle {
    type Target = SandboxState;
    fn deref(&self) -> &SandboxState {
        &self.state
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
