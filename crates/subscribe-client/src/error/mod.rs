//! The client's errors, one per operation: [`SendError`], [`LibraryError`], [`TokenError`],
//! [`AuthorizationError`], [`RecordError`], [`ConfigError`], and the one [`ErrorKind`] each of
//! them answers with, so a caller acts on an error without matching variants or errcodes.

mod authorization;
mod config;
mod library;
mod send;
mod token;

use subscribe_types::{ApiError, ErrorClass};

pub use authorization::{AuthorizationError, RecordError};
pub use config::ConfigError;
pub use library::{LibraryCall, LibraryError};
pub use send::{SendError, UnknownCause};
pub use token::{TokenError, TokenRejection};

/// What to do about an error: every operation's error answers [`kind()`](SendError::kind) with
/// one of these, so acting on an error needs no variant match and no errcode. A delivered
/// message is `Ok`, so there is no "delivered" kind.
///
/// | kind | what happened | was anything delivered? | you |
/// |---|---|---|---|
/// | `Refused` | 43101: the user has no unused authorization | no | ask the user to authorize again |
/// | `ProbablyDelivered` | 43101 to a replay of an attempt that may have delivered | probably | treat as delivered; never resend |
/// | `Unknown` | the request may have reached WeChat; no usable answer came back | maybe | mark for review; never resend automatically |
/// | `Invalid` | the message, recipient or answer is invalid (47003, 40003, a forged or expired state, …), or a grant's reservation was lost to another sender | no | drop it or fix the code; retrying fails the same way |
/// | `Token` | no access token could be used and a person must act (secret, IP whitelist, another process refreshing with the same secret) | no | alert; send again once fixed |
/// | `Retryable` | nothing happened and trying later can work (network, `-1`, a quota, an outage of the token source, the token store, the store of used states or the ledger) | no | queue for later |
/// | `Configuration` | the app's setup is wrong (template id, API permission, base URL, builder settings) | no | fix the configuration |
/// | `Other` | WeChat refused with a code the errcode table does not classify | no | log `api_code()` and the errmsg |
///
/// The errors of calls that deliver nothing answer with the same kinds: a [`LedgerError`] is
/// `Invalid` when its reservation was lost (leave the grant to the sender that holds it) and
/// `Retryable` when its backend failed; a [`TokenStoreError`](crate::TokenStoreError) is
/// always `Retryable`; a template-library call's [`LibraryError`] is `Unknown` only for an
/// `addtemplate` or `deltemplate` whose answer was lost (it may have happened), and never
/// `Refused` or `ProbablyDelivered`.
///
/// [`LedgerError`]: crate::LedgerError
///
/// ```
/// use subscribe_client::{ErrorKind, SendError};
///
/// fn act(result: Result<subscribe_client::SendReceipt, SendError>) -> &'static str {
///     let Err(e) = result else { return "delivered" };
///     match e.kind() {
///         ErrorKind::Refused => "ask again",
///         ErrorKind::ProbablyDelivered => "delivered",
///         ErrorKind::Unknown => "review",
///         ErrorKind::Invalid => "drop",
///         ErrorKind::Retryable => "later",
///         ErrorKind::Token | ErrorKind::Configuration => "alert",
///         _ => "log", // `Other`, and kinds a later version adds
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The user has no unused authorization (43101 to a first attempt): ask them again.
    Refused,
    /// WeChat refused a replay with 43101 after an attempt that may have delivered: the
    /// message was most likely delivered. Do not resend.
    ProbablyDelivered,
    /// The outcome is unknown: the request may have reached WeChat. Do not resend blindly.
    Unknown,
    /// The input can never succeed as it is: an invalid message, recipient or request, an
    /// authorization answer that is malformed, forged or expired, or a grant's reservation
    /// that another sender took over ([`LedgerError::LeaseLost`](crate::LedgerError::LeaseLost)).
    Invalid,
    /// No access token could be used, and retrying will not help until someone acts: the
    /// token endpoint refused (AppID, AppSecret, IP whitelist, frozen secret), or WeChat
    /// rejected a freshly refreshed token too (something else refreshes with the same secret).
    /// Nothing was sent.
    Token,
    /// Nothing was delivered and the same call can succeed later: the request never left,
    /// WeChat was busy, a quota will reset, the token source, the token store, the store of
    /// used states or the ledger is out for now.
    Retryable,
    /// The app's setup is wrong: a template id of another kind, an API the account may not
    /// use, an unusable base URL or builder setting.
    Configuration,
    /// WeChat refused with an errcode the table does not classify; nothing was delivered.
    Other,
}

impl ErrorKind {
    /// Whether the message may have been delivered (`ProbablyDelivered`, `Unknown`).
    pub fn may_have_delivered(self) -> bool {
        matches!(self, Self::ProbablyDelivered | Self::Unknown)
    }

    /// The kind of an errcode WeChat answered an API call with (after the client's replays).
    fn of_api(e: &ApiError) -> Self {
        match e.code().class() {
            Some(ErrorClass::UserRefused) => Self::Refused,
            Some(ErrorClass::RefreshToken) => Self::Token,
            Some(ErrorClass::Backoff | ErrorClass::RetryLater) => Self::Retryable,
            Some(ErrorClass::Configuration) => Self::Configuration,
            Some(ErrorClass::InvalidRecipient | ErrorClass::InvalidRequest) => Self::Invalid,
            _ => Self::Other,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Refused => "refused",
            Self::ProbablyDelivered => "probably delivered",
            Self::Unknown => "outcome unknown",
            Self::Invalid => "invalid",
            Self::Token => "token",
            Self::Retryable => "retryable",
            Self::Configuration => "configuration",
            Self::Other => "other",
        })
    }
}
