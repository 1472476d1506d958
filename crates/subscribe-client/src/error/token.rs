//! [`TokenError`]: no access token could be had, and [`TokenRejection`], why a token endpoint
//! refused.

use std::time::Duration;

use subscribe_transport::{TransportError, TransportErrorKind};
use subscribe_types::{ApiError, DecodeError, TokenEndpointFailure, ValidationError};

use super::ErrorKind;
use crate::token::ExternalSourceError;

/// Why a token endpoint refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRejection {
    /// 40013: the AppID is wrong.
    InvalidAppId,
    /// 40001 or 40125 at the token endpoint, 41004: the AppSecret is wrong or missing.
    InvalidSecret,
    /// 40164 or 61004: this machine's IP is not in the account's whitelist.
    IpNotWhitelisted {
        /// The caller IP WeChat reported, when it did.
        ip: Option<String>,
    },
    /// 40243: the AppSecret is frozen.
    SecretFrozen,
    /// 45009/45011: the token endpoint's quota is used up.
    QuotaExceeded,
    /// -1: WeChat was busy. Not a configuration problem: answered with backoff, not a
    /// cool-down.
    Busy,
    /// Any other code.
    Other,
}

impl TokenRejection {
    /// The refusal `e` of a token endpoint, by the errcode table's meaning of its code there.
    pub(crate) fn of(e: &ApiError) -> Self {
        match e.code().at_token_endpoint() {
            Some(TokenEndpointFailure::InvalidAppId) => Self::InvalidAppId,
            Some(TokenEndpointFailure::InvalidSecret) => Self::InvalidSecret,
            Some(TokenEndpointFailure::IpNotWhitelisted) => {
                Self::IpNotWhitelisted { ip: e.reported_ip().map(str::to_owned) }
            }
            Some(TokenEndpointFailure::SecretFrozen) => Self::SecretFrozen,
            Some(TokenEndpointFailure::QuotaExceeded) => Self::QuotaExceeded,
            Some(TokenEndpointFailure::Busy) => Self::Busy,
            _ => Self::Other,
        }
    }

    /// Whether the client pauses token requests for the cool-down after this answer
    /// (everything but `Busy`, which backs off like an outage): retrying a misconfiguration
    /// at once only burns the daily token quota.
    pub fn starts_cooldown(&self) -> bool {
        !matches!(self, Self::Busy)
    }
}

impl std::fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidAppId => f.write_str("the AppID is invalid"),
            Self::InvalidSecret => f.write_str("the AppSecret is invalid"),
            Self::IpNotWhitelisted { ip: Some(ip) } => write!(f, "caller IP {ip} is not in the IP whitelist"),
            Self::IpNotWhitelisted { ip: None } => f.write_str("the caller IP is not in the IP whitelist"),
            Self::SecretFrozen => f.write_str("the AppSecret is frozen"),
            Self::QuotaExceeded => f.write_str("the token quota is used up"),
            Self::Busy => f.write_str("WeChat was busy"),
            Self::Other => f.write_str("the token endpoint refused"),
        }
    }
}

