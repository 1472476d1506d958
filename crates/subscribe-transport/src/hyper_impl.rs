//! [`HyperTransport`]: hyper-util's pooled client, with TLS through rustls.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::settings::{HttpSettings, http_settings_setters};
use crate::{HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind};

/// A transport over [`hyper_util`]'s pooled client: HTTP/1.1, TLS through rustls with the
/// platform's certificate verifier. Lighter per request than `ReqwestTransport`
/// (it does not parse the URL again), with the same contract and the same defaults: connect
/// timeout 5 s, overall timeout 15 s, redirects never followed, idle connections kept 90 s, up
/// to 64 per host, our user agent, no proxy.
///
/// ```
/// use std::time::Duration;
/// use subscribe_transport::HyperTransport;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let transport = HyperTransport::builder().timeout(Duration::from_secs(10)).build()?;
/// # let _ = transport;
/// # Ok::<(), subscribe_transport::TransportError>(())
/// # }).unwrap();
/// ```
///
/// [`ReqwestTransport`]: crate::ReqwestTransport
#[derive(Clone, Debug)]
pub struct HyperTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    user_agent: http::HeaderValue,
    max_response_body: usize,
}

/// Configures a [`HyperTransport`].
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HyperTransportBuilder {
    settings: HttpSettings,
}

impl HyperTransport {
    /// A transport with the defaults.
    ///
    /// # Errors
    /// As [`HyperTransportBuilder::build`].
    pub fn new() -> Result<Self, TransportError> {
        Self::builder().build()
    }

    /// Configures one.
    pub fn builder() -> HyperTransportBuilder {
        HyperTransportBuilder::default()
    }
}

impl HyperTransportBuilder {
    http_settings_setters!();

    /// Builds the transport. Needs a tokio runtime when it sends, not when it is built.
    ///
    /// # Errors
    /// [`TransportError`] of kind `InvalidRequest` when the user agent is not a valid header
    /// value or the platform's certificate verifier cannot be set up.
    pub fn build(self) -> Result<HyperTransport, TransportError> {
        let invalid = |e: Box<dyn std::error::Error + Send + Sync>| {
            TransportError::new(TransportErrorKind::InvalidRequest, e)
        };
        let settings = self.settings;
        let user_agent = http::HeaderValue::try_from(settings.user_agent).map_err(|e| invalid(e.into()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| invalid(e.into()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(https);
        Ok(HyperTransport {
            client,
            timeout: settings.timeout,
            user_agent,
            max_response_body: settings.max_response_body,
        })
    }
}

/// Classifies a client error by whether the request may have left. hyper's errors never hold
/// the URI.
fn classify(e: hyper_util::client::legacy::Error) -> TransportError {
    if e.is_connect() {
        TransportError::connect(e)
    } else {
        // Written, partly written, or its answer lost: the server may have acted.
        TransportError::io(e)
    }
}

#[async_trait::async_trait]
impl HttpTransport for HyperTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let (mut parts, body) = request.into_http().into_parts();
        parts.headers.entry(http::header::USER_AGENT).or_insert_with(|| self.user_agent.clone());
        let request = http::Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let response = self.client.request(request).await.map_err(classify)?;
            let (parts, body) = response.into_parts();
            let body =
                crate::settings::read_limited(body, self.max_response_body, TransportError::io).await?;
            Ok(http::Response::from_parts(parts, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::timeout("no complete response within the timeout")),
        }
    }
}
