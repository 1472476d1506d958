//! The client's errors, one per operation: [`SendError`], [`LibraryError`], [`TokenError`],
//! [`AuthorizationError`], [`RecordError`], [`ConfigError`], and the one [`ErrorKind`] each of
//! them answers with, so a caller acts on an error without matching variants or errcodes.

use std::time::Duration;

use subscribe_transport::{TransportError, TransportErrorKind};
use subscribe_types::{
    ApiError, DecodeError, ErrCode, ErrorClass, QueryError, TokenEndpointFailure, ValidationError,
};

use subscribe_transport::BoxError;

use crate::token::ExternalSourceError;

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
}

impl std::fmt::Display for UnknownCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAnswer(kind) => write!(f, "no answer after the request left ({kind})"),
            Self::ServerError { status } => write!(f, "HTTP {status}"),
            Self::UnreadableAnswer => f.write_str("unreadable answer"),
            Self::UndecodableResponse => f.write_str("errcode 0, but the rest of the answer did not decode"),
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

/// Which template-library call failed (WeChat's name for it is its
/// [`Display`](std::fmt::Display)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LibraryCall {
    /// `getcategory`: [`Client::template_categories`](crate::Client::template_categories).
    Categories,
    /// `getpubtemplatetitles`: [`Client::public_templates`](crate::Client::public_templates).
    PublicTemplates,
    /// `getpubtemplatekeywords`: [`Client::template_keywords`](crate::Client::template_keywords).
    Keywords,
    /// `addtemplate`: [`Client::add_template`](crate::Client::add_template).
    AddTemplate,
    /// `deltemplate`: [`Client::delete_template`](crate::Client::delete_template).
    DeleteTemplate,
    /// `gettemplate`: [`Client::templates`](crate::Client::templates).
    Templates,
}

impl LibraryCall {
    /// WeChat's name for the call, the last segment of its path (`addtemplate`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Categories => "getcategory",
            Self::PublicTemplates => "getpubtemplatetitles",
            Self::Keywords => "getpubtemplatekeywords",
            Self::AddTemplate => "addtemplate",
            Self::DeleteTemplate => "deltemplate",
            Self::Templates => "gettemplate",
        }
    }

    /// Whether the call changes the account's templates (`addtemplate`, `deltemplate`); the
    /// others only read.
    pub fn changes_templates(self) -> bool {
        matches!(self, Self::AddTemplate | Self::DeleteTemplate)
    }
}

