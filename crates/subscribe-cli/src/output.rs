//! Turning results into the CLI's JSON and exit codes.

use std::error::Error as _;
use std::process::ExitCode;

use subscribe_client::{Error, SendReceipt};

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
pub(crate) fn one_line(e: &Error) -> String {
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
pub(crate) fn outcome_json(result: &Result<SendReceipt, Error>) -> (serde_json::Value, Exit) {
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
        Error::Api(a) | Error::ProbablyDelivered(a) => Some(a),
        Error::Token(t) => t.api_error(),
        _ => None,
    };
    if let Some(a) = api {
        out["errcode"] = a.code().get().into();
        out["errmsg"] = a.message().into();
    } else if e.outcome_known() {
        out["reason"] = one_line(e).into();
    }
    if let Error::HttpStatus { status } = e {
        out["http_status"] = (*status).into();
    }
    (out, Exit::Failed)
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Api(_) => "api",
        Error::ProbablyDelivered(_) => "probably_delivered",
        Error::OutcomeUnknown { .. } => "outcome_unknown",
        Error::Transport(_) => "transport",
        Error::HttpStatus { .. } => "http_status",
        Error::Token(_) => "token",
        Error::Validation(_) => "validation",
        Error::Authorization(_) => "authorization",
        _ => "other",
    }
}
