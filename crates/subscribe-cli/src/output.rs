//! Turning results into the CLI's JSON and exit codes.

use std::process::ExitCode;

use subscribe_client::{LibraryError, SendError, SendReceipt, UnknownCause};

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

/// One result line: a send's outcome (`delivered`, `failed` with `kind` and `errcode`/`errmsg`
/// where WeChat answered, or `unknown`) or an `invalid` input line, with the line number and
/// recipient in a batch. Written straight to JSON, in this field order.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Outcome<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) touser: Option<&'a str>,
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attempts: Option<u32>,
    /// A subscribe notification's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) msgid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) errmsg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl<'a> Outcome<'a> {
    /// A send's result.
    pub(crate) fn of(result: &Result<SendReceipt, SendError>) -> Self {
        match result {
            Ok(r) => Self { status: "delivered", attempts: Some(r.attempts), ..Self::default() },
            Err(e) => Self::failure(e, e.outcome_known(), e),
        }
    }

    /// A failed template-library call: `failed`, or `unknown` when an `addtemplate` or
    /// `deltemplate` may have happened (a read's lost answer changed nothing: `failed`).
    pub(crate) fn of_library(e: &LibraryError) -> Self {
        let mut out = Self::failure(e.execute_error(), e.outcome_known(), e);
        // A read whose answer was lost failed: no answer, nothing whose outcome is unknown.
        if e.outcome_known() && matches!(e.execute_error(), SendError::OutcomeUnknown { .. }) {
            out.kind = Some("no_answer");
        }
        out
    }

    /// A call that failed with `e` (whose outcome is `known` or not), described as `shown`.
    fn failure(e: &SendError, known: bool, shown: &dyn std::error::Error) -> Self {
        let api = match e {
            SendError::Api(a) | SendError::ProbablyDelivered(a) => Some(a),
            SendError::Token(t) => t.api_error(),
            _ => None,
        };
        let http_status = match e {
            SendError::HttpStatus { status }
            | SendError::OutcomeUnknown { cause: UnknownCause::ServerError { status }, .. } => Some(*status),
            _ => None,
        };
        Self {
            status: if known { "failed" } else { "unknown" },
            kind: Some(kind(e)),
            errcode: api.map(|a| a.code().get()),
            errmsg: api.map(|a| a.message().to_owned()),
            // The reason in words, unless WeChat's own errmsg says it (an unknown outcome
            // always carries it).
            reason: (api.is_none() || !known).then(|| one_line(shown)),
            http_status,
            ..Self::default()
        }
    }

    /// An input line that was not sent.
    pub(crate) fn invalid(touser: Option<&'a str>, error: String) -> Self {
        Self { touser, status: "invalid", error: Some(error), ..Self::default() }
    }

    /// How a single send ends the command.
    pub(crate) fn exit(&self) -> Exit {
        if self.status == "delivered" { Exit::Ok } else { Exit::Failed }
    }

    /// The JSON line.
    pub(crate) fn to_json(&self) -> String {
        let mut line = Vec::with_capacity(160);
        self.write_json(&mut line);
        String::from_utf8(line).unwrap_or_default()
    }

    /// Appends the JSON line (without its newline) to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, self).is_err() {
            // Not reachable with these field types; a line is still owed.
            out.extend_from_slice(br#"{"status":"failed"}"#);
        }
    }

    /// The one stderr line for a single send that did not deliver.
    pub(crate) fn stderr_line(&self) -> Option<String> {
        (self.status != "delivered").then(|| match (self.errcode, &self.errmsg, &self.reason) {
            (Some(c), Some(m), _) => format!("{}: errcode {c}: {m}", self.status),
            (_, _, Some(r)) => format!("{}: {r}", self.status),
            _ => self.status.to_owned(),
        })
    }
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

/// Prints a send's outcome line (with `msgid` for a notification) and its stderr line.
pub(crate) fn report(result: Result<(SendReceipt, Option<u64>), SendError>) -> Exit {
    let msgid = result.as_ref().ok().and_then(|(_, m)| *m);
    let receipt = result.map(|(r, _)| r);
    let outcome = Outcome { msgid, ..Outcome::of(&receipt) };
    println!("{}", outcome.to_json());
    if let Some(line) = outcome.stderr_line() {
        eprintln!("wxsub: {line}");
    }
    outcome.exit()
}
