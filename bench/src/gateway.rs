//! The gateway scenario (`gateway <n> <concurrency>`): the `subscribe-gateway` binary (release,
//! built beside this one) on SQLite against the fixed server, its callers in this process.
//!
//! - **Token reads**: `n` `GET …/access_token` at `concurrency`: reads a second and their p99
//!   (each answered from the gateway's memory).
//! - **Sends**: `n` one-time messages `POST`ed to `…/messages/one_time` at `concurrency`, with
//!   and without an `Idempotency-Key` (each keyed send claims and settles a record in the
//!   SQLite file), against `wxsub send-batch` sending the same number from a file to the same
//!   server in the same run: the ratio is what the hop (HTTP in, JSON parsed and checked, the
//!   answer written) costs a caller that could have linked the library.
//! - **CPU**: the gateway process's own CPU time per send (user and system), keyed and not,
//!   beside `wxsub send-batch`'s per line: what the hop adds on the gateway's side (the caller's
//!   HTTP client and the fake server share this process).
//! - **Memory**: the gateway's peak resident set over the whole run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use subscribe_gateway::hash_key;
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE};

use super::latency::process_tree_cpu;
use super::{children_cpu_time, fixed_server, run_watching_peak, write_lines};

/// The callers' key (scopes `token:read` and `send` on the demo app).
const KEY: &str = "bench-gateway-key-6b1e0f9d3c7a4e2b8d5f1a0c9e7b3d6f";

/// The gateway binary built beside this one.
pub(crate) fn gateway_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.with_file_name(format!("subscribe-gateway{}", std::env::consts::EXE_SUFFIX))
}

/// A port nobody listens on now (the gateway binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The gateway's peak resident set so far, in bytes (`VmHWM`).
fn peak_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// `n` requests made by `request(i)` at `concurrency`: the wall time and each one's latency.
async fn drive<F, Fut>(n: usize, concurrency: usize, request: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (request, next) = (Arc::clone(&request), Arc::clone(&next));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return latencies;
                }
                let t = Instant::now();
                request(i).await;
                latencies.push(t.elapsed());
            }
        });
    }
    let latencies: Vec<Duration> = workers.join_all().await.into_iter().flatten().collect();
    (started.elapsed(), latencies)
}

fn p99_ms(latencies: &mut [Duration]) -> f64 {
    latencies.sort_unstable();
    let i = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    (latencies[i].as_secs_f64() * 1e4).round() / 10.0
}

fn one_time(i: usize) -> serde_json::Value {
    json!({"touser": format!("oUser{i:010}"), "template_id": DEMO_TEMPLATE, "scene": "1",
           "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货，点击查看详情。"}},
           "url": "https://shop.example.com/items/1"})
}

