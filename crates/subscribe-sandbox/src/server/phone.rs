//! WeChat on the phone, for the mobile-app flow: the app hands the Open SDK a
//! `MobileSubscribeRequest`; WeChat shows the user a confirmation screen; the SDK hands the app
//! a `MobileSubscribeResponse`, which the app forwards to its server. The same grants and
//! inboxes as the web flow: a send after a confirmation here is delivered, a second refused.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use subscribe_types::{Action, MobileSubscribeRequest, MobileSubscribeResponse, OpenId};

use super::{SandboxState, Seen, bad_request, params};
use crate::config::{AppConfig, TemplateConfig};
use crate::html;

impl SandboxState {
    /// What the Open SDK hands the app after the user of `openid` decides on `request` from
    /// app `appid`: for `confirm`, the grant is recorded (as on the web page) and the answer
    /// carries `openId`; for `cancel`, nothing is recorded and there is no `openId`.
    ///
    /// ```
    /// use subscribe_sandbox::{SandboxConfig, SandboxHandle};
    /// use subscribe_types::{Action, MobileSubscribeRequest, OpenId, Reserved, Scene};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let sandbox = SandboxHandle::start(SandboxConfig::demo()).await?;
    /// let request = MobileSubscribeRequest {
    ///     scene: Scene::new(1000).unwrap(),
    ///     template_id: SandboxConfig::demo_template(),
    ///     reserved: Reserved::new("state1").unwrap(),
    /// };
    /// let alice = OpenId::new("oSandbox_Alice_00000000001").unwrap();
    /// let answer = sandbox.state().phone_answer(SandboxConfig::demo_appid().as_str(), &request, Action::Confirm, Some(&alice)).unwrap();
    /// assert_eq!(answer.open_id.as_ref(), Some(&alice));
    /// assert_eq!(sandbox.state().unused_grants(), 1);
    /// # sandbox.shutdown().await;
    /// # Ok::<(), std::io::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// What WeChat would refuse to show: an unknown app, a template that is not one of the
    /// app's one-time templates, or (to confirm) an unknown user.
    pub fn phone_answer(
        &self,
        appid: &str,
        request: &MobileSubscribeRequest,
        action: Action,
        openid: Option<&OpenId>,
    ) -> Result<MobileSubscribeResponse, String> {
        check_phone(self, appid, request)?;
        let confirmed_by = match action {
            Action::Confirm => {
                let user = openid.filter(|o| self.cfg.user(o.as_str()).is_some()).ok_or("choose a user")?;
                self.lock().grant(appid, user.as_str(), request.template_id.as_str(), request.scene);
                Some(user.clone())
            }
            Action::Cancel => None,
        };
        Ok(MobileSubscribeResponse {
            open_id: confirmed_by,
            template_id: request.template_id.clone(),
            scene: request.scene,
            action,
            reserved: request.reserved.clone(),
        })
    }
}

fn check_phone<'s>(
    s: &'s SandboxState,
    appid: &str,
    request: &MobileSubscribeRequest,
) -> Result<(&'s AppConfig, &'s TemplateConfig), String> {
    let app = s.cfg.app(appid).ok_or_else(|| format!("unknown appid {appid}"))?;
    let template =
        app.templates.iter().find(|t| t.id == request.template_id).ok_or_else(|| {
            format!("template {} is not a one-time template of {appid}", request.template_id)
        })?;
    Ok((app, template))
}

/// The SDK request as the page and the form carry it: `appid` and the request's JSON.
fn read_request(
    appid: Option<&String>,
    request: Option<&String>,
) -> Result<(String, MobileSubscribeRequest), String> {
    let appid = appid.filter(|a| !a.is_empty()).ok_or("appid is missing")?.clone();
    let request = request.ok_or("request is missing")?;
    let request: MobileSubscribeRequest =
        serde_json::from_str(request).map_err(|e| format!("the SDK request is not valid: {e}"))?;
    Ok((appid, request))
}

/// `GET /sandbox/phone?appid=…&request=<the SDK request's JSON>`: the confirmation screen.
pub(super) async fn screen(State(s): State<SandboxState>, seen: Seen, RawQuery(q): RawQuery) -> Response {
    s.record(seen, None);
    let p = params(q.as_deref().unwrap_or(""), ["appid", "request"]);
    let shown = p
        .map_err(|e| e.to_string())
        .and_then(|p| read_request(p.get("appid"), p.get("request")))
        .and_then(|(appid, request)| {
            let (app, template) = check_phone(&s, &appid, &request)?;
            Ok(html::phone(&s.cfg, app, template, &appid, &request))
        });
    match shown {
        Ok(page) => Html(page).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Html(html::error(&e))).into_response(),
    }
}

/// `POST /sandbox/phone/decide` (the screen's buttons): the SDK's answer, as JSON.
pub(super) async fn decide(State(s): State<SandboxState>, seen: Seen, body: Bytes) -> Response {
    s.record(seen, None);
    let form = match params(&String::from_utf8_lossy(&body), ["appid", "request", "decision", "openid"]) {
        Ok(form) => form,
        Err(e) => return (StatusCode::BAD_REQUEST, Html(html::error(&e.to_string()))).into_response(),
    };
    let answer = read_request(form.get("appid"), form.get("request")).and_then(|(appid, request)| {
        let action = match form.get("decision").map(String::as_str) {
            Some("confirm") => Action::Confirm,
            Some("cancel") => Action::Cancel,
            _ => return Err("unknown decision".to_owned()),
        };
        let openid = form.get("openid").and_then(|o| OpenId::new(o.as_str()).ok());
        s.phone_answer(&appid, &request, action, openid.as_ref())
    });
    match answer {
        Ok(answer) => sdk_json(&answer),
        Err(e) => (StatusCode::BAD_REQUEST, Html(html::error(&e))).into_response(),
    }
}

/// `POST /sandbox/api/phone` with `{"appid", "request": {scene, templateId, reserved},
/// "action", "openid"?}`: the same, for tests.
pub(super) async fn api(State(s): State<SandboxState>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        appid: String,
        request: MobileSubscribeRequest,
        action: Action,
        #[serde(default)]
        openid: Option<OpenId>,
    }
    match serde_json::from_slice::<Req>(&body) {
        Ok(r) => match s.phone_answer(&r.appid, &r.request, r.action, r.openid.as_ref()) {
            Ok(answer) => sdk_json(&answer),
            Err(e) => bad_request(&e),
        },
        Err(e) => bad_request(&format!("invalid phone request: {e}")),
    }
}

/// The answer as the SDK hands it to the app (iOS spelling; no `openId` on a cancellation).
fn sdk_json(answer: &MobileSubscribeResponse) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_string(answer).unwrap_or_default())
        .into_response()
}
