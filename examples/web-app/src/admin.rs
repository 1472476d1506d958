//! The admin: reached only with the credential from `WEBAPP_ADMIN_TOKEN`, every form carries a
//! CSRF token tied to the browser's session, and a dispatch runs as a detached job whose page
//! follows its progress.
//!
//! No server-side session store: the admin cookie is `{expiry}.{HMAC(token, session, expiry)}`
//! and the CSRF token is `HMAC(token, session)`, so every instance sharing the credential
//! accepts them, and neither can be made without the credential.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use maud::html;
use serde::Deserialize;
use sha2::Sha256;
use subscribe_client::{CancellationToken, DispatchReport, Dispatcher, OutcomeKind, Progress};
use subscribe_types::secrecy::{ExposeSecret as _, SecretString};
use subscribe_types::{OneTimeMessage, OpenId, ValidationError};

use crate::html::{page, refreshing_page};
use crate::{AppState, cookie_of, error_page, new_session, session_cookie, session_of};

const ADMIN_COOKIE: &str = "wa_admin";
/// How long an admin login lasts.
const ADMIN_SESSION: Duration = Duration::from_secs(8 * 3600);
/// Jobs kept for their pages (the running one and the latest finished ones).
const JOBS_KEPT: usize = 16;

/// The admin credential (`WEBAPP_ADMIN_TOKEN`): at least 32 characters, compared in constant
/// time, never printed.
#[derive(Clone)]
pub struct AdminToken(Arc<SecretString>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

impl AdminToken {
    /// Shortest accepted credential, in bytes.
    pub const MIN_LEN: usize = 32;

    /// Checks the credential's length and characters.
    ///
    /// # Errors
    /// The rule it breaks (never the value).
    pub fn new(value: &str) -> Result<Self, &'static str> {
        if value.len() < Self::MIN_LEN {
            return Err("must be at least 32 bytes (openssl rand -hex 32)");
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces");
        }
        Ok(Self(Arc::new(SecretString::from(value))))
    }

    /// Whether `presented` is the credential, in time independent of where they differ.
    fn matches(&self, presented: &str) -> bool {
        // Compare MACs of both: equal-length inputs to the constant-time comparison, so not
        // even the credential's length leaks.
        let (a, b) = (
            self.mac(&[b"login", presented.as_bytes()]),
            self.mac(&[b"login", self.0.expose_secret().as_bytes()]),
        );
        a.verify_slice(&b.finalize().into_bytes()).is_ok()
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The CSRF token of `session`.
    fn csrf(&self, session: &str) -> String {
        hex::encode(self.mac(&[b"csrf", session.as_bytes()]).finalize().into_bytes())
    }

    fn csrf_ok(&self, session: &str, presented: &str) -> bool {
        hex::decode(presented)
            .is_ok_and(|tag| self.mac(&[b"csrf", session.as_bytes()]).verify_slice(&tag).is_ok())
    }

    /// The admin cookie's value for `session`, valid until `expires` (Unix seconds).
    fn admin_cookie(&self, session: &str, expires: u64) -> String {
        let tag = self.mac(&[b"admin", session.as_bytes(), &expires.to_be_bytes()]).finalize().into_bytes();
        format!("{expires}.{}", hex::encode(tag))
    }

    fn admin_cookie_ok(&self, session: &str, value: &str, now: u64) -> bool {
        let Some((expires, tag)) = value.split_once('.') else { return false };
        let (Ok(expires), Ok(tag)) = (expires.parse::<u64>(), hex::decode(tag)) else { return false };
        expires > now
            && self.mac(&[b"admin", session.as_bytes(), &expires.to_be_bytes()]).verify_slice(&tag).is_ok()
    }
}

/// Now, in Unix seconds, on the client's clock (a manual one in tests).
fn unix_now(app: &AppState) -> u64 {
    app.client.clock().now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a request that is not signed in gets the login form (a page the admin navigates
/// to) or only a refusal (a form post: answering it with a new session would sign out the
/// browser's admin, which any site could then do with a cross-site post).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unsigned {
    ShowLogin,
    Refuse,
}

/// The admin session of this request, or the answer to give instead: 403 when the admin is
/// off, 401 (with the login form for a page) when the browser has not signed in.
fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    unsigned: Unsigned,
) -> Result<(AdminToken, String), Box<Response>> {
    let Some(token) = app.config.admin_token.clone() else {
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            "The admin is off: start the service with WEBAPP_ADMIN_TOKEN set (at least 32 characters).",
        )));
    };
    match (session_of(headers), cookie_of(headers, ADMIN_COOKIE)) {
        (Some(session), Some(cookie)) if token.admin_cookie_ok(&session, cookie, unix_now(app)) => {
            Ok((token, session))
        }
        _ if unsigned == Unsigned::ShowLogin => {
            Err(Box::new(login_page(app, &token, headers, StatusCode::UNAUTHORIZED, None)))
        }
        _ => {
            tracing::warn!("an admin form was posted without a signed-in admin");
            Err(Box::new(error_page(
                StatusCode::UNAUTHORIZED,
                "Sign in to the admin first: nothing was done.",
            )))
        }
    }
}