impl std::fmt::Display for LibraryCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A template-library call ([`Client::template_categories`](crate::Client::template_categories),
/// [`public_templates`](crate::Client::public_templates),
/// [`template_keywords`](crate::Client::template_keywords),
/// [`add_template`](crate::Client::add_template),
/// [`delete_template`](crate::Client::delete_template),
/// [`templates`](crate::Client::templates)) failed.
///
/// A library call delivers no message, so what a [`SendError`] says about delivery does not
/// apply; what matters is whether WeChat may have **changed the account's templates**.
/// [`outcome_known`](Self::outcome_known) is `false` only for a change (`addtemplate`,
/// `deltemplate`) whose answer was lost or could not be read: the template may have been added
/// or deleted, so list them ([`Client::templates`](crate::Client::templates)) before trying
/// again. A read changes nothing, so its outcome is always known.
///
/// | what happened | `kind()` |
/// |---|---|
/// | WeChat refused with an errcode (200011–200021, 48001, 45009, …) | as for a send: `Invalid`, `Configuration`, `Retryable`, `Token` or `Other` |
/// | a change's answer was lost (timeout or reset after the request left, HTTP 5xx, an unreadable or undecodable 200) | `Unknown`: it may have happened |
/// | a read's answer was lost (timeout, reset, HTTP 5xx, a 200 that is not WeChat's envelope) | `Retryable`: nothing changed; call again |
/// | a read's answer was WeChat's `errcode` 0 but did not decode as the call's response | `Invalid`: calling again reads the same answer |
/// | no token, the request never left, another HTTP status | as for a send: `Token` or `Retryable`, `Retryable`, `Configuration` |
///
/// It is never `Refused` or `ProbablyDelivered` (a 43101 here means nothing about a user: it
/// is `Other`). The call's own error, as [`Client::execute`](crate::Client::execute) reports
/// it, is the [`source`](std::error::Error::source) and [`execute_error`](Self::execute_error);
/// `Display` names the call only and never prints a token or a URL.
///
/// ```
/// use subscribe_client::test_util::mock_with_stable_token;
/// use subscribe_client::transport::TransportErrorKind;
/// use subscribe_client::{Client, ErrorKind, LibraryCall};
/// use subscribe_types::{AddTemplate, AppId, AppSecret};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let wechat = mock_with_stable_token("T", 7200);
/// wechat.push_error(TransportErrorKind::Timeout); // addtemplate's answer is lost
/// wechat.push_error(TransportErrorKind::Timeout); // gettemplate's too
/// let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("s")?)
///     .transport(wechat)
///     .build()?; // the default policy replays no request that may have reached WeChat
///
/// let e = client.add_template(&AddTemplate::new(99, [1, 2], Some("到货提醒"))?).await.unwrap_err();
/// assert_eq!((e.call(), e.kind(), e.outcome_known()), (LibraryCall::AddTemplate, ErrorKind::Unknown, false));
/// // The template may exist now: list them before adding it again.
/// let e = client.templates().await.unwrap_err();
/// assert_eq!((e.kind(), e.outcome_known()), (ErrorKind::Retryable, true)); // a read changed nothing
/// assert_eq!(e.to_string(), "template library call `gettemplate` failed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[error("template library call `{call}` failed")]
#[non_exhaustive]
pub struct LibraryError {
    call: LibraryCall,
    #[source]
    source: SendError,
}

impl LibraryError {
    /// `call` failed with what [`Client::execute`](crate::Client::execute) returned.
    pub(crate) fn new(call: LibraryCall, source: SendError) -> Self {
        Self { call, source }
    }

    /// The call that failed.
    pub fn call(&self) -> LibraryCall {
        self.call
    }

    /// What the call met, as [`Client::execute`](crate::Client::execute) reports it: WeChat's
    /// [`ApiError`] with its errmsg, the transport's error, the token's. Its
    /// [`kind`](SendError::kind) and [`outcome_known`](SendError::outcome_known) speak of a
    /// message's delivery; ask this error's own instead.
    pub fn execute_error(&self) -> &SendError {
        &self.source
    }

    /// WeChat's `errcode`, when WeChat answered with one (the library's own are
    /// 200011–200021).
    pub fn api_code(&self) -> Option<ErrCode> {
        self.source.api_code()
    }

    /// What to do about it; see the table above and [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match (self.source.kind(), &self.source) {
            // 43101 says nothing about a user here.
            (ErrorKind::Refused, _) => ErrorKind::Other,
            (k, _) if k.may_have_delivered() && self.call.changes_templates() => ErrorKind::Unknown,
            // A read's answer that WeChat gave and the model cannot read: it reads the same
            // again.
            (_, SendError::OutcomeUnknown { cause: UnknownCause::UndecodableResponse, .. }) => {
                ErrorKind::Invalid
            }
            (k, _) if k.may_have_delivered() => ErrorKind::Retryable,
            (k, _) => k,
        }
    }

    /// `false` when WeChat may have changed the account's templates: an `addtemplate` or
    /// `deltemplate` whose answer was lost (`kind() == ErrorKind::Unknown`). `true` for every
    /// failed read, and for a change that certainly did not happen.
    pub fn outcome_known(&self) -> bool {
        self.kind() != ErrorKind::Unknown
    }
}

