//! A fleet proven (#35, point 9): three gateway *processes* (the binary, each with its own
//! configuration file) on one PostgreSQL schema, and three on one Redis prefix, against one
//! sandbox.
//!
//! - Fifty callers spread over the three report the same rejected token, three rotations in a
//!   row: one token request reaches WeChat per rotation, and every caller gets the new token.
//! - Ten thousand one-time messages sent through the three, each with an `Idempotency-Key`, a
//!   random fifth retried (on the same gateway, on another, or twice at once on two): each is
//!   delivered exactly once, the sandbox's deliveries equal the keys and the gateways' own
//!   count, and no key is answered two ways.
//!
//! Every test run sends the ten thousand, on each store (40 to 50 s a store with debug builds on
//! two busy cores, the two tests running side by side; each prints its figures and wall time):
//! `GW_FLEET_SENDS` changes the number, `GW_FLEET_SEED` replays a run's draw of retries (each
//! run prints its seed, and every failure names it). No assertion is about time.

// Each fleet test prints its figures (sends, requests, deliveries, wall time) on stderr, which
// nextest shows with `--no-capture` or when the test fails.
#![allow(clippy::print_stderr)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use subscribe_gateway::KeyHash;
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};
use subscribe_types::{OpenId, Scene};
use tempfile::TempDir;

use crate::binary::Binary;
use crate::*;

/// Key F: `send` on the demo app, with a rate no test run reaches.
const KEY_F: &str = "gw-test-key-f-7c2e9a4f1d8b3e6a0c5f2d9b4e7a1c8f";
/// Sends unless `GW_FLEET_SENDS` says otherwise.
const SENDS: usize = 10_000;
/// Callers sending at once.
const CONCURRENCY: usize = 64;

#[derive(Clone, Copy, Debug)]
enum Store {
    Postgres,
    Redis,
}

impl Store {
    /// The store's URL (without a password here; given to the gateways by `url_env` anyway).
    fn url(self) -> String {
        let (var, default) = match self {
            Self::Postgres => ("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
            Self::Redis => ("REDIS_URL", "redis://127.0.0.1:6379"),
        };
        std::env::var(var).unwrap_or_else(|_| default.into())
    }

    /// A schema or prefix no other test, and no earlier run, uses.
    fn unique() -> String {
        format!("gw_fleet_{:016x}", getrandom::u64().unwrap())
    }

    /// The `[store]` table's body, for `name`.
    fn section(self, name: &str) -> String {
        match self {
            Self::Postgres => {
                format!("kind = \"postgres\"\nurl_env = \"GW_TEST_STORE_URL\"\nschema = \"{name}\"")
            }
            Self::Redis => format!("kind = \"redis\"\nurl_env = \"GW_TEST_STORE_URL\"\nprefix = \"{name}\""),
        }
    }
}

/// `text` with `from` replaced by `to`, which must be there.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the test configuration has no `{from}`");
    text.replacen(from, to, 1)
}

/// Three gateway processes on one store, and the sandbox they ask.
struct Fleet {
    sandbox: SandboxHandle,
    gateways: Vec<Binary>,
    http: reqwest::Client,
    store: Store,
    name: String,
}

impl Fleet {
    /// Starts three binaries at once, each with a configuration file of its own (the test
    /// configuration, key F, metrics on, `[store]` on `store`).
    async fn start(store: Store, sandbox: SandboxHandle) -> Self {
        let name = Store::unique();
        let url = store.url();
        let start = |_| {
            let dir = TempDir::new().unwrap();
            let path = dir.path().join("gateway.toml");
            let text = config_text(dir.path(), &sandbox.base_url());
            // The default header-read timeout (5 s): the callers' pool closes idle connections first.
            let text =
                replaced(&text, "header_read_timeout_ms = 300\n", "metrics_listen = \"127.0.0.1:0\"\n");
            let text = replaced(&text, "path = \"tokens.db\"", &store.section(&name));
            // The sandbox ends a token at once, which WeChat does not (a replaced token stays
            // valid five minutes): three rotations in a row need the reports' floor off.
            let text = replaced(
                &text,
                "secret_file = \"secret-a\"",
                "secret_file = \"secret-a\"\nreport_interval_ms = 0",
            );
            let hash = KeyHash::of(KEY_F.as_bytes()).to_hex();
            let text = format!(
                "{text}\n[[keys]]\nname = \"fleet\"\nsha256 = \"{hash}\"\nscopes = {{ {DEMO_APPID} = [\"send\"] }}\n\
                 rate_per_second = 100000\nburst = 100000\n"
            );
            std::fs::write(&path, text).unwrap();
            let url = url.clone();
            async move { Binary::start_with_env(dir, &path, None, &[("GW_TEST_STORE_URL", &url)]).await }
        };
        let (a, b, c) = tokio::join!(start(0), start(1), start(2));
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(CONCURRENCY * 2)
            .build()
            .unwrap();
        Self { sandbox, gateways: vec![a, b, c], http, store, name }
    }

