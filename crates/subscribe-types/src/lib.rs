//! Protocol models and validation for WeChat one-time subscription messages
//! (一次性订阅消息). No I/O, no async runtime, no HTTP crate: just values that are valid
//! because they exist.
//!
//! Who depends on this crate directly: code that builds or reads the protocol's values
//! without sending them (a web handler that only builds an authorization URL, a server that
//! plays WeChat's side, like `subscribe-sandbox`). To send, use `subscribe-client`.
//!
//! | step | types |
//! |---|---|
//! | 1. send the user to the authorization page | [`AuthorizeRequest`], [`MobileSubscribeRequest`] |
//! | 2. read the answer | [`AuthorizationAnswer`], [`Expectation`], [`MobileSubscribeResponse`] |
//! | 3. send one message | [`OneTimeMessage`], [`ApiResponse`], [`ErrCode`] |
//! | 4. keep a token | [`StableTokenRequest`], [`ClassicTokenRequest`], [`IssuedToken`] |
//!
//! Bad input is a [`ValidationError`] naming the field and the rule; secrets
//! ([`AppSecret`], [`AccessToken`]) never print.
//!
//! ```
//! use subscribe_types::*;
//!
//! // Step 1: the page the user is sent to.
//! let request = AuthorizeRequest::new(
//!     AppId::new("wxaba38c7f163da69b")?,
//!     TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?,
//!     Scene::new(1000)?,
//!     HttpUrl::new("https://app.example.com/wechat/callback")?,
//! )
//! .with_reserved(Reserved::new("hello")?);
//! assert!(request.url().ends_with("&reserved=hello#wechat_redirect"));
//!
//! // Step 2: WeChat redirects back; parse and check the answer.
//! let answer = AuthorizationAnswer::parse(
//!     "https://app.example.com/wechat/callback?openid=oyAaTjt-xXvP87pubE4eUOF-ttD4\
//!      &template_id=7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM&action=confirm&scene=1000&reserved=hello",
//! )?;
//! answer.verify(&Expectation::from(&request))?;
//! let AuthorizationAnswer::Confirmed(grant) = answer else { return Ok(()) };
//!
//! // Step 3: the one message this confirmation allows.
//! let message = OneTimeMessage::builder(grant.openid, grant.template_id, grant.scene)
//!     .title("到货提醒")
//!     .content("您关注的商品已到货")
//!     .build()?;
//! assert!(String::from_utf8(message.to_json())?.contains(r#""scene":"1000""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod answers;
mod api;
mod authorize;
mod callback;
mod data;
pub mod encoding;
pub mod endpoint;
mod error;
mod ids;
mod keyword;
mod library;
mod mini_program;
mod newtype;
mod notification;
mod one_time;
pub mod query;
mod redirect;
mod secret;
mod text;
mod token;

pub use answers::{AnswerError, SubscribeAnswers, SubscribeDecision};
pub use api::{
    ApiError, ApiResponse, DecodeCategory, DecodeError, ErrCode, ErrorClass, TokenEndpointFailure,
};
pub use authorize::{
    AUTHORIZE_PATH, AuthorizeRequest, DEFAULT_MP_BASE, MobileSubscribeRequest, MobileSubscribeResponse,
};
pub use callback::{Action, AuthorizationAnswer, Cancelled, Confirmed, Expectation, Mismatch, QueryError};
pub use data::{DataError, DataKey, MessageData};
pub use endpoint::{Ack, Endpoint, EndpointSpec, Method};
pub use error::ValidationError;
pub use ids::{AppId, OpenId, Reserved, Scene, TemplateId};
pub use keyword::{KeywordType, ValueFault};
pub use library::{
    AddTemplate, AddedTemplate, Categories, Category, DeleteTemplate, EnumValues, GetCategories,
    GetTemplates, Keyword, Keywords, KeywordsQuery, PublicTemplate, PublicTemplates, Template, TemplateKind,
    Templates, TitlesQuery,
};
pub use mini_program::{Lang, MiniProgramMessage, MiniProgramMessageBuilder, MiniProgramState};
pub use notification::{NotificationMessage, NotificationMessageBuilder, NotificationSent};
pub use one_time::{MessageParseError, OneTimeMessage, OneTimeMessageBuilder};
pub use query::MAX_QUERY_LEN;
pub use redirect::RedirectUrl;
pub use secret::{AccessToken, AppSecret, secret_string};
pub use text::{Color, Content, HttpUrl, MiniProgram, Title};
pub use token::{ClassicTokenRequest, IssuedToken, StableTokenRequest, TokenResponseError};

/// `secrecy`, re-exported: token requests hand out [`secrecy::SecretString`]s.
pub use secrecy;

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The workspace README's example runs as a doctest too, so the first thing a newcomer reads
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct WorkspaceReadmeDoctests;
