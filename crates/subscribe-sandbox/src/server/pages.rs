//! The pages a person sees: WeChat's authorization page and its decision, the sandbox's index
//! and each user's inbox.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use subscribe_types::AuthorizeRequest;

use super::{SandboxState, Seen, params};
use crate::config::{AppConfig, TemplateConfig};
use crate::html;

impl SandboxState {
    /// What the authorization page at `/mp/subscribemsg` answers for `query` (the request's
    /// bare query, without the `?`: a `?` in it is part of a value, see
    /// [`AuthorizeRequest::from_bare_query`]): the page's HTML, or the error message the error page shows instead (bad or
    /// missing parameters, an unknown app, a template that is not one of the app's one-time
    /// templates, a `redirect_url` off the app's business domains). Never a redirect.
    ///
    /// # Errors
    /// The message of the error page.
    pub fn authorization_page(&self, query: &str) -> Result<String, String> {
        let (req, app, template) = check_authorize(self, query)?;
        Ok(html::authorize(&self.cfg, app, template, req.scene.get(), query))
    }
}

/// Checks an authorization query the way WeChat's page does: the request, its app, its
/// template, and that `redirect_url` is on one of the app's business domains.
fn check_authorize<'s>(
    s: &'s SandboxState,
    query: &str,
) -> Result<(AuthorizeRequest, &'s AppConfig, &'s TemplateConfig), String> {
    let req =
        AuthorizeRequest::from_bare_query(query).map_err(|e| format!("参数错误 invalid request: {e}"))?;
    let app = s.cfg.app(req.appid.as_str()).ok_or_else(|| format!("unknown appid {}", req.appid))?;
    let template =
        app.templates.iter().find(|t| t.id == req.template_id).ok_or_else(|| {
            format!("template {} is not a one-time template of {}", req.template_id, req.appid)
        })?;
    let host = req.redirect_url.host();
    if !app.allows_redirect_host(host) {
        return Err(format!(
            "redirect_url 域名与后台配置不一致 (the redirect_url's domain {host} is not a business domain of {})",
            req.appid
        ));
    }
    Ok((req, app, template))
}
pub(super) async fn authorize_page(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    s.record(seen, None);
    match s.authorization_page(&q) {
        Ok(page) => Html(page).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Html(html::error(&e))).into_response(),
    }
}
pub(super) async fn decide(State(s): State<SandboxState>, seen: Seen, body: Bytes) -> Response {
    s.record(seen, None);
    let form = params(&String::from_utf8_lossy(&body), ["q", "decision", "openid"]);
    let outcome = (|| {
        let form = form.map_err(|e| e.to_string())?;
        let q = form.get("q").ok_or("the form lost the request")?;
        let (req, _, _) = check_authorize(&s, q)?;
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
pub(super) fn redirect_location(redirect_url: &str, pairs: &[(&str, String)]) -> String {
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
pub(super) async fn index(State(s): State<SandboxState>) -> Html<String> {
    Html(html::index(&s.cfg, &s.stats()))
}
pub(super) async fn inbox_page(State(s): State<SandboxState>, Path(openid): Path<String>) -> Response {
    match s.cfg.user(&openid) {
        Some(u) => Html(html::inbox(&s.cfg, &u.name, &openid, &s.inbox(&openid))).into_response(),
        None => (StatusCode::NOT_FOUND, Html(html::error("unknown user"))).into_response(),
    }
}

/// `GET /sandbox/popup?appid=…&template_id=…`: a subscription popup for one of the app's
/// library templates.
pub(super) async fn popup_page(State(s): State<SandboxState>, RawQuery(q): RawQuery) -> Response {
    let p = match params(q.as_deref().unwrap_or_default(), ["appid", "template_id"]) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, Html(html::error(&e.to_string()))).into_response(),
    };
    let shown = popup_template(&s, p.get("appid"), p.get("template_id"))
        .map(|(app, id, title, long_term)| html::popup(&s.cfg, app, &id, &title, long_term));
    match shown {
        Ok(page) => Html(page).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Html(html::error(&e))).into_response(),
    }
}

fn popup_template<'s>(
    s: &'s SandboxState,
    appid: Option<&String>,
    template_id: Option<&String>,
) -> Result<(&'s AppConfig, String, String, bool), String> {
    let appid = appid.ok_or("the query has no appid")?;
    let app = s.cfg.app(appid).ok_or_else(|| format!("unknown appid {appid}"))?;
    let id = template_id.ok_or("the query has no template_id")?;
    let mut inner = s.lock();
    let template = inner
        .subscriptions
        .templates(appid)
        .iter()
        .find(|t| &t.id == id)
        .ok_or_else(|| format!("template {id} is not one of {appid}'s templates"))?;
    Ok((app, id.clone(), template.public().title.to_owned(), template.long_term()))
}

/// `POST /sandbox/popup/decide` (the popup's buttons): the answer recorded and pushed to the
/// app's server URL.
pub(super) async fn popup_decide(State(s): State<SandboxState>, seen: Seen, body: Bytes) -> Response {
    s.record(seen, None);
    let form = match params(&String::from_utf8_lossy(&body), ["appid", "template_id", "openid", "decision"]) {
        Ok(form) => form,
        Err(e) => return (StatusCode::BAD_REQUEST, Html(html::error(&e.to_string()))).into_response(),
    };
    let answered =
        popup_template(&s, form.get("appid"), form.get("template_id")).and_then(|(app, id, ..)| {
            let openid = form.get("openid").filter(|o| s.cfg.user(o).is_some()).ok_or("choose a user")?;
            let decision = form.get("decision").map(String::as_str).unwrap_or_default();
            let accept = match decision {
                "accept" => true,
                "reject" => false,
                _ => return Err("unknown decision".to_owned()),
            };
            s.subscribe(app.appid.as_str(), openid, &id, accept)?;
            Ok(html::popup_answered(app, decision, s.pusher.has_target(app.appid.as_str())))
        });
    match answered {
        Ok(page) => Html(page).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Html(html::error(&e))).into_response(),
    }
}
