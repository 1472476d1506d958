//! Turning results into the CLI's JSON and exit codes.

use std::process::ExitCode;

use subscribe_client::{SendError, SendReceipt, UnknownCause};

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything delivered / done: 0.
    Ok,
    /// Something failed or has an unknown outcome: 1.
    Failed,
    /// Invalid input, nothing sent: 2.
    Invalid,
}

impl Exit {
    pub(crate) fn code(self) -> ExitCode {
        match self {
            Self::Ok => ExitCode::SUCCESS,
            Self::Failed => ExitCode::from(1),
            Self::Invalid => ExitCode::from(2),
        }
    }

    /// The one stderr line for a single send's JSON, when it did not deliver.
    pub(crate) fn stderr_line(self, json: &serde_json::Value) -> Option<String> {
        (self != Self::Ok).then(|| {
            let status = json["status"].as_str().unwrap_or("failed");
            match (json["errcode"].as_i64(), json["errmsg"].as_str(), json["reason"].as_str()) {
                (Some(c), Some(m), _) => format!("{status}: errcode {c}: {m}"),
                (_, _, Some(r)) => format!("{status}: {r}"),
                _ => status.to_owned(),
            }
        })
    }
}

/// The error's message and its sources on one line (none of which holds a secret).
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// A send's result as JSON: `delivered`, `failed` (with `kind`, and `errcode`/`errmsg` where
/// WeChat answered) or `unknown`.
pub(crate) fn outcome_json(result: &Result<SendReceipt, SendError>) -> (serde_json::Value, Exit) {
    let e = match result {
        Ok(r) => return (serde_json::json!({"status": "delivered", "attempts": r.attempts}), Exit::Ok),
        Err(e) => e,
    };
    let mut out = if e.outcome_known() {
        serde_json::json!({"status": "failed", "kind": kind(e)})
    } else {
        serde_json::json!({"status": "unknown", "kind": kind(e), "reason": one_line(e)})
    };
    let api = match e {
        SendError::Api(a) | SendError::ProbablyDelivered(a) => Some(a),
        SendError::Token(t) => t.api_error(),
        _ => None,
    };
    if let Some(a) = api {
        out["errcode"] = a.code().get().into();
        out["errmsg"] = a.message().into();
    } else if e.outcome_known() {
        out["reason"] = one_line(e).into();
    }
    if let SendError::HttpStatus { status }
    | SendError::OutcomeUnknown { cause: UnknownCause::ServerError { status }, .. } = e
    {
        out["http_status"] = (*status).into();
    }
    (out, Exit::Failed)
}

fn kind(e: &SendError) -> &'static str {
    match e {
        SendError::Api(_) => "api",
        SendError::ProbablyDelivered(_) => "probably_delivered",
        SendError::OutcomeUnknown { .. } => "outcome_unknown",
        SendError::Transport(_) => "transport",
        SendError::HttpStatus { .. } => "http_status",
        SendError::Token(_) => "token",
        SendError::BodyNotSerializable => "body_not_serializable",
        _ => "other",
    }
}