/// The login form, with a session (a new one if the browser has none) and its CSRF token.
fn login_page(
    app: &AppState,
    token: &AdminToken,
    headers: &HeaderMap,
    status: StatusCode,
    problem: Option<&str>,
) -> Response {
    let (session, fresh) = session_of(headers).map_or_else(|| (new_session(), true), |s| (s, false));
    let mut response = (
        status,
        page(
            "Admin login",
            html! {
                h1 { "Admin" }
                @if let Some(problem) = problem { div.card.error #login-error { p { (problem) } } }
                form.card #login method="post" action="/admin/login" {
                    input type="hidden" name="csrf" value=(token.csrf(&session));
                    label for="token" { "Admin token (WEBAPP_ADMIN_TOKEN)" }
                    input type="password" #token name="token" autocomplete="current-password";
                    p { button type="submit" #sign-in { "Sign in" } }
                }
            },
        ),
    )
        .into_response();
    if fresh {
        response
            .headers_mut()
            .append(header::SET_COOKIE, session_cookie(&session, app.config.secure_cookies()));
    }
    response
}

/// `POST /admin/login`.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").finish_non_exhaustive()
    }
}

pub(crate) async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(token) = app.config.admin_token.clone() else {
        return error_page(StatusCode::FORBIDDEN, "The admin is off.");
    };
    let Some(session) = session_of(&headers).filter(|s| token.csrf_ok(s, &form.csrf)) else {
        tracing::warn!("admin login without a valid CSRF token");
        return error_page(
            StatusCode::FORBIDDEN,
            "This form was not issued to this browser: reload the login page.",
        );
    };
    if !token.matches(&form.token) {
        tracing::warn!("admin login with a wrong token");
        return login_page(&app, &token, &headers, StatusCode::UNAUTHORIZED, Some("Wrong admin token."));
    }
    let expires = unix_now(&app) + ADMIN_SESSION.as_secs();
    let mut response = Redirect::to("/admin").into_response();
    let cookie = format!(
        "{ADMIN_COOKIE}={}; Path=/admin; Max-Age={}; HttpOnly; SameSite=Strict{}",
        token.admin_cookie(&session, expires),
        ADMIN_SESSION.as_secs(),
        if app.config.secure_cookies() { "; Secure" } else { "" }
    );
    response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII cookie"));
    response
}

/// `POST /admin/logout`, `POST /admin/dispatch`: only the CSRF token.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(response) = authenticate_form(&app, &headers, &form.csrf) {
        return *response;
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("wa_admin=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    response
}

/// A posted admin form's check: a signed-in admin (401 otherwise, without a new session) and
/// the session's CSRF token (403 otherwise).
fn authenticate_form(app: &AppState, headers: &HeaderMap, csrf: &str) -> Result<(), Box<Response>> {
    let (token, session) = authenticate(app, headers, Unsigned::Refuse)?;
    if token.csrf_ok(&session, csrf) {
        Ok(())
    } else {
        tracing::warn!("admin form without a valid CSRF token refused");
        Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            "This form was not issued to this session: nothing was done.",
        )))
    }
}

