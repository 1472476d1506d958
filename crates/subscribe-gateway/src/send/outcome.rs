//! [`Outcome`]: what became of a send, typed from the client's answer (`SendError::kind()`),
//! with its HTTP status and JSON body.
//!
//! | outcome | status | body | when |
//! |---|---|---|---|
//! | `delivered` | 200 | `msgid` (notifications) | WeChat accepted the message |
//! | `refused` | 200 | `class`, `errcode`, `errmsg`, `field` (47003) | WeChat refused it for good: the user has no unused grant, the message or the template is wrong, an unclassified code |
//! | `unknown` | 200 | `cause`, `message` | it may have been delivered: never resent by the gateway |
//! | `not_sent` | 503 | `reason`, `retryable`, `message`, `errcode`/`errmsg` when WeChat gave one | certainly not delivered: no token, WeChat unreachable or busy, a quota |

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use subscribe_client::{ErrorKind, SendError, UnknownCause};
use subscribe_types::ApiError;

use crate::idempotency::StoredAnswer;

/// What became of a send.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    name: &'static str,
    status: StatusCode,
    body: Value,
}

impl Outcome {
    /// WeChat accepted the message (`msgid`: a notification's).
    pub(crate) fn delivered(msgid: Option<u64>) -> Self {
        let mut body = json!({"outcome": "delivered"});
        if let Some(id) = msgid {
            body["msgid"] = id.into();
        }
        Self { name: "delivered", status: StatusCode::OK, body }
    }

    /// The outcome the client's error means.
    pub(crate) fn of_error(e: &SendError) -> Self {
        let kind = e.kind();
        if kind.may_have_delivered() {
            let cause = match e {
                SendError::ProbablyDelivered(_) => "probably_delivered",
                SendError::OutcomeUnknown { cause, .. } => match cause {
                    UnknownCause::NoAnswer(_) => "no_answer",
                    UnknownCause::ServerError { .. } => "server_error",
                    UnknownCause::UnreadableAnswer => "unreadable_answer",
                    UnknownCause::UndecodableResponse => "undecodable_response",
                    UnknownCause::ReplayRefused => "replay_refused",
                    _ => "other",
                },
                _ => "other",
            };
            let mut outcome = Self::unknown(cause, &e.to_string());
            if let SendError::ProbablyDelivered(api) = e {
                add_api(&mut outcome.body, api);
            }
            return outcome;
        }
        match (kind, e) {
            (ErrorKind::Retryable | ErrorKind::Token, _) | (_, SendError::Token(_)) => Self::not_sent(e),
            (_, SendError::Api(api)) => Self::refused(kind, api),
            // Nothing left: a request that could not be built, a status that is not WeChat's.
            _ => Self::not_sent(e),
        }
    }

    /// The claim's owner died before it stored an answer: the message may have been sent.
    pub(crate) fn owner_lost() -> Self {
        Self::unknown(
            "owner_lost",
            "the request that claimed this Idempotency-Key ended (its gateway stopped or lost its store) \
             before its outcome was recorded; the message may have been sent, and is not sent again",
        )
    }

    /// The send did not end within its budget: it may have reached WeChat.
    pub(crate) fn timed_out() -> Self {
        Self::unknown(
            "timeout",
            "the send did not end within the request timeout; it may have reached WeChat",
        )
    }

    fn unknown(cause: &'static str, message: &str) -> Self {
        let body = json!({"outcome": "unknown", "cause": cause, "message": message});
        Self { name: "unknown", status: StatusCode::OK, body }
    }

    fn refused(kind: ErrorKind, api: &ApiError) -> Self {
        let class = match kind {
            ErrorKind::Refused => "user_refused",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Configuration => "configuration",
            _ => "other",
        };
        let mut body = json!({"outcome": "refused", "class": class});
        add_api(&mut body, api);
        if let Some(field) = api.invalid_field() {
            body["field"] = field.into();
        }
        Self { name: "refused", status: StatusCode::OK, body }
    }

