//! [`TracingTransport`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use subscribe_client::transport::http::{HeaderName, HeaderValue};
use subscribe_client::transport::{
    HttpRequest, HttpResponse, HttpTransport, SharedTransport, TransportError,
};

/// What [`TracingTransport`] counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests handed to the inner transport.
    pub requests: AtomicU64,
    /// Requests that failed without an HTTP answer.
    pub failures: AtomicU64,
}

/// Adds `x-request-source: <name>` to every request (a proxy or WeChat's support can then tell
/// this service's calls apart) and counts requests and failures. Everything else, the
/// "did the request leave?" answer included, is the inner transport's.
#[derive(Debug, Clone)]
pub struct TracingTransport {
    inner: SharedTransport,
    source: HeaderValue,
    counters: Arc<Counters>,
}

impl TracingTransport {
    /// The header this transport adds.
    pub const HEADER: &'static str = "x-request-source";

    /// Wraps `inner`; `source` is the header's value.
    ///
    /// # Errors
    /// When `source` is not a valid header value.
    pub fn new(
        inner: impl HttpTransport + 'static,
        source: &str,
    ) -> Result<Self, subscribe_client::transport::http::header::InvalidHeaderValue> {
        Ok(Self {
            inner: SharedTransport::new(inner),
            source: HeaderValue::from_str(source)?,
            counters: Arc::default(),
        })
    }

    /// The counters, shared with every clone.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }
}

#[subscribe_client::async_trait]
impl HttpTransport for TracingTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let request = request.with_header(HeaderName::from_static(Self::HEADER), self.source.clone());
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.send(request).await;
        if result.is_err() {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}
