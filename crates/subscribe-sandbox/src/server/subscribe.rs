//! The mini program's and the service account's sends (`/cgi-bin/message/subscribe/send` and
//! `/cgi-bin/message/subscribe/bizsend`), with WeChat's errcodes and the same faults as the
//! one-time message's; and a user's answer to their subscription popups (the control API).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use subscribe_events::{ChangeItem, Event, EventKind, PopupItem, SentItem};
use subscribe_types::ErrCode;

use super::wechat::SendFaults;
use super::{SandboxState, Seen, bad_request, invalid_args, json, params, wx};
use crate::library::{Refusal, SendKind};

impl SandboxState {
    /// A user's answer to a mini program's or service account's subscription popup for one of
    /// `appid`'s templates: an acceptance of a one-time template allows one more message, of a
    /// long-term one, messages until a rejection.
    ///
    /// # Errors
    /// When `template_id` is not one of the app's templates.
    pub fn subscribe(
        &self,
        appid: &str,
        openid: &str,
        template_id: &str,
        accept: bool,
    ) -> Result<(), String> {
        self.lock().subscriptions.subscribe(appid, openid, template_id, accept).map_err(|(_, m)| m)?;
        let status = if accept { "accept" } else { "reject" };
        let item =
            PopupItem { template_id: template_id.to_owned(), status: status.into(), popup_scene: Some(1) };
        self.push_event(appid, openid, EventKind::Popup(vec![item]));
        Ok(())
    }

    /// A user turning a subscription off in WeChat's settings: the template's acceptances are
    /// gone, and a `subscribe_msg_change_event` (`reject`) is pushed.
    ///
    /// # Errors
    /// When `template_id` is not one of the app's templates.
    pub fn withdraw(&self, appid: &str, openid: &str, template_id: &str) -> Result<(), String> {
        self.lock().subscriptions.withdraw(appid, openid, template_id).map_err(|(_, m)| m)?;
        let item = ChangeItem { template_id: template_id.to_owned(), status: "reject".into() };
        self.push_event(appid, openid, EventKind::Change(vec![item]));
        Ok(())
    }

    /// Pushes an event from `openid` to `appid`'s server URL, if it has one.
    pub(crate) fn push_event(&self, appid: &str, openid: &str, kind: EventKind) {
        let now = self.now().wall.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        // The account's original id, as WeChat writes `ToUserName`.
        let gh = format!("gh_{}", appid.get(2..14).unwrap_or(appid));
        self.pusher.push(appid, &Event::new(gh, openid, now, kind), now);
    }

    /// Unused one-time acceptances of the mini-program and notification templates, all apps.
    pub fn unused_acceptances(&self) -> u64 {
        self.lock().subscriptions.unused()
    }
}

/// The app whose token is in the query, or WeChat's error.
pub(super) fn app_of(
    s: &SandboxState,
    query: &std::collections::HashMap<String, String>,
) -> Result<String, Refusal> {
    s.lock()
        .use_token(query.get("access_token").map(String::as_str), s.now().mono)
        .map_err(|(c, m)| (c, m.to_owned()))
}

pub(super) fn answer(s: &SandboxState, seen: Seen, result: Result<Value, Refusal>) -> Response {
    match result {
        Ok(v) => {
            s.record(seen, Some(0));
            json(&v)
        }
        Err((code, msg)) => {
            s.record(seen, Some(code.get()));
            wx(code, &msg)
        }
    }
}

/// A send marked in flight for its user; the mark goes when the send ends, or when its handler
/// is dropped mid-way (a shutdown, a connection gone), so the user is never left refused with
/// 43108.
struct InFlight<'a> {
    s: &'a SandboxState,
    appid: &'a str,
    openid: &'a str,
    ended: bool,
}

impl<'a> InFlight<'a> {
    fn begin(s: &'a SandboxState, appid: &'a str, openid: &'a str) -> Option<Self> {
        // `then`, not `then_some`: a guard built and dropped here would take the lock it is under.
        let began = s.lock().subscriptions.begin(appid, openid);
        began.then(|| Self { s, appid, openid, ended: false })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.s.lock().subscriptions.end(self.appid, self.openid);
        }
    }
}

