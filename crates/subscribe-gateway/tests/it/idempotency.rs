//! `Idempotency-Key` over HTTP: a retry gets the first answer and nothing is sent twice, on one
//! gateway, across gateways sharing PostgreSQL or Redis, across a restart and across a crash.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use subscribe_gateway::idempotency::{
    Claim, IdempotencyStore, IdempotencyStoreError, MemoryIdempotencyStore, NewClaim, Record, StoredAnswer,
};
use subscribe_gateway::{Config, Gateway, ServeLimits, open_store, serve};
use subscribe_sandbox::{DEMO_APPID, Faults, SandboxHandle};
use tempfile::TempDir;

use crate::send::{
    ALICE, KEY_S, KEY_T, accept, grant, mini_program, one_time, post, post_to, route, start, with_senders,
};
use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_gets_the_first_answer_and_one_delivery() {
    let g = start().await;
    grant(&g);
    let path = route(DEMO_APPID, "one_time");
    let (status, headers, first) = post(&g, &path, KEY_S, Some("order-42/restock"), &one_time()).await;
    assert_eq!((status, &first), (200, &json!({"outcome": "delivered"})));
    assert!(headers.get("idempotent-replayed").is_none(), "the first answer is no replay");
    for _ in 0..3 {
        let (status, headers, again) = post(&g, &path, KEY_S, Some("order-42/restock"), &one_time()).await;
        assert_eq!((status, &again), (200, &first));
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    // The same request with its path spelled otherwise (the appid percent-encoded, as a proxy
    // may re-encode it): the same record, replayed.
    let encoded = route(&DEMO_APPID.replacen('5', "%35", 1), "one_time");
    assert_ne!(encoded, path);
    let (status, headers, again) = post(&g, &encoded, KEY_S, Some("order-42/restock"), &one_time()).await;
    assert_eq!((status, &again), (200, &first), "{encoded}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let counts = g.sandbox.state().stats();
    assert_eq!((counts.send_requests, counts.deliveries), (1, 1));
    // Without the key, the same body is another send: the grant is used, so WeChat refuses it.
    assert_eq!(post(&g, &path, KEY_S, None, &one_time()).await.2["errcode"], 43101);

    // A refusal is an answer too: replayed, not sent again.
    let (_, _, refused) = post(&g, &path, KEY_S, Some("order-43"), &one_time()).await;
    assert_eq!(refused["outcome"], "refused");
    let (_, headers, again) = post(&g, &path, KEY_S, Some("order-43"), &one_time()).await;
    assert_eq!((&again, &headers["idempotent-replayed"]), (&refused, &"true".parse().unwrap()));
    assert_eq!(g.sandbox.state().stats().send_requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_request_is_refused_and_nothing_is_sent() {
    let g = start().await;
    grant(&g);
    accept(&g);
    let path = route(DEMO_APPID, "one_time");
    assert_eq!(post(&g, &path, KEY_S, Some("k"), &one_time()).await.2["outcome"], "delivered");
    let mut other = one_time();
    other["title"] = json!("已发货");
    let (status, headers, answer) = post(&g, &path, KEY_S, Some("k"), &other).await;
    assert_eq!((status, &answer["error"]), (422, &json!("idempotency_key_reused")), "{answer}");
    assert!(headers.get("idempotent-replayed").is_none());
    // Another route with the key is another request too.
    let (status, _, answer) =
        post(&g, &route(DEMO_APPID, "mini_program"), KEY_S, Some("k"), &mini_program()).await;
    assert_eq!((status, &answer["error"]), (422, &json!("idempotency_key_reused")), "{answer}");
    assert_eq!(g.sandbox.state().stats().send_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_apart_per_caller_and_per_app() {
    let g = start().await;
    grant(&g);
    let path = route(DEMO_APPID, "one_time");
    assert_eq!(post(&g, &path, KEY_S, Some("shared"), &one_time()).await.2["outcome"], "delivered");
    // Another caller's "shared" is its own: sent (and refused, the grant being used).
    let (_, headers, answer) = post(&g, &path, KEY_T, Some("shared"), &one_time()).await;
    assert_eq!((answer["outcome"].as_str(), headers.get("idempotent-replayed")), (Some("refused"), None));
    // And on another app (key B sends as app B), too.
    let (_, headers, answer) = post(&g, &route(APP_B, "one_time"), KEY_B, Some("shared"), &one_time()).await;
    assert_eq!((answer["outcome"].as_str(), headers.get("idempotent-replayed")), (Some("refused"), None));
    assert_eq!(g.sandbox.state().stats().send_requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_with_one_key_send_once() {
    let g = start().await;
    grant(&g);
    // Each send takes a while, so the others arrive while the first is in flight.
    g.sandbox.state().set_faults(Faults { latency_ms: Some(300), ..Faults::default() });
    let url = g.url(&route(DEMO_APPID, "one_time"));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url) = (g.http.clone(), url.clone());
        requests.spawn(async move { post_to(&http, &url, KEY_S, Some("burst"), &one_time()).await });
    }
    let (mut sent, mut in_progress, mut replayed) = (0, 0, 0);
    while let Some(answer) = requests.join_next().await {
        let (status, headers, body) = answer.unwrap();
        match (status, headers.get("idempotent-replayed")) {
            (200, None) => sent += 1,
            (200, Some(_)) => replayed += 1,
            (409, None) => {
                assert_eq!(body["error"], "idempotency_key_in_progress");
                in_progress += 1;
            }
            other => panic!("{other:?} {body}"),
        }
    }
    assert_eq!(sent, 1, "one request sends ({in_progress} in progress, {replayed} replayed)");
    assert_eq!(in_progress + replayed, 19);
    assert_eq!(g.sandbox.state().stats().send_requests, 1);
}

/// A gateway serving on 127.0.0.1 until dropped.
struct Served {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Served {
    async fn start(gateway: Gateway, config: &Config) -> Self {
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, gateway.router(), ServeLimits::from(&config.server), async {
            let _ = rx.await;
        }));
        Self { addr, _stop: tx }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The test configuration (with the senders) for `sandbox`, its files in `dir`, the store
/// replaced by `store` (a `[store]` body), its URL from `GW_TEST_STORE_URL` = `url`.
fn config_on(sandbox: &SandboxHandle, dir: &TempDir, store: &str, url: &str) -> Config {
    let text =
        with_senders(&config_text(dir.path(), &sandbox.base_url())).replace("path = \"tokens.db\"", store);
    let url = url.to_owned();
    Config::parse(&text, dir.path(), &move |name| (name == "GW_TEST_STORE_URL").then(|| url.clone().into()))
        .unwrap()
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Two gateways on one shared store: ten requests with one key, spread over both, send once;
/// each gateway then replays the same answer.
async fn two_gateways_send_once(store: &str, url: &str) {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let config = config_on(&sandbox, &dir, store, url);
    let a = Served::start(Gateway::start(&config).await.unwrap(), &config).await;
    let b = Served::start(Gateway::start(&config).await.unwrap(), &config).await;
    let alice = subscribe_types::OpenId::new(ALICE).unwrap();
    let scene = subscribe_types::Scene::new(1000).unwrap();
    sandbox.state().add_grant(
        &subscribe_sandbox::SandboxConfig::demo_appid(),
        &alice,
        &subscribe_sandbox::SandboxConfig::demo_template(),
        scene,
    );
    sandbox.state().set_faults(Faults { latency_ms: Some(200), ..Faults::default() });
    let http = reqwest::Client::new();
    let path = route(DEMO_APPID, "one_time");
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (http, url) = (http.clone(), if i % 2 == 0 { a.url(&path) } else { b.url(&path) });
        requests.spawn(async move { post_to(&http, &url, KEY_S, Some("fleet-key"), &one_time()).await });
    }
    while let Some(answer) = requests.join_next().await {
        let (status, _, body) = answer.unwrap();
        assert!(status == 200 || status == 409, "{status} {body}");
    }
    for gateway in [&a, &b] {
        let (status, headers, body) =
            post_to(&http, &gateway.url(&path), KEY_S, Some("fleet-key"), &one_time()).await;
        assert_eq!((status, &body), (200, &json!({"outcome": "delivered"})));
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    let counts = sandbox.state().stats();
    assert_eq!((counts.send_requests, counts.deliveries), (1, 1), "one send for the fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_store_send_once() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let store =
        format!("kind = \"postgres\"\nurl_env = \"GW_TEST_STORE_URL\"\nschema = \"{}\"", unique("gw"));
    two_gateways_send_once(&store, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_store_send_once() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store =
        format!("kind = \"redis\"\nurl_env = \"GW_TEST_STORE_URL\"\nprefix = \"{}\"", unique("gw-test"));
    two_gateways_send_once(&store, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_on_the_same_sqlite_file_replays_the_stored_answer() {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let config = config_on(&sandbox, &dir, "path = \"tokens.db\"", "");
    accept_on(&sandbox);
    let http = reqwest::Client::new();
    let path = route(DEMO_APPID, "mini_program");
    let first = {
        let gateway = Served::start(Gateway::start(&config).await.unwrap(), &config).await;
        post_to(&http, &gateway.url(&path), KEY_S, Some("restart"), &mini_program()).await
    };
    assert_eq!((first.0, &first.2), (200, &json!({"outcome": "delivered"})));
    // The first gateway is gone; a new one on the same file answers from it.
    let gateway = Served::start(Gateway::start(&config).await.unwrap(), &config).await;
    let (status, headers, body) =
        post_to(&http, &gateway.url(&path), KEY_S, Some("restart"), &mini_program()).await;
    assert_eq!((status, &body, &headers["idempotent-replayed"]), (200, &first.2, &"true".parse().unwrap()));
    assert_eq!(sandbox.state().stats().send_requests, 1);
}

fn accept_on(sandbox: &SandboxHandle) {
    sandbox.state().subscribe(DEMO_APPID, ALICE, subscribe_sandbox::DEMO_MP_TEMPLATE, true).unwrap();
}

/// The gateway that claimed a key dies after WeChat delivered and before the answer came back.
/// A new gateway on the same file says the key is in progress while the claim's lease runs,
/// then answers `unknown` (stored, replayed after), and never sends the message again.
#[test]
fn a_claim_whose_gateway_died_is_answered_unknown_and_never_sent_again() {
    let main = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sandbox = main.block_on(sandbox());
    let dir = TempDir::new().unwrap();
    // A request timeout of 2 s: the send may take 1.6 s; a claim holds 12.6 s (the send, the
    // SQLite store's 5 s for each of the two calls around it, and a second).
    let text = with_senders(&config_text(dir.path(), &sandbox.base_url())).replacen(
        "[server]\n",
        "[server]\nrequest_timeout_ms = 2000\n",
        1,
    );
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
    accept_on(&sandbox);
    // WeChat delivers, then its answer stalls past the send's budget... but the gateway dies first.
    sandbox.state().set_faults(Faults {
        delivered_stall_every: Some(1),
        stall_ms: Some(5_000),
        ..Faults::default()
    });

    let doomed = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let first =
        doomed.block_on(async { Served::start(Gateway::start(&config).await.unwrap(), &config).await });
    let http = reqwest::Client::new();
    let path = route(DEMO_APPID, "mini_program");
    let request = http
        .post(first.url(&path))
        .bearer_auth(KEY_S)
        .header("idempotency-key", "crash")
        .json(&mini_program());
    // Its answer never comes: the gateway dies first.
    main.spawn(async move { drop(request.send().await) });
    main.block_on(async {
        while sandbox.state().inbox(ALICE).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // The gateway dies: its runtime, its send task and its connections go.
    doomed.shutdown_background();

    main.block_on(async {
        let second = Served::start(Gateway::start(&config).await.unwrap(), &config).await;
        let url = second.url(&path);
        let (status, _, body) = post_to(&http, &url, KEY_S, Some("crash"), &mini_program()).await;
        assert_eq!((status, &body["error"]), (409, &json!("idempotency_key_in_progress")), "{body}");
        // The claim was made at most 12.6 s ago: its lease ends within 12.6 s.
        let mut answer = None;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let a = post_to(&http, &url, KEY_S, Some("crash"), &mini_program()).await;
            if a.0 != 409 {
                answer = Some(a);
                break;
            }
        }
        let answer = answer.expect("the claim's lease ends within 20 s");
        let (status, headers, body) = answer;
        assert_eq!(
            (status, &body["outcome"], &body["cause"]),
            (200, &json!("unknown"), &json!("owner_lost")),
            "{body}"
        );
        assert_eq!(headers["idempotent-replayed"], "true");
        let (_, _, again) = post_to(&http, &url, KEY_S, Some("crash"), &mini_program()).await;
        assert_eq!(again, body, "the unknown answer is stored");
    });
    let counts = sandbox.state().stats();
    assert_eq!((counts.send_requests, counts.deliveries), (1, 1), "delivered once, never sent again");
    drop(sandbox);
    main.shutdown_background();
}

/// A store in memory whose answers cannot be stored, nor pruned, and whose claims fail when
/// `claims_fail`: a backend that went down; with `claims_land`, a claim is made but its answer
/// is lost (a timeout after the commit).
#[derive(Debug, Default)]
struct Failing {
    inner: MemoryIdempotencyStore,
    claims_fail: AtomicBool,
    claims_land: bool,
    /// Answers are stored again (the backend came back).
    completes_back: AtomicBool,
}

#[subscribe_client::async_trait]
impl IdempotencyStore for Failing {
    async fn claim(&self, claim: &NewClaim<'_>) -> Result<Claim, IdempotencyStoreError> {
        if self.claims_fail.load(Ordering::SeqCst) {
            if self.claims_land {
                self.inner.claim(claim).await?;
            }
            return Err(IdempotencyStoreError::new("the store is down"));
        }
        self.inner.claim(claim).await
    }
    async fn complete(&self, id: &str, owner: &str, a: &StoredAnswer) -> Result<bool, IdempotencyStoreError> {
        if self.completes_back.load(Ordering::SeqCst) {
            return self.inner.complete(id, owner, a).await;
        }
        Err(IdempotencyStoreError::new("the store is down"))
    }
    async fn release(&self, id: &str, owner: &str) -> Result<bool, IdempotencyStoreError> {
        self.inner.release(id, owner).await
    }
    async fn take_over(
        &self,
        id: &str,
        fp: &str,
        a: &StoredAnswer,
    ) -> Result<Option<Record>, IdempotencyStoreError> {
        self.inner.take_over(id, fp, a).await
    }
    async fn prune(&self) -> Result<u64, IdempotencyStoreError> {
        Err(IdempotencyStoreError::new("the store is down"))
    }
}

/// A gateway on `failing` for its idempotency records.
async fn on_failing(sandbox: &SandboxHandle, dir: &TempDir, failing: Failing) -> (Served, Config) {
    let config = config_on(sandbox, dir, "path = \"tokens.db\"", "");
    let tokens = open_store(&config.store).await.unwrap();
    let gateway = Gateway::with_stores(&config, tokens, Arc::new(failing)).unwrap();
    (Served::start(gateway, &config).await, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_be_claimed_sends_nothing() {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let (gateway, _) =
        on_failing(&sandbox, &dir, Failing { claims_fail: AtomicBool::new(true), ..Failing::default() })
            .await;
    let http = reqwest::Client::new();
    let url = gateway.url(&route(DEMO_APPID, "one_time"));
    let (status, _, body) = post_to(&http, &url, KEY_S, Some("k"), &one_time()).await;
    assert_eq!((status, &body["error"]), (503, &json!("idempotency_store_unavailable")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("nothing was sent"));
    assert_eq!(sandbox.state().stats().send_requests, 0);
    // Without a key there is nothing to claim: the send goes.
    let (status, _, body) = post_to(&http, &url, KEY_S, None, &one_time()).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("refused")), "{body}");
}

/// A claim whose answer was lost (it landed, its reply timed out) is released, so the retry the
/// 503 invites sends the message once the store is back, instead of meeting 409 and then
/// `unknown` for a message never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_landed_but_failed_is_released_and_the_retry_sends() {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let store =
        Arc::new(Failing { claims_fail: AtomicBool::new(true), claims_land: true, ..Failing::default() });
    let config = config_on(&sandbox, &dir, "path = \"tokens.db\"", "");
    let tokens = open_store(&config.store).await.unwrap();
    let gateway = Gateway::with_stores(&config, tokens, Arc::clone(&store) as _).unwrap();
    let gateway = Served::start(gateway, &config).await;
    accept_on(&sandbox);
    let http = reqwest::Client::new();
    let url = gateway.url(&route(DEMO_APPID, "mini_program"));
    let (status, _, body) = post_to(&http, &url, KEY_S, Some("k"), &mini_program()).await;
    assert_eq!((status, &body["error"]), (503, &json!("idempotency_store_unavailable")), "{body}");
    assert_eq!(sandbox.state().stats().send_requests, 0);
    // The store is back; the landed claim is released in the background (within a few
    // seconds, while its lease would last a minute): the retry sends.
    store.claims_fail.store(false, Ordering::SeqCst);
    let mut answers = Vec::new();
    for _ in 0..100 {
        let (status, _, body) = post_to(&http, &url, KEY_S, Some("k"), &mini_program()).await;
        answers.push(status);
        if status != 409 {
            assert_eq!((status, &body), (200, &json!({"outcome": "delivered"})), "{answers:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answers.last(), Some(&200), "the landed claim was never released: {answers:?}");
    assert_eq!(sandbox.state().stats().send_requests, 1, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_cannot_be_stored_is_given_and_a_retry_does_not_send() {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let (gateway, _) = on_failing(&sandbox, &dir, Failing::default()).await;
    accept_on(&sandbox);
    let http = reqwest::Client::new();
    let url = gateway.url(&route(DEMO_APPID, "mini_program"));
    let (status, _, body) = post_to(&http, &url, KEY_S, Some("k"), &mini_program()).await;
    assert_eq!((status, &body), (200, &json!({"outcome": "delivered"})), "the caller learns the outcome");
    let (status, _, body) = post_to(&http, &url, KEY_S, Some("k"), &mini_program()).await;
    assert_eq!((status, &body["error"]), (409, &json!("idempotency_key_in_progress")), "{body}");
    assert_eq!(sandbox.state().stats().send_requests, 1);
}

/// An answer the store failed to keep is written again while the claim lasts: once the store
/// is back, the key's retries get the answer the caller got, never `owner_lost` for a message
/// whose outcome was known (the store-fault rows of `cargo xtask faults` restart Redis and
/// PostgreSQL under the gateway for the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_store_failed_to_keep_is_stored_once_it_is_back() {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let store = Arc::new(Failing::default());
    let config = config_on(&sandbox, &dir, "path = \"tokens.db\"", "");
    let tokens = open_store(&config.store).await.unwrap();
    let gateway = Gateway::with_stores(&config, tokens, Arc::clone(&store) as _).unwrap();
    let gateway = Served::start(gateway, &config).await;
    accept_on(&sandbox);
    let http = reqwest::Client::new();
    let url = gateway.url(&route(DEMO_APPID, "mini_program"));
    let (status, _, body) = post_to(&http, &url, KEY_S, Some("k"), &mini_program()).await;
    assert_eq!((status, &body), (200, &json!({"outcome": "delivered"})), "the caller learns the outcome");
    let (status, _, _) = post_to(&http, &url, KEY_S, Some("k"), &mini_program()).await;
    assert_eq!(status, 409, "in progress while the answer is not stored");
    store.completes_back.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for _ in 0..200 {
        let (status, headers, body) = post_to(&http, &url, KEY_S, Some("k"), &mini_program()).await;
        answers.push(status);
        if status != 409 {
            assert_eq!((status, &body), (200, &json!({"outcome": "delivered"})), "{answers:?}");
            assert_eq!(headers["idempotent-replayed"], "true");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answers.last(), Some(&200), "the answer was never stored: {answers:?}");
    assert_eq!(sandbox.state().stats().send_requests, 1, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_sent_releases_the_key_so_a_retry_sends() {
    let g = start().await;
    grant(&g);
    g.sandbox.state().set_faults(Faults { http_502_every: Some(1), ..Faults::default() });
    let path = route(DEMO_APPID, "one_time");
    let (status, _, body) = post(&g, &path, KEY_S, Some("retry-me"), &one_time()).await;
    // A 502 before WeChat processed the send reads, from outside, as any 502: unknown.
    assert_eq!((status, body["outcome"].as_str()), (200, Some("unknown")), "{body}");
    // -1 (busy) is certain: nothing was sent (after the client's own bounded replays).
    g.sandbox.state().set_faults(Faults { busy_every: Some(1), ..Faults::default() });
    let (status, _, body) = post(&g, &path, KEY_S, Some("busy"), &one_time()).await;
    assert_eq!(
        (status, body["outcome"].as_str(), body["errcode"].as_i64()),
        (503, Some("not_sent"), Some(-1)),
        "{body}"
    );
    let before = g.sandbox.state().stats().send_requests;
    g.sandbox.state().set_faults(Faults::default());
    let (status, headers, body) = post(&g, &path, KEY_S, Some("busy"), &one_time()).await;
    assert_eq!((status, &body), (200, &json!({"outcome": "delivered"})));
    assert!(headers.get("idempotent-replayed").is_none(), "sent, not replayed");
    assert_eq!(g.sandbox.state().stats().send_requests, before + 1);
    // The unknown one stays unknown.
    let (_, headers, body) = post(&g, &path, KEY_S, Some("retry-me"), &one_time()).await;
    assert_eq!(
        (body["outcome"].as_str(), &headers["idempotent-replayed"]),
        (Some("unknown"), &"true".parse().unwrap())
    );
}
