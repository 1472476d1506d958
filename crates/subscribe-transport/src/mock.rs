//! [`MockTransport`]: scripted answers and recorded requests, for tests.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::{HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind};

/// One scripted answer: a response or a transport error, optionally after a delay.
///
/// ```
/// use std::time::Duration;
/// use subscribe_transport::{MockReply, TransportErrorKind};
/// let ok = MockReply::json(200, r#"{"errcode":0,"errmsg":"ok"}"#);
/// let slow = MockReply::json(200, "{}").delay(Duration::from_millis(50));
/// let reset = MockReply::error(TransportErrorKind::Io);
/// # let _ = (ok, slow, reset);
/// ```
#[derive(Clone, Debug)]
pub struct MockReply {
    outcome: Outcome,
    delay: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Outcome {
    Response { status: u16, headers: Vec<(String, String)>, body: Bytes },
    Error(TransportErrorKind),
}

impl MockReply {
    /// A response with `status` and an empty body.
    pub fn status(status: u16) -> Self {
        Self { outcome: Outcome::Response { status, headers: Vec::new(), body: Bytes::new() }, delay: None }
    }

    /// A response with `status` and a JSON `body` (`Content-Type: application/json`).
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self::status(status).header("content-type", "application/json").body(body)
    }

    /// A transport error of `kind` instead of a response.
    pub fn error(kind: TransportErrorKind) -> Self {
        Self { outcome: Outcome::Error(kind), delay: None }
    }

    /// Sets the body (ignored for errors).
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        if let Outcome::Response { body: b, .. } = &mut self.outcome {
            *b = body.into();
        }
        self
    }

    /// Adds a header (ignored for errors).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Outcome::Response { headers, .. } = &mut self.outcome {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// Waits this long (on the tokio clock, so `tokio::time::pause` applies) before answering.
    #[must_use]
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    fn realize(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        match &self.outcome {
            Outcome::Error(kind) => Err(TransportError::new(
                *kind,
                format!("MockTransport: scripted {kind:?} error for {} {}", request.method(), request.path()),
            )),
            Outcome::Response { status, headers, body } => {
                let mut builder = http::Response::builder().status(*status);
                for (k, v) in headers {
                    builder = builder.header(k.as_str(), v.as_str());
                }
                builder.body(body.clone()).map_err(TransportError::other)
            }
        }
    }
}

type Predicate = Arc<dyn Fn(&HttpRequest) -> bool + Send + Sync>;
type Responder = Arc<dyn Fn(&HttpRequest) -> MockReply + Send + Sync>;

struct Route {
    method: http::Method,
    path: String,
    when: Option<Predicate>,
    respond: Responder,
    remaining: Option<usize>,
}

impl Route {
    fn matches(&self, req: &HttpRequest) -> bool {
        self.remaining != Some(0)
            && *req.method() == self.method
            && req.path() == self.path
            && self.when.as_ref().is_none_or(|w| w(req))
    }
}

#[derive(Default)]
struct State {
    routes: Vec<Route>,
    queue: VecDeque<MockReply>,
    requests: Vec<HttpRequest>,
    unexpected: Vec<String>,
}

/// A transport that answers from a script and records every request.
///
/// Answers come from routes first (method + path, optionally a predicate, optionally a limited
/// number of times), then from an ordered queue. A request that nothing answers panics with a
/// message naming it, and is also listed by [`assert_all_consumed`](Self::assert_all_consumed)
/// in case the panic happened in a task nobody joined. Cloning gives another handle to the same
/// script: keep one in the test, give one to the code under test.
///
/// ```
/// use subscribe_transport::{HttpRequest, HttpTransport, MockReply, MockTransport, TransportErrorKind};
///
/// # tokio_test_block_on(async {
/// let mock = MockTransport::new();
/// mock.route("POST", "/cgi-bin/stable_token")
///     .reply(MockReply::json(200, r#"{"access_token":"T","expires_in":7200}"#));
/// mock.push_error(TransportErrorKind::Connect);
/// mock.push(MockReply::json(200, r#"{"errcode":0,"errmsg":"ok"}"#));
///
/// let send = || HttpRequest::post("http://api.test/cgi-bin/message/template/subscribe?access_token=T", "{}").unwrap();
/// assert!(mock.send(send()).await.unwrap_err().request_never_left());
/// assert_eq!(mock.send(send()).await.unwrap().status(), 200);
/// let token = HttpRequest::post("http://api.test/cgi-bin/stable_token", "{}").unwrap();
/// assert_eq!(mock.send(token).await.unwrap().status(), 200);
///
/// assert_eq!(mock.count("/cgi-bin/message/template/subscribe"), 2);
/// mock.assert_all_consumed();
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MockTransport {
    state: Arc<Mutex<State>>,
}

impl MockTransport {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only ever happens in a failing test; keep going so the
        // original failure is the one reported.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `reply` for the next request that no route answers.
    pub fn push(&self, reply: MockReply) -> &Self {
        self.lock().queue.push_back(reply);
        self
    }

