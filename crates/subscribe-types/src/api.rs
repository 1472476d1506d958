//! WeChat's answers: [`ErrCode`], [`ApiError`], the `{errcode, errmsg}` envelope and
//! [`DecodeError`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// WeChat's `errcode`: an open set, modelled like `http::StatusCode` rather than an enum, so a
/// code we have never seen is still carried faithfully.
///
/// ```
/// use subscribe_types::{ErrCode, ErrorClass};
/// assert_eq!(ErrCode::ACCESS_TOKEN_EXPIRED.class(), Some(ErrorClass::RefreshToken));
/// assert_eq!(ErrCode::SYSTEM_BUSY.class(), Some(ErrorClass::Backoff));
/// assert_eq!(ErrCode::USER_REFUSED.class(), Some(ErrorClass::UserRefused));
/// assert_eq!(ErrCode::OK.class(), None);
/// // At the token endpoint 40001 means a wrong AppSecret, not a stale token:
/// assert_eq!(ErrCode::INVALID_CREDENTIAL.class_at_token_endpoint(), Some(ErrorClass::Configuration));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrCode(i64);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $class:ident, $token:ident, $desc:literal;)*) => {
        impl ErrCode {
            $(
                $(#[$doc])*
                #[doc = concat!("`", stringify!($value), "`: ", $desc)]
                pub const $name: Self = Self($value);
            )*

            /// Every code this crate names, for tables and tests.
            pub const KNOWN: &'static [Self] = &[$(Self::$name),*];

            /// What WeChat's documentation says the code means, when the code is known.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($desc),)*
                    _ => None,
                }
            }

            /// How a client should react to this code in an answer to an API call (not the token
            /// endpoint; see [`class_at_token_endpoint`](Self::class_at_token_endpoint)). `None`
            /// for [`OK`](Self::OK); unknown codes are [`ErrorClass::Permanent`].
            pub fn class(self) -> Option<ErrorClass> {
                match self.0 {
                    $($value => ErrorClass::$class,)*
                    _ => Some(ErrorClass::Permanent),
                }
            }

            /// What the code means in an answer of `/cgi-bin/token` or `/cgi-bin/stable_token`.
            /// Unknown codes (and codes that have no meaning there) are
            /// [`TokenEndpointFailure::Other`]; `OK` is `None`.
            pub fn at_token_endpoint(self) -> Option<TokenEndpointFailure> {
                if self.is_ok() {
                    return None;
                }
                Some(match self.0 {
                    $($value => TokenEndpointFailure::$token,)*
                    _ => TokenEndpointFailure::Other,
                })
            }
        }
    };
}

#[allow(non_upper_case_globals)]
impl ErrorClass {
    const Ok: Option<ErrorClass> = None;
    const Token: Option<ErrorClass> = Some(ErrorClass::RefreshToken);
    const Busy: Option<ErrorClass> = Some(ErrorClass::Backoff);
    const Later: Option<ErrorClass> = Some(ErrorClass::RetryLater);
    const Config: Option<ErrorClass> = Some(ErrorClass::Configuration);
    const Refused: Option<ErrorClass> = Some(ErrorClass::UserRefused);
    const Recipient: Option<ErrorClass> = Some(ErrorClass::InvalidRecipient);
    const Input: Option<ErrorClass> = Some(ErrorClass::InvalidRequest);
    const Fatal: Option<ErrorClass> = Some(ErrorClass::Permanent);
}

