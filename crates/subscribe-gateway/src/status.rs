//! `GET /status`: a read-only page for a person, behind an API key with the scope `status`
//! (as `Authorization: Bearer`, or `Basic` with the key as the password, so that a browser's own
//! login prompt works): for each app the key may see, its stored token's lifetime, its push
//! endpoint and webhook backlog, its latest dispatch jobs with their progress and their grants
//! by state; and the gateway's latest refused requests. HTML escaped by construction (`maud`),
//! no script, no form, no cookie.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, WWW_AUTHENTICATE, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use subscribe_client::{GrantCounts, GrantScope};
use subscribe_types::{Scene, TemplateId};

use crate::Gateway;
use crate::api::error;
use crate::config::Scope;
use crate::jobs::JobRecord;
use crate::keys::Keys;
use crate::ratelimit::gate;

/// The jobs listed per app.
const JOBS_LISTED: usize = 10;

/// What the page shows of one app.
#[derive(Clone)]
pub(crate) struct AppView {
    appid: String,
    token: String,
    push: String,
    jobs: Vec<JobRecord>,
    grants: Vec<(String, u32, Option<GrantCounts>)>,
}

/// The status page.
#[utoipa::path(
    get,
    path = "/status",
    tag = "service",
    security(("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, description = "The page (HTML): the apps the key has the scope `status` for", body = String, content_type = "text/html"),
        (status = 401, description = "`unauthorized`: no key, or not one of ours (`WWW-Authenticate: Basic`, so a browser asks for it)", body = crate::openapi::ErrorBody),
        (status = 403, description = "`forbidden`: the key has the scope `status` for no app", body = crate::openapi::ErrorBody),
        (status = 429, description = "`rate_limited`: the key over its rate, or the address over its failed authentications", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn page(State(gw): State<Gateway>, request: Request) -> Response {
    let shared = &gw.shared;
    let ask = |mut r: Response| {
        if r.status() == StatusCode::UNAUTHORIZED {
            let realm = "Basic realm=\"subscribe-gateway\", charset=\"UTF-8\"";
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(realm));
        }
        r
    };
    // A browser's first request carries no credentials: asked for them, not counted as a
    // failed authentication of its address (nothing was tried, nothing hashed).
    if !request.headers().contains_key(AUTHORIZATION) {
        return ask(crate::api::Refusal::Unauthorized.into_response());
    }
    let key = match gate(shared, &request, Keys::authenticate_page) {
        Ok(key) => key,
        Err(refused) => return ask(*refused),
    };
    let mut appids: Vec<&String> = shared.apps.keys().filter(|a| key.allows(a, Scope::Status)).collect();
    if appids.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key may see no app here (scope `status`)",
        );
    }
    appids.sort_unstable();
    let mut apps = Vec::new();
    for appid in appids {
        apps.push(cached_view(&gw, appid).await);
    }
    let mut r = render(&apps, &gw.metrics().refusals()).into_string().into_response();
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    r
}

/// How long an app's figures are shown again before they are read again: the page refreshes
/// itself every 10 s, and its counts read the stores (on Redis, each template's grants whole).
const VIEW_KEPT: Duration = Duration::from_secs(10);

/// The app's figures, read at most every [`VIEW_KEPT`] for all the page's readers.
async fn cached_view(gw: &Gateway, appid: &str) -> AppView {
    let views = &gw.shared.status_views;
    let lock = || views.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, view)) = lock().get(appid)
        && at.elapsed() < VIEW_KEPT
    {
        return view.clone();
    }
    let view = view(gw, appid).await;
    lock().insert(appid.to_owned(), (tokio::time::Instant::now(), view.clone()));
    view
}

