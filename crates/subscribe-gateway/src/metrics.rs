//! [`Metrics`]: the gateway's figures, in Prometheus' text format (`prometheus-client`), from a
//! registry of each gateway's own: two gateways in one process count apart, and nothing is
//! installed globally.
//!
//! Cardinality is bounded by construction: a label is a route template (never the path), a
//! method from a fixed list, a status code, an appid from the configuration (an appid that is
//! not configured makes no series, whoever sends it), or a word from a fixed set. Nothing
//! secret is a label: no key, no token, no key name.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The request-latency buckets, in seconds: 1 ms to about 16 s, doubling.
const LATENCY_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 15);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppOutcome {
    app: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppClass {
    app: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    app: String,
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrcodeLabels {
    app: String,
    kind: &'static str,
    errcode: i64,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// What a token read or a report of a rejected token came to (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenOutcome {
    /// Answered at once from the gateway's memory: no refresh awaited.
    Memory,
    /// The answer waited: for a refresh this call started or joined, or for the store.
    Waited,
    /// No token could be had (503).
    Unavailable,
    /// A report of the current token sooner than `report_interval_ms` after the last
    /// replacement (429): not acted on.
    TooSoon,
}

impl TokenOutcome {
    fn label(self, report: bool) -> &'static str {
        match (self, report) {
            (Self::Memory, false) => "memory",
            // A report answered at once was of a token no longer current.
            (Self::Memory, true) => "stale",
            (Self::Waited, false) => "waited",
            // A report that waited saw the reported token replaced.
            (Self::Waited, true) => "refreshed",
            (Self::Unavailable, _) => "unavailable",
            (Self::TooSoon, _) => "too_soon",
        }
    }
}

/// The gateway's metrics; cheap to clone (all clones count into one registry).
///
/// The send API records each send with [`record_send`](Self::record_send);
/// [`render`](Self::render) is what `/metrics` answers. Every series, with its labels, is
/// listed in `docs/gateway.md`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// The configured appids: the only values the `app` label takes.
    apps: HashSet<String>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: LatencyFamily,
    token_reads: Family<AppOutcome, Counter>,
    token_reports: Family<AppOutcome, Counter>,
    token_refreshes: Family<AppLabels, Counter>,
    token_refresh_errors: Family<AppClass, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    sends: Family<SendLabels, Counter>,
    send_errcodes: Family<ErrcodeLabels, Counter>,
    consent_answers: Family<AppOutcome, Counter>,
    dispatched: Family<AppOutcome, Counter>,
    dispatch_jobs: Family<AppOutcome, Counter>,
    push_events: Family<AppOutcome, Counter>,
    webhook_deliveries: Family<AppOutcome, Counter>,
    webhook_backlog: Family<AppLabels, Gauge>,
    /// The latest refused requests (401, 403, 429), newest last.
    refusals: Mutex<VecDeque<Refused>>,
}

/// The most refused requests kept for the status page.
const KEPT_REFUSALS: usize = 50;

/// A refused request, as the status page lists it: nothing the caller wrote but its method.
#[derive(Clone, Debug)]
pub(crate) struct Refused {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// The method's label.
    pub(crate) method: &'static str,
    /// The route's template (or `unmatched`).
    pub(crate) route: String,
    /// 401, 403 or 429.
    pub(crate) status: u16,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("apps", &self.inner.apps.len()).finish_non_exhaustive()
    }
}

/// `metric`, registered in `registry` as `name` with `help`.
fn registered<T: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: T,
) -> T {
    registry.register(name, help, metric.clone());
    metric
}

fn latency_histogram() -> Histogram {
    let (start, factor, count) = LATENCY_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, count))
}