/// No access token could be had. Nothing in it holds the token endpoint's body, a token or the
/// AppSecret.
///
/// Cheap to clone: one refresh attempt's failure is handed to every caller that waited for it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token endpoint refused; see `reason` for what to fix.
    #[error("token endpoint refused: {reason} (errcode {})", error.code())]
    Rejected {
        /// What is wrong.
        reason: TokenRejection,
        /// WeChat's answer, `errmsg` included.
        error: ApiError,
    },
    /// A recent refusal paused token requests; this call did not contact WeChat.
    #[error("token requests paused for {remaining:?} after: {reason} (errcode {})", error.code())]
    CoolingDown {
        /// What is wrong.
        reason: TokenRejection,
        /// The refusal that started the pause.
        error: ApiError,
        /// Time left in the pause.
        remaining: Duration,
    },
    /// The token endpoint handed back the very token WeChat had just rejected, and a forced
    /// refresh is not allowed now (WeChat allows 20 a day, 30 s apart).
    #[error("the token endpoint returned the rejected token again and force_refresh is not allowed now")]
    RejectedTokenReissued,
    /// The token request never reached WeChat, got no answer, or no answer in time.
    #[error("token request failed")]
    Transport(#[source] TransportError),
    /// The token endpoint answered with an unexpected HTTP status.
    #[error("token endpoint answered HTTP {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The token endpoint's answer was not a token (decode errors keep no body).
    #[error("token response could not be read")]
    Decode(#[source] DecodeError),
    /// The answer lacked a field or broke a rule.
    #[error("token response is invalid")]
    Invalid(#[source] ValidationError),
    /// The external token source failed or did not answer in time.
    #[error("external token source failed")]
    External(#[source] ExternalSourceError),
    /// Another instance sharing the token store failed to get a token and asked the fleet to
    /// wait before the next attempt: this instance did not contact the token source.
    #[error("another instance's token refresh failed ({reason}); next attempt in {remaining:?}")]
    HeldOff {
        /// Time left before the fleet's next attempt.
        remaining: Duration,
        /// What that instance's attempt met, in words (never a secret).
        reason: String,
    },
    /// The token source kept failing for as long as this call could wait (`token_wait`), or
    /// its next attempt falls after that. [`last`](Self::last) is what the last attempt met.
    #[error("no access token within {waited:?} ({attempts} failed attempts)")]
    Unavailable {
        /// How long this call waited.
        waited: Duration,
        /// Failed attempts seen while waiting.
        attempts: u32,
        /// Time until the next attempt, when one is planned.
        next_attempt_in: Option<Duration>,
        /// What the last attempt met; `None` when the first attempt was still running.
        #[source]
        last: Option<Box<TokenError>>,
    },
}

impl TokenError {
    /// WeChat's answer, when the token endpoint gave one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Rejected { error, .. } | Self::CoolingDown { error, .. } => Some(error),
            Self::Unavailable { last: Some(last), .. } => last.api_error(),
            _ => None,
        }
    }

    /// Why WeChat refused, when it did.
    pub fn rejection(&self) -> Option<&TokenRejection> {
        match self {
            Self::Rejected { reason, .. } | Self::CoolingDown { reason, .. } => Some(reason),
            Self::Unavailable { last: Some(last), .. } => last.rejection(),
            _ => None,
        }
    }

    /// What the last attempt met, for [`Unavailable`](Self::Unavailable); the error itself
    /// otherwise.
    pub fn last(&self) -> Option<&TokenError> {
        match self {
            Self::Unavailable { last, .. } => last.as_deref(),
            other => Some(other),
        }
    }

    /// What to do about it: `Retryable` when trying again later may work by itself
    /// ([`is_transient`](Self::is_transient)), `Token` when a person must act.
    pub fn kind(&self) -> ErrorKind {
        if self.is_transient() { ErrorKind::Retryable } else { ErrorKind::Token }
    }

    /// Whether trying again later may work without anyone changing the configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Rejected { reason, .. } | Self::CoolingDown { reason, .. } => {
                matches!(reason, TokenRejection::Busy | TokenRejection::QuotaExceeded)
            }
            Self::Transport(e) => e.kind() != TransportErrorKind::InvalidRequest,
            Self::External(_)
            | Self::HttpStatus { .. }
            | Self::Decode(_)
            | Self::HeldOff { .. }
            | Self::Unavailable { .. } => true,
            Self::RejectedTokenReissued | Self::Invalid(_) => false,
        }
    }

    /// Whether this failure starts the cool-down (a refusal that only a configuration change
    /// fixes, or a used-up quota) rather than the backoff of an outage.
    pub(crate) fn starts_cooldown(&self) -> bool {
        matches!(self, Self::Rejected { reason, .. } if reason.starts_cooldown())
    }

    /// Whether another attempt cannot help: a cool-down, a request that cannot be built, the
    /// rejected token handed back. Everything else is an outage, answered with backoff.
    pub(crate) fn is_final(&self) -> bool {
        match self {
            Self::Rejected { reason, .. } => reason.starts_cooldown(),
            Self::CoolingDown { .. } | Self::RejectedTokenReissued => true,
            Self::Transport(e) => e.kind() == TransportErrorKind::InvalidRequest,
            _ => false,
        }
    }
}
