//! Integration tests of `subscribe-transport`.

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

#[cfg(all(feature = "test-util", any(feature = "reqwest", feature = "hyper")))]
mod contract;
#[cfg(any(feature = "reqwest", feature = "hyper"))]
mod limits;
#[cfg(feature = "mock")]
mod mock;
#[cfg(feature = "hyper")]
mod pool;
mod request;
#[cfg(feature = "reqwest")]
mod reqwest_wiremock;
#[cfg(all(feature = "test-util", any(feature = "reqwest", feature = "hyper")))]
mod tls;

/// A token value that must never appear in printed output.
pub const TOKEN: &str = "TOKEN_must_not_print_4f2a";
/// A secret value that must never appear in printed output.
pub const SECRET: &str = "SECRET_must_not_print_9c1e";
