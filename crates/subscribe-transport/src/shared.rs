//! [`SharedTransport`] and [`transport_fn`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{HttpRequest, HttpResponse, HttpTransport, TransportError};

/// A cheap-clone handle over any transport: what the client stores.
///
/// ```
/// use subscribe_transport::{HttpTransport, SharedTransport, transport_fn, HttpResponse};
/// let t = SharedTransport::new(transport_fn(|_req| async {
///     Ok(HttpResponse::new(subscribe_transport::bytes::Bytes::from_static(b"{}")))
/// }));
/// let t2 = t.clone(); // same transport
/// # let _ = t2;
/// ```
#[derive(Clone)]
pub struct SharedTransport(Arc<dyn HttpTransport>);

impl SharedTransport {
    /// Shares `transport`.
    pub fn new(transport: impl HttpTransport + 'static) -> Self {
        Self(Arc::new(transport))
    }
}

impl From<Arc<dyn HttpTransport>> for SharedTransport {
    fn from(t: Arc<dyn HttpTransport>) -> Self {
        Self(t)
    }
}

impl fmt::Debug for SharedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedTransport").field(&self.0).finish()
    }
}

// Written out rather than through `#[async_trait]`: handing back the inner transport's boxed
// future saves a second allocation per request.
impl HttpTransport for SharedTransport {
    fn send<'life0, 'async_trait>(
        &'life0 self,
        request: HttpRequest,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, TransportError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.0.send(request)
    }
}

/// A transport made from an async closure: for quick fakes and for wrappers (logging, metrics,
/// a proxy header) around another transport.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use subscribe_transport::{HttpTransport, SharedTransport, transport_fn};
///
/// // Count requests, then hand them to the real transport.
/// fn counting(inner: SharedTransport, count: Arc<AtomicUsize>) -> impl HttpTransport {
///     transport_fn(move |req| {
///         let inner = inner.clone();
///         count.fetch_add(1, Ordering::Relaxed);
///         async move { inner.send(req).await }
///     })
/// }
/// ```
pub fn transport_fn<F, Fut>(f: F) -> FnTransport<F>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<HttpResponse, TransportError>> + Send + 'static,
{
    FnTransport(f)
}

/// See [`transport_fn`].
#[derive(Clone)]
pub struct FnTransport<F>(F);

impl<F> fmt::Debug for FnTransport<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnTransport")
    }
}

#[async_trait::async_trait]
impl<F, Fut> HttpTransport for FnTransport<F>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<HttpResponse, TransportError>> + Send + 'static,
{
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        (self.0)(request).await
    }
}
