//! [`TransportError`]: why no response came back.

use std::fmt;

/// A boxed error, the source of a [`TransportError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// No HTTP response came back.
///
/// The [`kind`](Self::kind) tells whether the request may have reached the server, which is
/// what a caller needs to decide about replaying a non-idempotent call. `Display` shows the
/// kind only, never a URL, a body or the source; the cause is available through
/// [`source`](std::error::Error::source) (and for reqwest it has been stripped of its URL).
///
/// ```
/// use subscribe_transport::{TransportError, TransportErrorKind};
/// let e = TransportError::connect("connection refused");
/// assert_eq!(e.kind(), TransportErrorKind::Connect);
/// assert!(e.request_never_left());
/// assert_eq!(e.to_string(), "connection failed; the request was not sent");
/// assert!(!TransportError::timeout("slow").request_never_left());
/// ```
///
/// Cheap to clone (the source is shared), so one failure can be handed to every caller that
/// waited for the same request.
#[derive(Clone, Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// What went wrong, by whether the request may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No connection could be made (DNS, refused, TLS handshake, connect timeout): the request
    /// never left.
    Connect,
    /// The request could not be built or was refused locally before sending: it never left.
    InvalidRequest,
    /// No complete response in time. The request may have reached the server.
    Timeout,
    /// The connection failed after the request started (reset, closed, body read failure).
    /// The request may have reached the server.
    Io,
    /// The response's body was larger than the transport's limit (64 KiB by default; WeChat's
    /// answers are a few hundred bytes, so it is a proxy's page or a misdirected `api_base`).
    /// The request reached the server, which may have acted on it.
    ResponseTooLarge,
    /// Anything else. Treat as "may have reached the server".
    Other,
}

impl TransportErrorKind {
    /// Whether a request that failed this way certainly was not received by the server.
    pub fn request_never_left(self) -> bool {
        matches!(self, Self::Connect | Self::InvalidRequest)
    }

    fn phrase(self) -> &'static str {
        match self {
            Self::Connect => "connection failed; the request was not sent",
            Self::InvalidRequest => "the request could not be sent as built",
            Self::Timeout => "timed out waiting for the response",
            Self::Io => "the connection failed after the request started",
            Self::ResponseTooLarge => "the response body was larger than the limit",
            Self::Other => "transport failure",
        }
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phrase())
    }
}

impl TransportError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: TransportErrorKind, source: impl Into<BoxError>) -> Self {
        Self { kind, source: Some(source.into().into()) }
    }

    /// An error of `kind` with no further cause.
    pub fn from_kind(kind: TransportErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// [`TransportErrorKind::Connect`].
    pub fn connect(source: impl Into<BoxError>) -> Self {
        Self::new(TransportErrorKind::Connect, source)
    }

    /// [`TransportErrorKind::Timeout`].
    pub fn timeout(source: impl Into<BoxError>) -> Self {
        Self::new(TransportErrorKind::Timeout, source)
    }

    /// [`TransportErrorKind::Io`].
    pub fn io(source: impl Into<BoxError>) -> Self {
        Self::new(TransportErrorKind::Io, source)
    }

    /// [`TransportErrorKind::Other`].
    pub fn other(source: impl Into<BoxError>) -> Self {
        Self::new(TransportErrorKind::Other, source)
    }

    /// The kind.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the request certainly was not received by the server.
    pub fn request_never_left(&self) -> bool {
        self.kind.request_never_left()
    }

    /// Whether it was a timeout.
    pub fn is_timeout(&self) -> bool {
        self.kind == TransportErrorKind::Timeout
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.phrase())
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}
