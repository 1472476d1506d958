//! [`SendError`]: what a send (or any call through the client) met, and [`UnknownCause`] when
//! its outcome is unknown.

use subscribe_transport::{BoxError, TransportError, TransportErrorKind};
use subscribe_types::{ApiError, ErrCode, ErrorClass};

use super::{ErrorKind, TokenError};

/// A send (or any [`Client::execute`](crate::Client::execute)) failed.
///
/// Nothing in it holds a secret or a URL; `Display` never prints its source. Whether the
/// message may have been delivered is the first thing to know:
/// [`outcome_known`](Self::outcome_known) is `false` for [`OutcomeUnknown`](Self::OutcomeUnknown)
/// and [`ProbablyDelivered`](Self::ProbablyDelivered) only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// WeChat answered with a non-zero `errcode` (after the replays the policy allows).
    #[error(transparent)]
    Api(ApiError),
    /// WeChat answered 43101 ("user refused") to a replay after an attempt that may have
    /// delivered: the message was probably delivered by that earlier attempt. Do not resend.
    #[error("probably delivered by an earlier attempt (the replay was answered {})", .0.code())]
    ProbablyDelivered(ApiError),
    /// The request may have reached WeChat but no usable answer came back. Whether the message
    /// was delivered is unknown; it was not replayed.
    #[error("outcome unknown: {cause}")]
    OutcomeUnknown {
        /// What happened.
        cause: UnknownCause,
        /// The transport or decode error behind it, when there was one.
        #[source]
        source: Option<BoxError>,
    },
    /// The endpoint's body could not be written as JSON (a `Serialize` implementation
    /// failed); nothing was sent.
    #[error("the request body could not be serialized")]
    BodyNotSerializable,
    /// The request never reached WeChat (after the policy's replays): nothing was delivered.
    #[error("request not sent")]
    Transport(#[source] TransportError),
    /// WeChat (or a proxy) answered with an HTTP status that means the request was not
    /// processed (not 200, not 5xx).
    #[error("unexpected HTTP status {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// No access token could be had; nothing was sent.
    #[error("no access token")]
    Token(#[from] TokenError),
}

/// Why a call's outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownCause {
    /// The request left and no answer came back (timeout, connection lost).
    NoAnswer(TransportErrorKind),
    /// An HTTP 5xx: a proxy or WeChat failed, maybe after acting.
    ServerError {
        /// The status code.
        status: u16,
    },
    /// A 200 whose body is not WeChat's `{errcode, errmsg}` envelope.
    UnreadableAnswer,
    /// `errcode` 0, but the rest of the answer did not decode as the endpoint's response.
    UndecodableResponse,
    /// An earlier attempt's answer was lost, and WeChat refused its replay: the earlier
    /// attempt may have acted all the same.
    ReplayRefused,
}

impl std::fmt::Display for UnknownCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAnswer(kind) => write!(f, "no answer after the request left ({kind})"),
            Self::ServerError { status } => write!(f, "HTTP {status}"),
            Self::UnreadableAnswer => f.write_str("unreadable answer"),
            Self::UndecodableResponse => f.write_str("errcode 0, but the rest of the answer did not decode"),
            Self::ReplayRefused => {
                f.write_str("an earlier attempt's answer was lost and its replay was refused")
            }
        }
    }
}

impl SendError {
    /// WeChat's `errcode`, when WeChat answered with one.
    pub fn api_code(&self) -> Option<ErrCode> {
        match self {
            Self::Api(e) | Self::ProbablyDelivered(e) => Some(e.code()),
            Self::Token(t) => t.api_error().map(ApiError::code),
            _ => None,
        }
    }

    /// How WeChat's code classifies, when there is one.
    pub fn retry_class(&self) -> Option<ErrorClass> {
        match self {
            Self::Api(e) => e.code().class(),
            Self::Token(t) => t.api_error().and_then(|e| e.code().class_at_token_endpoint()),
            _ => None,
        }
    }

    /// What to do about it; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api(e) => ErrorKind::of_api(e),
            Self::ProbablyDelivered(_) => ErrorKind::ProbablyDelivered,
            Self::OutcomeUnknown { .. } => ErrorKind::Unknown,
            Self::BodyNotSerializable => ErrorKind::Invalid,
            Self::Transport(e) if e.kind() == TransportErrorKind::InvalidRequest => ErrorKind::Invalid,
            // The request never left; or (408, 429) the server or a proxy turned it away before
            // processing it.
            Self::Transport(_) | Self::HttpStatus { status: 408 | 429 } => ErrorKind::Retryable,
            // Any other status that is not WeChat's 200: a wrong `api_base`, a proxy in the way.
            Self::HttpStatus { .. } => ErrorKind::Configuration,
            Self::Token(t) => t.kind(),
        }
    }

    /// `false` when the message may or may not have been delivered ([`OutcomeUnknown`]) or was
    /// probably delivered ([`ProbablyDelivered`]); `true` when it certainly was not.
    ///
    /// [`OutcomeUnknown`]: Self::OutcomeUnknown
    /// [`ProbablyDelivered`]: Self::ProbablyDelivered
    pub fn outcome_known(&self) -> bool {
        !self.kind().may_have_delivered()
    }

    /// Whether sending the same message again later could succeed and cannot deliver it twice
    /// (`kind() == ErrorKind::Retryable`): the request never left, WeChat was busy (`-1`), a
    /// quota will reset, or no token could be had for a transient reason.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Retryable
    }

    /// Whether WeChat refused because no unused authorization exists (43101, not after a
    /// replay; `kind() == ErrorKind::Refused`): ask the user to authorize again.
    pub fn is_refused_by_user(&self) -> bool {
        self.kind() == ErrorKind::Refused
    }
}