impl Metrics {
    /// A registry of its own, for the apps named in `apps` (the configured ones).
    #[allow(clippy::too_many_lines)] // One registration a series: a list, not logic.
    pub(crate) fn new<'a>(apps: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("subscribe_gateway");
        let http_requests = registered(
            &mut registry,
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            Family::default(),
        );
        let http_duration: LatencyFamily = registered(
            &mut registry,
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            Family::new_with_constructor(latency_histogram),
        );
        let token_reads = registered(
            &mut registry,
            "token_reads",
            "Token reads by app: answered from memory, waited for a refresh or the store, or unavailable",
            Family::default(),
        );
        let token_reports = registered(
            &mut registry,
            "token_invalidations",
            "Reports of a rejected token by app: refreshed (it was current), stale (it was not; the current token answered) or unavailable",
            Family::default(),
        );
        let token_refreshes = registered(
            &mut registry,
            "token_refreshes",
            "Requests this gateway made to WeChat's token endpoint, by app",
            Family::default(),
        );
        let token_refresh_errors = registered(
            &mut registry,
            "token_refresh_errors",
            "Requests to WeChat's token endpoint that brought no token, by app and class",
            Family::default(),
        );
        let rate_limited = registered(
            &mut registry,
            "rate_limited",
            "Requests answered 429: over an API key's rate (key) or from a peer over its rate of failed authentications (peer)",
            Family::default(),
        );
        let sends = registered(
            &mut registry,
            "sends",
            "Messages sent through the send API, by app, kind and outcome",
            Family::default(),
        );
        let send_errcodes = registered(
            &mut registry,
            "send_errcodes",
            "Non-zero errcodes WeChat answered to sends, by app, kind and errcode",
            Family::default(),
        );
        let consent_answers = registered(
            &mut registry,
            "consent_answers",
            "Authorization answers completed through the consent routes, by app and outcome: confirmed, cancelled, refused (not valid in the session), used (replayed or accepted before) or unavailable (a store failed)",
            Family::default(),
        );
        let dispatched = registered(
            &mut registry,
            "dispatched",
            "Grants a dispatch job took and sent, by app and outcome: delivered, failed (pending again), unknown (under review) or dropped",
            Family::default(),
        );
        let dispatch_jobs = registered(
            &mut registry,
            "dispatch_jobs",
            "Dispatch jobs this gateway ended, by app and outcome: finished, cancelled or failed",
            Family::default(),
        );
        let push_events = registered(
            &mut registry,
            "push_events",
            "Events pushed by WeChat and taken (fed to the grants, kept for the webhook), by app and outcome: the event's name for subscribe_msg_popup_event, subscribe_msg_change_event and subscribe_msg_sent_event, else other",
            Family::default(),
        );
        let webhook_deliveries = registered(
            &mut registry,
            "webhook_deliveries",
            "Posts of kept events to the apps' webhooks, by app and outcome: delivered (2xx) or failed (kept and posted again)",
            Family::default(),
        );
        let webhook_backlog = registered(
            &mut registry,
            "webhook_backlog",
            "Events kept for the app's webhook and not yet taken, as this gateway's deliverer last counted them",
            Family::default(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                apps: apps.into_iter().map(str::to_owned).collect(),
                http_requests,
                http_duration,
                token_reads,
                token_reports,
                token_refreshes,
                token_refresh_errors,
                rate_limited,
                sends,
                send_errcodes,
                consent_answers,
                dispatched,
                dispatch_jobs,
                push_events,
                webhook_deliveries,
                webhook_backlog,
                refusals: Mutex::new(VecDeque::with_capacity(KEPT_REFUSALS)),
            }),
        }
    }

    /// `app` as a label value, if it is a configured app.
    fn app(&self, app: &str) -> Option<String> {
        self.inner.apps.contains(app).then(|| app.to_owned())
    }

    /// Records one send of the send API: `subscribe_gateway_sends_total{app, kind, outcome}`,
    /// and when WeChat answered a non-zero `errcode`,
    /// `subscribe_gateway_send_errcodes_total{app, kind, errcode}`.
    ///
    /// `kind` names the message kind and `outcome` what became of the send, each a word from
    /// a fixed set of the send API's own (such as `"one_time"`, and `"delivered"`, `"refused"`,
    /// `"unknown"`): `&'static str`, so no caller's input can become a label. An `app` that is
    /// not configured is not recorded (no series is made for it).
    ///
    /// ```
    /// # fn record(metrics: &subscribe_gateway::Metrics) {
    /// metrics.record_send("wx5a1db0c0ffee0001", "one_time", "refused", Some(43101));
    /// # }
    /// ```
    pub fn record_send(&self, app: &str, kind: &'static str, outcome: &'static str, errcode: Option<i64>) {
        let Some(app) = self.app(app) else { return };
        if let Some(errcode) = errcode.filter(|c| *c != 0) {
            let labels = ErrcodeLabels { app: app.clone(), kind, errcode };
            self.inner.send_errcodes.get_or_create(&labels).inc();
        }
        self.inner.sends.get_or_create(&SendLabels { app, kind, outcome }).inc();
    }

    /// Every series in Prometheus' text format (version 0.0.4), as `/metrics` answers it.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a `String` cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.inner.registry);
        text
    }

    /// One answer completed through the consent routes; `outcome` from the consent module's
    /// fixed set.
    pub(crate) fn consent_answer(&self, app: &str, outcome: &'static str) {
        if let Some(app) = self.app(app) {
            self.inner.consent_answers.get_or_create(&AppOutcome { app, outcome }).inc();
        }
    }

    /// One grant a dispatch job took and sent; `outcome` from the library's
    /// [`OutcomeKind`](subscribe_client::OutcomeKind).
    pub(crate) fn dispatched(&self, app: &str, outcome: &'static str) {
        if let Some(app) = self.app(app) {
            self.inner.dispatched.get_or_create(&AppOutcome { app, outcome }).inc();
        }
    }

    /// A dispatch job this gateway ended; `outcome` its end state.
    pub(crate) fn dispatch_job(&self, app: &str, outcome: &'static str) {
        if let Some(app) = self.app(app) {
            self.inner.dispatch_jobs.get_or_create(&AppOutcome { app, outcome }).inc();
        }
    }

    /// Keeps a refused request for the status page (the latest 50).
    fn refused(&self, method: &'static str, route: &str, status: u16) {
        let at = subscribe_client::Clock::now(&subscribe_client::SystemClock);
        let at_ms =
            at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let mut kept = self.inner.refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() == KEPT_REFUSALS {
            kept.pop_front();
        }
        kept.push_back(Refused { at_ms, method, route: route.to_owned(), status });
    }

    /// The latest refused requests, newest first.
    pub(crate) fn refusals(&self) -> Vec<Refused> {
        let kept = self.inner.refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter().rev().cloned().collect()
    }

    /// A pushed event taken; `outcome` its kind (a fixed set).
    pub(crate) fn push_event(&self, app: &str, outcome: &'static str) {
        if let Some(app) = self.app(app) {
            self.inner.push_events.get_or_create(&AppOutcome { app, outcome }).inc();
        }
    }

    /// How many events wait for `app`'s webhook.
    pub(crate) fn webhook_backlog(&self, app: &str, n: u64) {
        if let Some(app) = self.app(app) {
            self.inner
                .webhook_backlog
                .get_or_create(&AppLabels { app })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A post to a webhook: `delivered` or `failed`.
    pub(crate) fn webhook_delivery(&self, app: &str, outcome: &'static str) {
        if let Some(app) = self.app(app) {
            self.inner.webhook_deliveries.get_or_create(&AppOutcome { app, outcome }).inc();
        }
    }

    pub(crate) fn token_read(&self, app: &str, outcome: TokenOutcome) {
        if let Some(app) = self.app(app) {
            self.inner.token_reads.get_or_create(&AppOutcome { app, outcome: outcome.label(false) }).inc();
        }
    }

    pub(crate) fn token_report(&self, app: &str, outcome: TokenOutcome) {
        if let Some(app) = self.app(app) {
            self.inner.token_reports.get_or_create(&AppOutcome { app, outcome: outcome.label(true) }).inc();
        }
    }

    pub(crate) fn token_refresh(&self, app: &str) {
        if let Some(app) = self.app(app) {
            self.inner.token_refreshes.get_or_create(&AppLabels { app }).inc();
        }
    }

    pub(crate) fn token_refresh_error(&self, app: &str, class: &'static str) {
        if let Some(app) = self.app(app) {
            self.inner.token_refresh_errors.get_or_create(&AppClass { app, class }).inc();
        }
    }

    /// A request answered 429 by `limit`: `"key"` or `"peer"`.
    pub(crate) fn rate_limited(&self, limit: &'static str) {
        self.inner.rate_limited.get_or_create(&LimitLabels { limit }).inc();
    }

    fn http_request(&self, route: String, method: &'static str, status: StatusCode, seconds: f64) {
        self.inner.http_duration.get_or_create(&RouteLabels { route: route.clone() }).observe(seconds);
        let labels = HttpLabels { route, method, status: status.as_u16() };
        self.inner.http_requests.get_or_create(&labels).inc();
    }
}

/// The `route` label: the template of the route that matched (`/v1/apps/{appid}/access_token`,
/// one of the router's own, never the path), or `"unmatched"`.
fn route_label(matched: Option<&MatchedPath>) -> String {
    matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned())
}