/// A mini-program or notification send, with the same faults as the 2017 message's: one drawn
/// before processing answers without processing; one drawn after loses the processed send's
/// answer (a delivery included).
async fn send(s: SandboxState, seen: Seen, query: Option<String>, body: Bytes, kind: SendKind) -> Response {
    let faults = SendFaults::draw(&s);
    if let Some(answer) = faults.before(&s, &seen) {
        tokio::time::sleep(faults.delay).await;
        return answer;
    }
    let appid = match params(query.as_deref().unwrap_or(""), ["access_token"])
        .map_err(|e| invalid_args(&e))
        .and_then(|q| app_of(&s, &q))
    {
        Ok(a) => a,
        Err(e) => return faults.after(&s, answer(&s, seen, Err(e)), false).await,
    };
    if body.is_empty() {
        let refused = answer(&s, seen, Err((ErrCode::EMPTY_POST_DATA, "empty post data".into())));
        return faults.after(&s, refused, false).await;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        let refused = answer(&s, seen, Err((ErrCode::DATA_FORMAT_ERROR, "data format error".into())));
        return faults.after(&s, refused, false).await;
    };
    let openid = body.get("touser").and_then(Value::as_str).unwrap_or_default().to_owned();
    // Two sends to one user at once: the second is refused, as WeChat does.
    let Some(mut in_flight) = InFlight::begin(&s, &appid, &openid) else {
        let refused =
            answer(&s, seen, Err((ErrCode::CONCURRENT_SEND, "concurrent calls to the same openid".into())));
        return faults.after(&s, refused, false).await;
    };
    // The send is processed for at least a moment, so overlapping sends meet.
    tokio::time::sleep(faults.delay.max(Duration::from_millis(2))).await;
    let result = {
        let mut inner = s.lock();
        let accepted = inner.subscriptions.accept(&s.cfg, &appid, kind, &body);
        inner.subscriptions.end(&appid, &openid);
        in_flight.ended = true;
        accepted.map(|a| {
            let template_id = a.template_id.clone();
            (inner.deliver_subscribed(&appid, kind, a, s.now().wall), template_id)
        })
    };
    // A notification's result is pushed as WeChat does: `subscribe_msg_sent_event` by msgid.
    if let Ok((Some(msg_id), template_id)) = &result {
        let item = SentItem {
            template_id: template_id.clone(),
            msg_id: *msg_id,
            error_code: 0,
            error_status: "success".into(),
        };
        s.push_event(&appid, &openid, EventKind::Sent(vec![item]));
    }
    let delivered = result.is_ok();
    let result = result.map(|(msgid, _)| msgid);
    let answered = answer(
        &s,
        seen,
        result.map(|msgid| match msgid {
            Some(id) => serde_json::json!({"errcode": 0, "errmsg": "ok", "msgid": id}),
            None => serde_json::json!({"errcode": 0, "errmsg": "ok"}),
        }),
    );
    // The send was processed (and delivered, if it could be): now its answer may be lost.
    faults.after(&s, answered, delivered).await
}

pub(super) async fn mini_program_send(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    send(s, seen, q, body, SendKind::MiniProgram).await
}

pub(super) async fn notification_send(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    send(s, seen, q, body, SendKind::Notification).await
}

/// `POST /sandbox/api/subscribe` `{"appid","openid","template_id","decision":"accept|reject|withdraw"}`:
/// a user's answer to a subscription popup, or (`withdraw`) a subscription turned off in settings.
pub(super) async fn control_subscribe(State(s): State<SandboxState>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Answer {
        appid: String,
        openid: String,
        template_id: String,
        decision: String,
    }
    let Ok(a) = serde_json::from_slice::<Answer>(&body) else {
        return bad_request("expected {\"appid\",\"openid\",\"template_id\",\"decision\":\"accept|reject\"}");
    };
    if s.cfg.user(&a.openid).is_none() {
        return bad_request("unknown user");
    }
    let answered = match a.decision.as_str() {
        "accept" => s.subscribe(&a.appid, &a.openid, &a.template_id, true),
        "reject" => s.subscribe(&a.appid, &a.openid, &a.template_id, false),
        "withdraw" => s.withdraw(&a.appid, &a.openid, &a.template_id),
        _ => return bad_request("decision must be accept, reject or withdraw"),
    };
    match answered {
        Ok(()) => json(&serde_json::json!({"ok": true})),
        Err(e) => bad_request(&e),
    }
}