/// One app's figures; a store that fails shows as such, the page is still served.
async fn view(gw: &Gateway, appid: &str) -> AppView {
    let shared = &gw.shared;
    let client = &shared.apps[appid];
    let now = client.clock().now();
    let token = match shared.tokens.load(client.appid()).await {
        Ok(Some(t)) => match t.expires_at().duration_since(now) {
            Ok(left) => format!("stored, valid for another {}", human(left)),
            Err(_) => "stored, expired (refreshed when next asked for)".to_owned(),
        },
        Ok(None) => "none stored yet (fetched when first asked for)".to_owned(),
        Err(_) => "the token store could not be read".to_owned(),
    };
    let push = match shared.pushes.wake.contains_key(appid) {
        true => match shared.outbox.len(appid).await {
            Ok(0) => "push endpoint on; webhook: nothing waiting".to_owned(),
            Ok(n) => format!("push endpoint on; webhook: {n} event(s) waiting"),
            Err(_) => "push endpoint on; webhook: the outbox could not be read".to_owned(),
        },
        false if shared.pushes.serves(appid) => "push endpoint on; no webhook".to_owned(),
        false => "no push endpoint".to_owned(),
    };
    let jobs = shared.jobs.store.list(appid, None, JOBS_LISTED).await.unwrap_or_default();
    // The grants of the templates and scenes the listed jobs sent to.
    let scopes: BTreeSet<(String, u32)> = jobs
        .iter()
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(&j.spec).ok())
        .filter_map(|s| {
            Some((s["template_id"].as_str()?.to_owned(), u32::try_from(s["scene"].as_u64()?).ok()?))
        })
        .collect();
    let mut grants = Vec::new();
    for (template, scene) in scopes {
        let counts = match (TemplateId::new(template.as_str()), Scene::new(scene)) {
            (Ok(t), Ok(s)) => {
                let scope = GrantScope { appid: client.appid().clone(), template_id: t, scene: s };
                shared.grants.counts(&scope, now).await.ok()
            }
            _ => None,
        };
        grants.push((template, scene, counts));
    }
    AppView { appid: appid.to_owned(), token, push, jobs, grants }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 { format!("{}h {}m", s / 3600, s % 3600 / 60) } else { format!("{}m {}s", s / 60, s % 60) }
}

/// `ms` since the Unix epoch as an HTTP date (`Mon, 07 Dec 2026 08:19:32 GMT`).
fn when(ms: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn render(apps: &[AppView], refusals: &[crate::metrics::Refused]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="10";
                title { "subscribe-gateway status" }
                style { "body{font-family:sans-serif;font-size:14px;margin:2em}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f4f4f4}.n{text-align:right}.t{white-space:nowrap}" }
            }
            body {
                h1 { "subscribe-gateway" }
                p { "Read-only; refreshed every 10 s." }
                @for app in apps {
                    section id=(format!("app-{}", app.appid)) {
                        h2 { "App " code { (app.appid) } }
                        p.token { "Access token: " (app.token) }
                        p.push { (app.push) }
                        h3 { "Dispatch jobs" }
                        @if app.jobs.is_empty() {
                            p { "None yet." }
                        } @else {
                            table.jobs {
                                tr { th { "started" } th { "job" } th { "state" } th { "template / scene" } th { "sent" } th { "delivered" } th { "failed" } th { "unknown" } th { "dropped" } th { "remaining" } }
                                @for job in &app.jobs {
                                    @let spec: serde_json::Value = serde_json::from_str(&job.spec).unwrap_or_default();
                                    @let state = if job.cancel_requested && job.state == crate::jobs::JobState::Running { "cancelling" } else { job.state.as_str() };
                                    tr data-job=(job.id) data-state=(state) {
                                        td.t { (when(job.created_ms)) }
                                        td { code { (job.id) } }
                                        td { (state) @if let Some(d) = &job.detail { " — " (d) } }
                                        td { (spec["template_id"].as_str().unwrap_or("?")) " / " (spec["scene"].as_u64().unwrap_or(0)) }
                                        td.n { (job.progress.sent) }
                                        td.n { (job.progress.delivered) }
                                        td.n { (job.progress.failed) }
                                        td.n { (job.progress.unknown) }
                                        td.n { (job.progress.dropped) }
                                        td.n { (job.progress.remaining) }
                                    }
                                }
                            }
                        }
                        @if !app.grants.is_empty() {
                            h3 { "Grants of those templates" }
                            table.grants {
                                tr { th { "template / scene" } th { "pending" } th { "reserved" } th { "delivered" } th { "review" } th { "dropped" } }
                                @for (template, scene, counts) in &app.grants {
                                    tr {
                                        td { (template) " / " (scene) }
                                        @if let Some(c) = counts {
                                            td.n { (c.pending) } td.n { (c.reserved) } td.n { (c.delivered) } td.n { (c.review) } td.n { (c.dropped) }
                                        } @else {
                                            td colspan="5" { "the ledger could not be read" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                h2 { "Recent refusals" }
                @if refusals.is_empty() {
                    p { "None since the gateway started." }
                } @else {
                    table.refusals {
                        tr { th { "when" } th { "request" } th { "answer" } }
                        @for r in refusals.iter().take(20) {
                            tr {
                                td { (when(i64::try_from(r.at_ms).unwrap_or(0))) }
                                td { (r.method) " " code { (r.route) } }
                                td { (r.status) " " (match r.status { 401 => "no valid key", 403 => "no scope for the app", _ => "rate limited" }) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::when;

    #[test]
    fn times_read_as_http_dates() {
        assert_eq!(when(1_796_631_572_000), "Mon, 07 Dec 2026 08:19:32 GMT");
    }
}