    /// Queues a response with `status` and `body`.
    pub fn push_response(&self, status: u16, body: impl Into<Bytes>) -> &Self {
        self.push(MockReply::json(status, body))
    }

    /// Queues a transport error of `kind`.
    pub fn push_error(&self, kind: TransportErrorKind) -> &Self {
        self.push(MockReply::error(kind))
    }

    /// Starts a route for `method` (`"GET"`, `"POST"`, …) and `path` (no query).
    ///
    /// # Panics
    /// If `method` is not a valid HTTP method name.
    pub fn route(&self, method: &str, path: &str) -> RouteBuilder<'_> {
        RouteBuilder {
            mock: self,
            method: http::Method::from_bytes(method.as_bytes()).expect("a valid HTTP method"),
            path: path.to_owned(),
            when: None,
            times: None,
        }
    }

    /// Every request received, in order (their `Debug` is redacted).
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.lock().requests.clone()
    }

    /// How many requests went to `path`.
    pub fn count(&self, path: &str) -> usize {
        self.lock().requests.iter().filter(|r| r.path() == path).count()
    }

    /// Forgets the recorded requests (the script stays).
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Panics unless the queue is empty, every route limited with `times` was used up, and no
    /// request went unanswered.
    ///
    /// # Panics
    /// With a message listing what is left or what was unexpected.
    pub fn assert_all_consumed(&self) {
        let state = self.lock();
        let mut problems = Vec::new();
        if !state.queue.is_empty() {
            problems.push(format!("{} queued repl(ies) never used", state.queue.len()));
        }
        for r in &state.routes {
            if let Some(n) = r.remaining.filter(|n| *n > 0) {
                problems.push(format!("route {} {} expected {n} more request(s)", r.method, r.path));
            }
        }
        for u in &state.unexpected {
            problems.push(format!("unexpected request: {u}"));
        }
        drop(state);
        assert!(problems.is_empty(), "MockTransport: {}", problems.join("; "));
    }

    /// Panics unless exactly `n` requests went to `path`.
    ///
    /// # Panics
    /// With the actual count.
    pub fn assert_count(&self, path: &str, n: usize) {
        let actual = self.count(path);
        assert_eq!(actual, n, "MockTransport: expected {n} request(s) to {path}, got {actual}");
    }

    fn answer(&self, request: &HttpRequest) -> Option<MockReply> {
        let mut state = self.lock();
        state.requests.push(request.clone());
        let route = state.routes.iter_mut().find(|r| r.matches(request));
        if let Some(route) = route {
            if let Some(n) = &mut route.remaining {
                *n -= 1;
            }
            let respond = Arc::clone(&route.respond);
            drop(state);
            return Some(respond(request));
        }
        if let Some(reply) = state.queue.pop_front() {
            return Some(reply);
        }
        state.unexpected.push(format!("{} {}", request.method(), request.redacted_uri()));
        None
    }
}

impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("MockTransport")
            .field("routes", &s.routes.len())
            .field("queued", &s.queue.len())
            .field("requests", &s.requests.len())
            .finish()
    }
}

#[async_trait::async_trait]
impl HttpTransport for MockTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let Some(reply) = self.answer(&request) else {
            panic!(
                "MockTransport: unexpected request {} {} (no route matched and the queue is empty)",
                request.method(),
                request.redacted_uri()
            );
        };
        if let Some(d) = reply.delay {
            tokio::time::sleep(d).await;
        }
        reply.realize(&request)
    }
}

/// Configures one route of a [`MockTransport`]; finish with [`reply`](Self::reply) or
/// [`respond_with`](Self::respond_with).
#[must_use = "a route is registered by `reply` or `respond_with`"]
pub struct RouteBuilder<'a> {
    mock: &'a MockTransport,
    method: http::Method,
    path: String,
    when: Option<Predicate>,
    times: Option<usize>,
}

impl fmt::Debug for RouteBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteBuilder").field("method", &self.method).field("path", &self.path).finish()
    }
}

impl RouteBuilder<'_> {
    /// Only requests for which `predicate` holds match (for example on the body or a query
    /// parameter).
    pub fn when(mut self, predicate: impl Fn(&HttpRequest) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(predicate));
        self
    }

    /// Matches at most `n` requests; [`MockTransport::assert_all_consumed`] then expects all
    /// `n`.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Answers every matching request with `reply`.
    pub fn reply(self, reply: MockReply) {
        self.respond_with(move |_| reply.clone());
    }

    /// Answers every matching request with what `f` returns for it.
    pub fn respond_with(self, f: impl Fn(&HttpRequest) -> MockReply + Send + Sync + 'static) {
        let route = Route {
            method: self.method,
            path: self.path,
            when: self.when,
            respond: Arc::new(f),
            remaining: self.times,
        };
        self.mock.lock().routes.push(route);
    }
}
