//! WeChat one-time subscription messages (一次性订阅消息): tokens that never stampede, sends
//! that never lie.
//!
//! A [`Client`] per AppID does the four steps: links to the authorization page with a signed
//! state bound to the user's session ([`Client::authorize_url`]), verifies WeChat's answer
//! ([`Client::complete`], then [`Completion::accept`], or [`Completion::record`] into a
//! [`GrantLedger`]), sends the one message a confirmation allows ([`Client::send_one_time`], or to
//! everyone waiting with a [`Dispatcher`]), and keeps an access token valid for all of it — one refresh per process
//! (or per fleet, with a shared [`TokenStore`]), ahead of expiry in the background, one
//! invalidate-and-replay when WeChat rejects a token, a cool-down when the token endpoint
//! refuses, and backoff with calls that wait out short outages (`token_wait`) when it fails.
//!
//! ```
//! use subscribe_client::test_util::{SEND_PATH, errcode_reply, mock_with_stable_token, ok_reply};
//! use subscribe_client::{Client, ErrorKind};
//! use subscribe_types::{AppId, AppSecret, OpenId, Scene, OneTimeMessage, TemplateId};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // In tests, script WeChat with a MockTransport; in production leave `transport` out.
//! let wechat = mock_with_stable_token("ACCESS_TOKEN", 7200);
//! wechat.push(ok_reply());
//! wechat.push(errcode_reply(43101, "user refuse to accept the msg"));
//!
//! let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("app-secret")?)
//!     .transport(wechat.clone())
//!     .build()?;
//!
//! let message = OneTimeMessage::builder(
//!     OpenId::new("oyAaTjt-xXvP87pubE4eUOF-ttD4")?,
//!     TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?,
//!     Scene::new(1000)?,
//! )
//! .title("到货提醒")
//! .content("您关注的商品已到货")
//! .build()?;
//!
//! client.send_one_time(&message).await?; // delivered
//!
//! match client.send_one_time(&message).await {
//!     Ok(_) => unreachable!("one confirmation, one message"),
//!     Err(e) if e.kind() == ErrorKind::Refused => { /* ask the user to authorize again */ }
//!     Err(e) if !e.outcome_known() => { /* may have been delivered: do not resend blindly */ }
//!     Err(e) => return Err(e.into()), // see `ErrorKind` for every case
//! }
//! assert_eq!(wechat.count(SEND_PATH), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! | feature | default | gives |
//! |---|---|---|
//! | `reqwest` | yes | the default transport |
//! | `rustls` | yes | TLS through rustls |
//! | `native-tls` | no | TLS through the system library |
//! | `hyper` | no | `transport::HyperTransport`: hyper's HTTP/1.1 connections, at most one per send in flight, TLS through rustls |
//! | `test-util` | no | `ManualClock`, `test_util`: mock answers and the contract suites |
//! | `events` | no | pushed events feeding the grant ledger (`subscribe-events`): a popup's acceptance records a grant, a withdrawal drops it, a notification's result is kept by `msgid` |
//!
//! Requires a tokio runtime (background refreshes are spawned on it).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod clock;
mod dispatch;
mod error;
mod grants;
mod keyed;
#[cfg(feature = "events")]
mod pushed;
mod rate;
mod retry;
mod state;
mod token;
mod used_states;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use async_trait::async_trait;
pub use client::{
    Answer, Answered, AuthorizationLink, Client, ClientBuilder, Completion, DEFAULT_API_BASE, SendReceipt,
};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use clock::ManualClock;
pub use clock::{Clock, SharedClock, SystemClock};
pub use dispatch::{
    DispatchError, DispatchObserver, DispatchReport, Dispatcher, MAX_REASON_CHARS, OutcomeKind, Progress,
    RecipientOutcome,
};
pub use error::{
    AuthorizationError, ConfigError, ErrorKind, LibraryCall, LibraryError, RecordError, SendError,
    TokenError, TokenRejection, UnknownCause,
};
pub use grants::{
    Claimed, GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope, GrantStatus, InMemoryGrantLedger,
    LedgerError, MAX_HISTORY, PastGrant, Recorded, Reservation, Resolution, ReviewItem, Settlement,
};
#[cfg(feature = "events")]
#[cfg_attr(docsrs, doc(cfg(feature = "events")))]
pub use pushed::{Applied, InMemoryNotificationResults, NotificationResult, NotificationResults};
pub use rate::RateLimiter;
pub use retry::RetryPolicy;
pub use state::Session;
#[cfg(feature = "events")]
#[cfg_attr(docsrs, doc(cfg(feature = "events")))]
pub use subscribe_events as events;
pub use subscribe_transport as transport;
pub use subscribe_types as types;
pub use token::{
    BoxError, CachedToken, ExternalSourceError, ExternalTokenSource, HoldOff, InMemoryTokenStore,
    RefreshLease, SharedTokenStore, TokenEndpoint, TokenStore, TokenStoreError,
};
/// tokio-util's cancellation token, re-exported for [`Dispatcher::cancellation`]: use it as
/// `subscribe_client::CancellationToken`, with no dependency on tokio-util of your own (and no
/// second copy of it when its version differs from this crate's).
pub use tokio_util::sync::CancellationToken;
pub use used_states::{
    AnswerDigest, Claim, InMemoryUsedStates, SharedUsedStates, StateUse, UsedStates, UsedStatesError,
};

// Compile-time checks: the client and its errors cross threads; the traits are object safe.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn _object_safe(_: &dyn TokenStore, _: &dyn ExternalTokenSource, _: &dyn Clock, _: &dyn GrantLedger) {}
    assert_send_sync::<Client>();
    assert_send_sync::<SendError>();
    assert_send_sync::<LibraryError>();
    assert_send_sync::<LedgerError>();
    assert_send_sync::<TokenStoreError>();
    assert_send_sync::<RecordError>();
    assert_send_sync::<Completion>();
    assert_send_sync::<Session>();
    assert_send_sync::<TokenError>();
};

/// The README's example runs as a doctest.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// `docs/errors.md`'s examples: one per [`ErrorKind`], scripted as WeChat would answer.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../../../docs/errors.md")]
struct ErrorsDoctests;

/// `docs/extending.md`'s examples (a transport, a token store, a token source, a grant ledger,
/// each with its contract suite, and with the feature `events` a replay cache) run as doctests.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../../../docs/extending.md")]
struct ExtendingDoctests;

/// `docs/protocol-map.md`'s examples: one per product, scripted as WeChat would answer.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../../../docs/protocol-map.md")]
struct ProtocolMapDoctests;

/// `docs/mobile.md`'s server example compiles against the client as it is.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/mobile.md")]
struct MobileDoctests;
