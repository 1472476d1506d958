//! Whole-system benchmarks, one scenario per process so peak memory is the scenario's own.
//! Run by `cargo xtask bench`, which prints the table; by hand, after building the `wxsub` the
//! scenarios run (it is looked for beside this binary):
//!
//! ```text
//! cargo build --release -p subscribe-cli
//! cargo run --release -p subscribe-bench -- throughput [sends] [concurrency]
//! cargo run --release -p subscribe-bench -- sandbox    [sends] [concurrency]
//! cargo run --release -p subscribe-bench -- send-batch [lines] [concurrency]
//! cargo run --release -p subscribe-bench -- cold-start [sends]
//! cargo run --release -p subscribe-bench -- dispatch   [grants]
//! cargo run --release -p subscribe-bench -- dispatch-sql [grants]   (in memory, SQLite, PostgreSQL)
//! cargo run --release -p subscribe-bench -- latency    [lines] [in flight]...   (a fake answering in 50 ms)
//! cargo run --release -p subscribe-bench -- faults     [sends] [concurrency] [json] [only=words] [broken=fail-all|resend-unknown|resend-silently]
//! ```
//!
//! Each prints one JSON object on stdout. Every figure is measured against a baseline run in the
//! same process against the same server: plain reqwest posting pre-serialized bodies.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::many_single_char_names,
    clippy::format_push_string,
    missing_docs
)]

mod faults;
mod gateway;
mod gateway_faults;
mod latency;
mod stores;

/// The throwaway PostgreSQL cluster of the SQL crate's tests, for the store-fault rows.
#[path = "../../crates/subscribe-sql/tests/cluster/mod.rs"]
mod cluster;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use subscribe_client::{
    Client, Dispatcher, GrantKey, GrantLedger, GrantScope, InMemoryGrantLedger, RetryPolicy,
};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};
use subscribe_sql::{Sql, SqlGrantLedger};
use subscribe_types::{AppId, AppSecret, OneTimeMessage, OpenId, Scene, TemplateId};

/// jemalloc, as `wxsub` (the children that stand for it and for plain hyper, and the fakes,
/// on the allocator the command ships with).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const TOKEN: &str = "BENCH_ACCESS_TOKEN_0123456789abcdef0123456789abcdef";

/// A minimal WeChat: fixed answers, counting token requests.
struct Fixed {
    addr: SocketAddr,
    token_requests: Arc<AtomicU64>,
}

async fn fixed_server() -> Fixed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token_requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&token_requests);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counter = Arc::clone(&counter);
                    async move {
                        use http_body_util::BodyExt;
                        let path = req.uri().path().to_owned();
                        let _ = req.into_body().collect().await;
                        let body: &'static str = if path.ends_with("token") {
                            counter.fetch_add(1, Ordering::Relaxed);
                            r#"{"access_token":"BENCH_ACCESS_TOKEN_0123456789abcdef0123456789abcdef","expires_in":7200}"#
                        } else {
                            r#"{"errcode":0,"errmsg":"ok"}"#
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json; encoding=utf-8")
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Fixed { addr, token_requests }
}

fn message(i: usize, scene: u32) -> OneTimeMessage {
    OneTimeMessage::builder(
        OpenId::new(format!("oUser{i:010}")).unwrap(),
        TemplateId::new(DEMO_TEMPLATE).unwrap(),
        Scene::new(scene).unwrap(),
    )
    .title("到货提醒")
    .content("您关注的商品已到货，点击查看详情。")
    .url("https://shop.example.com/items/1")
    .build()
    .unwrap()
}

fn client(base: &str) -> Client {
    Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(base)
        .retry_policy(RetryPolicy::default())
        .build()
        .unwrap()
}

/// CPU time of this process (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat(5) (utime, stime), counted after the command name.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 10) // USER_HZ is 100 on Linux
}

/// CPU time (user + system) of this process's children that have been waited for.
fn children_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // Fields 16 and 17 of stat(5) (cutime, cstime), counted after the command name.
    Duration::from_millis((ticks(13) + ticks(14)) * 10)
}

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn mem(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak resident set size (`VmHWM`) to the current one.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Run {
    per_second: f64,
    cpu_per_message_us: f64,
    #[allow(dead_code)] // kept for ad-hoc printing
    wall: Duration,
}

/// Runs `n` jobs on `concurrency` workers; `job(i)` does the i-th.
async fn run<F, Fut>(n: usize, concurrency: usize, job: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (job, next, failures) = (Arc::clone(&job), Arc::clone(&next), Arc::clone(&failures));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if !job(i).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "every send must succeed");
    Run {
        per_second: n as f64 / wall.as_secs_f64(),
        cpu_per_message_us: cpu.as_secs_f64() * 1e6 / n as f64,
        wall,
    }
}

/// The baseline's HTTP client: reqwest configured as the client's default transport
/// (`ReqwestTransport`: 5 s connect and 15 s request timeouts, no redirects, no proxy, idle
/// connections kept 4 s, no cap on them), built once and warmed like the client.
fn baseline_http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(4))
        .no_proxy()
        .build()
        .unwrap()
}