    fn url(&self, gateway: usize, path: &str) -> String {
        format!("http://{}{path}", self.gateways[gateway].addr)
    }

    /// The demo app's token, read from `gateway` with key A.
    async fn token(&self, gateway: usize) -> String {
        let url = self.url(gateway, &format!("/v1/apps/{DEMO_APPID}/access_token"));
        let r = self.http.get(url).bearer_auth(KEY_A).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// The sum over the three gateways' `/metrics` of the series `name` with every label of
    /// `labels` (`key="value"`).
    async fn counted(&self, name: &str, labels: &[&str]) -> u64 {
        let mut sum = 0;
        for gateway in &self.gateways {
            let url = format!("http://{}/metrics", gateway.metrics.expect("metrics_listen is set"));
            let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
            for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
                if labels.iter().all(|l| line.contains(l)) {
                    let value = line.rsplit(' ').next().unwrap();
                    sum += value.parse::<u64>().unwrap_or_else(|_| panic!("{line}"));
                }
            }
        }
        sum
    }

    /// Stops the three with SIGTERM: each exits 0, and no line any of them logged holds one
    /// of `secrets`. Then drops the PostgreSQL schema (Redis expires the records itself).
    async fn stop(self, secrets: &[&str]) {
        for gateway in &self.gateways {
            gateway.terminate();
        }
        for gateway in self.gateways {
            let (status, lines) = gateway.exit().await;
            assert!(status.success(), "{status:?}: {lines:#?}");
            let all = lines.join("\n");
            for secret in secrets {
                assert!(!all.contains(secret), "a gateway logged a secret");
            }
        }
        if let Store::Postgres = self.store {
            let pool = sqlx::PgPool::connect(&self.store.url()).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// Fifty callers, spread over the three gateways, report the rejected token at once; three
/// rotations in a row.
async fn fifty_reports_make_one_token_request_per_rotation(store: Store) {
    let fleet = Fleet::start(store, sandbox().await).await;
    let stats = || fleet.sandbox.state().stats();
    let mut current = fleet.token(0).await;
    for gateway in 1..3 {
        assert_eq!(fleet.token(gateway).await, current, "one token for the fleet");
    }
    assert_eq!(stats().stable_token_requests, 1, "one token request for three gateways");
    let mut seen = vec![current.clone()];
    for rotation in 1..=3 {
        fleet.sandbox.state().revoke_tokens(Duration::ZERO);
        let mut reports = tokio::task::JoinSet::new();
        for caller in 0..50 {
            let (http, url) = (fleet.http.clone(), fleet.url(caller % 3, "/"));
            let url = format!("{url}v1/apps/{DEMO_APPID}/access_token/invalidate");
            let body = serde_json::json!({ "access_token": current });
            reports.spawn(async move {
                let r = http.post(url).bearer_auth(KEY_A).json(&body).send().await.unwrap();
                let code = r.status();
                let answer = r.json::<serde_json::Value>().await.unwrap();
                assert_eq!(code, 200, "{answer}");
                answer["access_token"].as_str().unwrap().to_owned()
            });
        }
        let answers = reports.join_all().await;
        let fresh = answers[0].clone();
        assert!(!seen.contains(&fresh), "rotation {rotation}: a new token");
        assert!(
            answers.iter().all(|a| *a == fresh),
            "rotation {rotation}: every caller gets the one new token"
        );
        for gateway in 0..3 {
            assert_eq!(fleet.token(gateway).await, fresh, "rotation {rotation}: gateway {gateway} serves it");
        }
        assert_eq!(
            stats().stable_token_requests,
            1 + rotation,
            "rotation {rotation}: one token request for fifty reports over three gateways"
        );
        current = fresh;
        seen.push(current.clone());
    }
    let app = format!("app=\"{DEMO_APPID}\"");
    assert_eq!(
        fleet.counted("subscribe_gateway_token_refreshes_total", &[&app]).await,
        4,
        "the gateways count the same token requests as WeChat"
    );
    eprintln!("fleet of three processes on {store:?}: 3 rotations, 50 reports each, {:?}", stats());
    let mut secrets = vec![DEMO_SECRET, SECRET_B, KEY_A, KEY_B, KEY_F];
    secrets.extend(seen.iter().map(String::as_str));
    fleet.stop(&secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_postgres_make_one_token_request_per_rotation() {
    fifty_reports_make_one_token_request_per_rotation(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_redis_make_one_token_request_per_rotation() {
    fifty_reports_make_one_token_request_per_rotation(Store::Redis).await;
}

/// How a key's message is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Once.
    Once,
    /// Once, then again through the same gateway.
    AgainSame,
    /// Once, then again through another gateway.
    AgainOther,
    /// Twice at once, through two gateways.
    TwoAtOnce,
}

/// A small generator (splitmix64): the draw of plans and gateways, replayable by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).unwrap()
    }
}

/// One send's plan: a fifth retried, each way about as often; its first gateway and another.
fn draw(rng: &mut Rng) -> (Plan, usize, usize) {
    let plan = match rng.below(100) {
        0..80 => Plan::Once,
        80..87 => Plan::AgainOther,
        87..93 => Plan::AgainSame,
        _ => Plan::TwoAtOnce,
    };
    let first = rng.below(3);
    let other = (first + 1 + rng.below(2)) % 3;
    (plan, first, other)
}

/// An answer a caller kept: the gateway's status, `Idempotent-Replayed`, the body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    replayed: bool,
    body: String,
}

/// What the callers met on the way to their answers.
#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    in_progress: AtomicU64,
    unavailable: AtomicU64,
    transport: AtomicU64,
}

fn user(i: usize) -> OpenId {
    OpenId::new(format!("oUser{i:010}")).unwrap()
}

fn content(i: usize) -> String {
    format!("订单 {i} 已发货")
}

/// User `i`'s message with key `order-{i}/shipped` through `gateway`, asked again (the same
/// bytes, the same key) while the answer is 409 (in progress), 503 (not sent, or the store
/// unavailable) or no answer at all, as a caller following the contract does.
async fn send(fleet: &Fleet, tally: &Tally, gateway: usize, i: usize) -> Answer {
    let body = serde_json::json!({
        "touser": user(i).as_str(),
        "template_id": DEMO_TEMPLATE,
        "scene": "1000",
        "title": "到货提醒",
        "data": {"content": {"value": content(i)}},
    });
    let body = serde_json::to_vec(&body).unwrap();
    let url = fleet.url(gateway, &format!("/v1/apps/{DEMO_APPID}/messages/one_time"));
    for _ in 0..10_000 {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let sent = fleet
            .http
            .post(&url)
            .bearer_auth(KEY_F)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("order-{i}/shipped"))
            .body(body.clone())
            .send()
            .await;
        let Ok(r) = sent else {
            tally.transport.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (status, replayed) = (r.status().as_u16(), r.headers().contains_key("idempotent-replayed"));
        let Ok(body) = r.text().await else {
            tally.transport.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let answer = Answer { status, replayed, body };
        match answer.status {
            409 => tally.in_progress.fetch_add(1, Ordering::Relaxed),
            503 => tally.unavailable.fetch_add(1, Ordering::Relaxed),
            _ => return answer,
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("order-{i}/shipped: no final answer after 10 000 requests");
}

/// Every answer the callers of key `i` got, by its plan.
async fn send_by_plan(
    fleet: &Fleet,
    tally: &Tally,
    i: usize,
    (plan, first, other): (Plan, usize, usize),
) -> Vec<Answer> {
    match plan {
        Plan::Once => vec![send(fleet, tally, first, i).await],
        Plan::AgainSame => vec![send(fleet, tally, first, i).await, send(fleet, tally, first, i).await],
        Plan::AgainOther => vec![send(fleet, tally, first, i).await, send(fleet, tally, other, i).await],
        Plan::TwoAtOnce => {
            let (a, b) = tokio::join!(send(fleet, tally, first, i), send(fleet, tally, other, i));
            vec![a, b]
        }
    }
}

fn from_env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// The ten thousand sends through three gateways on `store`.
async fn every_message_is_delivered_once(store: Store) {
    let n = from_env("GW_FLEET_SENDS").map_or(SENDS, |n| usize::try_from(n).unwrap());
    let seed = from_env("GW_FLEET_SEED").unwrap_or_else(|| getrandom::u64().unwrap());
    let sandbox = sandbox_of(SandboxConfig::demo().with_generated_users(n)).await;
    let (appid, template, scene) =
        (SandboxConfig::demo_appid(), SandboxConfig::demo_template(), Scene::new(1000).unwrap());
    for i in 0..n {
        sandbox.state().add_grant(&appid, &user(i), &template, scene);
    }
    let fleet = Arc::new(Fleet::start(store, sandbox).await);
    let mut rng = Rng(seed);
    let plans: Arc<Vec<_>> = Arc::new((0..n).map(|_| draw(&mut rng)).collect());
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (fleet, tally, next, plans) =
            (Arc::clone(&fleet), Arc::clone(&tally), Arc::clone(&next), Arc::clone(&plans));
        callers.spawn(async move {
            let mut answered = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plans.len() {
                    return answered;
                }
                answered.push((i, send_by_plan(&fleet, &tally, i, plans[i]).await));
            }
        });
    }
    let mut by_key = vec![Vec::new(); n];
    for (i, answers) in callers.join_all().await.into_iter().flatten() {
        by_key[i] = answers;
    }
    let elapsed = started.elapsed();

    let delivered = r#"{"outcome":"delivered"}"#;
    let mut own = 0;
    for (i, answers) in by_key.iter().enumerate() {
        let first = &answers[0];
        assert!(
            answers.iter().all(|a| (a.status, &a.body) == (first.status, &first.body)),
            "order-{i}/shipped answered two ways (seed {seed}, {:?}): {answers:?}",
            plans[i]
        );
        assert_eq!((first.status, first.body.as_str()), (200, delivered), "order-{i}/shipped (seed {seed})");
        own += answers.iter().filter(|a| !a.replayed).count();
    }
    let keys: HashSet<String> =
        (0..n).filter(|i| !by_key[*i].is_empty()).map(|i| format!("order-{i}/shipped")).collect();
    assert_eq!(keys.len(), n, "every key answered");
    assert_eq!(own, n, "one answer per key is its send's, every other a replay (seed {seed})");

    let stats = fleet.sandbox.state().stats();
    let n64 = n as u64;
    assert_eq!(
        (stats.send_requests, stats.deliveries),
        (n64, n64),
        "one send per key reached WeChat (seed {seed})"
    );
    assert_eq!(fleet.sandbox.state().unused_grants(), 0);
    for i in 0..n {
        let inbox = fleet.sandbox.state().inbox(user(i).as_str());
        assert_eq!(inbox.len(), 1, "user {i} got one message (seed {seed})");
        assert_eq!(inbox[0].content, content(i));
    }
    let app = format!("app=\"{DEMO_APPID}\"");
    let labels = [app.as_str(), "kind=\"one_time\""];
    let reported = fleet
        .counted("subscribe_gateway_sends_total", &[labels[0], labels[1], "outcome=\"delivered\""])
        .await;
    assert_eq!(reported, n64, "the gateways' delivered count (replays not counted)");
    // Nothing refused, nothing unknown. A `not_sent` (no connection to WeChat, no token in
    // time: on a loaded machine it happens) is answered 503 and sent again by the caller, so
    // it may be counted beside the deliveries: as many as the 503s the callers met, at most.
    for outcome in ["outcome=\"refused\"", "outcome=\"unknown\""] {
        let n = fleet.counted("subscribe_gateway_sends_total", &[labels[0], labels[1], outcome]).await;
        assert_eq!(n, 0, "{outcome} (seed {seed})");
    }
    let not_sent =
        fleet.counted("subscribe_gateway_sends_total", &[labels[0], labels[1], "outcome=\"not_sent\""]).await;
    assert!(not_sent <= tally.unavailable.load(Ordering::Relaxed), "each not_sent was a 503 its caller met");

    let retried = plans.iter().filter(|p| p.0 != Plan::Once).count();
    let at_once = plans.iter().filter(|p| p.0 == Plan::TwoAtOnce).count();
    eprintln!(
        "fleet of three processes on {store:?}: {n} keys ({retried} retried, {at_once} of them twice at once), \
         {} requests ({} answered 409, {} 503, {} without an answer), {} deliveries, {reported} reported \
         delivered, {} token requests, in {elapsed:.1?} (seed {seed})",
        tally.requests.load(Ordering::Relaxed),
        tally.in_progress.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
        tally.transport.load(Ordering::Relaxed),
        stats.deliveries,
        stats.stable_token_requests,
    );
    let fleet = Arc::into_inner(fleet).expect("the callers are done");
    fleet.stop(&[DEMO_SECRET, SECRET_B, KEY_A, KEY_B, KEY_F]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_postgres_deliver_ten_thousand_retried_sends_once_each() {
    every_message_is_delivered_once(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_redis_deliver_ten_thousand_retried_sends_once_each() {
    every_message_is_delivered_once(Store::Redis).await;
}
