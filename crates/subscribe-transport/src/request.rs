//! [`HttpRequest`] (a request whose `Debug` cannot leak a secret) and [`HttpResponse`].

use std::fmt;

use bytes::Bytes;

/// The response type: any status, non-2xx included, with the whole body.
pub type HttpResponse = http::Response<Bytes>;

pub use subscribe_types::encoding::{REDACTED_PARAMS, redact_uri};

/// A request to send: an [`http::Request`] with a [`Bytes`] body.
///
/// The newtype exists for its `Debug`: it shows the method, the URI with the values of
/// `access_token` and `secret` (and any user-info) masked, and only the body's length, because
/// bodies of the token endpoint carry the AppSecret.
///
/// ```
/// use subscribe_transport::HttpRequest;
/// use subscribe_transport::bytes::Bytes;
///
/// let req = HttpRequest::post(
///     "https://api.weixin.qq.com/cgi-bin/message/template/subscribe?access_token=TOKEN123",
///     Bytes::from_static(b"{\"secret\":\"x\"}"),
/// )?;
/// let shown = format!("{req:?}");
/// assert!(!shown.contains("TOKEN123"));
/// assert_eq!(
///     shown,
///     "HttpRequest { method: POST, uri: \"https://api.weixin.qq.com/cgi-bin/message/template/subscribe?access_token=[redacted]\", body_len: 14 }"
/// );
/// # Ok::<(), subscribe_transport::http::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpRequest(http::Request<Bytes>);

impl HttpRequest {
    /// Wraps a request.
    pub fn new(request: http::Request<Bytes>) -> Self {
        Self(request)
    }

    /// A `GET` of `uri` with an empty body. `uri` is a `&str`, or a `String` (kept without
    /// copying), or an [`http::Uri`].
    ///
    /// # Errors
    /// [`http::Error`] when `uri` is not a valid URI.
    pub fn get<U>(uri: U) -> Result<Self, http::Error>
    where
        U: TryInto<http::Uri>,
        U::Error: Into<http::Error>,
    {
        http::Request::get(uri).body(Bytes::new()).map(Self)
    }

    /// A `POST` of a JSON `body` to `uri` (`Content-Type: application/json`). `uri` is a
    /// `&str`, or a `String` (kept without copying), or an [`http::Uri`].
    ///
    /// # Errors
    /// [`http::Error`] when `uri` is not a valid URI.
    pub fn post<U>(uri: U, body: impl Into<Bytes>) -> Result<Self, http::Error>
    where
        U: TryInto<http::Uri>,
        U::Error: Into<http::Error>,
    {
        http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .map(Self)
    }

    /// The request.
    pub fn as_http(&self) -> &http::Request<Bytes> {
        &self.0
    }

    /// The request, unwrapped.
    pub fn into_http(self) -> http::Request<Bytes> {
        self.0
    }

    /// The method.
    pub fn method(&self) -> &http::Method {
        self.0.method()
    }

    /// The URI, secrets included: do not log it. Use [`redacted_uri`](Self::redacted_uri).
    pub fn uri(&self) -> &http::Uri {
        self.0.uri()
    }

    /// The path, without the query (safe to log).
    pub fn path(&self) -> &str {
        self.0.uri().path()
    }

    /// The value of query parameter `name`, percent-decoding not applied.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.0.uri().query()?.split('&').find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k == name).then_some(v)
        })
    }

    /// The headers.
    pub fn headers(&self) -> &http::HeaderMap {
        self.0.headers()
    }

    /// The headers, to change: what a wrapping transport uses to add a header before passing
    /// the request on.
    pub fn headers_mut(&mut self) -> &mut http::HeaderMap {
        self.0.headers_mut()
    }

    /// The request with header `name` set to `value` (replacing any value it had).
    ///
    /// ```
    /// use subscribe_transport::HttpRequest;
    /// use subscribe_transport::http::header::{HeaderName, HeaderValue};
    ///
    /// let req = HttpRequest::post("https://api.weixin.qq.com/cgi-bin/stable_token", "{}")?
    ///     .with_header(HeaderName::from_static("x-request-id"), HeaderValue::from_static("42"));
    /// assert_eq!(req.headers()["x-request-id"], "42");
    /// assert_eq!(req.headers()["content-type"], "application/json");
    /// # Ok::<(), subscribe_transport::http::Error>(())
    /// ```
    #[must_use]
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.0.headers_mut().insert(name, value);
        self
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        self.0.body()
    }

    /// The URI with secret query values and user-info masked: safe to log.
    pub fn redacted_uri(&self) -> String {
        redact_uri(&self.0.uri().to_string())
    }
}

impl From<http::Request<Bytes>> for HttpRequest {
    fn from(r: http::Request<Bytes>) -> Self {
        Self(r)
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", self.method())
            .field("uri", &self.redacted_uri())
            .field("body_len", &self.body().len())
            .finish()
    }
}
