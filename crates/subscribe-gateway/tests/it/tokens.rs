use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use subscribe_client::{CachedToken, SharedTokenStore, TokenStore, TokenStoreError};
use subscribe_sandbox::DEMO_APPID;
use subscribe_types::{AccessToken, AppId};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_served_from_memory_with_its_remaining_lifetime() {
    let g = Running::start().await;
    let r = g.http.get(g.token_url(DEMO_APPID)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let first: serde_json::Value = r.json().await.unwrap();
    let token = first["access_token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let left = first["expires_in"].as_u64().unwrap();
    assert!((7000..=7200).contains(&left), "{left}");
    for _ in 0..10 {
        let (status, again) = g.get_token(DEMO_APPID, KEY_A).await;
        assert_eq!(status, 200);
        assert_eq!(again["access_token"], token.as_str());
    }
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 1, "one request, then memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reports_of_the_same_stale_token_make_one_token_request() {
    let g = Running::start().await;
    let (_, first) = g.get_token(DEMO_APPID, KEY_A).await;
    let stale = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 1);

    // WeChat ends the token; fifty callers see it rejected and report it at once.
    g.sandbox.state().revoke_tokens(Duration::ZERO);
    let mut reports = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (http, url, stale) = (g.http.clone(), g.invalidate_url(DEMO_APPID), stale.clone());
        reports.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(KEY_A)
                .json(&serde_json::json!({ "access_token": stale }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        });
    }
    let mut answers = Vec::new();
    while let Some(a) = reports.join_next().await {
        answers.push(a.unwrap());
    }
    let fresh = answers[0]["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, stale);
    assert!(answers.iter().all(|a| a["access_token"] == fresh.as_str()), "each caller gets the new token");
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 2, "exactly one refresh for fifty reports");

    // A late report of the same stale token, or of one never issued: the current token, no request.
    for late in [stale.as_str(), "never-issued-token"] {
        let (status, answer) = g.report(DEMO_APPID, KEY_A, late).await;
        assert_eq!(status, 200);
        assert_eq!(answer["access_token"], fresh.as_str());
    }
    let (_, now) = g.get_token(DEMO_APPID, KEY_A).await;
    assert_eq!(now["access_token"], fresh.as_str());
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 2);
}

/// The loop a key with `token:read` could run to spend the app's token requests: read the
/// token, report it, report the new one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_the_token_a_report_just_replaced_is_refused_without_a_request() {
    let g = Running::start().await;
    let (_, first) = g.get_token(DEMO_APPID, KEY_A).await;
    let t1 = first["access_token"].as_str().unwrap().to_owned();
    g.sandbox.state().revoke_tokens(Duration::ZERO);
    let (status, second) = g.report(DEMO_APPID, KEY_A, &t1).await;
    assert_eq!(status, 200, "{second}");
    let t2 = second["access_token"].as_str().unwrap().to_owned();
    assert_ne!(t2, t1);
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 2);

    for _ in 0..5 {
        g.sandbox.state().revoke_tokens(Duration::ZERO);
        let r = g
            .http
            .post(g.invalidate_url(DEMO_APPID))
            .bearer_auth(KEY_A)
            .json(&serde_json::json!({ "access_token": t2 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((295..=300).contains(&wait), "Retry-After {wait}: the default interval is five minutes");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "report_too_soon");
        assert!(!body.to_string().contains(&t2), "the answer does not repeat the token");
    }
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 2, "WeChat was not asked again");
    // A stale report is still answered with the current token, and reads are unaffected.
    let (status, answer) = g.report(DEMO_APPID, KEY_A, &t1).await;
    assert_eq!((status, answer["access_token"].as_str()), (200, Some(t2.as_str())));
    let (status, answer) = g.get_token(DEMO_APPID, KEY_A).await;
    assert_eq!((status, answer["access_token"].as_str()), (200, Some(t2.as_str())));
    let metrics = g.gateway.metrics().render();
    assert!(
        metrics.contains(&format!(
            "subscribe_gateway_token_invalidations_total{{app=\"{DEMO_APPID}\",outcome=\"too_soon\"}} 5"
        )),
        "{metrics}"
    );
}

