//! Dispatch jobs against the sandbox: started by one request, run to the end with their progress
//! readable, cancelled, refused while one runs on the same grants, every value checked; and a
//! job whose gateway stops (handed back) or is killed (its runtime dropped, nothing handed back)
//! resumed by another gateway on the store, every grant delivered once or set aside for review,
//! on SQLite, PostgreSQL and Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use subscribe_client::{Clock, GrantLedger, GrantScope, GrantStatus, SystemClock};
use subscribe_gateway::{Config, Gateway, KeyHash, ServeLimits, open_stores, serve};
use subscribe_sandbox::{DEMO_APPID, Faults, SandboxConfig, SandboxHandle};
use subscribe_types::{OpenId, Scene};
use tempfile::TempDir;

use crate::*;

/// Key D: `dispatch` and `grants:review` on the demo app.
const KEY_D: &str = "gw-test-key-d-7a2c9e4f1b6d3a8c5e0f7b2d9a4c6e1f";
const SCENE: u32 = 1000;

fn scope() -> GrantScope {
    GrantScope::one_time(
        SandboxConfig::demo_appid(),
        SandboxConfig::demo_template(),
        Scene::new(SCENE).unwrap(),
    )
}

fn user(i: usize) -> OpenId {
    OpenId::new(format!("oUser{i:010}")).unwrap()
}

/// The one-time message of the tests, without `touser`.
fn restock() -> Value {
    json!({"template_id": SandboxConfig::demo_template().as_str(), "scene": SCENE.to_string(),
        "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货"}}})
}

/// A sandbox whose `n` users confirmed the demo template at scene 1000 once, the configuration
/// of gateways on `store` (the `[store]` keys, at `url`) with key D, and the grants recorded in
/// the store's ledger.
struct Setup {
    sandbox: SandboxHandle,
    config: Config,
    text: String,
    url: String,
    ledger: Arc<dyn GrantLedger>,
    n: usize,
    dir: TempDir,
}

impl Setup {
    async fn new(n: usize, store: &str, url: &str, latency_ms: u64) -> Self {
        let sandbox = sandbox_of(SandboxConfig::demo().with_generated_users(n)).await;
        sandbox.state().set_faults(Faults { latency_ms: Some(latency_ms), ..Faults::default() });
        let dir = TempDir::new().unwrap();
        let text = gateway_text(dir.path(), &sandbox, store);
        let url = url.to_owned();
        let config = parsed(&text, &dir, &url);
        let ledger = open_stores(&config.store).await.unwrap().grants;
        let now = SystemClock.now();
        for i in 0..n {
            let u = user(i);
            assert!(sandbox.state().add_grant(
                &SandboxConfig::demo_appid(),
                &u,
                &SandboxConfig::demo_template(),
                Scene::new(SCENE).unwrap()
            ));
            ledger.record(&scope().key(u), now).await.unwrap();
        }
        Self { sandbox, config, text, url, ledger, n, dir }
    }

    /// The configuration again.
    fn config(&self) -> Config {
        parsed(&self.text, &self.dir, &self.url)
    }

    /// Every user received at most one message; how many received one.
    fn delivered(&self) -> u64 {
        let mut total = 0;
        for i in 0..self.n {
            let n = self.sandbox.state().inbox(user(i).as_str()).len();
            assert!(n <= 1, "{} received {n} messages", user(i));
            total += n as u64;
        }
        total
    }
}

/// The test configuration with its files in `dir`, `[store]` as `store`, short job leases and
/// key D.
fn gateway_text(dir: &std::path::Path, sandbox: &SandboxHandle, store: &str) -> String {
    let hash = KeyHash::of(KEY_D.as_bytes()).to_hex();
    let text = config_text(dir, &sandbox.base_url()).replace("path = \"tokens.db\"", store);
    format!(
        "{text}\n[dispatch]\njob_lease_ms = 2000\ngrant_lease_ms = 20000\n\n[[keys]]\nname = \"ops\"\n\
         sha256 = \"{hash}\"\nscopes = {{ {DEMO_APPID} = [\"dispatch\", \"grants:review\"] }}\n"
    )
}

