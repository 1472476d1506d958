//! A local WeChat-compatible server for one-time subscription messages: the other side of the
//! wire, for demos, end-to-end tests and integrators' own tests (WeChat itself needs an
//! approved account and cannot be reached from a test machine).
//!
//! It behaves like WeChat as far as the protocol notes know it:
//!
//! | endpoint | behaviour |
//! |---|---|
//! | `GET /cgi-bin/token` | a new token per call; the previous one works for the grace period only (40001 after); daily quota (45009); 40002/41002/40013/41004/40001 for bad input |
//! | `POST /cgi-bin/stable_token` | the same token until it is within the rotation window of expiry; `force_refresh` ends it (20 a day, 30 s apart); 40125 for a wrong secret |
//! | `GET /mp/subscribemsg?action=get_confirm&…` | an HTML authorization page; invalid parameters give an error page, never a redirect |
//! | `POST /mp/subscribemsg/decide` | the page's Confirm/Cancel: records the grant, then 302 to `redirect_url` with the answer |
//! | `POST /cgi-bin/message/template/subscribe` | 41001/40014/40001/42001 for tokens, 44002/47001/47003 for bodies, 40037/40003 for unknown template or user, 43101 without an unused grant; a success consumes the grant and delivers |
//! | `GET /sandbox/phone?appid=…&request=…` | WeChat on the phone: the confirmation screen for an Open SDK request (the mobile-app flow) |
//! | `POST /sandbox/phone/decide` | the screen's Confirm/Cancel: records the grant, answers with the SDK's JSON (no `openId` on cancel) |
//! | `/sandbox`, `/sandbox/inbox/{openid}` | the index and each user's inbox (HTML) |
//! | `/sandbox/api/…` | JSON: `inbox/{openid}`, `state`, `log`, `reset`, `faults`, `tokens/revoke`, `tokens/expire`, `grants`, `phone` |
//!
//! Known simplifications: one OpenID per user for every app; the scene of a send must match the
//! confirmed one. Faults come in two kinds: `busy_every`, `http_502_every`, `drop_every` and
//! `malformed_every` answer *without* processing the send (and `stall_every` delays it, so a
//! client that gives up first leaves nothing delivered); the `delivered_*_every` faults process
//! the send first (delivering it) and then lose or delay its answer, as a gateway in front of
//! WeChat can.
//!
//! ```
//! use subscribe_sandbox::{SandboxConfig, SandboxHandle};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let sandbox = SandboxHandle::start(SandboxConfig::demo()).await?;
//! let base = sandbox.base_url(); // http://127.0.0.1:PORT: API base and authorization page base
//! assert!(base.starts_with("http://127.0.0.1:"));
//! assert_eq!(sandbox.state().stats().deliveries, 0);
//! sandbox.shutdown().await;
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod config;
mod html;
mod library;
mod lifecycle;
mod push;
mod server;
mod state;

pub use clock::{ManualClock, SandboxClock, SharedSandboxClock, SystemClock};
pub use config::{
    AppConfig, ConfigFileError, DEMO_APPID, DEMO_REDIRECT_DOMAINS, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig,
    TemplateConfig, UserConfig,
};
pub use library::{DEMO_LONG_TERM_TEMPLATE, DEMO_MP_TEMPLATE};
pub use lifecycle::SandboxHandle;
pub use push::{PUSH_ATTEMPTS, PUSH_TIMEOUT, PushRecord, PushSettings};
pub use server::{SandboxState, check_send_body, router, router_with_clock};
pub use state::{Delivered, Faults, LogEntry, LostAnswers, Stats, TokenFault};

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
