//! WeChat's endpoints: the two token endpoints and the send endpoint, with the faults a test
//! can inject.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use subscribe_types::{ApiError, ErrCode, MessageParseError, OneTimeMessage};

use super::{SandboxState, Seen, invalid_args, json, params, wx};
use crate::state::{AfterProcessing, Injected, TokenFault};

/// Compares a presented AppSecret with the app's in constant time (`subtle`), so response
/// timing tells a guesser nothing about how much of it was right.
fn same_secret(presented: &str, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(secret.as_bytes()).into()
}

pub(super) async fn require_post(State(s): State<SandboxState>, seen: Seen) -> Response {
    s.record(seen, Some(43002));
    wx(ErrCode::REQUIRE_POST, "require POST method")
}
pub(super) async fn require_get(State(s): State<SandboxState>, seen: Seen) -> Response {
    s.record(seen, Some(43001));
    wx(ErrCode::new(43001), "require GET method")
}
pub(super) fn token_answer(
    s: &SandboxState,
    seen: Seen,
    answer: Result<(String, u64), (ErrCode, &str)>,
) -> Response {
    match answer {
        Ok((token, expires_in)) => {
            s.record(seen, None);
            json(&serde_json::json!({"access_token": token, "expires_in": expires_in}))
        }
        Err((code, msg)) => {
            s.record(seen, Some(code.get()));
            wx(code, msg)
        }
    }
}
/// The answer of a token request under a token fault; `None` to process it (after a stall).
pub(super) async fn token_fault(s: &SandboxState, seen: &Seen) -> Option<Response> {
    let (fault, stall) = {
        let inner = s.lock();
        (inner.token_fault(s.now().mono), inner.faults.token_stall_ms.unwrap_or(3000))
    };
    let response = match fault? {
        TokenFault::Stall => {
            tokio::time::sleep(Duration::from_millis(stall)).await;
            return None;
        }
        TokenFault::Http502 => bad_gateway(),
        TokenFault::Drop => dropped(),
        TokenFault::Malformed => {
            ([(header::CONTENT_TYPE, "application/json")], "{\"access_token\":\"").into_response()
        }
        TokenFault::Busy => {
            s.record(seen.clone(), Some(-1));
            return Some(wx(ErrCode::SYSTEM_BUSY, "system error"));
        }
        TokenFault::Quota => {
            s.record(seen.clone(), Some(45009));
            return Some(wx(ErrCode::new(45009), "reach max api daily quota limit"));
        }
    };
    s.record(seen.clone(), None);
    Some(response)
}
pub(super) async fn classic_token(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
) -> Response {
    s.lock().stats.classic_token_requests += 1;
    if let Some(r) = token_fault(&s, &seen).await {
        return r;
    }
    let p = match params(q.as_deref().unwrap_or(""), ["grant_type", "appid", "secret"]) {
        Ok(p) => p,
        Err(e) => {
            let (code, msg) = invalid_args(&e);
            return token_answer(&s, seen, Err((code, &msg)));
        }
    };
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
        if !same_secret(secret, &app.secret) {
            return Err((ErrCode::INVALID_CREDENTIAL, "invalid credential, AppSecret error"));
        }
        s.lock().classic_token(&s.cfg, appid, s.now())
    })();
    token_answer(&s, seen, answer)
}
pub(super) async fn stable_token(State(s): State<SandboxState>, seen: Seen, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Req {
        grant_type: Option<String>,
        appid: Option<String>,
        secret: Option<String>,
        #[serde(default)]
        force_refresh: bool,
    }
    s.lock().stats.stable_token_requests += 1;
    if let Some(r) = token_fault(&s, &seen).await {
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
        if !same_secret(&secret, &app.secret) {
            return Err((ErrCode::INVALID_APPSECRET, "invalid appsecret"));
        }
        s.lock().stable_token(&s.cfg, &appid, req.force_refresh, s.now())
    })();
    token_answer(&s, seen, answer)
}
/// A response whose body fails: the connection is cut without a complete answer.
pub(super) fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox fault: connection dropped"))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
/// The faults one send request draws (every send endpoint's: the 2017 message, mini-program
/// messages, subscribe notifications): it is counted among the send requests, and its number
/// decides which "every Nth" fault strikes it.
pub(super) struct SendFaults {
    before: Option<Injected>,
    after: Option<AfterProcessing>,
    /// Latency, plus `stall_ms` when `stall_every` strikes: waited before processing.
    pub(super) delay: Duration,
    stall: Duration,
}

