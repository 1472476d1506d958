//! What both production transports are configured with, and its defaults, written once.

use std::time::Duration;

/// The settings `ReqwestTransport` and `HyperTransport` share.
#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) user_agent: String,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) pool_max_idle_per_host: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            user_agent: crate::DEFAULT_USER_AGENT.to_owned(),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
        }
    }
}

/// The builder methods of the shared settings, for a builder with a `settings: HttpSettings`.
macro_rules! http_settings_setters {
    () => {
        /// Time allowed to open a connection, TLS included (default 5 s). Failing it means the
        /// request never left ([`TransportErrorKind::Connect`](crate::TransportErrorKind::Connect)).
        pub fn connect_timeout(mut self, d: std::time::Duration) -> Self {
            self.settings.connect_timeout = d;
            self
        }

        /// Time allowed for the whole exchange (default 15 s). Failing it after the connection
        /// was made means the outcome is unknown
        /// ([`TransportErrorKind::Timeout`](crate::TransportErrorKind::Timeout)).
        pub fn timeout(mut self, d: std::time::Duration) -> Self {
            self.settings.timeout = d;
            self
        }

        /// The `User-Agent` header (default [`DEFAULT_USER_AGENT`](crate::DEFAULT_USER_AGENT)).
        pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
            self.settings.user_agent = ua.into();
            self
        }

        /// How long an idle pooled connection is kept (default 90 s).
        pub fn pool_idle_timeout(mut self, d: std::time::Duration) -> Self {
            self.settings.pool_idle_timeout = d;
            self
        }

        /// Idle connections kept per host (default 64).
        pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
            self.settings.pool_max_idle_per_host = n;
            self
        }
    };
}

pub(crate) use http_settings_setters;