/// Plain reqwest posting pre-serialized bodies: the baseline.
async fn plain(http: &reqwest::Client, base: &str, bodies: Arc<Vec<Bytes>>, concurrency: usize) -> Run {
    let http = http.clone();
    let url = format!("{base}/cgi-bin/message/template/subscribe?access_token={TOKEN}");
    let n = bodies.len();
    run(n, concurrency, move |i| {
        let req = http.post(&url).header("content-type", "application/json").body(bodies[i].clone());
        async move {
            match req.send().await {
                Ok(r) => r.bytes().await.is_ok_and(|b| b.as_ref() == br#"{"errcode":0,"errmsg":"ok"}"#),
                Err(_) => false,
            }
        }
    })
    .await
}

/// The client on `HyperTransport` (its defaults, like [`client`]'s reqwest).
fn hyper_client(base: &str) -> Client {
    Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(base)
        .transport(subscribe_client::transport::HyperTransport::new().unwrap())
        .build()
        .unwrap()
}

type RawHyper = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// Plain hyper-util, configured as `HyperTransport` is (idle connections kept 4 s, no cap).
fn plain_hyper_client() -> RawHyper {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(4))
        .build(http)
}

/// Plain hyper-util posting pre-serialized bodies: `HyperTransport`'s baseline.
async fn plain_hyper(client: &RawHyper, base: &str, bodies: Arc<Vec<Bytes>>, concurrency: usize) -> Run {
    let client = client.clone();
    let uri: hyper::Uri =
        format!("{base}/cgi-bin/message/template/subscribe?access_token={TOKEN}").parse().unwrap();
    let n = bodies.len();
    run(n, concurrency, move |i| {
        let req = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(bodies[i].clone()))
            .unwrap();
        let client = client.clone();
        async move {
            use http_body_util::BodyExt;
            match client.request(req).await {
                Ok(r) => r
                    .into_body()
                    .collect()
                    .await
                    .is_ok_and(|b| b.to_bytes().as_ref() == br#"{"errcode":0,"errmsg":"ok"}"#),
                Err(_) => false,
            }
        }
    })
    .await
}

/// The whole client sending `messages`. They are `'static` (leaked by the caller) so a job
/// borrows its message without touching a shared reference count: the baseline's jobs index
/// their bodies without one either, and a count bounced between cores on every send would be
/// the harness's cost, not the client's.
async fn through_client(c: &Client, messages: &'static [OneTimeMessage], concurrency: usize) -> Run {
    let c = c.clone();
    let n = messages.len();
    run(n, concurrency, move |i| {
        let c = c.clone();
        async move { c.send_one_time(&messages[i]).await.is_ok() }
    })
    .await
}

/// `n` messages that live for the rest of the process (see [`through_client`]).
fn leaked_messages(n: usize, scene: u32) -> &'static [OneTimeMessage] {
    Box::leak((0..n).map(|i| message(i, scene)).collect::<Vec<_>>().into_boxed_slice())
}

async fn profile(client_side: bool, n: usize, concurrency: usize) -> serde_json::Value {
    let server = fixed_server().await;
    let base = format!("http://{}", server.addr);
    let messages = leaked_messages(n, 1);
    let bodies: Arc<Vec<Bytes>> =
        Arc::new(messages.iter().map(|m| Bytes::from(serde_json::to_vec(m).unwrap())).collect());
    let run = if client_side {
        let c = client(&base);
        let _ = through_client(&c, messages, concurrency).await;
        through_client(&c, messages, concurrency).await
    } else {
        let http = baseline_http();
        let _ = plain(&http, &base, Arc::clone(&bodies), concurrency).await;
        plain(&http, &base, bodies, concurrency).await
    };
    json!({ "scenario": if client_side { "profile-client" } else { "profile-plain" }, "sends": n,
            "per_s": run.per_second.round() })
}

/// How many measured runs each side of a comparison makes; the figure is their median.
const RUNS: usize = 3;
/// `send-batch`'s runs per side (two processes and a server on two cores are noisier).
const BATCH_RUNS: usize = 5;

/// The median of `values` (the lower middle one of an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// The run of median throughput (its CPU figure comes with it).
fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    runs.swap_remove((runs.len() - 1) / 2)
}

async fn throughput(n: usize, concurrency: usize) -> serde_json::Value {
    let server = fixed_server().await;
    let base = format!("http://{}", server.addr);
    let messages = leaked_messages(n, 1);
    let bodies: Arc<Vec<Bytes>> =
        Arc::new(messages.iter().map(|m| Bytes::from(serde_json::to_vec(m).unwrap())).collect());
    let c = client(&base);
    let http = baseline_http();
    // Warm both paths (connections, token) so neither pays a start-up the other does not: each
    // side keeps its one client, and its pool, from the warm-up through the measured runs.
    let warm = n.min(2_000);
    let _ = plain(&http, &base, Arc::new(bodies[..warm].to_vec()), concurrency).await;
    let _ = through_client(&c, &messages[..warm], concurrency).await;
    // Alternate, three times each, and keep each side's median run: the machine's noise hits
    // both.
    let (mut plains, mut clients) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        plains.push(plain(&http, &base, Arc::clone(&bodies), concurrency).await);
        clients.push(through_client(&c, messages, concurrency).await);
    }
    let (p, r) = (median_run(plains), median_run(clients));
    // The same pair on hyper: the client through `HyperTransport` against plain hyper-util
    // posting the same bodies, both warm, the median of three alternating runs.
    let hc = hyper_client(&base);
    let raw = plain_hyper_client();
    let _ = plain_hyper(&raw, &base, Arc::new(bodies[..warm].to_vec()), concurrency).await;
    let _ = through_client(&hc, &messages[..warm], concurrency).await;
    let (mut raws, mut hcs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        raws.push(plain_hyper(&raw, &base, Arc::clone(&bodies), concurrency).await.per_second);
        hcs.push(through_client(&hc, messages, concurrency).await.per_second);
    }
    let (raw_per_s, hc_per_s) = (median(&raws), median(&hcs));
    json!({
        "scenario": "throughput",
        "sends": n, "concurrency": concurrency,
        "stat": format!("median of {RUNS} alternating runs per side"),
        "client_per_s": r.per_second.round(), "plain_reqwest_per_s": p.per_second.round(),
        "ratio": (r.per_second / p.per_second * 1000.0).round() / 1000.0,
        "hyper_client_per_s": hc_per_s.round(), "plain_hyper_per_s": raw_per_s.round(),
        "hyper_ratio": (hc_per_s / raw_per_s * 1000.0).round() / 1000.0,
        "client_cpu_us_per_msg": (r.cpu_per_message_us * 10.0).round() / 10.0,
        "plain_cpu_us_per_msg": (p.cpu_per_message_us * 10.0).round() / 10.0,
        "token_requests": server.token_requests.load(Ordering::Relaxed),
    })
}