/// Verifying and recording an authorization answer
/// ([`Client::complete_and_record`](crate::Client::complete_and_record)) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The answer was rejected; nothing was recorded.
    #[error(transparent)]
    Authorization(#[from] AuthorizationError),
    /// The answer was valid but the ledger failed: ask the user to try again.
    #[error("grant ledger failed")]
    Ledger(#[from] crate::grants::LedgerError),
}

impl RecordError {
    /// What to do about it: the authorization error's kind, or the ledger error's
    /// ([`LedgerError::kind`](crate::LedgerError::kind): `Retryable` when its backend failed;
    /// the answer was valid, so ask the user to try again).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Authorization(e) => e.kind(),
            Self::Ledger(e) => e.kind(),
        }
    }
}

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

/// An authorization answer could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizationError {
    /// The callback query could not be parsed.
    #[error("callback is malformed")]
    Query(#[from] QueryError),
    /// `reserved` is empty: nothing proves this answer belongs to a request of ours.
    #[error("callback carries no state")]
    MissingState,
    /// `reserved` is not a state of ours, was tampered with, or belongs to another app,
    /// template, scene or session.
    #[error("callback state is not valid for this app, template, scene and session")]
    ForgedState,
    /// The state's lifetime is over.
    #[error("callback state expired {ago:?} ago")]
    ExpiredState {
        /// How long ago.
        ago: Duration,
    },
    /// The state already confirmed once: each authorization confirms one grant, so an answer
    /// with another openid, or the same answer after it was accepted, is refused. (The same
    /// answer before it was accepted, after a failure of the store or the ledger, is a retry
    /// and goes through.)
    #[error("callback state was already used: each authorization confirms once")]
    ReplayedState,
    /// Whether the state was used before could not be checked: the store of used states failed
    /// or did not answer in time. Nothing was recorded; the same answer can be completed later
    /// (even when the store did mark the state and only its answer was lost).
    #[error("the store of used states failed")]
    UsedStates(#[source] crate::used_states::UsedStatesError),
}

impl AuthorizationError {
    /// What to do about it: `Retryable` when the store of used states failed, `Invalid`
    /// otherwise (the answer cannot be accepted as it is; offer the user a fresh authorization
    /// link).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UsedStates(e) => e.kind(),
            _ => ErrorKind::Invalid,
        }
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No transport was given and the `reqwest` feature is off.
    #[error("no transport: enable the `reqwest` feature or call `transport(..)`")]
    NoTransport,
    /// A base URL is not an absolute http(s) URL.
    #[error("`{which}` must be an absolute http(s) URL")]
    InvalidBaseUrl {
        /// `api_base` or `mp_base`.
        which: &'static str,
    },
    /// The state key is shorter than 32 bytes.
    #[error("the state key must be at least 32 bytes")]
    WeakStateKey,
    /// An external token source is used and no state key was given (there is no AppSecret to
    /// derive one from).
    #[error("a state key is required with an external token source")]
    MissingStateKey,
    /// `timeouts(..)` was set together with a custom `transport(..)`: the timeouts configure
    /// only the default transport, so give them to your transport instead.
    #[error("`timeouts` configures only the default transport: set the timeouts on the custom transport")]
    TimeoutsWithCustomTransport,
    /// The default transport could not be built.
    #[error("the default transport could not be built")]
    Transport(#[source] TransportError),
    /// The refresh lease would expire before the work it covers could end: two token requests
    /// (a normal and a forced one) and a store write, each at its timeout.
    #[error("the refresh lease ({lease:?}) must outlast two token requests and a store write ({needed:?})")]
    LeaseTooShort {
        /// The configured lease.
        lease: Duration,
        /// The least lease that covers the work.
        needed: Duration,
    },
    /// A duration setting is zero where it must not be.
    #[error("`{setting}` must be longer than zero")]
    ZeroDuration {
        /// The setting's builder method.
        setting: &'static str,
    },
}

impl ConfigError {
    /// What to do about it: always `Configuration`.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Configuration
    }
}
