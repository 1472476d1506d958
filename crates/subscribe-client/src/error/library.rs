//! [`LibraryError`]: a template-library call failed, and [`LibraryCall`], which one.

use subscribe_types::ErrCode;

use super::{ErrorKind, SendError, UnknownCause};

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
    /// [`ApiError`](subscribe_types::ApiError) with its errmsg, the transport's error, the token's. Its
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