    fn not_sent(e: &SendError) -> Self {
        let (reason, message) = match e {
            SendError::Token(t) => ("no_token", format!("{e}: {t}")),
            SendError::Transport(_) => ("wechat_unreachable", e.to_string()),
            // WeChat rejected a token the client had just refreshed: something else refreshes
            // with the same AppSecret.
            SendError::Api(_) if e.kind() == ErrorKind::Token => ("token_rejected", e.to_string()),
            SendError::Api(_) => ("retry_later", e.to_string()),
            SendError::HttpStatus { .. } => ("wechat_http_status", e.to_string()),
            _ => ("not_sendable", e.to_string()),
        };
        let mut body = json!({
            "outcome": "not_sent",
            "reason": reason,
            "retryable": e.is_retryable(),
            "message": message,
        });
        if let SendError::Api(api) = e {
            add_api(&mut body, api);
        }
        Self { name: "not_sent", status: StatusCode::SERVICE_UNAVAILABLE, body }
    }

    /// `delivered`, `refused`, `unknown` or `not_sent`.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Whether nothing was sent: a retry with the same `Idempotency-Key` may send.
    pub(crate) fn not_sent_at_all(&self) -> bool {
        self.name == "not_sent"
    }

    /// WeChat's errcode, when the outcome carries one.
    pub(crate) fn errcode(&self) -> Option<i64> {
        self.body.get("errcode").and_then(Value::as_i64)
    }

    /// The answer as an idempotency record keeps it.
    pub(crate) fn stored(&self) -> StoredAnswer {
        StoredAnswer::new(self.status.as_u16(), self.body.to_string())
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// `errcode` and `errmsg` of WeChat's answer.
fn add_api(body: &mut Value, api: &ApiError) {
    if let Value::Object(map) = body {
        let fields: Map<String, Value> =
            [("errcode".to_owned(), api.code().get().into()), ("errmsg".to_owned(), api.message().into())]
                .into_iter()
                .collect();
        map.extend(fields);
    }
}

#[cfg(test)]
mod tests {
    use subscribe_client::TokenError;
    use subscribe_types::ErrCode;

    use super::*;

    fn api(code: i64, msg: &str) -> ApiError {
        ApiError::new(ErrCode::new(code), msg)
    }

    #[test]
    fn each_kind_of_error_has_its_outcome_and_status() {
        let refused = Outcome::of_error(&SendError::Api(api(43101, "user refuse to accept the msg")));
        assert_eq!((refused.name(), refused.status), ("refused", StatusCode::OK));
        assert_eq!(refused.body["class"], "user_refused");
        assert_eq!(refused.body["errcode"], 43101);

        let invalid =
            Outcome::of_error(&SendError::Api(api(47003, "argument invalid! data.thing1.value invalid")));
        assert_eq!(invalid.body["class"], "invalid");
        assert_eq!(invalid.body["field"], "data.thing1.value");

        let busy = Outcome::of_error(&SendError::Api(api(-1, "system error")));
        assert_eq!((busy.name(), busy.status), ("not_sent", StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            (busy.body["reason"].as_str(), busy.body["retryable"].as_bool()),
            (Some("retry_later"), Some(true))
        );
        assert!(busy.not_sent_at_all());

        let unknown = Outcome::of_error(&SendError::OutcomeUnknown {
            cause: UnknownCause::ServerError { status: 502 },
            source: None,
        });
        assert_eq!((unknown.name(), unknown.status), ("unknown", StatusCode::OK));
        assert_eq!(unknown.body["cause"], "server_error");
        assert!(!unknown.not_sent_at_all());

        let probably =
            Outcome::of_error(&SendError::ProbablyDelivered(api(43101, "user refuse to accept the msg")));
        assert_eq!(
            (probably.name(), probably.body["cause"].as_str()),
            ("unknown", Some("probably_delivered"))
        );

        let no_token = Outcome::of_error(&SendError::Token(TokenError::HttpStatus { status: 502 }));
        assert_eq!((no_token.name(), no_token.body["reason"].as_str()), ("not_sent", Some("no_token")));

        let rejected = Outcome::of_error(&SendError::Api(api(40001, "invalid credential")));
        assert_eq!((rejected.name(), rejected.body["reason"].as_str()), ("not_sent", Some("token_rejected")));
        assert_eq!(rejected.body["retryable"], false);

        let wrong_base = Outcome::of_error(&SendError::HttpStatus { status: 404 });
        assert_eq!(
            (wrong_base.name(), wrong_base.body["reason"].as_str()),
            ("not_sent", Some("wechat_http_status"))
        );

        let delivered = Outcome::delivered(Some(7));
        assert_eq!(delivered.stored(), StoredAnswer::new(200, r#"{"msgid":7,"outcome":"delivered"}"#));
    }
}