// The one table of what each code means: its class on an API call, then its meaning at the
// token endpoint (`Other` where it has none there).
codes! {
    SYSTEM_BUSY = -1, Busy, Busy, "system busy; retry with backoff";
    OK = 0, Ok, Other, "ok";
    INVALID_CREDENTIAL = 40001, Token, InvalidSecret, "invalid credential: access token invalid or not latest (wrong AppSecret at the token endpoint)";
    INVALID_GRANT_TYPE = 40002, Config, Other, "invalid grant_type";
    INVALID_OPENID = 40003, Recipient, Other, "invalid openid, or an openid of another app";
    INVALID_APPID = 40013, Config, InvalidAppId, "invalid appid";
    INVALID_ACCESS_TOKEN = 40014, Token, Other, "invalid access_token";
    INVALID_CHARACTERS = 40033, Input, Other, "illegal \\uxxxx characters in the request";
    INVALID_TEMPLATE_ID_SIZE = 40036, Config, Other, "invalid template_id size";
    INVALID_TEMPLATE_ID = 40037, Config, Other, "invalid template_id: wrong template or template type";
    LONG_TERM_DAILY_LIMIT = 40038, Fatal, Other, "long-term template sends to this user are used up for today (unconfirmed)";
    INVALID_URL_SIZE = 40039, Input, Other, "invalid url size";
    INVALID_URL_DOMAIN = 40048, Input, Other, "invalid url domain";
    INVALID_APPSECRET = 40125, Config, InvalidSecret, "invalid appsecret";
    IP_NOT_IN_WHITELIST = 40164, Config, IpNotWhitelisted, "caller IP not in the whitelist";
    APPSECRET_FROZEN = 40243, Config, SecretFrozen, "AppSecret frozen";
    ACCESS_TOKEN_MISSING = 41001, Input, Other, "access_token missing";
    APPID_MISSING = 41002, Config, InvalidAppId, "appid missing";
    APPSECRET_MISSING = 41004, Config, InvalidSecret, "appsecret missing";
    PAGE_NOT_RELEASED = 41030, Input, Other, "page is not in the mini program's released version";
    ACCESS_TOKEN_EXPIRED = 42001, Token, Other, "access_token expired";
    REQUIRE_POST = 43002, Input, Other, "POST method required";
    REQUIRE_SUBSCRIBE = 43004, Fatal, Other, "recipient must follow the account";
    USER_REFUSED = 43101, Refused, Other, "user refused the message: no unused authorization";
    SUBSCRIBE_BANNED = 43107, Config, Other, "subscribe capability or template banned (unconfirmed)";
    CONCURRENT_SEND = 43108, Busy, Other, "concurrent sends to the same openid: retry once the other ends (unconfirmed)";
    EMPTY_POST_DATA = 44002, Input, Other, "empty post data";
    DAILY_QUOTA_EXCEEDED = 45009, Later, QuotaExceeded, "daily API quota reached";
    MINUTE_QUOTA_EXCEEDED = 45011, Later, QuotaExceeded, "per-minute API quota reached";
    SENSITIVE_CONTENT = 45168, Input, Other, "the content has sensitive words (unconfirmed)";
    DATA_FORMAT_ERROR = 47001, Input, Other, "data format error: the body is not valid JSON";
    ARGUMENT_INVALID = 47003, Input, Other, "argument invalid: errmsg names the field";
    API_UNAUTHORIZED = 48001, Config, Other, "API unauthorized: no permission or wrong token type";
    API_FORBIDDEN = 48004, Config, Other, "API forbidden for irregularities";
    USER_UNAUTHORIZED = 50001, Fatal, Other, "user unauthorized";
    USER_LIMITED = 50002, Fatal, Other, "user limited";
    CLIENT_IP_NOT_REGISTERED = 61004, Config, IpNotWhitelisted, "caller IP not registered in the whitelist";
    IP_CONFIRM_PENDING = 89501, Later, Other, "IP pending administrator confirmation; retry later";
    IP_AWAITING_APPROVAL = 89503, Later, Other, "IP waiting for administrator approval";
    IP_REJECTED_RETRY_24H = 89506, Later, Other, "IP rejected by the administrator; retry after 24 hours";
    IP_REJECTED_RETRY_1H = 89507, Later, Other, "IP rejected by the administrator; retry after 1 hour";
    LIBRARY_ACCOUNT_BANNED = 200_011, Config, Other, "template library: this account is banned";
    LIBRARY_TEMPLATE_LIMIT = 200_012, Config, Other, "template library: the account has its most private templates";
    LIBRARY_TEMPLATE_BANNED = 200_013, Config, Other, "template library: this public template is banned";
    LIBRARY_INVALID_TID = 200_014, Input, Other, "template library: invalid tid";
    LIBRARY_ERROR_200015 = 200_015, Input, Other, "template library error (meaning not in the sources we have)";
    LIBRARY_INVALID_START = 200_016, Input, Other, "template library: invalid start";
    LIBRARY_INVALID_LIMIT = 200_017, Input, Other, "template library: invalid limit";
    LIBRARY_IDS_MISSING = 200_018, Input, Other, "template library: category ids missing";
    LIBRARY_INVALID_IDS = 200_019, Input, Other, "template library: invalid category ids";
    LIBRARY_INVALID_KID_LIST = 200_020, Input, Other, "template library: invalid kidList";
    LIBRARY_INVALID_SCENE_DESC = 200_021, Input, Other, "template library: invalid sceneDesc";
}

