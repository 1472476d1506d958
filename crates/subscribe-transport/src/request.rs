//! [`HttpRequest`] (a request whose `Debug` cannot leak a secret) and [`HttpResponse`].

use std::fmt;

use bytes::Bytes;

/// The response type: any status, non-2xx included, with the whole body.
pub type HttpResponse = http::Response<Bytes>;

/// Query parameters whose values are masked wherever a request is printed.
pub const REDACTED_PARAMS: &[&str] = &["access_token", "authorizer_access_token", "secret", "appsecret"];

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

/// Masks the values of [`REDACTED_PARAMS`] in the query and any user-info in the authority.
///
/// ```
/// use subscribe_transport::redact_uri;
/// assert_eq!(
///     redact_uri("http://u:p@h/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S#x"),
///     "http://[redacted]@h/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=[redacted]#x"
/// );
/// ```
pub fn redact_uri(uri: &str) -> String {
    let (before_fragment, fragment) = match uri.split_once('#') {
        Some((a, b)) => (a, Some(b)),
        None => (uri, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(uri.len());
    // User-info: between "://" and the first '@' before the path.
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((_, host)) => {
                    out.push_str("[redacted]@");
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) if REDACTED_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                    out.push_str(k);
                    out.push_str("=[redacted]");
                }
                _ => out.push_str(pair),
            }
        }
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}
