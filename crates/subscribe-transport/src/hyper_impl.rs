//! [`HyperTransport`]: hyper's HTTP/1.1 connections in a pool that opens at most one per send
//! in flight, with TLS through rustls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use crate::pool::{Host, Pool, Sender};
use crate::settings::{HttpSettings, http_settings_setters};
use crate::{HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind};

/// A transport over [`hyper`]'s HTTP/1.1 connections, TLS through rustls with the platform's
/// certificate verifier. Lighter per request than `ReqwestTransport` (it does not parse the
/// URL again), with the same contract and the same defaults: connect timeout 5 s (TLS
/// included), overall timeout 15 s, redirects never followed, idle connections kept 4 s, our
/// user agent, no proxy.
///
/// Its pool opens a connection only when none to the host is idle, and takes a connection back
/// before `send` returns, so a sender that keeps N requests in flight opens at most N
/// connections for its whole run (more only to replace those the server closes) and keeps them
/// all: size the concurrency, not the pool. hyper-util's pooled client, which reqwest uses,
/// races a new connection against the one a finished request is about to hand back and opens
/// up to half as many again (see `docs/performance.md`).
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
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
    connect_timeout: Duration,
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
        // The platform's verifier, with the extra roots the builder was given (none by default),
        // on the process's default crypto provider when the program installed one.
        let mut roots = Vec::new();
        for pem in &settings.extra_roots.0 {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            // The parser's own error quotes the offending line, which may be a key pasted by
            // mistake: say only that the text is not PEM.
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|_| crate::settings::no_certificate("the text is not valid PEM"))?;
            if certs.is_empty() {
                return Err(crate::settings::no_certificate("no CERTIFICATE block"));
            }
            roots.extend(certs);
        }
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let verifier = platform_verifier(roots, Arc::clone(&provider)).map_err(|e| invalid(e.into()))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.into()))?
            .dangerous() // only to plug in the verifier: the platform's own, every check on
            .with_custom_certificate_verifier(Arc::new(verifier));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.with_no_client_auth())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(HyperTransport {
            connector: https,
            pool: Pool::new(settings.pool_max_idle_per_host, settings.pool_idle_timeout),
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            user_agent,
            max_response_body: settings.max_response_body,
        })
    }
}

impl HyperTransport {
    /// A new connection to `uri`'s host: TCP, TLS for `https`, and HTTP/1.1's handshake, within
    /// the connect timeout. Its task runs until the server closes it or the pool drops it.
    async fn connect(&self, uri: &http::Uri) -> Result<Sender, TransportError> {
        let mut connector = self.connector.clone();
        let open = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(TransportError::connect)?;
            let io = connector.call(uri.clone()).await.map_err(TransportError::connect)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(io).await.map_err(TransportError::connect)?;
            tokio::spawn(async move {
                // Its end (closed by either side) is seen by the pool through `is_closed`.
                let _closed = connection.await;
            });
            Ok(sender)
        };
        match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::connect("no connection within the connect timeout")),
        }
    }

    /// Sends `request`; `written` turns true once a connection has taken it (until then, a
    /// failure, the overall timeout included, means it never left).
    async fn exchange(
        &self,
        request: HttpRequest,
        written: &AtomicBool,
    ) -> Result<HttpResponse, TransportError> {
        let (mut parts, body) = request.into_http().into_parts();
        // HTTP/1.x only: hyper's connection task panics on another version, after the request
        // was handed over.
        if !matches!(parts.version, http::Version::HTTP_10 | http::Version::HTTP_11) {
            return Err(TransportError::new(
                TransportErrorKind::InvalidRequest,
                format!("{:?} is not spoken here: HTTP/1.0 or HTTP/1.1 only", parts.version),
            ));
        }
        let host = Host::of(&parts.uri).ok_or_else(|| {
            TransportError::new(
                TransportErrorKind::InvalidRequest,
                "the request's URI has no http(s) scheme or no host",
            )
        })?;
        let target = parts.uri.clone();
        // On a connection of its own, HTTP/1.1 sends the path and the query, and the host in
        // `Host`.
        parts.uri =
            parts.uri.path_and_query().map_or_else(|| http::Uri::from_static("/"), |p| p.clone().into());
        if !parts.headers.contains_key(http::header::HOST) {
            let value = host.header()?;
            parts.headers.insert(http::header::HOST, value);
        }
        parts.headers.entry(http::header::USER_AGENT).or_insert_with(|| self.user_agent.clone());
        let mut request = http::Request::from_parts(parts, Full::new(body));
        loop {
            let (mut sender, pooled) = match self.pool.checkout(&host).await {
                Some(sender) => (sender, true),
                None => (self.connect(&target).await?, false),
            };
            written.store(true, Ordering::Relaxed);
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body =
                        crate::settings::read_limited(body, self.max_response_body, TransportError::io)
                            .await?;
                    self.pool.put(&host, sender);
                    return Ok(http::Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte of it was written: a pooled connection the server had just
                    // closed. Another connection takes it.
                    Some(unsent) if pooled => {
                        written.store(false, Ordering::Relaxed);
                        request = unsent;
                    }
                    Some(_) => return Err(TransportError::connect(e.into_error())),
                    // Written, partly written, or its answer lost: the server may have acted.
                    None => return Err(TransportError::io(e.into_error())),
                },
            }
        }
    }
}

/// The platform's certificate verifier, trusting `extra` roots besides the platform's.
#[cfg(not(target_os = "android"))]
fn platform_verifier(
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls_platform_verifier::Verifier, rustls::Error> {
    if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider)
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
    }
}

/// Android's platform verifier takes no extra roots.
#[cfg(target_os = "android")]
fn platform_verifier(
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls_platform_verifier::Verifier, rustls::Error> {
    if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider)
    } else {
        Err(rustls::Error::General("extra root certificates are not supported on Android".into()))
    }
}

#[async_trait::async_trait]
impl HttpTransport for HyperTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let written = AtomicBool::new(false);
        match tokio::time::timeout(self.timeout, self.exchange(request, &written)).await {
            Ok(result) => result,
            // Still connecting, or waiting for a pooled connection: it never left.
            Err(_) if !written.load(Ordering::Relaxed) => {
                Err(TransportError::connect("no connection within the timeout"))
            }
            Err(_) => Err(TransportError::timeout("no complete response within the timeout")),
        }
    }
}
