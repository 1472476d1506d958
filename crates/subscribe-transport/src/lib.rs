//! A pluggable async HTTP layer for the WeChat subscribe SDK. It knows HTTP and nothing of
//! WeChat.
//!
//! Implement [`HttpTransport`] to put the client on another HTTP stack, wrap one to add logging
//! or metrics ([`transport_fn`]), or use `MockTransport` (feature `mock`) in tests. Requests and responses are
//! the [`http`] 1.x types with a [`Bytes`](bytes::Bytes) body; both crates are re-exported.
//!
//! | feature | default | gives |
//! |---|---|---|
//! | `reqwest` | yes | [`ReqwestTransport`] |
//! | `rustls` | yes | TLS through rustls |
//! | `native-tls` | no | TLS through the system library |
//! | `hyper` | no | `HyperTransport`: hyper's HTTP/1.1 connections, at most one per send in flight, TLS through rustls |
//! | `mock` | no | `MockTransport` for tests |
//! | `test-util` | no | `mock`, `test_util::transport_contract` (the suite a custom transport runs) and `test_util::TestAuthority` (a certificate authority for TLS tests) |
//!
//! With `default-features = false` only the trait, the request and response types and the error
//! remain: no reqwest, no TLS stack.
//!
//! The trait uses `async-trait`, so it can be stored as `Arc<dyn HttpTransport>` (see
//! [`SharedTransport`]); its expanded signature returns a boxed future, one allocation per
//! request, which is nothing next to a network round trip.
//!
//! ```
//! use subscribe_transport::{HttpRequest, HttpResponse, HttpTransport, TransportError};
//!
//! /// A transport that answers every request itself: the smallest possible implementation.
//! #[derive(Debug)]
//! struct AlwaysOk;
//!
//! #[subscribe_transport::async_trait]
//! impl HttpTransport for AlwaysOk {
//!     async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, TransportError> {
//!         Ok(HttpResponse::new(r#"{"errcode":0,"errmsg":"ok"}"#.into()))
//!     }
//! }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "test-util")]
mod contract;
mod error;
#[cfg(feature = "hyper")]
mod hyper_impl;
#[cfg(feature = "mock")]
mod mock;
#[cfg(feature = "hyper")]
mod pool;
mod request;
#[cfg(feature = "reqwest")]
mod reqwest_impl;
#[cfg(any(feature = "reqwest", feature = "hyper"))]
mod settings;
mod shared;
#[cfg(feature = "test-util")]
mod test_ca;

pub use async_trait::async_trait;
pub use bytes;
pub use error::{BoxError, TransportError, TransportErrorKind};
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub use hyper_impl::{HyperTransport, HyperTransportBuilder};
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub use mock::{MockReply, MockTransport, RouteBuilder};
pub use request::{HttpRequest, HttpResponse, REDACTED_PARAMS, redact_uri};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use reqwest_impl::{ReqwestTransport, ReqwestTransportBuilder};
pub use shared::{FnTransport, SharedTransport, transport_fn};

pub use http;

/// The default user agent.
pub const DEFAULT_USER_AGENT: &str = concat!("subscribe-transport/", env!("CARGO_PKG_VERSION"));

/// Test helpers for transport authors.
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util {
    pub use crate::contract::transport_contract;
    pub use crate::test_ca::TestAuthority;
}

/// Sends one HTTP request and returns the response.
///
/// Contract for implementers:
/// - Return any response the server gave, non-2xx included: status handling is the caller's.
/// - Never follow redirects.
/// - On failure, say whether the request may have reached the server: use
///   [`TransportErrorKind::Connect`] (or `InvalidRequest`) only when it certainly did not,
///   because the client replays only those.
/// - Never put the URI (it holds the access token) in an error.
#[async_trait::async_trait]
pub trait HttpTransport: Send + Sync + std::fmt::Debug {
    /// Sends `request` and returns the whole response.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

// Forwards the inner boxed future as it is (see `SharedTransport`).
impl<T: HttpTransport + ?Sized> HttpTransport for std::sync::Arc<T> {
    fn send<'life0, 'async_trait>(
        &'life0 self,
        request: HttpRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, TransportError>> + Send + 'async_trait>,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        (**self).send(request)
    }
}

// Compile-time checks: the trait is object safe and the types cross threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    fn _object_safe(_: &dyn HttpTransport) {}
    assert_send_sync::<TransportError>();
    assert_send_sync::<HttpRequest>();
    assert_send_sync::<SharedTransport>();
};

/// The README's example runs as a doctest.
#[cfg(all(doctest, feature = "mock"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
