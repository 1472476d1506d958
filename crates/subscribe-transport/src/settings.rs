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
    pub(crate) max_response_body: usize,
    pub(crate) extra_roots: ExtraRoots,
}

/// PEM text of certificate authorities trusted besides the platform's; `Debug` shows how many
/// texts, not the certificates.
#[derive(Clone, Default)]
pub(crate) struct ExtraRoots(pub(crate) Vec<Vec<u8>>);

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} PEM text(s)", self.0.len())
    }
}

/// The error for PEM text that holds no certificate.
#[cfg(any(feature = "hyper", feature = "reqwest"))]
pub(crate) fn no_certificate(detail: impl std::fmt::Display) -> crate::TransportError {
    crate::TransportError::new(
        crate::TransportErrorKind::InvalidRequest,
        format!("add_root_certificates_pem: no PEM certificate could be read ({detail})"),
    )
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            user_agent: crate::DEFAULT_USER_AGENT.to_owned(),
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: usize::MAX,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            extra_roots: ExtraRoots::default(),
        }
    }
}

/// How long an idle pooled connection is kept by default: 4 s, below the idle close of the
/// servers a sender meets (5 s for Node and Apache, 10 s for the sandbox, 75 s for nginx;
/// WeChat's own is not documented). A server that closes an idle connection as the client picks
/// it for a send leaves that send's outcome unknown (the request was written, no answer came),
/// and a send is never retried blind, so the client must drop the connection first.
pub(crate) const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The default cap on a response body: 64 KiB.
pub(crate) const DEFAULT_MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Reads `body` whole, up to `limit` bytes: a longer one (a proxy's page, a body that never
/// ends) is [`TransportErrorKind::ResponseTooLarge`](crate::TransportErrorKind::ResponseTooLarge)
/// as soon as it passes the limit; other body errors go through `classify`.
pub(crate) async fn read_limited<B>(
    body: B,
    limit: usize,
    classify: impl FnOnce(B::Error) -> crate::TransportError,
) -> Result<bytes::Bytes, crate::TransportError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use http_body_util::BodyExt as _;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => match e.downcast::<B::Error>() {
            Ok(inner) => Err(classify(*inner)),
            Err(e) => Err(crate::TransportError::new(crate::TransportErrorKind::ResponseTooLarge, e)),
        },
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

        /// How long an idle pooled connection is kept (default 4 s). Keep it below the server's
        /// own idle close: a server that closes the connection as a send is written on it leaves
        /// the send's outcome unknown. WeChat's idle close is not documented; the common servers
        /// close after 5 s (Node, Apache) to 75 s (nginx). A longer value saves a reconnect (a TCP
        /// and a TLS handshake) for a sender that pauses longer than 4 s between sends.
        pub fn pool_idle_timeout(mut self, d: std::time::Duration) -> Self {
            self.settings.pool_idle_timeout = d;
            self
        }

        /// The largest response body read (default 64 KiB): a longer one fails with
        /// [`TransportErrorKind::ResponseTooLarge`](crate::TransportErrorKind::ResponseTooLarge)
        /// as soon as it passes the limit, so a misdirected `api_base` or a body that never
        /// ends cannot fill memory.
        pub fn max_response_body(mut self, bytes: usize) -> Self {
            self.settings.max_response_body = bytes;
            self
        }

        /// Also trusts the certificate authorities in `pem` (one or more `CERTIFICATE` blocks):
        /// a company's TLS-inspecting proxy, or a test authority. The platform's roots stay
        /// trusted and every certificate is still checked (chain, name, dates); nothing here
        /// turns a check off. Text without a certificate fails `build` with `InvalidRequest`.
        pub fn add_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.settings.extra_roots.0.push(pem.into());
            self
        }

        /// Idle connections kept per host (default: no limit). Leave it: a pool keeps at most as
        /// many connections as there were sends in flight at once, and closes those idle for
        /// [`pool_idle_timeout`](Self::pool_idle_timeout). A lower limit closes the connections
        /// that come back beyond it, and a sender with more in flight opens new ones all run
        /// long (a TCP and a TLS handshake each).
        pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
            self.settings.pool_max_idle_per_host = n;
            self
        }
    };
}

pub(crate) use http_settings_setters;
