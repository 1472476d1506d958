//! [`ConfigError`]: the client could not be built.

use std::time::Duration;

use subscribe_transport::TransportError;

use super::ErrorKind;

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