/// Once `report_interval_ms` has passed, a report of the current token replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_after_the_interval_replaces_the_token() {
    let g = Running::start_with(
        |text| {
            text.replacen(
                "secret_file = \"secret-a\"",
                "secret_file = \"secret-a\"\nreport_interval_ms = 300",
                1,
            )
        },
        None,
    )
    .await;
    let (_, first) = g.get_token(DEMO_APPID, KEY_A).await;
    let mut current = first["access_token"].as_str().unwrap().to_owned();
    for round in 0..2 {
        g.sandbox.state().revoke_tokens(Duration::ZERO);
        // Right after a replacement, the floor holds; polled until it has passed.
        let answer = loop {
            let (status, answer) = g.report(DEMO_APPID, KEY_A, &current).await;
            match status {
                200 => break answer,
                429 if round > 0 => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => panic!("round {round}: {status} {answer}"),
            }
        };
        let fresh = answer["access_token"].as_str().unwrap().to_owned();
        assert_ne!(fresh, current, "round {round}: a new token");
        current = fresh;
    }
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 3, "one request per replacement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_is_not_a_token_is_refused_without_a_request() {
    let g = Running::start().await;
    let post = |body: &'static str| {
        g.http
            .post(g.invalidate_url(DEMO_APPID))
            .bearer_auth(KEY_A)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post("not json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_body");
    let r = post(r#"{"token": "x"}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(r#"{"access_token": ""}"#).await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_token");
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_io_and_readiness_reads_the_store() {
    let g = Running::start().await;
    let r = g.http.get(g.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = g.http.get(g.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["ready"], true);
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 0, "no token is fetched for either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_without_a_key_and_names_no_app_or_secret() {
    let g = Running::start().await;
    let r = g.http.get(g.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = r.text().await.unwrap();
    assert_eq!(body, subscribe_gateway::openapi_json(), "the served document is the generated one");
    // The configuration's second app, its keys and secrets are nowhere in it.
    for secret in [APP_B, KEY_A, KEY_B, SECRET_B] {
        assert!(!body.contains(secret), "{secret} in /openapi.json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_the_classic_endpoint_gets_its_token_there() {
    let g = Running::start_with(
        |text| {
            text.replacen(
                "secret_file = \"secret-a\"",
                "secret_file = \"secret-a\"\ntoken_endpoint = \"classic\"",
                1,
            )
        },
        None,
    )
    .await;
    let (status, body) = g.get_token(DEMO_APPID, KEY_A).await;
    assert_eq!(status, 200, "{body}");
    let counts = g.sandbox.state().stats();
    assert_eq!((counts.classic_token_requests, counts.stable_token_requests), (1, 0));
}

/// A token store that is down: every call fails, and loads are counted.
#[derive(Debug, Default)]
struct DownStore {
    loads: AtomicUsize,
}

#[subscribe_client::async_trait]
impl TokenStore for DownStore {
    async fn load(&self, _: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Err(TokenStoreError::new("the store is down"))
    }
    async fn save(&self, _: &AppId, _: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        Err(TokenStoreError::new("the store is down"))
    }
    async fn invalidate(&self, _: &AppId, _: &AccessToken) -> Result<bool, TokenStoreError> {
        Err(TokenStoreError::new("the store is down"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_store_is_down_and_many_probes_read_it_once() {
    let store = Arc::new(DownStore::default());
    let g = Running::start_with(|text| text, Some(Arc::clone(&store) as SharedTokenStore)).await;
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url) = (g.http.clone(), g.url("/readyz"));
        probes.spawn(async move { http.get(url).send().await.unwrap().status().as_u16() });
    }
    while let Some(status) = probes.join_next().await {
        assert_eq!(status.unwrap(), 503);
    }
    assert_eq!(store.loads.load(Ordering::SeqCst), 1, "one read of the store, its answer cached");
    // The process still serves: health without I/O, and tokens straight from WeChat (the
    // client keeps them in memory while its store is down).
    assert_eq!(g.http.get(g.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(g.get_token(DEMO_APPID, KEY_A).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_mounts_into_an_app_with_routes_and_a_fallback_of_its_own() {
    let sandbox = sandbox().await;
    let dir = tempfile::TempDir::new().unwrap();
    let text = config_text(dir.path(), &sandbox.base_url());
    let config = subscribe_gateway::Config::parse(&text, dir.path(), &|_| None).unwrap();
    let gateway = subscribe_gateway::Gateway::start(&config).await.unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the integrator's own page" }))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "the integrator's 404") })
        .merge(gateway.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let page = http.get(format!("http://{addr}/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(page, "the integrator's own page");
    let url = format!("http://{addr}/v1/apps/{DEMO_APPID}/access_token");
    assert_eq!(http.get(&url).bearer_auth(KEY_A).send().await.unwrap().status(), 200);
    let missing = http.get(format!("http://{addr}/nothing")).send().await.unwrap();
    assert_eq!(missing.text().await.unwrap(), "the integrator's 404");
}