impl ErrCode {
    /// Wraps any code.
    pub const fn new(code: i64) -> Self {
        Self(code)
    }

    /// The number.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Success.
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// The token was rejected on an API call (40001, 40014, 42001: class
    /// [`ErrorClass::RefreshToken`]): refresh the token and replay once.
    pub fn is_token_rejected(self) -> bool {
        self.class() == Some(ErrorClass::RefreshToken)
    }

    /// The IP-whitelist codes (40164, 61004).
    pub fn is_ip_whitelist(self) -> bool {
        self.at_token_endpoint() == Some(TokenEndpointFailure::IpNotWhitelisted)
    }

    /// Like [`class`](Self::class), for an answer of `/cgi-bin/token` or
    /// `/cgi-bin/stable_token`: there, 40001 means a wrong AppSecret, a configuration error.
    pub fn class_at_token_endpoint(self) -> Option<ErrorClass> {
        match self.at_token_endpoint()? {
            TokenEndpointFailure::Busy => Some(ErrorClass::Backoff),
            TokenEndpointFailure::QuotaExceeded => Some(ErrorClass::RetryLater),
            TokenEndpointFailure::Other if !self.is_token_rejected() => self.class(),
            _ => Some(ErrorClass::Configuration),
        }
    }
}

impl fmt::Debug for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrCode({})", self.0)
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<i64> for ErrCode {
    fn from(v: i64) -> Self {
        Self(v)
    }
}

/// How to react to an [`ErrCode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The access token was rejected: invalidate it, get a fresh one, replay once.
    RefreshToken,
    /// WeChat is busy (`-1`): the call did nothing; retry a bounded number of times with
    /// backoff.
    Backoff,
    /// A quota or an approval window: retry after it passes, not now.
    RetryLater,
    /// The app's setup is wrong (appid, secret, IP whitelist, permission, template): no retry
    /// helps until someone fixes it.
    Configuration,
    /// 43101: the user has no unused authorization for this template and scene (never
    /// confirmed, cancelled, or already used): ask them again. After a replay of a request
    /// that may have delivered, it most likely means that request did.
    UserRefused,
    /// The recipient cannot receive this message (an openid that is not this app's).
    InvalidRecipient,
    /// The request itself is malformed (body, field, URL, method): fix the code that built it.
    InvalidRequest,
    /// This request can never succeed as it is, for another reason (unknown codes too).
    Permanent,
}

/// What an `errcode` means in an answer of the token endpoints (see
/// [`ErrCode::at_token_endpoint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenEndpointFailure {
    /// 40013, 41002: the AppID is wrong or missing.
    InvalidAppId,
    /// 40001, 40125, 41004: the AppSecret is wrong or missing.
    InvalidSecret,
    /// 40164, 61004: this machine's IP is not in the account's whitelist.
    IpNotWhitelisted,
    /// 40243: the AppSecret is frozen.
    SecretFrozen,
    /// 45009, 45011: the token endpoint's quota is used up.
    QuotaExceeded,
    /// -1: WeChat was busy.
    Busy,
    /// Any other code.
    Other,
}

