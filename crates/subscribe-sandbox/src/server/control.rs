//! The control API under `/sandbox/api/`: state, log, faults, tokens, grants, reset.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use subscribe_types::Scene;

use super::{SandboxState, bad_request, json};
use crate::state::Faults;

pub(super) async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": format!("no such endpoint: {}", uri.path())}).to_string(),
    )
        .into_response()
}
pub(super) async fn inbox_json(State(s): State<SandboxState>, Path(openid): Path<String>) -> Response {
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
pub(super) async fn state_json(State(s): State<SandboxState>) -> Response {
    let (classic, stable) = s.lock().live_tokens(s.clock.now());
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
pub(super) async fn log_json(State(s): State<SandboxState>) -> Response {
    json(&s.log())
}
pub(super) async fn reset(State(s): State<SandboxState>) -> Response {
    s.reset();
    json(&serde_json::json!({"reset": true}))
}
pub(super) async fn get_faults(State(s): State<SandboxState>) -> Response {
    json(&s.faults())
}
pub(super) async fn set_faults(State(s): State<SandboxState>, body: Bytes) -> Response {
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
pub(super) async fn revoke(State(s): State<SandboxState>, body: Bytes) -> Response {
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
pub(super) async fn expire(State(s): State<SandboxState>) -> Response {
    s.expire_tokens();
    json(&serde_json::json!({"expired": true}))
}
pub(super) async fn add_grant(State(s): State<SandboxState>, body: Bytes) -> Response {
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
    let added = s.lock().grant(&req.appid, &req.openid, &req.template_id, req.scene);
    json(&serde_json::json!({"added": added}))
}

/// `POST /sandbox/api/push` with `{"appid","url","token","aes_key"?,"mode","format"?}`: an app's
/// server URL, as its console sets it.
pub(super) async fn configure_push(State(s): State<SandboxState>, body: Bytes) -> Response {
    let Ok(settings) = serde_json::from_slice::<crate::PushSettings>(&body) else {
        return bad_request(
            "expected {\"appid\",\"url\",\"token\",\"aes_key\"?,\"mode\":\"plain|compatible|safe\",\"format\"?:\"xml|json\"}",
        );
    };
    match s.configure_push(&settings) {
        Ok(()) => json(&serde_json::json!({"ok": true})),
        Err(e) => bad_request(&e),
    }
}
/// `GET /sandbox/api/pushes`: the pushes made and their answers.
pub(super) async fn pushes_json(State(s): State<SandboxState>) -> Response {
    json(&s.pushes())
}
