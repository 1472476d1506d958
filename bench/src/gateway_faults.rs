//! The gateway under its store's faults (the store table's last rows): the `subscribe-gateway`
//! binary (release, built beside this one) on a Redis (AOF on) or a PostgreSQL of its own,
//! sending one-time messages to the sandbox for callers that give each an `Idempotency-Key`
//! and ask again with the same key while the answer is 409, 503 or none, as the gateway's
//! documentation tells them; the store is restarted (down 6 s), or reached through a proxy that
//! black-holes its connections for 6 s, once a third of the keys are answered, while `/readyz`
//! is read every 100 ms.
//!
//! Every row checks: every key answered; asked again afterwards, every key gives the answer it
//! gave first (no key answered two ways); the sandbox was asked to send once per delivery
//! (nothing sent twice) and delivered once per key answered `delivered` (plus at most those
//! answered `unknown`); no user got two messages; `/readyz` answered 503 within its cache time
//! (`READY_CACHE`) and a second of the store going down, and 200 again within as long of its
//! return.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use subscribe_gateway::{READY_CACHE, hash_key};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};
use subscribe_types::{OpenId, Scene};

use crate::cluster::PasswordCluster;
use crate::stores::{Mode, Proxy, RedisServer};

/// The callers' key (scope `send` on the demo app).
const KEY: &str = "bench-store-faults-gateway-key-3f9a1c7e5b2d4f60";
/// How long the store is down.
const DOWN: Duration = Duration::from_secs(6);
const PASSWORD: &str = "wxsub-gateway-store-faults";

#[derive(Clone, Copy)]
pub(crate) enum GatewayStore {
    Redis,
    Postgres,
}

/// The rows: the gateway on Redis, then on PostgreSQL.
pub(crate) async fn gateway_rows(n: usize, concurrency: usize, only: &[String]) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for (name, store, black_hole) in [
        ("gateway on Redis: restarted, down 6 s, under keyed sends", GatewayStore::Redis, false),
        (
            "gateway on PostgreSQL: restarted (fast shutdown), down 6 s, under keyed sends",
            GatewayStore::Postgres,
            false,
        ),
        (
            "gateway on Redis through a proxy: connections black-holed (no answer, no reset) for 6 s, under keyed sends",
            GatewayStore::Redis,
            true,
        ),
        (
            "gateway on PostgreSQL through a proxy: connections black-holed (no answer, no reset) for 6 s, under keyed sends",
            GatewayStore::Postgres,
            true,
        ),
    ] {
        if only.iter().all(|w| name.contains(w.as_str())) {
            eprintln!("store-faults: {name}");
            rows.push(row(name, store, black_hole, n, concurrency).await);
        }
    }
    rows
}

/// A store the row started, restarted by its fault (or reached through a proxy that
/// black-holes it).
enum Server {
    Redis(RedisServer),
    Postgres(PasswordCluster),
}

impl Server {
    async fn restart(self: &Arc<Self>, proxy: Option<&Proxy>) {
        if let Some(proxy) = proxy {
            proxy.set(Mode::BlackHole);
            tokio::time::sleep(DOWN).await;
            proxy.set(Mode::Forward);
            return;
        }
        let server = Arc::clone(self);
        tokio::task::spawn_blocking(move || match &*server {
            Server::Redis(r) => {
                r.shutdown();
                std::thread::sleep(DOWN);
                r.spawn();
            }
            Server::Postgres(pg) => {
                pg.stop_fast();
                std::thread::sleep(DOWN);
                pg.start_again();
            }
        })
        .await
        .unwrap();
    }
}

fn one_time(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"touser": format!("oUser{i:010}"), "template_id": DEMO_TEMPLATE, "scene": "1",
        "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货"}}}))
    .unwrap()
}

/// What a key was answered: the status and the body.
type Answer = (u16, serde_json::Value);

