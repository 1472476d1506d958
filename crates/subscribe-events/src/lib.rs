//! WeChat's event push, sans-I/O: the server URL's check, the signatures (compared in
//! constant time), the safe mode's AES-256-CBC (with the previous `EncodingAESKey` during a
//! rotation), a freshness window on `timestamp` and a replay cache on the signed (`timestamp`,
//! `nonce`) pair, and the subscription events typed ([`Event`]). Queries are read with the
//! workspace's one strict reader ([`subscribe_types::query::Query`]): a signed parameter that
//! appears twice is refused. No HTTP, no runtime: hand it the query string,
//! the body and the time; it answers with the event or a [`PushError`] carrying the HTTP
//! status to answer.
//!
//! ```
//! use subscribe_events::{Mode, Push, PushConfig, signature};
//!
//! let config = PushConfig::new("sandboxPushToken2026", "wx5a1db0c0ffee0001", Mode::Plain);
//! let push = Push::new(config);
//! let sig = signature(&["sandboxPushToken2026", "1800000000", "42"]);
//! // The URL check: answer `echostr`.
//! let query = format!("signature={sig}&timestamp=1800000000&nonce=42&echostr=hello");
//! assert_eq!(push.verify_url(&query, 1_800_000_010)?, "hello");
//! // A plain-mode push of an event this crate does not model is kept raw, by name.
//! let body = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser</FromUserName>\
//!             <CreateTime>1800000000</CreateTime><MsgType>event</MsgType><Event>VIEW</Event></xml>";
//! let event = push.open(&format!("signature={sig}&timestamp=1800000000&nonce=43"), body.as_bytes(), 1_800_000_010);
//! assert!(event.is_err(), "another nonce, another signature");
//! let sig = signature(&["sandboxPushToken2026", "1800000000", "43"]);
//! let event = push.open(&format!("signature={sig}&timestamp=1800000000&nonce=43"), body.as_bytes(), 1_800_000_010)?;
//! assert_eq!(event.name(), "VIEW");
//! # Ok::<(), subscribe_events::PushError>(())
//! ```
//!
//! | feature | default | gives |
//! |---|---|---|
//! | `axum` | no | `axum::PushEndpoint`: the server URL as an axum route, answering WeChat within its time limit, rate-limited per source |
//! | `serve` | no | `serve::serve`: an axum router (the push endpoint's, or any) served with a header-read timeout, a bound on connections and a graceful stop |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod crypto;
mod error;
mod event;
mod push;
pub mod replay;

pub use config::{ConfigWarning, Mode, PushConfig, RECOMMENDED_TOKEN_LEN, is_valid_token};
pub use crypto::{EncodingAesKey, signature};
pub use error::{OpenFailure, PushError};
pub use event::{ChangeItem, Event, EventKind, Format, PopupItem, SentItem};
pub use push::{MAX_BODY, MAX_FORGETS, Push, Sealed, UrlCheck, Verified};

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;

/// `docs/events.md`'s examples run as doctests (one mounts the axum endpoint).
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../../docs/events.md")]
struct EventsDoctests;
