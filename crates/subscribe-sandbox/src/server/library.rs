//! The template library under `/wxaapi/newtmpl/`: the public templates, and an app's own
//! templates added and deleted, with WeChat's errcodes.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use subscribe_types::ErrCode;

use super::subscribe::{answer, app_of};
use super::{SandboxState, Seen, invalid_args, params};
use crate::library::{self, Refusal};

/// A library call: the token checked, then `f` with the app and the query.
fn library_call(
    s: &SandboxState,
    seen: Seen,
    query: Option<&str>,
    f: impl FnOnce(&SandboxState, &str, &std::collections::HashMap<String, String>) -> Result<Value, Refusal>,
) -> Response {
    // Every parameter a library call reads.
    let result = params(query.unwrap_or(""), ["access_token", "ids", "start", "limit", "tid"])
        .map_err(|e| invalid_args(&e))
        .and_then(|q| app_of(s, &q).and_then(|appid| f(s, &appid, &q)));
    answer(s, seen, result)
}

pub(super) async fn get_category(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
) -> Response {
    library_call(&s, seen, q.as_deref(), |_, _, _| Ok(library::categories()))
}

pub(super) async fn get_titles(State(s): State<SandboxState>, seen: Seen, RawQuery(q): RawQuery) -> Response {
    library_call(&s, seen, q.as_deref(), |_, _, q| library::titles(q))
}

pub(super) async fn get_keywords(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
) -> Response {
    library_call(&s, seen, q.as_deref(), |_, _, q| library::keywords(q))
}

pub(super) async fn get_templates(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
) -> Response {
    library_call(&s, seen, q.as_deref(), |s, appid, _| {
        let data: Vec<Value> =
            s.lock().subscriptions.templates(appid).iter().map(library::PrivateTemplate::to_json).collect();
        Ok(serde_json::json!({"errcode": 0, "errmsg": "ok", "data": data}))
    })
}

fn json_body(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|_| (ErrCode::DATA_FORMAT_ERROR, "data format error".to_owned()))
}

pub(super) async fn add_template(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    library_call(&s, seen, q.as_deref(), |s, appid, _| {
        let id = s.lock().subscriptions.add_template(appid, &json_body(&body)?)?;
        Ok(serde_json::json!({"errcode": 0, "errmsg": "ok", "priTmplId": id}))
    })
}

pub(super) async fn del_template(
    State(s): State<SandboxState>,
    seen: Seen,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    library_call(&s, seen, q.as_deref(), |s, appid, _| {
        let body = json_body(&body)?;
        let id = body.get("priTmplId").and_then(Value::as_str).unwrap_or_default();
        s.lock().subscriptions.delete_template(appid, id)?;
        Ok(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
    })
}