impl SendFaults {
    pub(super) fn draw(s: &SandboxState) -> Self {
        let mut inner = s.lock();
        inner.stats.send_requests += 1;
        let n = inner.stats.send_requests;
        Self {
            before: inner.fault_for(n),
            after: inner.after_fault_for(n),
            delay: inner.delay_for(n),
            stall: Duration::from_millis(inner.faults.stall_ms.unwrap_or(20_000)),
        }
    }

    /// The answer of a fault that strikes before the send is processed, if one does: the send
    /// is then not processed at all.
    pub(super) fn before(&self, s: &SandboxState, seen: &Seen) -> Option<Response> {
        let (errcode, response) = match self.before? {
            Injected::Drop => (None, dropped()),
            Injected::Http502 => (None, bad_gateway()),
            Injected::Busy => (Some(-1), wx(ErrCode::SYSTEM_BUSY, "system error")),
            Injected::Malformed => (None, malformed()),
        };
        s.record(seen.clone(), errcode);
        Some(response)
    }

    /// `answer`, the processed send's, as the fault that strikes after processing leaves it
    /// (`delivered`: the send was delivered; a lost answer of a delivery is counted).
    pub(super) async fn after(self, s: &SandboxState, answer: Response, delivered: bool) -> Response {
        let Some(how) = self.after else { return answer };
        if delivered {
            s.lock().stats.lost_after_delivery.count(how);
        }
        match how {
            AfterProcessing::Http502 => bad_gateway(),
            AfterProcessing::Drop => dropped(),
            AfterProcessing::Malformed => malformed(),
            AfterProcessing::Stall => {
                tokio::time::sleep(self.stall).await;
                answer
            }
        }
    }
}

fn bad_gateway() -> Response {
    (StatusCode::BAD_GATEWAY, "<html><body>502 Bad Gateway</body></html>").into_response()
}

/// A 200 whose JSON breaks off.
fn malformed() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "{\"errcode\":0,\"errm").into_response()
}

pub(super) async fn send(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let faults = SendFaults::draw(&s);
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if let Some(answer) = faults.before(&s, &seen) {
        return answer;
    }
    let p = params(q.as_deref().unwrap_or(""), ["access_token"]);
    let result = (|| {
        let owned = |(c, m): (ErrCode, &str)| (c, m.to_owned());
        let p = p.map_err(|e| invalid_args(&e))?;
        let appid =
            s.lock().use_token(p.get("access_token").map(String::as_str), s.now().mono).map_err(owned)?;
        let msg = check_send_body(&body).map_err(|e| (e.code(), e.message().to_owned()))?;
        s.lock().deliver(&s.cfg, &appid, &msg, s.now().wall).map_err(owned)
    })();
    let delivered = result.is_ok();
    let answer = match result {
        Ok(()) => {
            s.record(seen, Some(0));
            wx(ErrCode::OK, "ok")
        }
        Err((code, msg)) => {
            s.record(seen, Some(code.get()));
            wx(code, &msg)
        }
    };
    // The send was processed (and delivered, if it could be): now its answer may be lost.
    faults.after(&s, answer, delivered).await
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
pub fn check_send_body(body: &[u8]) -> Result<OneTimeMessage, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(ErrCode::EMPTY_POST_DATA, "empty post data"));
    }
    OneTimeMessage::from_json(body).map_err(|e| match e {
        MessageParseError::Invalid(e) => {
            ApiError::new(ErrCode::ARGUMENT_INVALID, format!("argument invalid! {}: {e}", e.field()))
        }
        _ => ApiError::new(ErrCode::DATA_FORMAT_ERROR, "data format error"),
    })
}
