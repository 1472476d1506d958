//! [`Outcome`]: what became of a send, typed from the client's answer (`SendError::kind()`),
//! with its HTTP status and JSON body.
//!
//! | outcome | status | body | when |
//! |---|---|---|---|
//! | `delivered` | 200 | `msgid` (notifications) | WeChat accepted the message |
//! | `refused` | 200 | `class`, `errcode`, `errmsg`, `field` (47003) | WeChat refused it for good: the user has no unused grant, the message or the template is wrong, an unclassified code |
//! | `unknown` | 200 | `cause`, `message` | it may have been delivered: never resent by the gateway |
//! | `not_sent` | 503 | `reason`, `retryable`, `message`, `errcode`/`errmsg` when WeChat gave one | certainly not delivered: no token, WeChat unreachable or busy, a quota |

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subscribe_client::{ErrorKind, SendError, UnknownCause};
use subscribe_types::ApiError;
use utoipa::ToSchema;

use crate::idempotency::StoredAnswer;

/// What became of a send.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    status: StatusCode,
    body: Body,
}

/// What became of a send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutcomeName {
    /// WeChat accepted the message.
    #[default]
    Delivered,
    /// WeChat refused it; nothing was delivered.
    Refused,
    /// It may have been delivered; the gateway never resends it.
    Unknown,
    /// Certainly not delivered (503).
    NotSent,
}

/// The answer's JSON, `outcome` first; absent fields are left out.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
#[schema(as = SendOutcome)]
pub(crate) struct Body {
    /// `delivered`, `refused`, `unknown` (200) or `not_sent` (503).
    outcome: OutcomeName,
    /// `delivered` notifications: the message's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    msgid: Option<u64>,
    /// `refused`: `user_refused`, `invalid`, `configuration` or `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, nullable = false)]
    class: Option<&'static str>,
    /// `unknown`: `probably_delivered`, `no_answer`, `server_error`, `unreadable_answer`,
    /// `undecodable_response`, `replay_refused`, `timeout`, `owner_lost` or `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, nullable = false)]
    cause: Option<&'static str>,
    /// `not_sent`: `no_token`, `wechat_unreachable`, `retry_later`, `token_rejected`,
    /// `wechat_http_status` or `not_sendable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, nullable = false)]
    reason: Option<&'static str>,
    /// `not_sent`: whether sending again may succeed without anyone fixing the setup.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    retryable: Option<bool>,
    /// WeChat's errcode, when it answered one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    errcode: Option<i64>,
    /// WeChat's errmsg, with `errcode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    errmsg: Option<String>,
    /// `refused` with errcode 47003: the field WeChat named.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    field: Option<String>,
    /// `unknown` and `not_sent`: what happened, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    message: Option<String>,
}

impl Body {
    /// `errcode` and `errmsg` of WeChat's answer.
    fn with_api(mut self, api: &ApiError) -> Self {
        self.errcode = Some(api.code().get());
        self.errmsg = Some(api.message().to_owned());
        self
    }
}

impl Outcome {
    /// WeChat accepted the message (`msgid`: a notification's).
    pub(crate) fn delivered(msgid: Option<u64>) -> Self {
        Self {
            status: StatusCode::OK,
            body: Body { outcome: OutcomeName::Delivered, msgid, ..Body::default() },
        }
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
                outcome.body = outcome.body.with_api(api);
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

    /// No token within the send's budget: nothing was sent.
    pub(crate) fn no_token_in_time(budget: Duration) -> Self {
        let body = Body {
            outcome: OutcomeName::NotSent,
            reason: Some("no_token"),
            retryable: Some(true),
            message: Some(format!(
                "no access token within {} ms (four fifths of the request timeout); nothing was sent",
                budget.as_millis()
            )),
            ..Body::default()
        };
        Self { status: StatusCode::SERVICE_UNAVAILABLE, body }
    }

    /// The send did not end within its budget: it may have reached WeChat.
    pub(crate) fn timed_out() -> Self {
        Self::unknown(
            "timeout",
            "the send did not end within the request timeout; it may have reached WeChat",
        )
    }

    fn unknown(cause: &'static str, message: &str) -> Self {
        let body = Body {
            outcome: OutcomeName::Unknown,
            cause: Some(cause),
            message: Some(message.to_owned()),
            ..Body::default()
        };
        Self { status: StatusCode::OK, body }
    }

    fn refused(kind: ErrorKind, api: &ApiError) -> Self {
        let class = match kind {
            ErrorKind::Refused => "user_refused",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Configuration => "configuration",
            _ => "other",
        };
        let body = Body {
            outcome: OutcomeName::Refused,
            class: Some(class),
            field: api.invalid_field().map(str::to_owned),
            ..Body::default()
        };
        Self { status: StatusCode::OK, body: body.with_api(api) }
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
        let mut body = Body {
            outcome: OutcomeName::NotSent,
            reason: Some(reason),
            retryable: Some(e.is_retryable()),
            message: Some(message),
            ..Body::default()
        };
        if let SendError::Api(api) = e {
            body = body.with_api(api);
        }
        Self { status: StatusCode::SERVICE_UNAVAILABLE, body }
    }

    /// `delivered`, `refused`, `unknown` or `not_sent`.
    pub(crate) fn name(&self) -> &'static str {
        match self.body.outcome {
            OutcomeName::Delivered => "delivered",
            OutcomeName::Refused => "refused",
            OutcomeName::Unknown => "unknown",
            OutcomeName::NotSent => "not_sent",
        }
    }