#[allow(clippy::too_many_lines)] // one run: start, three measurements, the baseline, stop
pub(crate) async fn gateway(n: usize, concurrency: usize) -> serde_json::Value {
    let server = fixed_server().await;
    let base = format!("http://{}", server.addr);
    let dir = std::env::temp_dir().join(format!("wxsub-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let hash = hash_key(KEY).unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
max_connections = {max}

[store]
path = "gateway.db"

[[apps]]
appid = "{DEMO_APPID}"
kind = "official_account"
api_base = "{base}"
secret_env = "BENCH_GATEWAY_SECRET"

[[keys]]
name = "bench"
sha256 = "{hash}"
rate_per_second = 1000000
burst = 1000000
scopes = {{ {DEMO_APPID} = ["token:read", "send"] }}
"#,
        max = concurrency * 2 + 64
    );
    std::fs::write(dir.join("gateway.toml"), config).unwrap();
    let mut child = std::process::Command::new(gateway_binary())
        .arg("--config")
        .arg(dir.join("gateway.toml"))
        .env("BENCH_GATEWAY_SECRET", DEMO_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the release subscribe-gateway beside this binary (cargo xtask bench builds it)");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let ready = Instant::now();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(ready.elapsed() < Duration::from_secs(30), "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Token reads (one warm-up read fetches the token from the fixed server).
    let token_url = Arc::new(format!("{url}/v1/apps/{DEMO_APPID}/access_token"));
    let read = {
        let (http, token_url) = (http.clone(), Arc::clone(&token_url));
        move |_| {
            let (http, token_url) = (http.clone(), Arc::clone(&token_url));
            async move {
                let r = http.get(token_url.as_str()).bearer_auth(KEY).send().await.unwrap();
                assert_eq!(r.status(), 200, "a token read");
                let _ = r.bytes().await.unwrap();
            }
        }
    };
    drive(concurrency, concurrency, read.clone()).await;
    let (wall, mut latencies) = drive(n, concurrency, read).await;
    let token_per_s = n as f64 / wall.as_secs_f64();
    let token_p99 = p99_ms(&mut latencies);

    // Sends, without and with an idempotency key.
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..n).map(|i| serde_json::to_vec(&one_time(i)).unwrap()).collect());
    let send_url = Arc::new(format!("{url}/v1/apps/{DEMO_APPID}/messages/one_time"));
    let sends = |keyed: bool, round: usize| {
        let (http, send_url, bodies) = (http.clone(), Arc::clone(&send_url), Arc::clone(&bodies));
        move |i: usize| {
            let (http, send_url, bodies) = (http.clone(), Arc::clone(&send_url), Arc::clone(&bodies));
            async move {
                let mut req = http
                    .post(send_url.as_str())
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(bodies[i].clone());
                if keyed {
                    req = req.header("idempotency-key", format!("bench-{round}-{i}"));
                }
                let r = req.send().await.unwrap();
                let status = r.status();
                let answer = r.bytes().await.unwrap();
                assert!(
                    status == 200 && answer.starts_with(br#"{"outcome":"delivered""#),
                    "a send through the gateway: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    };
    drive(concurrency, concurrency, sends(false, 0)).await;
    // The gateway's own CPU per send (user and system, from /proc): where the hop's cost is.
    let gateway_cpu = || process_tree_cpu(child.id());
    let per_send_us = |cpu: Duration| (cpu.as_secs_f64() * 1e7 / n as f64).round() / 10.0;
    let cpu0 = gateway_cpu();
    let (wall, _) = drive(n, concurrency, sends(false, 0)).await;
    let send_per_s = n as f64 / wall.as_secs_f64();
    let send_cpu_us = per_send_us(gateway_cpu().saturating_sub(cpu0));
    let cpu0 = gateway_cpu();
    let (wall, _) = drive(n, concurrency, sends(true, 1)).await;
    let keyed_per_s = n as f64 / wall.as_secs_f64();
    let keyed_cpu_us = per_send_us(gateway_cpu().saturating_sub(cpu0));
    let peak = peak_of(child.id());
    let _ = child.kill();
    let _ = child.wait();

    // The baseline: `wxsub send-batch`, the same number of sends to the same server.
    let input = dir.join("in.jsonl");
    write_lines(&input, n);
    let mut cmd = std::process::Command::new(super::wxsub());
    cmd.args(["send-batch", "--input"])
        .arg(&input)
        .args(["--concurrency", &concurrency.to_string()])
        .env("WXSUB_API_BASE", &base)
        .env("WXSUB_APPID", DEMO_APPID)
        .env("WXSUB_SECRET", DEMO_SECRET)
        .stdout(std::fs::File::create(dir.join("out.jsonl")).unwrap())
        .stderr(std::process::Stdio::null());
    let (t, cpu0) = (Instant::now(), children_cpu_time());
    let (status, _) = tokio::task::spawn_blocking(move || run_watching_peak(&mut cmd)).await.unwrap();
    assert!(status.success(), "wxsub send-batch failed: {status}");
    let batch_per_s = n as f64 / t.elapsed().as_secs_f64();
    let batch_cpu_us = per_send_us(children_cpu_time().saturating_sub(cpu0));
    let _ = std::fs::remove_dir_all(&dir);
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "scenario": "gateway", "sends": n, "concurrency": concurrency,
        "stat": "one run each, in one process run",
        "token_reads_per_s": token_per_s.round(), "token_read_p99_ms": token_p99,
        "gateway_send_per_s": send_per_s.round(), "gateway_keyed_send_per_s": keyed_per_s.round(),
        "send_batch_per_s": batch_per_s.round(),
        "gateway_cpu_us_per_send": send_cpu_us, "gateway_cpu_us_per_keyed_send": keyed_cpu_us,
        "send_batch_cpu_us_per_line": batch_cpu_us,
        "ratio": round3(send_per_s / batch_per_s), "keyed_ratio": round3(keyed_per_s / batch_per_s),
        "gateway_peak_mib": (peak as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "token_requests": server.token_requests.load(Ordering::Relaxed),
    })
}