fn parsed(text: &str, dir: &TempDir, url: &str) -> Config {
    let url = url.to_owned();
    let env = move |name: &str| (name == "GW_TEST_STORE_URL").then(|| url.clone().into());
    Config::parse(text, dir.path(), &env).unwrap()
}

/// A gateway serving, with its jobs' background work; dropping `stop` stops both (the jobs
/// handed back).
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    pub(crate) jobs: tokio::task::JoinHandle<()>,
}

pub(crate) async fn served(config: &Config) -> Served {
    let gateway = Gateway::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let until = |mut s: tokio::sync::watch::Receiver<bool>| async move {
        let _ = s.wait_for(|s| *s).await;
    };
    tokio::spawn(serve(
        listener,
        gateway.router(),
        ServeLimits::from(&config.server),
        until(stopping.clone()),
    ));
    let jobs = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.run_background(until(stopping)).await }
    });
    Served { addr, stop, jobs }
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    fn new() -> Self {
        Self { http: reqwest::Client::new() }
    }

    fn url(addr: SocketAddr, path: &str) -> String {
        format!("http://{addr}/v1/apps/{DEMO_APPID}/dispatches{path}")
    }

    async fn start(&self, addr: SocketAddr, body: &Value) -> (u16, Value) {
        let r = self.http.post(Self::url(addr, "")).bearer_auth(KEY_D).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> (u16, Value) {
        let r = self.http.get(Self::url(addr, path)).bearer_auth(KEY_D).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn cancel(&self, addr: SocketAddr, id: &str) -> (u16, Value) {
        let r = self
            .http
            .post(Self::url(addr, &format!("/{id}/cancel")))
            .bearer_auth(KEY_D)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The job once `done` holds of it (read every 100 ms, for up to `limit`).
    async fn until(
        &self,
        addr: SocketAddr,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, job) = self.get(addr, &format!("/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if done(&job) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "the job did not get there: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn ended(job: &Value) -> bool {
    ["finished", "cancelled", "failed"].contains(&job["state"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sends_once_to_every_pending_grant_and_reports_its_progress() {
    let s = Setup::new(60, "path = \"tokens.db\"", "", 0).await;
    let gw = served(&s.config).await;
    let api = Api::new();
    let (status, job) = api.start(gw.addr, &json!({"kind": "one_time", "message": restock()})).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 28);
    assert_eq!((job["state"].as_str(), job["created_by"].as_str()), (Some("running"), Some("ops")));
    assert_eq!(
        (job["template_id"].as_str(), job["scene"].as_u64()),
        (Some(SandboxConfig::demo_template().as_str()), Some(1000))
    );

    let job = api.until(gw.addr, &id, Duration::from_secs(30), ended).await;
    assert_eq!(job["state"], "finished", "{job}");
    assert_eq!(
        job["progress"],
        json!({"sent": 60, "delivered": 60, "failed": 0, "unknown": 0, "dropped": 0, "remaining": 0})
    );
    assert!(job["ended_ms"].as_i64().unwrap() >= job["created_ms"].as_i64().unwrap());
    assert_eq!(s.delivered(), 60);
    let counts = s.ledger.counts(&scope(), SystemClock.now()).await.unwrap();
    assert_eq!((counts.delivered, counts.pending, counts.reserved), (60, 0, 0));

    // Started again: nothing is pending, nothing is sent.
    let (status, again) = api.start(gw.addr, &json!({"kind": "one_time", "message": restock()})).await;
    assert_eq!(status, 202, "{again}");
    let again = api.until(gw.addr, again["id"].as_str().unwrap(), Duration::from_secs(10), ended).await;
    assert_eq!((again["state"].as_str(), again["progress"]["sent"].as_u64()), (Some("finished"), Some(0)));
    assert_eq!(s.sandbox.state().stats().deliveries, 60);

    // Listed newest first, a page at a time.
    let (status, page) = api.get(gw.addr, "?limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["id"], again["id"]);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, last) = api.get(gw.addr, &format!("?limit=1&before={next}")).await;
    assert_eq!(last["items"][0]["id"].as_str(), Some(id.as_str()));
    assert!(last.get("next").is_none(), "{last}");
    drop(gw.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_job_on_the_same_grants_is_refused_and_a_cancelled_one_leaves_the_rest_pending() {
    let s = Setup::new(200, "path = \"tokens.db\"", "", 0).await;
    let gw = served(&s.config).await;
    let api = Api::new();
    // Ten sends a second: it runs for twenty.
    let slow = json!({"kind": "one_time", "message": restock(), "rate_per_second": 10, "concurrency": 2});
    let (status, job) = api.start(gw.addr, &slow).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    // A retried start, or another: refused, naming the running job; nothing else started.
    let (status, busy) = api.start(gw.addr, &json!({"kind": "one_time", "message": restock()})).await;
    assert_eq!(
        (status, busy["error"].as_str(), busy["job"].as_str()),
        (409, Some("dispatch_running"), Some(id.as_str())),
        "{busy}"
    );

    api.until(gw.addr, &id, Duration::from_secs(10), |j| j["progress"]["sent"].as_u64() >= Some(5)).await;
    let (status, cancelling) = api.cancel(gw.addr, &id).await;
    assert_eq!(status, 200, "{cancelling}");
    assert!(["cancelling", "cancelled"].contains(&cancelling["state"].as_str().unwrap()), "{cancelling}");
    let job = api.until(gw.addr, &id, Duration::from_secs(10), ended).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let sent = job["progress"]["sent"].as_u64().unwrap();
    assert!((5..200).contains(&sent), "{job}");
    // Everything sent was recorded; the rest is pending for the next dispatch.
    let counts = s.ledger.counts(&scope(), SystemClock.now()).await.unwrap();
    assert_eq!((counts.delivered, counts.pending, counts.reserved), (s.delivered(), 200 - s.delivered(), 0));
    assert_eq!(job["progress"]["delivered"].as_u64(), Some(s.delivered()));
    // A cancel of an ended job answers it as it is; then the grants are free for another job.
    assert_eq!(api.cancel(gw.addr, &id).await.1["state"], "cancelled");
    let (status, next) = api.start(gw.addr, &json!({"kind": "one_time", "message": restock()})).await;
    assert_eq!(status, 202, "{next}");
    let next = api.until(gw.addr, next["id"].as_str().unwrap(), Duration::from_secs(30), ended).await;
    assert_eq!(next["state"], "finished", "{next}");
    assert_eq!(s.delivered(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_of_a_start_is_checked_and_nothing_starts_on_a_refusal() {
    let s = Setup::new(3, "path = \"tokens.db\"", "", 0).await;
    let gw = served(&s.config).await;
    let api = Api::new();
    let mut long = restock();
    long["data"]["content"]["value"] = json!("好".repeat(201));
    let mut with_touser = restock();
    with_touser["touser"] = json!(user(0).as_str());
    let cases = [
        (json!({"kind": "one_time", "message": with_touser}), "message.touser"),
        (json!({"kind": "one_time", "message": long}), "message.data.content.value"),
        (
            json!({"kind": "one_time", "message": {"template_id": "t", "scene": "1", "data": {"content": {"value": "x"}}}}),
            "message.title",
        ),
        (json!({"kind": "one_time", "message": "text"}), "message"),
        (json!({"kind": "weekly", "message": restock()}), "kind"),
        (json!({"kind": "one_time", "template_kind": "long_term", "message": restock()}), "template_kind"),
        (json!({"kind": "one_time", "template_kind": "one_time", "message": restock()}), "template_kind"),
        (json!({"kind": "one_time", "message": restock(), "concurrency": -1}), "concurrency"),
        (json!({"kind": "one_time", "message": restock(), "concurrency": "8"}), "concurrency"),
        (json!({"kind": 1, "message": restock()}), "kind"),
        (json!({"kind": "one_time", "message": restock(), "priority": 1}), "priority"),
        (
            json!({"kind": "mini_program", "message": {"template_id": "t", "data": {"thing1": {"value": "x"}}}}),
            "template_kind",
        ),
        (
            json!({"kind": "notification", "template_kind": "forever", "message": {"template_id": "t", "data": {}}}),
            "template_kind",
        ),
        (json!({"kind": "one_time", "message": restock(), "concurrency": 0}), "concurrency"),
        (json!({"kind": "one_time", "message": restock(), "concurrency": 257}), "concurrency"),
        (json!({"kind": "one_time", "message": restock(), "rate_per_second": 0}), "rate_per_second"),
    ];
    for (body, field) in cases {
        let (status, answer) = api.start(gw.addr, &body).await;
        assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{body}: {answer}");
    }
    // Not a dispatch: a field missing, not an object.
    for body in [json!({"kind": "one_time"}), json!(["one_time"])] {
        let (status, answer) = api.start(gw.addr, &body).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_body")), "{body}: {answer}");
    }
    let url = Api::url(gw.addr, "");
    let r = api.http.post(&url).bearer_auth(KEY_D).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 415);
    // Keys: none, another app's scope only.
    let r =
        api.http.post(&url).json(&json!({"kind": "one_time", "message": restock()})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = api.http.get(&url).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(r.status(), 403, "token:read is not dispatch");
    // Ids and queries.
    for path in
        ["/0123", "/0123456789abcdef0123456789AB", "/..%2F..%2Fgrants", "/0123456789abcdef0123456789ab"]
    {
        assert_eq!(api.get(gw.addr, path).await.0, 404, "{path}");
        assert_eq!(api.cancel(gw.addr, path.trim_start_matches('/')).await.0, 404, "{path}");
    }
    for (query, status, field) in [
        ("?limit=0", 422, "limit"),
        ("?limit=101", 422, "limit"),
        ("?before=zz", 422, "before"),
        ("?limit=1&limit=2", 400, "limit"),
        ("?after=x", 400, "after"),
    ] {
        let (got, answer) = api.get(gw.addr, query).await;
        assert_eq!((got, answer["field"].as_str()), (status, Some(field)), "{query}: {answer}");
    }
    let (_, page) = api.get(gw.addr, "").await;
    assert_eq!(page["items"], json!([]), "nothing started");
    assert_eq!(s.sandbox.state().stats().deliveries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_an_idempotency_key_is_answered_once_and_its_retries_start_nothing() {
    let s = Setup::new(20, "path = \"tokens.db\"", "", 0).await;
    let gw = served(&s.config).await;
    let api = Api::new();
    let body = json!({"kind": "one_time", "message": restock()});
    let start = |key: &'static str, body: Value| {
        let r = api
            .http
            .post(Api::url(gw.addr, ""))
            .bearer_auth(KEY_D)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let r = r.send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (r.status().as_u16(), replayed, r.json::<Value>().await.unwrap())
        }
    };
    let (status, replayed, first) = start("restock-2026-12-07", body.clone()).await;
    assert_eq!((status, replayed), (202, false), "{first}");
    assert_eq!(first["progress"]["remaining"], 20, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    api.until(gw.addr, &id, Duration::from_secs(30), ended).await;
    // Retried after the job ended: the first answer, nothing started (a new job would find the
    // grants used, but on a long-term template it would send them all again).
    let (status, replayed, again) = start("restock-2026-12-07", body.clone()).await;
    assert_eq!((status, replayed, again["id"].as_str()), (202, true, Some(id.as_str())), "{again}");
    assert_eq!(api.get(gw.addr, "").await.1["items"].as_array().unwrap().len(), 1);
    // The key with another body: refused.
    let other = json!({"kind": "one_time", "message": restock(), "concurrency": 4});
    let (status, _, reused) = start("restock-2026-12-07", other).await;
    assert_eq!((status, reused["error"].as_str()), (422, Some("idempotency_key_reused")), "{reused}");
    assert_eq!(s.delivered(), 20);
    drop(gw.stop);
}

/// A long-term template's job whose gateway was killed is not resumed: its delivered grants stay
/// pending, so a resumed run would send them again. It ends `failed`, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_long_term_job_is_ended_not_resumed() {
    let s = Setup::new(1, "path = \"tokens.db\"", "", 0).await;
    let jobs = open_stores(&s.config.store).await.unwrap().jobs;
    let id = format!("{:028x}", 7);
    let spec = json!({"kind": "mini_program", "template_id": "SandboxMpRestockAlert_0000000000000000000001",
        "scene": 0, "long_term": true, "message": {"template_id": "SandboxMpRestockAlert_0000000000000000000001",
        "data": {"thing1": {"value": "x"}}}, "concurrency": 1, "rate_per_second": null})
    .to_string();
    let job = subscribe_gateway::jobs::NewJob::new(&id, DEMO_APPID, "scope", &spec, "ops", "gateway-killed");
    jobs.create(&job, Duration::from_millis(1)).await.unwrap();
    let gw = served(&s.config).await;
    let api = Api::new();
    let job = api.until(gw.addr, &id, Duration::from_secs(10), ended).await;
    assert_eq!((job["state"].as_str(), job["resumed"].as_u64()), (Some("failed"), Some(1)), "{job}");
    assert!(job["detail"].as_str().unwrap().contains("long-term template's job is not resumed"), "{job}");
    drop(gw.stop);
}

/// A job's gateway stops gracefully mid-dispatch: the job is handed back and another gateway
/// resumes it at once; every grant is delivered once, none set aside.
async fn handed_back(store: &str, url: &str) {
    let s = Setup::new(400, store, url, 20).await;
    let (a, b) = (served(&s.config).await, served(&s.config).await);
    let api = Api::new();
    let (status, job) =
        api.start(a.addr, &json!({"kind": "one_time", "message": restock(), "concurrency": 4})).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    api.until(a.addr, &id, Duration::from_secs(30), |j| j["progress"]["sent"].as_u64() >= Some(50)).await;
    a.stop.send(true).unwrap();
    a.jobs.await.unwrap();

    let job = api.until(b.addr, &id, Duration::from_secs(60), ended).await;
    assert_eq!((job["state"].as_str(), job["resumed"].as_u64()), (Some("finished"), Some(1)), "{job}");
    let counts = s.ledger.counts(&scope(), SystemClock.now()).await.unwrap();
    assert_eq!((counts.delivered, counts.review, counts.pending, counts.reserved), (400, 0, 0, 0));
    assert_eq!(s.delivered(), 400);
    assert_eq!(job["progress"]["delivered"], 400, "{job}");
    drop(b.stop);
}

/// A job's gateway is killed mid-dispatch (its runtime dropped: nothing handed back, the grants
/// it had taken still held): another gateway resumes the job after its lease, waits for the held
/// grants to come back, and every grant ends delivered once or under review; the sandbox
/// delivered exactly what the ledger says.
async fn killed(store: &str, url: &str) {
    let s = Setup::new(600, store, url, 20).await;
    let api = Api::new();
    // Gateway A on a runtime of its own, which the test drops to kill it.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let a = {
        let config = s.config();
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let gateway = Gateway::start(&config).await.unwrap();
            let limits = ServeLimits::from(&config.server);
            let listen = config.server.listen;
            let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let jobs = gateway.run_background(std::future::pending());
            tokio::join!(serve(listener, gateway.router(), limits, std::future::pending()), jobs);
        });
        rx.await.unwrap()
    };
    let (status, job) =
        api.start(a, &json!({"kind": "one_time", "message": restock(), "concurrency": 4})).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    api.until(a, &id, Duration::from_secs(30), |j| j["progress"]["sent"].as_u64() >= Some(100)).await;
    runtime.shutdown_background();

    let b = served(&s.config).await;
    let job = api.until(b.addr, &id, Duration::from_secs(90), ended).await;
    assert_eq!((job["state"].as_str(), job["resumed"].as_u64()), (Some("finished"), Some(1)), "{job}");
    let counts = s.ledger.counts(&scope(), SystemClock.now()).await.unwrap();
    assert_eq!((counts.pending, counts.reserved, counts.dropped), (0, 0, 0), "{counts:?}");
    assert_eq!(counts.delivered + counts.review, 600, "{counts:?}");
    // The sends the kill cut off before their outcome was recorded went out again as second
    // attempts, which WeChat refused: under review, never delivered twice.
    assert!(counts.review <= 8 * 3, "at most the grants the killed gateway held: {counts:?}");
    let delivered = s.delivered();
    assert!(
        (counts.delivered..=counts.delivered + counts.review).contains(&delivered),
        "{delivered}, {counts:?}"
    );
    for i in 0..600 {
        let record = s.ledger.get(&scope().key(user(i))).await.unwrap().unwrap();
        let inbox = s.sandbox.state().inbox(user(i).as_str()).len();
        match record.status {
            GrantStatus::Delivered => assert_eq!(inbox, 1, "{}", user(i)),
            GrantStatus::Review { .. } => assert!(record.attempts > 1, "{record:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(job["progress"]["unknown"].as_u64(), Some(counts.review), "{job}");
    drop(b.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateways_job_is_handed_back_and_finished_by_another_on_sqlite() {
    handed_back("path = \"tokens.db\"", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateways_job_is_handed_back_and_finished_by_another_on_postgres() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    handed_back(
        &format!("kind = \"postgres\"\nurl_env = \"GW_TEST_STORE_URL\"\nschema = \"{}\"", unique("gwd")),
        &url,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateways_job_is_handed_back_and_finished_by_another_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    handed_back(
        &format!("kind = \"redis\"\nurl_env = \"GW_TEST_STORE_URL\"\nprefix = \"{}\"", unique("gwd")),
        &url,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_job_is_resumed_and_no_grant_is_sent_twice_on_sqlite() {
    killed("path = \"tokens.db\"", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_job_is_resumed_and_no_grant_is_sent_twice_on_postgres() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    killed(
        &format!("kind = \"postgres\"\nurl_env = \"GW_TEST_STORE_URL\"\nschema = \"{}\"", unique("gwk")),
        &url,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_job_is_resumed_and_no_grant_is_sent_twice_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    killed(
        &format!("kind = \"redis\"\nurl_env = \"GW_TEST_STORE_URL\"\nprefix = \"{}\"", unique("gwk")),
        &url,
    )
    .await;
}

/// The binary killed (SIGKILL) in the middle of a dispatch of ten thousand grants, and started
/// again on the same SQLite file: it resumes the job, waits for the grants it held when it was
/// killed, and every grant ends delivered once or under review; the sandbox delivered what the
/// ledger records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_mid_dispatch_of_ten_thousand_grants_and_restarted_sends_none_twice() {
    const N: usize = 10_000;
    let db = TempDir::new().unwrap();
    let store = format!("path = \"{}\"", db.path().join("gateway.db").display());
    let s = Setup::new(N, &store, "", 10).await;
    let start = || async {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, gateway_text(dir.path(), &s.sandbox, &store)).unwrap();
        crate::binary::Binary::start_with_env(dir, &path, None, &[]).await
    };
    let api = Api::new();
    let first = start().await;
    let (status, job) =
        api.start(first.addr, &json!({"kind": "one_time", "message": restock(), "concurrency": 32})).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    api.until(first.addr, &id, Duration::from_secs(60), |j| j["progress"]["sent"].as_u64() >= Some(3_000))
        .await;
    // Dropped: SIGKILL (`kill_on_drop`), nothing handed back.
    drop(first);

    let second = start().await;
    let job = api.until(second.addr, &id, Duration::from_secs(120), ended).await;
    assert_eq!((job["state"].as_str(), job["resumed"].as_u64()), (Some("finished"), Some(1)), "{job}");
    let counts = s.ledger.counts(&scope(), SystemClock.now()).await.unwrap();
    assert_eq!((counts.pending, counts.reserved, counts.dropped), (0, 0, 0), "{counts:?}");
    assert_eq!(counts.delivered + counts.review, N as u64, "{counts:?}");
    let delivered = s.delivered();
    assert!(
        (counts.delivered..=counts.delivered + counts.review).contains(&delivered),
        "{delivered}, {counts:?}"
    );
    assert_eq!(s.sandbox.state().stats().deliveries, delivered);
    drop(second);
}

/// A name no other test (or run) uses.
pub(crate) fn unique(prefix: &str) -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}_{}_{}", std::process::id(), hex::encode(b))
}