/// `wxsub send-batch` (JSON lines in, JSON lines out) against the fixed server, next to the
/// library's own throughput and plain reqwest's at the same concurrency (`plain-client`: the
/// same pre-serialized bodies as `throughput`'s baseline). Both run as child processes of this one,
/// which serves: each has the server on the other side of a process boundary and competes with
/// it for the cores the same way (the library side is this benchmark run as
/// `library-client <base> <sends> <concurrency>`). The command's figure includes its start-up,
/// its token fetch, reading its input and writing its output to a file.
async fn send_batch(n: usize, concurrency: usize) -> serde_json::Value {
    let server = fixed_server().await;
    let base = format!("http://{}", server.addr);
    let dir = std::env::temp_dir().join(format!("wxsub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    write_lines(&input, n);
    let wxsub = |input: &std::path::Path, out: &std::path::Path| {
        let mut cmd = std::process::Command::new(wxsub());
        cmd.args(["send-batch", "--input"])
            .arg(input)
            .args(["--concurrency", &concurrency.to_string()])
            .env("WXSUB_API_BASE", &base)
            .env("WXSUB_APPID", DEMO_APPID)
            .env("WXSUB_SECRET", DEMO_SECRET)
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::process::Stdio::null());
        cmd
    };
    let child = |mode: &str| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([mode, &base, &n.to_string(), &concurrency.to_string()]);
        cmd
    };
    // Alternate, five times each, and keep each side's median: two processes and a server on
    // two cores make single runs noisy.
    let (mut clis, mut libs, mut plains) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..BATCH_RUNS {
        let out = dir.join(format!("out{round}.jsonl"));
        let (mut cmd, mut lib, mut plain) =
            (wxsub(&input, &out), child("library-client"), child("plain-client"));
        let (wall, cpu, lib_out, plain_out) = tokio::task::spawn_blocking(move || {
            let (t0, cpu0) = (Instant::now(), children_cpu_time());
            let (status, _) = run_watching_peak(&mut cmd);
            let (wall, cpu) = (t0.elapsed(), children_cpu_time().saturating_sub(cpu0));
            assert!(status.success(), "wxsub send-batch failed: {status}");
            (wall, cpu, lib.output().unwrap(), plain.output().unwrap())
        })
        .await
        .unwrap();
        let plain: serde_json::Value = serde_json::from_slice(&plain_out.stdout).unwrap();
        plains.push(plain["per_s"].as_f64().unwrap());
        let delivered = std::fs::read_to_string(&out).unwrap().matches(r#""status":"delivered""#).count();
        assert_eq!(delivered, n, "every line delivered");
        clis.push((n as f64 / wall.as_secs_f64(), cpu.as_secs_f64() * 1e6 / n as f64));
        let lib: serde_json::Value = serde_json::from_slice(&lib_out.stdout).unwrap();
        libs.push((lib["per_s"].as_f64().unwrap(), lib["cpu_us_per_msg"].as_f64().unwrap()));
    }
    // Each side's median run, with that run's CPU figure.
    let median_pair = |mut runs: Vec<(f64, f64)>| {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        runs[(runs.len() - 1) / 2]
    };
    let ((cli_per_s, cli_cpu), (lib_per_s, lib_cpu)) = (median_pair(clis), median_pair(libs));
    let plain_per_s = median(&plains);
    // Memory: the command's peak resident set for n lines and for ten times as many.
    let mut peaks = Vec::new();
    for lines in [n, 10 * n] {
        let (input, out) = (dir.join(format!("mem{lines}.jsonl")), dir.join("mem-out.jsonl"));
        write_lines(&input, lines);
        let mut cmd = wxsub(&input, &out);
        let (status, peak) = tokio::task::spawn_blocking(move || run_watching_peak(&mut cmd)).await.unwrap();
        assert!(status.success(), "wxsub send-batch failed: {status}");
        peaks.push(peak as f64 / 1_048_576.0);
    }
    let mut violations = Vec::new();
    if peaks[1] > peaks[0] + 16.0 {
        violations.push(format!(
            "peak memory grows with the input: {:.1} MiB for {} lines, {:.1} MiB for {}",
            peaks[0],
            n,
            peaks[1],
            10 * n
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    json!({
        "scenario": "send-batch",
        "lines": n, "concurrency": concurrency,
        "wxsub_peak_rss_mib": (peaks[0] * 10.0).round() / 10.0,
        "wxsub_peak_rss_mib_10x_lines": (peaks[1] * 10.0).round() / 10.0,
        "violations": violations,
        "wxsub_per_s": cli_per_s.round(), "library_per_s": lib_per_s.round(),
        "ratio": (cli_per_s / lib_per_s * 1000.0).round() / 1000.0,
        "plain_reqwest_per_s": plain_per_s.round(),
        "ratio_to_plain_reqwest": (cli_per_s / plain_per_s * 1000.0).round() / 1000.0,
        "wxsub_cpu_us_per_line": (cli_cpu * 10.0).round() / 10.0,
        "library_cpu_us_per_msg": (lib_cpu * 10.0).round() / 10.0,
        "stat": format!("median of {BATCH_RUNS} alternating runs per side"),
        "measured_as": "two child processes against this one's server: the whole command (start-up, token, read, send, write) vs a warm client",
    })
}

/// The plain side of `send-batch`: reqwest posting `n` pre-serialized bodies to `base`, warm.
async fn plain_client(base: &str, n: usize, concurrency: usize) -> serde_json::Value {
    let http = baseline_http();
    let bodies: Arc<Vec<Bytes>> =
        Arc::new((0..n).map(|i| Bytes::from(serde_json::to_vec(&message(i, 1)).unwrap())).collect());
    let _ = plain(&http, base, Arc::new(bodies[..n.min(2_000)].to_vec()), concurrency).await;
    let r = plain(&http, base, bodies, concurrency).await;
    json!({ "scenario": "plain-client", "per_s": r.per_second.round(), "cpu_us_per_msg": r.cpu_per_message_us })
}

/// `n` message lines for `send-batch`, in `path`.
fn write_lines(path: &std::path::Path, n: usize) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let m = json!({"touser": format!("oUser{i:010}"), "template_id": DEMO_TEMPLATE, "scene": 1,
                       "title": "到货提醒", "content": "您关注的商品已到货，点击查看详情。",
                       "url": "https://shop.example.com/items/1"});
        writeln!(out, "{m}").unwrap();
    }
    out.flush().unwrap();
}

/// Runs `cmd` to its end, reading its peak resident set (`VmHWM`, which only grows) every
/// 10 ms; returns its exit status and the last peak read, in bytes.
fn run_watching_peak(cmd: &mut std::process::Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(kb) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        {
            peak = peak.max(kb * 1024);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The library side of `send-batch`: a warm client sending `n` messages to `base`.
async fn library_client(base: &str, n: usize, concurrency: usize) -> serde_json::Value {
    let c = client(base);
    let messages = leaked_messages(n, 1);
    let _ = through_client(&c, &messages[..n.min(2_000)], concurrency).await;
    let r = through_client(&c, messages, concurrency).await;
    json!({ "scenario": "library-client", "per_s": r.per_second.round(),
            "cpu_us_per_msg": r.cpu_per_message_us })
}

async fn sandbox(n: usize, concurrency: usize) -> serde_json::Value {
    let s = SandboxHandle::start(SandboxConfig::demo().with_generated_users(n)).await.unwrap();
    let base = s.base_url();
    // A warm-up under scene 1, then three measured runs under scenes 2 to 4 (a grant is good for
    // one message), keeping the median: the same terms as the fixed server's figure.
    let warm = n.min(2_000);
    for i in 0..n {
        for scene in [2, 3, 4] {
            s.state().add_grant(
                &SandboxConfig::demo_appid(),
                &OpenId::new(format!("oUser{i:010}")).unwrap(),
                &SandboxConfig::demo_template(),
                Scene::new(scene).unwrap(),
            );
        }
        if i < warm {
            s.state().add_grant(
                &SandboxConfig::demo_appid(),
                &OpenId::new(format!("oUser{i:010}")).unwrap(),
                &SandboxConfig::demo_template(),
                Scene::new(1).unwrap(),
            );
        }
    }
    let c = client(&base);
    let _ = through_client(&c, leaked_messages(warm, 1), concurrency).await;
    let mut runs = Vec::new();
    for scene in [2, 3, 4] {
        runs.push(through_client(&c, leaked_messages(n, scene), concurrency).await);
    }
    let r = median_run(runs);
    assert_eq!(s.state().stats().deliveries, (warm + 3 * n) as u64);
    let fixed = throughput(n.min(20_000), concurrency).await;
    json!({
        "scenario": "sandbox",
        "sends": n, "concurrency": concurrency,
        "client_per_s": r.per_second.round(),
        "cpu_us_per_msg": (r.cpu_per_message_us * 10.0).round() / 10.0,
        "fixed_server_client_per_s": fixed["client_per_s"],
        "ratio_to_fixed_server": (r.per_second / fixed["client_per_s"].as_f64().unwrap() * 1000.0).round() / 1000.0,
        "deliveries_counted_by_sandbox": s.state().stats().deliveries,
        "stat": format!("median of {RUNS} runs (the fixed-server figure: the median of its {RUNS})"),
    })
}

async fn cold_start(n: usize) -> serde_json::Value {
    let server = fixed_server().await;
    let base = format!("http://{}", server.addr);
    let c = client(&base);
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = c.clone();
        tasks.spawn(async move { c.send_one_time(&message(i, 3)).await.is_ok() });
    }
    let mut ok = 0u64;
    while let Some(r) = tasks.join_next().await {
        ok += u64::from(r.unwrap());
    }
    let wall = t0.elapsed();
    let token_requests = server.token_requests.load(Ordering::Relaxed);
    let mut violations = Vec::new();
    if token_requests != 1 {
        violations.push(format!("{token_requests} token requests for one fresh client (must be 1)"));
    }
    if ok != n as u64 {
        violations.push(format!("{ok} of {n} sends delivered"));
    }
    json!({
        "scenario": "cold-start",
        "stat": "one run",
        "sends": n, "delivered": ok,
        "token_requests": token_requests,
        "ms_to_last_delivery": wall.as_millis(),
        "violations": violations,
    })
}

#[allow(clippy::disallowed_methods)] // a benchmark against a real server runs on wall-clock time
async fn dispatch(n: usize) -> serde_json::Value {
    let server = fixed_server().await;
    let base = format!("http://{}", server.addr);
    let c = client(&base);
    // Warm the client (token, connections) before either side runs; both sides are then one
    // run each on the same warm client.
    let _ = through_client(&c, leaked_messages(n.min(2_000), 4), 64).await;
    let rss_start = mem("VmRSS:");
    let ledger = Arc::new(InMemoryGrantLedger::new());
    let template = TemplateId::new(DEMO_TEMPLATE).unwrap();
    let scene = Scene::new(4).unwrap();
    for i in 0..n {
        let key = GrantKey {
            appid: c.appid().clone(),
            openid: OpenId::new(format!("oUser{i:010}")).unwrap(),
            template_id: template.clone(),
            scene,
        };
        ledger.record(&key, SystemTime::now()).await.unwrap();
    }
    let rss_filled = mem("VmRSS:");
    reset_peak();
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let report = Dispatcher::one_time(c.clone(), Arc::clone(&ledger), template, scene, move |to: &OpenId| {
        OneTimeMessage::builder(to.clone(), TemplateId::new(DEMO_TEMPLATE)?, Scene::new(4)?)
            .title("到货提醒")
            .content("您关注的商品已到货，点击查看详情。")
            .build()
    })
    .concurrency(64)
    .keep_outcomes(false)
    .run()
    .await
    .unwrap();
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let peak = mem("VmHWM:");
    assert_eq!(report.progress.delivered, n as u64);
    // Baseline in the same process: the same number of plain client sends, no ledger.
    let messages = leaked_messages(n.min(50_000), 4);
    let plain_sends = through_client(&c, messages, 64).await;
    let per_s = n as f64 / wall.as_secs_f64();
    let mib = |b: u64| (b as f64 / 1_048_576.0 * 10.0).round() / 10.0;
    // The ledger holds every grant, as any store must; the dispatcher's own share is what
    // must stay small and flat.
    let own = peak.saturating_sub(rss_filled);
    let violations: Vec<String> = (own >= 64 * 1_048_576)
        .then(|| {
            format!(
                "the dispatcher's peak above the filled ledger is {} MiB (target: under 64 MiB)",
                mib(own)
            )
        })
        .into_iter()
        .collect();
    json!({
        "violations": violations,
        "scenario": "dispatch",
        "stat": "one run each side",
        "grants": n, "delivered": report.progress.delivered,
        "dispatch_per_s": per_s.round(),
        "client_send_per_s": plain_sends.per_second.round(),
        "ratio_to_client_send": (per_s / plain_sends.per_second * 1000.0).round() / 1000.0,
        "cpu_us_per_msg": (cpu.as_secs_f64() * 1e6 / n as f64 * 10.0).round() / 10.0,
        "rss_before_ledger_mib": mib(rss_start),
        "rss_ledger_filled_mib": mib(rss_filled),
        "peak_rss_mib": mib(peak),
        "peak_above_filled_ledger_mib": mib(peak.saturating_sub(rss_filled)),
    })
}

/// One dispatch of every pending grant of `scope` over `ledger`: messages per second, and the
/// CPU time per message of this process (the sender, the fixed server, an in-process SQLite)
/// and, given the PostgreSQL server's main process on this machine, of the server's processes.
async fn dispatch_rate(
    c: &Client,
    ledger: Arc<dyn GrantLedger>,
    scope: &GrantScope,
    n: usize,
    database: Option<u32>,
) -> Dispatched {
    let db0 = database.map(latency::process_tree_cpu);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let report = Dispatcher::one_time(
        c.clone(),
        ledger,
        scope.template_id.clone(),
        scope.scene,
        move |to: &OpenId| {
            OneTimeMessage::builder(to.clone(), TemplateId::new(DEMO_TEMPLATE)?, Scene::new(4)?)
                .title("到货提醒")
                .content("您关注的商品已到货，点击查看详情。")
                .build()
        },
    )
    .concurrency(64)
    .keep_outcomes(false)
    .run()
    .await
    .unwrap();
    let wall = t0.elapsed();
    let per_msg = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let cpu_us = per_msg(cpu_time().saturating_sub(cpu0));
    // No CPU at all is a server whose processes could not be read, not a free ledger.
    let database_us = db0
        .zip(database)
        .map(|(before, pid)| latency::process_tree_cpu(pid).saturating_sub(before))
        .filter(|d| !d.is_zero())
        .map(per_msg);
    assert_eq!(report.progress.delivered, n as u64, "{:?}", report.progress);
    Dispatched { per_s: n as f64 / wall.as_secs_f64(), cpu_us, database_us }
}

/// One measured dispatch: see [`dispatch_rate`].
struct Dispatched {
    per_s: f64,
    cpu_us: f64,
    database_us: Option<f64>,
}

/// The same dispatch of `n` grants on the in-memory ledger, on SQLite and on PostgreSQL (at
/// `POSTGRES_URL`, default the local test database), in one process against one server:
/// messages per second, CPU time per message and the ratios to the in-memory run. The three
/// alternate for `SQL_ROUNDS` (3) rounds, each ledger filled afresh; rates and CPU figures are
/// each ledger's median round, ratios the median of each round's ratio to that round's
/// in-memory run (the runs next to each other in time: one run of the in-memory ledger swings
/// by half on this two-core machine).
///
/// On two cores the sender, the fixed server and PostgreSQL's server share the CPU, so the
/// rate's ratio is bounded by the CPU's: the in-memory run's CPU per message over the
/// PostgreSQL run's, its server's processes included (`postgres_cpu_ratio`, when the server
/// runs on this machine), which swings less than the rates do. The floors are
/// [`sql_floors`]'s: the full run's on that ratio and on the rate, a CI run's on the rate.
///
/// A PostgreSQL that does not answer is reported in `postgres_not_run`, which `cargo xtask
/// bench` reports as NOT RUN (a failure under `XTASK_REQUIRE_ALL`), never as passed.
#[allow(clippy::disallowed_methods)] // a benchmark against a real server runs on wall-clock time
async fn dispatch_sql(n: usize) -> serde_json::Value {
    const SQL_ROUNDS: usize = 3;
    let server = fixed_server().await;
    let c = client(&format!("http://{}", server.addr));
    let _ = through_client(&c, leaked_messages(n.min(2_000), 4), 64).await;
    let scope = GrantScope {
        appid: c.appid().clone(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(4).unwrap(),
    };
    let openids: Vec<OpenId> = (0..n).map(|i| OpenId::new(format!("oUser{i:010}")).unwrap()).collect();
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    // Each round's PostgreSQL ledger in a schema of its own, dropped after the round.
    let (admin, postgres_not_run) = match sqlx::PgPool::connect(&url).await {
        Ok(pool) => (Some(pool), None),
        Err(e) => {
            eprintln!("dispatch-sql: PostgreSQL not run: {e}");
            (None, Some(format!("no PostgreSQL at POSTGRES_URL (default the local `test` database): {e}")))
        }
    };
    let postmaster = match &admin {
        Some(admin) => latency::postmaster_pid(admin).await,
        None => None,
    };
    let (mut memory, mut sqlite, mut postgres) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..SQL_ROUNDS {
        let ledger = Arc::new(InMemoryGrantLedger::new());
        for openid in &openids {
            ledger.record(&scope.key(openid.clone()), SystemTime::now()).await.unwrap();
        }
        memory.push(dispatch_rate(&c, ledger, &scope, n, None).await);

        let dir = std::env::temp_dir().join(format!("wxsub-bench-{}-{round}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lite =
            Sql::builder(format!("sqlite:{}", dir.join("grants.db").display())).connect().await.unwrap();
        let ledger = SqlGrantLedger::new(lite);
        ledger.record_many(&scope, &openids).await.unwrap();
        sqlite.push(dispatch_rate(&c, Arc::new(ledger), &scope, n, None).await);
        let _ = std::fs::remove_dir_all(&dir);

        if let Some(admin) = &admin {
            let schema = format!("bench_{}_{round}", std::process::id());
            let sql = Sql::builder(url.clone())
                .schema(schema.clone())
                .op_timeout(Duration::from_secs(10))
                .connect()
                .await
                .unwrap();
            let ledger = SqlGrantLedger::new(sql);
            ledger.record_many(&scope, &openids).await.unwrap();
            // The fill's dirty pages written now, not by the checkpointer during the dispatch
            // (whose CPU would count as the dispatch's). Needs a superuser: the default is one.
            let _ = sqlx::query("CHECKPOINT").execute(admin).await;
            postgres.push(dispatch_rate(&c, Arc::new(ledger), &scope, n, postmaster).await);
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(admin).await.unwrap();
        }
    }
    let milli = |x: f64| (x * 1000.0).round() / 1000.0;
    let rates = |runs: &[Dispatched]| runs.iter().map(|r| r.per_s).collect::<Vec<_>>();
    let cpu = |runs: &[Dispatched]| {
        (!runs.is_empty()).then(|| tenth(median(&runs.iter().map(|r| r.cpu_us).collect::<Vec<_>>())))
    };
    // Each round's ratio to the in-memory run of the same round, then their median.
    let paired = |runs: &[Dispatched], of: &dyn Fn(&Dispatched, &Dispatched) -> Option<f64>| {
        let ratios: Vec<f64> = runs.iter().zip(&memory).filter_map(|(x, m)| of(x, m)).collect();
        (!ratios.is_empty()).then(|| milli(median(&ratios)))
    };
    let rate_ratio = |x: &Dispatched, m: &Dispatched| Some(x.per_s / m.per_s);
    let postgres_ratio = paired(&postgres, &rate_ratio);
    // The in-memory run's CPU per message over PostgreSQL's, the server's included.
    let postgres_cpu_ratio = paired(&postgres, &|x, m| cpu_ratio(m.cpu_us, x.cpu_us, x.database_us));
    let database_us = {
        let d: Vec<f64> = postgres.iter().filter_map(|r| r.database_us).collect();
        (!d.is_empty()).then(|| tenth(median(&d)))
    };
    let (rate_floor, cpu_floor) = sql_floors(n);
    let violations = sql_violations(n, postgres_ratio, postgres_cpu_ratio, !postgres.is_empty());
    json!({
        "violations": violations,
        "scenario": "dispatch-sql",
        "grants": n,
        "stat": format!("median of {SQL_ROUNDS} alternating rounds; ratios: the median of each round's ratio"),
        "memory_per_s": median(&rates(&memory)).round(),
        "memory_cpu_us_per_msg": cpu(&memory),
        "sqlite_per_s": median(&rates(&sqlite)).round(),
        "sqlite_cpu_us_per_msg": cpu(&sqlite),
        "sqlite_ratio": paired(&sqlite, &rate_ratio),
        "postgres_per_s": (!postgres.is_empty()).then(|| median(&rates(&postgres)).round()),
        "postgres_cpu_us_per_msg": cpu(&postgres),
        "postgres_database_cpu_us_per_msg": database_us,
        "postgres_ratio": postgres_ratio,
        "postgres_cpu_ratio": postgres_cpu_ratio,
        "postgres_floor": rate_floor,
        "postgres_cpu_floor": cpu_floor,
        "postgres_not_run": postgres_not_run,
        "runs": {"memory": rounded(&memory), "sqlite": rounded(&sqlite), "postgres": rounded(&postgres)},
        "cpu_us_per_msg_runs": cpu_runs(&memory, &sqlite, &postgres),
    })
}

/// `x` to a tenth.
fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Each round's rate, to a message per second.
fn rounded(runs: &[Dispatched]) -> Vec<f64> {
    runs.iter().map(|r| r.per_s.round()).collect()
}

/// Each round's CPU per message, per ledger (and PostgreSQL's server's).
fn cpu_runs(memory: &[Dispatched], sqlite: &[Dispatched], postgres: &[Dispatched]) -> serde_json::Value {
    let own = |runs: &[Dispatched]| runs.iter().map(|r| tenth(r.cpu_us)).collect::<Vec<_>>();
    json!({
        "memory": own(memory),
        "sqlite": own(sqlite),
        "postgres": own(postgres),
        "postgres_database": postgres.iter().map(|r| r.database_us.map(tenth)).collect::<Vec<_>>(),
    })
}

/// The dispatch-sql floors at `n` grants: on the rate's ratio, and (the full run's) on the CPU
/// per message's.
///
/// Measured on this machine at 100,000 grants: rates 0.41-0.69 x the in-memory ledger from run
/// to run, the CPU ratio 0.508-0.738 (the sender and the fixed server 40-60 us per message, as
/// in memory, and PostgreSQL's server 27-40 us; the in-memory run's CPU per message itself
/// swings when the machine is busy). The CPU floor, 0.45, fails a ledger whose server works
/// twice as much per message (0.42 at the published figures); the rate floor, 0.35 (0.25 at
/// CI's size: 5,000 grants beside the other steps measured 0.39-0.55), one that waits where it
/// used to work (a lock, a serial step), which the CPU does not show.
fn sql_floors(n: usize) -> (f64, Option<f64>) {
    if n >= 100_000 { (0.35, Some(0.45)) } else { (0.25, None) }
}

/// The in-memory run's CPU per message over a PostgreSQL run's, its server's included; none
/// when the server's CPU was not read.
fn cpu_ratio(memory_us: f64, sender_us: f64, database_us: Option<f64>) -> Option<f64> {
    database_us.map(|d| memory_us / (sender_us + d))
}

/// What the dispatch-sql figures break of [`sql_floors`].
fn sql_violations(n: usize, rate: Option<f64>, cpu: Option<f64>, postgres_ran: bool) -> Vec<String> {
    let (rate_floor, cpu_floor) = sql_floors(n);
    let mut violations = Vec::new();
    if let Some(ratio) = rate
        && ratio < rate_floor
    {
        violations.push(format!(
            "PostgreSQL dispatches at {ratio} x the in-memory ledger's rate at {n} grants (at least {rate_floor})"
        ));
    }
    match (cpu_floor, cpu) {
        (Some(floor), Some(ratio)) if ratio < floor => violations.push(format!(
            "PostgreSQL dispatches at {ratio} x the in-memory ledger's CPU per message, its server's \
             included, at {n} grants (at least {floor})"
        )),
        (Some(_), None) if postgres_ran => violations.push(
            "the PostgreSQL server's CPU could not be read (the full run needs the server on this machine)"
                .into(),
        ),
        _ => {}
    }
    violations
}

/// `1234` as `1,234`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The `wxsub` built beside this binary (`cargo build --release -p subscribe-cli`, which
/// `cargo xtask bench` runs first), or the one `WXSUB_BIN` names.
fn wxsub() -> std::path::PathBuf {
    let path = std::env::var_os("WXSUB_BIN").map_or_else(
        || std::env::current_exe().unwrap().with_file_name(format!("wxsub{}", std::env::consts::EXE_SUFFIX)),
        std::path::PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no wxsub at {}: build it first (cargo build --release -p subscribe-cli) or set WXSUB_BIN",
        path.display()
    );
    path
}

fn main() {
    // Flags (`--bench`, as `cargo bench` passed) are ignored.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let num = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let result = rt.block_on(async {
        match args.first().map_or("throughput", String::as_str) {
            "throughput" => throughput(num(1, 50_000), num(2, 64)).await,
            // One side only, for a profiler (`valgrind --tool=callgrind`, `perf`): the same
            // server and warm-up, then `n` sends through the client or through plain reqwest.
            "profile-client" | "profile-plain" => {
                profile(args[0] == "profile-client", num(1, 5_000), num(2, 64)).await
            }
            "sandbox" => sandbox(num(1, 20_000), num(2, 64)).await,
            "send-batch" => send_batch(num(1, 50_000), num(2, 64)).await,
            "library-client" => library_client(&args[1], num(2, 50_000), num(3, 64)).await,
            "plain-client" => plain_client(&args[1], num(2, 50_000), num(3, 64)).await,
            "cold-start" => cold_start(num(1, 10_000)).await,
            "dispatch" => dispatch(num(1, 100_000)).await,
            "dispatch-sql" => dispatch_sql(num(1, 100_000)).await,
            "gateway" => gateway::gateway(num(1, 20_000), num(2, 64)).await,
            "latency" => {
                let in_flights: Vec<usize> = args.iter().skip(2).filter_map(|a| a.parse().ok()).collect();
                latency::latency(num(1, 100_000), if in_flights.is_empty() { &[256, 2048] } else { &in_flights })
                    .await
            }
            "dispatch-at" => latency::dispatch_at(&args[1], num(2, 10_000), num(3, 256), &args[4]).await,
            "plain-connections" => latency::plain_connections(&args[1], num(2, 10_000), num(3, 256)).await,
            // The latency scenario's fake alone, for a profiler or a hand-run sender: prints its
            // base URL, then serves (answering each send after 50 ms) until killed.
            "slow-server" => latency::serve_slow().await,
            "faults" => faults::faults(num(1, 2_000), num(2, 32), &args).await,
            "store-faults" => stores::store_faults(num(1, 10_000), num(2, 64), &args).await,
            other => panic!(
                "unknown scenario {other}: throughput | sandbox | send-batch | cold-start | dispatch | dispatch-sql | gateway | latency | faults | store-faults"
            ),
        }
    });
    let violations: Vec<String> = result["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| {
            let name = row["name"].as_str().unwrap_or("").to_owned();
            row["violations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |v| format!("{name}: {}", v.as_str().unwrap_or("")))
        })
        .collect();
    let own =
        result["violations"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned));
    let violations: Vec<String> = violations.into_iter().chain(own).collect();
    let pretty = args.iter().any(|a| a == "json");
    let json = if pretty { serde_json::to_string_pretty(&result).unwrap() } else { result.to_string() };
    if !violations.is_empty() {
        eprintln!("the benchmark breaks its expectations:\n  {}", violations.join("\n  "));
        println!("{json}");
        std::process::exit(1);
    }
    println!("{json}");
}

#[cfg(test)]
mod tests {
    use super::{cpu_ratio, sql_violations};

    #[test]
    fn the_full_dispatch_sql_run_fails_on_cpu_per_message_and_every_run_on_the_rate() {
        // Today's figures pass in both modes, the slowest full run's rate (0.41) included.
        assert!(sql_violations(100_000, Some(0.563), Some(0.598), true).is_empty());
        assert!(sql_violations(100_000, Some(0.41), Some(0.508), true).is_empty());
        assert!(sql_violations(5_000, Some(0.45), None, true).is_empty());
        // A ledger whose server works twice as much fails the full run, whatever its rate.
        let slower = cpu_ratio(39.4, 38.5, Some(27.4 * 2.0)).unwrap();
        let v = sql_violations(100_000, Some(0.6), Some(slower), true);
        assert!(v.len() == 1 && v[0].contains("CPU per message"), "{slower}: {v:?}");
        // A dispatch that waits (its CPU unchanged, its rate halved) fails the full run on its
        // rate, and a CI run below a quarter.
        let v = sql_violations(100_000, Some(0.28), Some(0.598), true);
        assert!(v.len() == 1 && v[0].contains("rate"), "{v:?}");
        assert!(sql_violations(5_000, Some(0.3), None, true).is_empty());
        assert_eq!(sql_violations(5_000, Some(0.2), None, true).len(), 1);
        // The full run cannot pass without the server's CPU; with no PostgreSQL at all it is
        // reported as not run elsewhere.
        assert!(sql_violations(100_000, Some(0.55), None, true)[0].contains("could not be read"));
        assert!(sql_violations(100_000, None, None, false).is_empty());
    }

    #[test]
    fn the_cpu_ratio_counts_the_servers_cpu_with_the_senders() {
        // The published run: 39.4 us in memory, 38.5 + 27.4 us on PostgreSQL.
        let r = cpu_ratio(39.4, 38.5, Some(27.4)).unwrap();
        assert!((r - 0.598).abs() < 0.001, "{r}");
        assert_eq!(cpu_ratio(39.4, 38.5, None), None, "no server CPU, no ratio");
    }
}