/// WeChat answered with a non-zero `errcode`.
///
/// `errmsg` is kept as sent: its `rid: …` suffix is what WeChat support asks for.
///
/// ```
/// use subscribe_types::{ApiError, ErrCode};
/// let e = ApiError::new(ErrCode::new(40164), "invalid ip 203.0.113.9 ipv6 ::ffff:203.0.113.9, not in whitelist rid: 1");
/// assert_eq!(e.reported_ip(), Some("203.0.113.9"));
/// assert_eq!(e.to_string(), "WeChat error 40164: invalid ip 203.0.113.9 ipv6 ::ffff:203.0.113.9, not in whitelist rid: 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("WeChat error {code}: {message}")]
pub struct ApiError {
    code: ErrCode,
    message: String,
}

impl ApiError {
    /// An error with `code` and WeChat's `errmsg`.
    pub fn new(code: ErrCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The `errcode`.
    pub fn code(&self) -> ErrCode {
        self.code
    }

    /// The `errmsg`, as sent.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For 47003 (argument invalid), the field WeChat names in `errmsg`
    /// (`argument invalid! data.thing3.value invalid` → `data.thing3.value`).
    ///
    /// ```
    /// use subscribe_types::{ApiError, ErrCode};
    /// let e = ApiError::new(ErrCode::ARGUMENT_INVALID, "argument invalid! data.thing3.value invalid rid: 6a1b");
    /// assert_eq!(e.invalid_field(), Some("data.thing3.value"));
    /// assert_eq!(ApiError::new(ErrCode::ARGUMENT_INVALID, "argument invalid!").invalid_field(), None);
    /// ```
    pub fn invalid_field(&self) -> Option<&str> {
        if self.code != ErrCode::ARGUMENT_INVALID {
            return None;
        }
        let after = self.message.split_once('!').map_or(self.message.as_str(), |(_, rest)| rest);
        after.split_whitespace().find(|w| {
            w.contains('.')
                && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
                && w.starts_with(|c: char| c.is_ascii_alphabetic())
        })
    }

    /// For an IP-whitelist error, the caller IP that WeChat reports in `errmsg`
    /// (`invalid ip 1.2.3.4 …`, or `… requestIp: 1.2.3.4`).
    pub fn reported_ip(&self) -> Option<&str> {
        if !self.code.is_ip_whitelist() {
            return None;
        }
        let after = ["invalid ip ", "requestIp:", "clientip:", "ip:"]
            .iter()
            .find_map(|marker| self.message.find(marker).map(|i| &self.message[i + marker.len()..]))?;
        let ip: &str =
            after.trim_start().split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')).next()?;
        let ip = ip.trim_end_matches([':', '.']);
        (!ip.is_empty() && ip.contains(['.', ':'])).then_some(ip)
    }
}

/// The `{errcode, errmsg}` envelope every WeChat API answer carries. A missing `errcode`
/// reads as 0 (success), as WeChat omits it on some successful answers.
///
/// ```
/// use subscribe_types::{ApiResponse, ErrCode};
/// assert!(ApiResponse::parse(br#"{"errcode":0,"errmsg":"ok"}"#)?.into_result().is_ok());
/// assert!(ApiResponse::parse(b"{}")?.into_result().is_ok());
/// let err = ApiResponse::parse(br#"{"errcode":43101,"errmsg":"user refuse to accept the msg"}"#)?
///     .into_result()
///     .unwrap_err();
/// assert_eq!(err.code(), ErrCode::USER_REFUSED);
/// # Ok::<(), subscribe_types::DecodeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiResponse {
    /// `errcode`, 0 when absent.
    #[serde(default = "ok")]
    pub errcode: ErrCode,
    /// `errmsg`, empty when absent.
    #[serde(default)]
    pub errmsg: String,
}

