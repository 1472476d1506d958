//! `/metrics`: the series a token flow leaves, their labels (route templates, configured
//! appids only), the token endpoint's refusals by class, and no secret anywhere.

use std::time::Duration;

use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, Faults, TokenFault};

use crate::*;

/// Whether `text` has the series `series` (name and labels) with the value `value`.
fn has(text: &str, series: &str, value: u64) -> bool {
    text.lines().any(|l| l == format!("{series} {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_token_reads_by_outcome() {
    let g = Running::start().await;
    let (_, first) = g.get_token(DEMO_APPID, KEY_A).await; // waits for the first token
    let stale = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(g.get_token(DEMO_APPID, KEY_A).await.0, 200); // from memory
    g.sandbox.state().revoke_tokens(Duration::ZERO);
    let (status, fresh) = g.report(DEMO_APPID, KEY_A, &stale).await; // refreshed
    assert_eq!(status, 200);
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    assert_eq!(g.report(DEMO_APPID, KEY_A, &stale).await.0, 200); // stale: the current one
    // Refusals: an app that is not configured makes no series of its own.
    assert_eq!(g.get_token("wxffffffffffffffff", KEY_A).await.0, 403);
    assert_eq!(g.get_token(DEMO_APPID, "a-wrong-key-a-wrong-key-a-wrong-key").await.0, 401);
    assert_eq!(g.http.get(g.url("/no/such/route")).send().await.unwrap().status(), 404);

    let text = g.gateway.metrics().render();
    let route = r#"route="/v1/apps/{appid}/access_token""#;
    let invalidate = r#"route="/v1/apps/{appid}/access_token/invalidate""#;
    let app = format!(r#"app="{DEMO_APPID}""#);
    for (series, value) in [
        (format!(r#"subscribe_gateway_http_requests_total{{{route},method="GET",status="200"}}"#), 2),
        (format!(r#"subscribe_gateway_http_requests_total{{{route},method="GET",status="403"}}"#), 1),
        (format!(r#"subscribe_gateway_http_requests_total{{{route},method="GET",status="401"}}"#), 1),
        (format!(r#"subscribe_gateway_http_requests_total{{{invalidate},method="POST",status="200"}}"#), 2),
        (
            r#"subscribe_gateway_http_requests_total{route="unmatched",method="GET",status="404"}"#
                .to_owned(),
            1,
        ),
        (format!("subscribe_gateway_http_request_duration_seconds_count{{{route}}}"), 4),
        (format!(r#"subscribe_gateway_token_reads_total{{{app},outcome="waited"}}"#), 1),
        (format!(r#"subscribe_gateway_token_reads_total{{{app},outcome="memory"}}"#), 1),
        (format!(r#"subscribe_gateway_token_invalidations_total{{{app},outcome="refreshed"}}"#), 1),
        (format!(r#"subscribe_gateway_token_invalidations_total{{{app},outcome="stale"}}"#), 1),
        (format!("subscribe_gateway_token_refreshes_total{{{app}}}"), 2),
    ] {
        assert!(has(&text, &series, value), "{series} {value} in:\n{text}");
    }
    assert!(!text.contains("wxffffffffffffffff"), "an unknown appid made a series:\n{text}");
    assert!(!text.contains("subscribe_gateway_token_refresh_errors_total{"), "{text}");
    for secret in [DEMO_SECRET, SECRET_B, KEY_A, KEY_B, &stale, &fresh, "orders"] {
        assert!(!text.contains(secret), "the metrics show {secret}");
    }

    // Served by the metrics router (in Prometheus' text format), not by the API's.
    assert_eq!(g.http.get(g.url("/metrics")).send().await.unwrap().status(), 404);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = g.gateway.metrics_router();
    tokio::spawn(async move { axum::serve(listener, metrics).await });
    let r = g.http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert!(r.text().await.unwrap().contains("# TYPE subscribe_gateway_token_reads_total counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refresh_errors_are_counted_by_class() {
    let g = Running::start().await;
    g.sandbox.state().set_faults(Faults { token_fault: Some(TokenFault::Quota), ..Faults::default() });
    let (status, body) = g.get_token(DEMO_APPID, KEY_A).await;
    assert_eq!(status, 503, "{body}");
    // A second read is answered from the cool-down: no second request, no second error.
    assert_eq!(g.get_token(DEMO_APPID, KEY_A).await.0, 503);
    let text = g.gateway.metrics().render();
    let app = format!(r#"app="{DEMO_APPID}""#);
    assert!(has(&text, &format!("subscribe_gateway_token_refreshes_total{{{app}}}"), 1), "{text}");
    let errors = format!(r#"subscribe_gateway_token_refresh_errors_total{{{app},class="quota_exceeded"}}"#);
    assert!(has(&text, &errors, 1), "{text}");
    let unavailable = format!(r#"subscribe_gateway_token_reads_total{{{app},outcome="unavailable"}}"#);
    assert!(has(&text, &unavailable, 2), "{text}");
}