pub(crate) async fn admin(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let (token, session) = match authenticate(&app, &headers, Unsigned::ShowLogin) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let counts = match app.counts().await {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &format!("ledger: {e}")),
    };
    let csrf = token.csrf(&session);
    let jobs = app.jobs.list();
    let pushed = match app.pushed_counts().await {
        Ok(pushed) => pushed,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &format!("ledger: {e}")),
    };
    page(
        "Admin",
        html! {
            h1 { "Back-in-stock notifications" }
            div.card { table {
                tr { th { "Waiting" } td #pending { (counts.pending) } }
                tr { th { "Being sent" } td #reserved { (counts.reserved) } }
                tr { th { "Delivered" } td #delivered { (counts.delivered) } }
                tr { th { "To review (outcome unknown)" } td #review { (counts.review) } }
                tr { th { "Dropped" } td #dropped { (counts.dropped) } }
            } }
            @if !pushed.is_empty() {
                h2 { "Subscriptions WeChat pushed" }
                div.card { table #pushed {
                    tr { th { "Template" } th { "Waiting" } th { "Delivered" } th { "Withdrawn" } }
                    @for (i, (template, c)) in pushed.iter().enumerate() {
                        tr {
                            td { code { (template.as_str()) } }
                            td id=(format!("pushed-pending-{i}")) { (c.pending) }
                            td { (c.delivered) }
                            td id=(format!("pushed-dropped-{i}")) { (c.dropped) }
                        }
                    }
                } }
            }
            form.card method="post" action="/admin/dispatch" {
                input type="hidden" name="csrf" value=(csrf);
                label for="title" { "Title (up to 15 characters)" }
                input type="text" #title name="title" value="到货提醒";
                label for="content" { "Message (up to 200 characters)" }
                input type="text" #content name="content" value="您关注的亚麻衬衫（M 码）已到货";
                label for="url" { "Link (optional)" }
                input type="text" #url name="url" value="";
                p { button type="submit" #dispatch { "Send to everyone waiting" } }
            }
            @if !jobs.is_empty() {
                h2 { "Dispatches" }
                ul { @for job in &jobs {
                    li { a href={ "/admin/jobs/" (job.id) } { "#" (job.id) } " " (job.state_name()) }
                } }
            }
            form method="post" action="/admin/logout" {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" #sign-out { "Sign out" }
            }
        },
    )
    .into_response()
}

/// The dispatch form.
#[derive(Debug, Deserialize)]
pub(crate) struct DispatchForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn dispatch(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<DispatchForm>,
) -> Response {
    if let Err(response) = authenticate_form(&app, &headers, &form.csrf) {
        return *response;
    }
    let form = Arc::new(form);
    let (template, scene) = (app.config.template_id.clone(), app.config.scene);
    let build = {
        let form = Arc::clone(&form);
        move |to: &OpenId| -> Result<OneTimeMessage, ValidationError> {
            let mut b = OneTimeMessage::builder(to.clone(), template.clone(), scene)
                .title(form.title.clone())
                .content(form.content.clone());
            if !form.url.trim().is_empty() {
                b = b.url(form.url.trim());
            }
            b.build()
        }
    };
    // Check the text once before anyone is taken: a bad title must not touch a single grant.
    let probe = OpenId::new("oValidationProbe").expect("a valid openid");
    if let Err(e) = build(&probe) {
        return error_page(StatusCode::BAD_REQUEST, &format!("Nothing was sent: {e}."));
    }
    let dispatcher = Dispatcher::one_time(
        app.client.clone(),
        Arc::clone(&app.ledger),
        app.config.template_id.clone(),
        app.config.scene,
        build,
    )
    .concurrency(app.config.dispatch_concurrency)
    .lease(Duration::from_secs(120));
    match app.jobs.start(dispatcher, app.clone()) {
        Ok(id) => Redirect::to(&format!("/admin/jobs/{id}")).into_response(),
        Err(running) => error_page(
            StatusCode::CONFLICT,
            &format!(
                "Dispatch #{running} is still running: wait for it to finish (see /admin/jobs/{running})."
            ),
        ),
    }
}

pub(crate) async fn job_page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if let Err(response) = authenticate(&app, &headers, Unsigned::ShowLogin) {
        return *response;
    }
    let Some(job) = app.jobs.get(id) else {
        return error_page(StatusCode::NOT_FOUND, "No such dispatch.");
    };
    let state = job.lock().clone();
    match state {
        JobState::Running(p) => refreshing_page(
            "Dispatching",
            1,
            html! {
                h1 { "Dispatch #" (id) " is running" }
                div.card #job data-state="running" { table {
                    tr { th { "Sent" } td #sent { (p.sent) } }
                    tr { th { "Delivered" } td #delivered { (p.delivered) } }
                    tr { th { "Failed (waiting again)" } td #failed { (p.failed) } }
                    tr { th { "Unknown (to review)" } td #unknown { (p.unknown) } }
                    tr { th { "Dropped" } td #dropped { (p.dropped) } }
                } }
                p { small { "It runs on the server: closing this page does not stop it. This page reloads every second." } }
            },
        )
        .into_response(),
        JobState::Finished(report) => report_page(id, &report),
        JobState::Failed(e) => error_page(StatusCode::OK, &format!("Dispatch #{id} stopped: {e}.")),
    }
}

fn report_page(id: u64, report: &DispatchReport) -> Response {
    const SHOWN: usize = 500;
    let p = report.progress;
    let more = report.outcomes.len().saturating_sub(SHOWN);
    page(
        "Dispatch report",
        html! {
            h1 { "Dispatch #" (id) " report" }
            div.card #report data-state="finished" { table {
                tr { th { "Sent" } td #sent { (p.sent) } }
                tr { th { "Delivered" } td #delivered { (p.delivered) } }
                tr { th { "Failed (waiting again)" } td #failed { (p.failed) } }
                tr { th { "Unknown (to review)" } td #unknown { (p.unknown) } }
                tr { th { "Dropped" } td #dropped { (p.dropped) } }
            } }
            @if report.cancelled { p.warn { "Stopped early (the service was shutting down): grants not sent are waiting again." } }
            table {
                tr { th { "User" } th { "Outcome" } th { "Detail" } }
                @for o in report.outcomes.iter().take(SHOWN) {
                    tr class={ "outcome " (if o.kind == OutcomeKind::Delivered { "ok" } else { "warn" }) } {
                        td { code { (o.openid.as_str()) } }
                        td { (o.kind.as_str()) }
                        td { (o.detail.as_deref().unwrap_or("")) }
                    }
                }
            }
            @if more > 0 { p { "… and " (more) " more." } }
            p { a href="/admin" { "Back to admin" } }
        },
    )
    .into_response()
}

/// Where a dispatch job is.
#[derive(Clone, Debug)]
enum JobState {
    Running(Progress),
    Finished(Box<DispatchReport>),
    Failed(String),
}

/// One dispatch, run on its own task.
#[derive(Debug)]
struct Job {
    id: u64,
    state: Mutex<JobState>,
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state_name(&self) -> &'static str {
        match *self.lock() {
            JobState::Running(_) => "running",
            JobState::Finished(_) => "finished",
            JobState::Failed(_) => "failed",
        }
    }
}

/// The dispatch jobs: at most one running; the latest few kept for their pages; cancelled
/// (grants not yet sent are released) when the service shuts down.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    kept: Mutex<VecDeque<Arc<Job>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    cancel: CancellationToken,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Job>>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn list(&self) -> Vec<Arc<Job>> {
        self.lock().iter().rev().cloned().collect()
    }

    fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.lock().iter().find(|j| j.id == id).cloned()
    }

    /// Starts `dispatcher` on its own task, detached from the request. Returns the job's id,
    /// or the id of the job still running.
    fn start(&self, dispatcher: Dispatcher, app: AppState) -> Result<u64, u64> {
        let job = {
            let mut jobs = self.lock();
            if let Some(running) = jobs.iter().find(|j| matches!(*j.lock(), JobState::Running(_))) {
                return Err(running.id);
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            let job = Arc::new(Job { id, state: Mutex::new(JobState::Running(Progress::default())) });
            jobs.push_back(Arc::clone(&job));
            while jobs.len() > JOBS_KEPT {
                jobs.pop_front();
            }
            job
        };
        let id = job.id;
        let cancel = self.cancel.child_token();
        let task = tokio::spawn(async move {
            let watcher = Arc::clone(&job);
            let mut dispatcher = dispatcher.cancellation(cancel).progress(move |p: &Progress| {
                *watcher.lock() = JobState::Running(*p);
            });
            let finished = match dispatcher.run().await {
                Ok(report) => {
                    tracing::info!(job = id, sent = report.progress.sent, "dispatch finished");
                    JobState::Finished(Box::new(report))
                }
                Err(e) => {
                    tracing::error!(job = id, error = %e, "dispatch stopped");
                    JobState::Failed(e.to_string())
                }
            };
            *job.lock() = finished;
            app.counts_changed();
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(id)
    }

    /// Cancels the running dispatch (grants taken but not sent are released) and waits up to
    /// `grace` for it to settle what it sent.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.cancel.cancel();
        let tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let _ = tokio::time::timeout(grace, futures_join(tasks)).await;
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod zeroize_tests {
    use super::*;

    /// Does not compile if the admin token goes back to a plain string.
    #[test]
    fn the_admin_token_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>(_: &T) {}
        let token = AdminToken::new("0123456789abcdef0123456789abcdef").unwrap();
        zeroed_on_drop(&*token.0);
        assert!(token.matches("0123456789abcdef0123456789abcdef"));
    }
}
