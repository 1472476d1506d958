//! [`ReqwestTransport`]: the default transport.

use crate::settings::{HttpSettings, http_settings_setters};
use crate::{HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind};

/// The default transport, over a pooled [`reqwest`] client.
///
/// Defaults: connect timeout 5 s, overall timeout 15 s, redirects never followed, connection
/// pooling, our user agent, no proxy (not even one from the environment). Every reqwest error
/// is stripped of its URL before it is kept, so the access token in the query cannot surface
/// in an error.
///
/// Its pool is reqwest's (hyper-util's): a request that finds no idle connection starts a new
/// one while the connection a finished request is about to hand back is on its way, so with N
/// requests in flight it can open somewhat more than N (kept and reused, so the count follows
/// the concurrency, not the requests). `HyperTransport` (feature `hyper`) opens at most N; use
/// it for thousands in flight.
///
/// ```no_run
/// use std::time::Duration;
/// use subscribe_transport::ReqwestTransport;
///
/// let transport = ReqwestTransport::builder()
///     .timeout(Duration::from_secs(10))
///     .proxy("http://proxy.internal:3128")
///     .build()?;
/// # Ok::<(), subscribe_transport::TransportError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_response_body: usize,
}

impl ReqwestTransport {
    /// A transport with the defaults.
    ///
    /// # Errors
    /// [`TransportError`] when the TLS backend cannot be initialised.
    pub fn new() -> Result<Self, TransportError> {
        Self::builder().build()
    }

    /// Starts a builder with the defaults.
    pub fn builder() -> ReqwestTransportBuilder {
        ReqwestTransportBuilder::default()
    }
}

impl From<reqwest::Client> for ReqwestTransport {
    /// Uses a client you configured. Its redirect policy is yours: set
    /// `redirect(reqwest::redirect::Policy::none())`, as WeChat never redirects API calls.
    fn from(client: reqwest::Client) -> Self {
        Self { client, max_response_body: crate::settings::DEFAULT_MAX_RESPONSE_BODY }
    }
}

/// Configures a [`ReqwestTransport`]. Its `Debug` does not show the proxy URL (it may hold
/// credentials).
#[derive(Clone, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ReqwestTransportBuilder {
    settings: HttpSettings,
    proxy: Option<String>,
}

impl std::fmt::Debug for ReqwestTransportBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqwestTransportBuilder")
            .field("settings", &self.settings)
            .field("proxy", &self.proxy.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl ReqwestTransportBuilder {
    http_settings_setters!();

    /// Sends everything through this proxy URL (`http://`, `https://` or, with reqwest's
    /// `socks` feature, `socks5://`); credentials may be in the URL.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Builds the transport.
    ///
    /// # Errors
    /// [`TransportError`] of kind `InvalidRequest` when the proxy URL is invalid or the TLS
    /// backend cannot be initialised. The proxy URL (which may hold credentials) is not kept.
    pub fn build(self) -> Result<ReqwestTransport, TransportError> {
        let settings = self.settings;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(settings.user_agent)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .no_proxy();
        #[cfg(any(feature = "rustls", feature = "native-tls"))]
        for pem in &settings.extra_roots.0 {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| crate::settings::no_certificate(e.without_url()))?;
            if certs.is_empty() {
                return Err(crate::settings::no_certificate("no CERTIFICATE block"));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
        if !settings.extra_roots.0.is_empty() {
            return Err(TransportError::new(
                TransportErrorKind::InvalidRequest,
                "add_root_certificates_pem: built without TLS (feature `rustls` or `native-tls`)",
            ));
        }
        if let Some(url) = &self.proxy {
            let proxy = reqwest::Proxy::all(url.as_str())
                .map_err(|e| TransportError::new(TransportErrorKind::InvalidRequest, e.without_url()))?;
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| TransportError::new(TransportErrorKind::InvalidRequest, e.without_url()))?;
        Ok(ReqwestTransport { client, max_response_body: settings.max_response_body })
    }
}

/// Classifies a reqwest error by whether the request may have left, and strips its URL.
fn classify(e: reqwest::Error) -> TransportError {
    let kind = if e.is_connect() {
        // A connect timeout is also `is_timeout`; it never left, so `Connect` wins.
        TransportErrorKind::Connect
    } else if e.is_builder() {
        TransportErrorKind::InvalidRequest
    } else if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_request() || e.is_body() || e.is_decode() {
        TransportErrorKind::Io
    } else {
        TransportErrorKind::Other
    };
    TransportError::new(kind, e.without_url())
}

/// `reqwest::Request::try_from` formats the URI through `Display` (a string grown a few times)
/// and parses it; this writes the text once, at its final size, and parses it once.
fn to_reqwest(request: http::Request<bytes::Bytes>) -> Result<reqwest::Request, TransportError> {
    let (parts, body) = request.into_parts();
    let url = parse_url(&parts.uri)?;
    let mut out = reqwest::Request::new(parts.method, url);
    *out.headers_mut() = parts.headers;
    *out.version_mut() = parts.version;
    *out.body_mut() = Some(reqwest::Body::from(body));
    Ok(out)
}

fn parse_url(uri: &http::Uri) -> Result<reqwest::Url, TransportError> {
    let (scheme, authority) =
        (uri.scheme_str().unwrap_or("http"), uri.authority().map_or("", |a| a.as_str()));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut text = String::with_capacity(scheme.len() + 3 + authority.len() + path.len());
    text.push_str(scheme);
    text.push_str("://");
    text.push_str(authority);
    text.push_str(path);
    // A parse error would print the URL; keep only its kind.
    reqwest::Url::parse(&text).map_err(|_| TransportError::from_kind(TransportErrorKind::InvalidRequest))
}

#[async_trait::async_trait]
impl HttpTransport for ReqwestTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let request = to_reqwest(request.into_http())?;
        let mut response = self.client.execute(request).await.map_err(classify)?;
        let status = response.status();
        let version = response.version();
        let headers = std::mem::take(response.headers_mut());
        let body = http::Response::<reqwest::Body>::from(response).into_body();
        let body = crate::settings::read_limited(body, self.max_response_body, classify).await?;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.version_mut() = version;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