/// The `method` label: a standard method, or `"other"` (a client may send any token as a
/// method).
fn method_label(method: &Method) -> &'static str {
    let known = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
    ];
    known.into_iter().find(|(m, _)| m == method).map_or("other", |(_, label)| label)
}

/// The layer that counts every request of the gateway's router and times it.
pub(crate) async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    if matches!(status.as_u16(), 401 | 403 | 429) {
        metrics.refused(method, &route, status.as_u16());
    }
    metrics.http_request(route, method, status, started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub(crate) async fn serve_metrics(State(metrics): State<Metrics>) -> Response {
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus_text::CONTENT_TYPE));
    response
}

/// Runs `call` and tells whether it had to wait: a token served from the client's memory is
/// ready when first polled (that path awaits nothing), one that waits for a refresh or the
/// store is not.
pub(crate) async fn observe_wait<F: Future>(call: F) -> (F::Output, bool) {
    let mut call = std::pin::pin!(call);
    let mut polls = 0u32;
    let output = std::future::poll_fn(|cx| {
        polls += 1;
        call.as_mut().poll(cx)
    })
    .await;
    (output, polls > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "wx5a1db0c0ffee0001";

    #[test]
    fn sends_are_counted_by_app_kind_and_outcome_and_errcodes_apart() {
        let metrics = Metrics::new([APP]);
        metrics.record_send(APP, "one_time", "delivered", None);
        metrics.record_send(APP, "one_time", "delivered", Some(0));
        metrics.record_send(APP, "one_time", "refused", Some(43101));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"subscribe_gateway_sends_total{app="wx5a1db0c0ffee0001",kind="one_time",outcome="delivered"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"subscribe_gateway_sends_total{app="wx5a1db0c0ffee0001",kind="one_time",outcome="refused"} 1"#
        ));
        assert!(text.contains(
            r#"subscribe_gateway_send_errcodes_total{app="wx5a1db0c0ffee0001",kind="one_time",errcode="43101"} 1"#
        ));
        assert!(!text.contains(r#"errcode="0""#), "a zero errcode is no error: {text}");
        assert!(text.contains("# TYPE subscribe_gateway_sends_total counter"), "{text}");
    }

    #[test]
    fn an_app_that_is_not_configured_makes_no_series() {
        let metrics = Metrics::new([APP]);
        metrics.record_send("wxffffffffffffffff", "one_time", "delivered", Some(40003));
        metrics.token_read("wxffffffffffffffff", TokenOutcome::Memory);
        metrics.token_refresh_error("../etc", "timeout");
        let text = metrics.render();
        assert!(!text.contains("wxffffffffffffffff") && !text.contains("../etc"), "{text}");
        assert!(!text.contains("subscribe_gateway_sends_total{"), "{text}");
    }

    #[test]
    fn two_gateways_count_apart() {
        let (a, b) = (Metrics::new([APP]), Metrics::new([APP]));
        a.token_read(APP, TokenOutcome::Waited);
        a.token_read(APP, TokenOutcome::Memory);
        a.token_report(APP, TokenOutcome::Memory);
        assert!(
            a.render().contains(
                r#"subscribe_gateway_token_reads_total{app="wx5a1db0c0ffee0001",outcome="memory"} 1"#
            )
        );
        assert!(a.render().contains(
            r#"subscribe_gateway_token_invalidations_total{app="wx5a1db0c0ffee0001",outcome="stale"} 1"#
        ));
        assert!(!b.render().contains("subscribe_gateway_token_reads_total{"), "{}", b.render());
    }

    #[test]
    fn labels_take_no_value_from_the_request() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(route_label(None), "unmatched");
    }

    #[tokio::test]
    async fn a_call_that_awaits_nothing_did_not_wait() {
        let (v, waited) = observe_wait(async { 7 }).await;
        assert_eq!((v, waited), (7, false));
        let (v, waited) = observe_wait(async {
            tokio::task::yield_now().await;
            8
        })
        .await;
        assert_eq!((v, waited), (8, true));
    }
}