    /// Whether nothing was sent: a retry with the same `Idempotency-Key` may send.
    pub(crate) fn not_sent_at_all(&self) -> bool {
        self.body.outcome == OutcomeName::NotSent
    }

    /// WeChat's errcode, when the outcome carries one.
    pub(crate) fn errcode(&self) -> Option<i64> {
        self.body.errcode
    }

    /// The answer as an idempotency record keeps it: the same bytes as the first answer.
    pub(crate) fn stored(&self) -> StoredAnswer {
        // A struct of strings, numbers and booleans always serializes.
        let body = serde_json::to_string(&self.body).unwrap_or_default();
        StoredAnswer::new(self.status.as_u16(), body)
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use subscribe_client::TokenError;
    use subscribe_types::ErrCode;

    use serde_json::{Value, json};

    use super::*;

    /// The answer's status and JSON.
    fn answer(o: &Outcome) -> (StatusCode, Value) {
        (o.status, serde_json::to_value(&o.body).unwrap())
    }

    fn api(code: i64, msg: &str) -> ApiError {
        ApiError::new(ErrCode::new(code), msg)
    }

    #[test]
    fn each_kind_of_error_has_its_outcome_and_status() {
        let (status, refused) = answer(&Outcome::of_error(&SendError::Api(api(43101, "user refuse"))));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            refused,
            json!({"outcome": "refused", "class": "user_refused", "errcode": 43101, "errmsg": "user refuse"})
        );

        let (_, invalid) = answer(&Outcome::of_error(&SendError::Api(api(
            47003,
            "argument invalid! data.thing1.value invalid",
        ))));
        assert_eq!((&invalid["class"], &invalid["field"]), (&json!("invalid"), &json!("data.thing1.value")));

        let busy = Outcome::of_error(&SendError::Api(api(-1, "system error")));
        assert!(busy.not_sent_at_all());
        let (status, busy) = answer(&busy);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (&busy["outcome"], &busy["reason"], &busy["retryable"]),
            (&json!("not_sent"), &json!("retry_later"), &json!(true))
        );
        assert_eq!(busy["errcode"], -1);

        let unknown = Outcome::of_error(&SendError::OutcomeUnknown {
            cause: UnknownCause::ServerError { status: 502 },
            source: None,
        });
        assert!(!unknown.not_sent_at_all());
        let (status, unknown) = answer(&unknown);
        assert_eq!(
            (status, &unknown["outcome"], &unknown["cause"]),
            (StatusCode::OK, &json!("unknown"), &json!("server_error"))
        );

        let (_, probably) =
            answer(&Outcome::of_error(&SendError::ProbablyDelivered(api(43101, "user refuse"))));
        assert_eq!((&probably["cause"], &probably["errcode"]), (&json!("probably_delivered"), &json!(43101)));

        let (_, no_token) =
            answer(&Outcome::of_error(&SendError::Token(TokenError::HttpStatus { status: 502 })));
        assert_eq!((&no_token["outcome"], &no_token["reason"]), (&json!("not_sent"), &json!("no_token")));

        let (_, rejected) = answer(&Outcome::of_error(&SendError::Api(api(40001, "invalid credential"))));
        assert_eq!((&rejected["reason"], &rejected["retryable"]), (&json!("token_rejected"), &json!(false)));

        let (_, wrong_base) = answer(&Outcome::of_error(&SendError::HttpStatus { status: 404 }));
        assert_eq!(
            (&wrong_base["outcome"], &wrong_base["reason"]),
            (&json!("not_sent"), &json!("wechat_http_status"))
        );

        // Stored as answered: `outcome` first.
        let delivered = Outcome::delivered(Some(7));
        assert_eq!(delivered.stored(), StoredAnswer::new(200, r#"{"outcome":"delivered","msgid":7}"#));
        assert_eq!(
            Outcome::of_error(&SendError::Api(api(43101, "no"))).stored().body,
            r#"{"outcome":"refused","class":"user_refused","errcode":43101,"errmsg":"no"}"#
        );
    }
}