/// Asks until the answer is not 409, 503 or none (at most a minute); `None` when it never was.
async fn ask(http: &reqwest::Client, url: &str, key: &str, body: &[u8]) -> Option<Answer> {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let sent = http
            .post(url)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_vec())
            .send()
            .await;
        if let Ok(r) = sent {
            let status = r.status().as_u16();
            if let Ok(bytes) = r.bytes().await
                && let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes)
                && status != 409
                && status != 503
            {
                return Some((status, body));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[allow(clippy::too_many_lines)] // one row: start, send through the fault, ask again, check
async fn row(
    name: &str,
    store: GatewayStore,
    black_hole: bool,
    n: usize,
    concurrency: usize,
) -> serde_json::Value {
    let sandbox = SandboxHandle::start(SandboxConfig::demo().with_generated_users(n)).await.unwrap();
    let (appid, template) = (SandboxConfig::demo_appid(), SandboxConfig::demo_template());
    for i in 0..n {
        sandbox.state().add_grant(
            &appid,
            &OpenId::new(format!("oUser{i:010}")).unwrap(),
            &template,
            Scene::new(1).unwrap(),
        );
    }
    let (server, store_config, port) = match store {
        GatewayStore::Redis => {
            let r = RedisServer::start(true);
            let port = r.port;
            (Server::Redis(r), "kind = \"redis\"\nurl_env = \"BENCH_STORE_URL\"", port)
        }
        GatewayStore::Postgres => {
            let pg = tokio::task::spawn_blocking(|| PasswordCluster::start(PASSWORD)).await.unwrap();
            let port = pg.port();
            (Server::Postgres(pg), "kind = \"postgres\"\nurl_env = \"BENCH_STORE_URL\"", port)
        }
    };
    let proxy = if black_hole { Some(Proxy::start(port).await) } else { None };
    let reached = proxy.as_ref().map_or(port, |p| p.port);
    let store_url = match &server {
        Server::Redis(_) => format!("redis://127.0.0.1:{reached}"),
        Server::Postgres(pg) => pg.url(PASSWORD).replace(&format!(":{port}/"), &format!(":{reached}/")),
    };
    let server = Arc::new(server);
    let dir = std::env::temp_dir().join(format!("wxsub-store-faults-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[store]
{store_config}

[[apps]]
appid = "{DEMO_APPID}"
kind = "official_account"
api_base = "{api}"
secret_env = "BENCH_GATEWAY_SECRET"

[[keys]]
name = "bench"
sha256 = "{hash}"
rate_per_second = 1000000
burst = 1000000
scopes = {{ {DEMO_APPID} = ["send"] }}
"#,
        api = sandbox.base_url(),
        hash = hash_key(KEY).unwrap(),
    );
    std::fs::write(dir.join("gateway.toml"), config).unwrap();
    let mut child = std::process::Command::new(crate::gateway::gateway_binary())
        .arg("--config")
        .arg(dir.join("gateway.toml"))
        .env("BENCH_GATEWAY_SECRET", DEMO_SECRET)
        .env("BENCH_STORE_URL", &store_url)
        .env("RUST_LOG", "error")
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the release subscribe-gateway beside this binary (cargo xtask faults builds it)");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(40)).build().unwrap();
    let t0 = Instant::now();
    while http.get(format!("{base}/readyz")).send().await.map_or(true, |r| r.status() != 200) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // `/readyz`, every 100 ms: (when, ready).
    let probes: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let probing = {
        let (http, probes, url) = (http.clone(), Arc::clone(&probes), format!("{base}/readyz"));
        tokio::spawn(async move {
            loop {
                let ready = http.get(&url).send().await.is_ok_and(|r| r.status() == 200);
                probes.lock().unwrap().push((Instant::now(), ready));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let url = Arc::new(format!("{base}/v1/apps/{DEMO_APPID}/messages/one_time"));
    let answered = Arc::new(AtomicUsize::new(0));
    let first: Arc<Mutex<BTreeMap<usize, Option<Answer>>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, url, answered, first, next) =
            (http.clone(), Arc::clone(&url), Arc::clone(&answered), Arc::clone(&first), Arc::clone(&next));
        callers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let answer = ask(&http, &url, &format!("order-{i}"), &one_time(i)).await;
                first.lock().unwrap().insert(i, answer);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while answered.load(Ordering::Relaxed) < n / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let down_at = Instant::now();
    server.restart(proxy.as_ref()).await;
    let back_at = Instant::now();
    while callers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    // Asked again, every key: the answer it gave first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = first.lock().unwrap().clone();
    let mut changed = Vec::new();
    for (i, answer) in &first {
        let again = ask(&http, &url, &format!("order-{i}"), &one_time(*i)).await;
        if &again != answer && changed.len() < 3 {
            changed.push(format!("order-{i}: first {answer:?}, then {again:?}"));
        }
    }
    // The prober goes on until `/readyz` is seen ready again (at most half a minute).
    let seen_back = Instant::now();
    while !probes.lock().unwrap().iter().any(|(t, ready)| *t >= back_at && *ready)
        && seen_back.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probing.abort();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let stats = sandbox.state().stats();
    let inbox_max = (0..n).map(|i| sandbox.state().inbox(&format!("oUser{i:010}")).len()).max().unwrap_or(0);
    let outcome = |a: &Option<Answer>| a.as_ref().and_then(|(_, b)| b["outcome"].as_str().map(str::to_owned));
    let count = |what: &str| first.values().filter(|a| outcome(a).as_deref() == Some(what)).count() as u64;
    let (delivered, unknown) = (count("delivered"), count("unknown"));
    let unanswered = first.values().filter(|a| a.is_none()).count();
    let probes = probes.lock().unwrap().clone();
    let first_down =
        probes.iter().find(|(t, ready)| *t >= down_at && !ready).map(|(t, _)| t.duration_since(down_at));
    let up_again =
        probes.iter().find(|(t, ready)| *t >= back_at && *ready).map(|(t, _)| t.duration_since(back_at));
    let mut violations = Vec::new();
    if unanswered > 0 {
        violations
            .push(format!("{unanswered} keys never answered (but 409, 503 or nothing) within a minute"));
    }
    if !changed.is_empty() {
        violations.push(format!("keys answered two ways: {}", changed.join("; ")));
    }
    if stats.send_requests != stats.deliveries {
        violations.push(format!(
            "{} send requests for {} deliveries: a message was sent again",
            stats.send_requests, stats.deliveries
        ));
    }
    if stats.deliveries < delivered || stats.deliveries > delivered + unknown {
        violations.push(format!(
            "the sandbox delivered {}; the keys were answered {delivered} delivered and {unknown} unknown",
            stats.deliveries
        ));
    }
    if inbox_max > 1 {
        violations.push(format!("a user received {inbox_max} messages"));
    }
    let within = READY_CACHE + Duration::from_secs(1);
    if first_down.is_none_or(|d| d > within) {
        violations.push(format!(
            "/readyz did not answer 503 within {within:?} of the store going down ({first_down:?})"
        ));
    }
    if up_again.is_none_or(|d| d > within) {
        violations.push(format!(
            "/readyz did not answer 200 within {within:?} of the store's return ({up_again:?})"
        ));
    }
    let secs = |d: Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
    json!({
        "name": name,
        "keys": n,
        "concurrency": concurrency,
        "delivered": delivered,
        "unknown": unknown,
        "answers_changed": changed.len(),
        "sandbox_deliveries": stats.deliveries,
        "send_requests": stats.send_requests,
        "most_in_one_inbox": inbox_max,
        "readyz_down_after_s": first_down.map(secs),
        "readyz_up_after_s": up_again.map(secs),
        "fault_s": secs(back_at.duration_since(down_at)),
        "elapsed_s": secs(elapsed),
        "expect": format!("every key answered, and the same when asked again; send requests = deliveries; deliveries between the keys answered delivered and those plus unknown; each user at most one message; /readyz 503 within {within:?} of the store going down and 200 within as long of its return"),
        "passed": violations.is_empty(),
        "violations": violations,
    })
}