fn ok() -> ErrCode {
    ErrCode::OK
}

impl ApiResponse {
    /// Reads the envelope from a response body; other keys are ignored.
    ///
    /// # Errors
    /// [`DecodeError`] when the body is not a JSON object of that shape. The error keeps no
    /// part of the body.
    pub fn parse(body: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(body).map_err(|e| DecodeError::from(&e))
    }

    /// Like [`parse`](Self::parse), but the `errcode` field must be there: for endpoints such as
    /// the send endpoint, which always answer with it. A `200 {}` (from a wrong `api_base`, a
    /// gateway or a proxy's own page) then says nothing about the outcome instead of reading
    /// as success.
    ///
    /// ```
    /// use subscribe_types::{ApiResponse, DecodeCategory};
    /// assert!(ApiResponse::parse_strict(br#"{"errcode":0,"errmsg":"ok"}"#)?.into_result().is_ok());
    /// let err = ApiResponse::parse_strict(b"{}").unwrap_err();
    /// assert_eq!(err.category(), DecodeCategory::Data);
    /// assert!(ApiResponse::parse_strict(br#"{"errmsg":"ok"}"#).is_err());
    /// # Ok::<(), subscribe_types::DecodeError>(())
    /// ```
    ///
    /// # Errors
    /// [`DecodeError`] when the body is not a JSON object of that shape or has no `errcode`.
    pub fn parse_strict(body: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Strict {
            errcode: ErrCode,
            #[serde(default)]
            errmsg: String,
        }
        let Strict { errcode, errmsg } = serde_json::from_slice(body).map_err(|e| DecodeError::from(&e))?;
        Ok(Self { errcode, errmsg })
    }

    /// `Ok(())` for errcode 0, the [`ApiError`] otherwise.
    ///
    /// # Errors
    /// [`ApiError`] for a non-zero `errcode`.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.errcode.is_ok() { Ok(()) } else { Err(ApiError::new(self.errcode, self.errmsg)) }
    }
}

/// A body could not be decoded as the expected JSON.
///
/// Only `serde_json`'s category, line and column are kept; never the body nor serde's message,
/// which can quote the input (and a token endpoint's body holds the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("response body is not the expected JSON ({category} error at line {line}, column {column})")]
pub struct DecodeError {
    category: DecodeCategory,
    line: usize,
    column: usize,
}

impl DecodeError {
    /// What kind of problem it was.
    pub fn category(&self) -> DecodeCategory {
        self.category
    }
    /// Line of the problem (1-based; 0 when unknown).
    pub fn line(&self) -> usize {
        self.line
    }
    /// Column of the problem (1-based; 0 when unknown).
    pub fn column(&self) -> usize {
        self.column
    }
    /// An error for a body that is not valid at all (empty, or not UTF-8 where text is needed).
    pub fn syntax() -> Self {
        Self { category: DecodeCategory::Syntax, line: 0, column: 0 }
    }
}

impl From<&serde_json::Error> for DecodeError {
    fn from(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let category = match e.classify() {
            Category::Io => DecodeCategory::Io,
            Category::Syntax => DecodeCategory::Syntax,
            Category::Data => DecodeCategory::Data,
            Category::Eof => DecodeCategory::Eof,
        };
        Self { category, line: e.line(), column: e.column() }
    }
}

/// See [`DecodeError::category`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeCategory {
    /// Reading failed.
    Io,
    /// Not JSON.
    Syntax,
    /// JSON of the wrong shape or with wrong types.
    Data,
    /// The body ended early.
    Eof,
}

impl fmt::Display for DecodeCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "io",
            Self::Syntax => "syntax",
            Self::Data => "data",
            Self::Eof => "unexpected end",
        })
    }
}
