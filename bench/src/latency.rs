//! `latency`: `wxsub send-batch` against a fake that answers each send after 50 ms, as WeChat
//! does in tens of milliseconds, at thousands in flight. The fake counts the connections it
//! accepts, so the figure "connections opened" is read from the server's side.
//!
//! Each row has its baseline from the same run: what the latency allows (in flight / latency)
//! and what plain hyper reaches with as many keep-alive connections as sends in flight, each
//! posting pre-serialized bodies one after another (wrk's model; on two cores the fake's own
//! share of the CPU limits it at the highest counts). The ratio is against the lower of the two.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET};

use crate::{TOKEN, children_cpu_time, message, run_watching_peak, write_lines};

/// WeChat's answer time in this scenario.
pub(crate) const LATENCY: Duration = Duration::from_millis(50);

/// The most in flight whose ratio is checked.
const CHECKED_UP_TO: usize = 2048;

/// The fake: answers a token request at once and a send after [`LATENCY`], with a
/// `Content-Length` as WeChat does, counting accepted connections.
struct Slow {
    base: String,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
}

/// The fake, over TLS when given a server configuration (its handshakes counted).
async fn slow_server(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Slow {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let (counter, shaken) = (Arc::clone(&accepted), Arc::clone(&handshakes));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let (acceptor, shaken) = (acceptor.clone(), Arc::clone(&shaken));
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let token = req.uri().path().ends_with("token");
                    let _ = req.into_body().collect().await;
                    let body: &'static str = if token {
                        r#"{"access_token":"BENCH_ACCESS_TOKEN_0123456789abcdef0123456789abcdef","expires_in":7200}"#
                    } else {
                        tokio::time::sleep(LATENCY).await;
                        r#"{"errcode":0,"errmsg":"ok"}"#
                    };
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json; encoding=utf-8")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap(),
                    )
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else { return };
                        shaken.fetch_add(1, Ordering::Relaxed);
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Slow { base: format!("{scheme}://{addr}"), accepted, handshakes }
}

/// `slow-server`: the fake alone (plain HTTP), its base URL printed, served until killed.
pub(crate) async fn serve_slow() -> serde_json::Value {
    let server = slow_server(None).await;
    eprintln!("{}", server.base);
    std::future::pending().await
}

/// `latency <lines> <in flight>...`: one row per number in flight, plain HTTP then TLS.
#[allow(clippy::too_many_lines)] // one row's three sides and its TLS side, in order
pub(crate) async fn latency(lines: usize, in_flights: &[usize]) -> serde_json::Value {
    let server = slow_server(None).await;
    let ca = subscribe_client::transport::test_util::TestAuthority::new();
    let tls_server = slow_server(Some(ca.server_config())).await;
    let dir = std::env::temp_dir().join(format!("wxsub-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    let mut rows = Vec::new();
    let mut violations = Vec::new();
    let mut not_run: Option<serde_json::Value> = None;
    for &n in in_flights {
        // At least 50 sends per connection, so that opening it (a TCP and a TLS handshake,
        // once per connection) does not pass for a cost per message.
        let lines = lines.max(50 * n);
        let input = dir.join(format!("in-{lines}.jsonl"));
        if !input.exists() {
            write_lines(&input, lines);
        }
        let ideal = n as f64 / LATENCY.as_secs_f64();
        // The baseline, in a child process as wxsub is: n connections, one send at a time each.
        settle().await;
        let before = server.accepted.load(Ordering::Relaxed);
        let cpu0 = children_cpu_time();
        let out = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["plain-connections", &server.base, &lines.to_string(), &n.to_string()])
            .output()
            .await
            .unwrap();
        let plain_cpu_us = children_cpu_time().saturating_sub(cpu0).as_secs_f64() * 1e6 / lines as f64;
        assert!(out.status.success(), "plain-connections failed: {}", String::from_utf8_lossy(&out.stderr));
        let plain: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let plain_per_s = plain["per_s"].as_f64().unwrap();
        let plain_opened = server.accepted.load(Ordering::Relaxed) - before;

        let hyper = send_batch(&server, &input, &dir, lines, n, "hyper", None).await;
        let reqwest = send_batch(&server, &input, &dir, lines, n, "reqwest", None).await;
        let tls = send_batch(&tls_server, &input, &dir, lines, n, "hyper", Some(&ca_file)).await;
        if tls.handshakes != tls.opened || tls.opened > n {
            violations.push(format!(
                "TLS, {n} in flight: {} handshakes for {} connections opened",
                tls.handshakes, tls.opened
            ));
        }
        let target = ideal.min(plain_per_s);
        let ratio = hyper.per_s / target;
        // The dispatcher at the same latency and in flight, on each ledger (`--concurrency n`).
        let mut dispatch = serde_json::Map::new();
        for ledger in LEDGERS {
            let side = dispatch_side(&server, lines, n, ledger).await;
            if let Some(why) = side.get("not_run") {
                not_run.get_or_insert_with(|| why.clone());
                continue;
            }
            let (per_s, opened) =
                (side["per_s"].as_f64().unwrap(), side["connections_opened"].as_u64().unwrap());
            let ratio = per_s / target;
            if opened > n as u64 {
                violations
                    .push(format!("the dispatcher on {ledger}, {n} in flight, opened {opened} connections"));
            }
            // The in-memory ledger is held to send-batch's floor; on two cores a SQL server's own
            // CPU (reported) is shared with the sender and the fake, and the floor only catches a
            // ledger that became much slower (a lost index, a statement per grant). Measured at
            // 2,048 in flight: 0.79 (SQLite) and 1.03 (PostgreSQL) in the full run, but 0.40 to
            // 0.51 in the quick one (20,000 lines: ten per connection, so claiming and connecting
            // dominate), which a floor of 0.45 failed by chance on a loaded machine.
            let floor = if ledger == "memory" { 0.7 } else { 0.3 };
            if ratio < floor && n <= CHECKED_UP_TO {
                violations.push(format!(
                    "the dispatcher on {ledger}, {n} in flight: {per_s:.0} msg/s is {ratio:.2} of {target:.0} (at least {floor})"
                ));
            }
            for (key, value) in side {
                dispatch.insert(format!("dispatch_{ledger}_{key}"), value);
            }
            dispatch.insert(format!("dispatch_{ledger}_ratio"), json!((ratio * 1000.0).round() / 1000.0));
        }
        if hyper.opened > n {
            violations.push(format!("{n} in flight opened {} connections", hyper.opened));
        }
        // Up to 2,048 in flight the latency is the limit on this machine, and the ratio is
        // checked; beyond, two cores shared by the fake and the sender are, and the row is
        // reported (docs/performance.md says what it measures).
        if ratio < 0.7 && n <= CHECKED_UP_TO {
            violations.push(format!(
                "{n} in flight: {:.0} msg/s is {ratio:.2} of {target:.0} (the lower of in flight / latency and plain hyper)",
                hyper.per_s
            ));
        }
        rows.push(json!({
            "in_flight": n,
            "lines": lines,
            "wxsub_per_s": hyper.per_s.round(),
            "ideal_per_s": ideal.round(),
            "plain_connections_per_s": plain_per_s.round(),
            "plain_connections_opened": plain_opened,
            "plain_connections_cpu_us_per_msg": (plain_cpu_us * 10.0).round() / 10.0,
            "plain_connections_peak_rss_mib": (plain["peak_rss_mib"].as_f64().unwrap() * 10.0).round() / 10.0,
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "ratio_to_ideal": (hyper.per_s / ideal * 1000.0).round() / 1000.0,
            "connections_opened": hyper.opened,
            "cpu_us_per_line": (hyper.cpu_us * 10.0).round() / 10.0,
            "peak_rss_mib": (hyper.peak_mib * 10.0).round() / 10.0,
            "reqwest_per_s": reqwest.per_s.round(),
            "reqwest_connections_opened": reqwest.opened,
            "reqwest_cpu_us_per_line": (reqwest.cpu_us * 10.0).round() / 10.0,
            "reqwest_peak_rss_mib": (reqwest.peak_mib * 10.0).round() / 10.0,
            "tls_per_s": tls.per_s.round(),
            "tls_connections_opened": tls.opened,
            "tls_handshakes": tls.handshakes,
            "tls_cpu_us_per_line": (tls.cpu_us * 10.0).round() / 10.0,
            "tls_peak_rss_mib": (tls.peak_mib * 10.0).round() / 10.0,
            "tls_cpu_ratio": (tls.cpu_us / hyper.cpu_us * 1000.0).round() / 1000.0,
        }));
        rows.last_mut().unwrap().as_object_mut().unwrap().extend(dispatch);
    }
    let _ = std::fs::remove_dir_all(&dir);
    json!({
        "scenario": "latency",
        "latency_ms": LATENCY.as_millis() as u64,
        "rows": rows,
        "violations": violations,
        "postgres_not_run": not_run,
        "stat": "one run per row and side",
        "measured_as": "wxsub send-batch (the whole command), the dispatcher on each ledger and plain hyper, each a child process, against this one's fake; connections and TLS handshakes counted by the fake",
    })
}

/// The ledgers the dispatcher runs on, each in a row's columns `dispatch_<ledger>_*`.
const LEDGERS: [&str; 3] = ["memory", "sqlite", "postgres"];

/// One dispatch of `grants` pending grants at `n` in flight on `ledger`, in a child process
/// (`dispatch-at`), the connections it opened counted by the fake.
async fn dispatch_side(
    server: &Slow,
    grants: usize,
    n: usize,
    ledger: &str,
) -> serde_json::Map<String, serde_json::Value> {
    settle().await;
    let before = server.accepted.load(Ordering::Relaxed);
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["dispatch-at", &server.base, &grants.to_string(), &n.to_string(), ledger])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "dispatch-at {ledger} failed: {}", String::from_utf8_lossy(&out.stderr));
    settle().await;
    let opened = server.accepted.load(Ordering::Relaxed) - before;
    let serde_json::Value::Object(mut side) = serde_json::from_slice(&out.stdout).unwrap() else {
        panic!("dispatch-at printed no object")
    };
    side.insert("connections_opened".into(), json!(opened));
    side
}

/// The child of [`dispatch_side`]: fills `ledger` with `grants` pending grants (not timed),
/// then dispatches one message to each at `n` in flight on the hyper transport, as
/// `wxsub grants dispatch` does: messages per second, CPU per message (this process's: the
/// sender and, for SQLite, the database) and peak RSS.
#[allow(clippy::disallowed_methods)] // a benchmark against a real server runs on wall-clock time
pub(crate) async fn dispatch_at(base: &str, grants: usize, n: usize, ledger: &str) -> serde_json::Value {
    use subscribe_client::{Dispatcher, GrantLedger, GrantScope, InMemoryGrantLedger};
    use subscribe_sql::{Sql, SqlGrantLedger};
    use subscribe_types::{OneTimeMessage, OpenId, Scene, TemplateId};
    let c = crate::hyper_client(base);
    let scope = GrantScope {
        appid: c.appid().clone(),
        template_id: TemplateId::new(subscribe_sandbox::DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(4).unwrap(),
    };
    let openids: Vec<OpenId> = (0..grants).map(|i| OpenId::new(format!("oUser{i:010}")).unwrap()).collect();
    let dir = std::env::temp_dir().join(format!("wxsub-dispatch-at-{}", std::process::id()));
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("bench_at_{}", std::process::id());
    let store: Arc<dyn GrantLedger> = match ledger {
        "memory" => {
            let ledger = InMemoryGrantLedger::new();
            for openid in &openids {
                ledger.record(&scope.key(openid.clone()), std::time::SystemTime::now()).await.unwrap();
            }
            Arc::new(ledger)
        }
        "sqlite" => {
            std::fs::create_dir_all(&dir).unwrap();
            let sql =
                Sql::builder(format!("sqlite:{}", dir.join("grants.db").display())).connect().await.unwrap();
            let ledger = SqlGrantLedger::new(sql);
            ledger.record_many(&scope, &openids).await.unwrap();
            Arc::new(ledger)
        }
        "postgres" => {
            let sql = match Sql::builder(url.clone()).schema(schema.clone()).connect().await {
                Ok(sql) => sql,
                Err(e) => {
                    return json!({ "not_run": format!("no PostgreSQL at POSTGRES_URL (default the local `test` database): {e}") });
                }
            };
            let ledger = SqlGrantLedger::new(sql);
            ledger.record_many(&scope, &openids).await.unwrap();
            Arc::new(ledger)
        }
        other => panic!("dispatch-at: no ledger {other} (memory | sqlite | postgres)"),
    };
    // PostgreSQL's own CPU (its processes, on this machine) is reported beside the sender's.
    let admin = if ledger == "postgres" { sqlx::PgPool::connect(&url).await.ok() } else { None };
    let postmaster = match &admin {
        Some(admin) => postmaster_pid(admin).await,
        None => None,
    };
    let pg0 = postmaster.map(process_tree_cpu);
    crate::reset_peak();
    let (cpu0, t0) = (crate::cpu_time(), Instant::now());
    let report =
        Dispatcher::one_time(c, Arc::clone(&store), scope.template_id.clone(), scope.scene, |to: &OpenId| {
            OneTimeMessage::builder(
                to.clone(),
                TemplateId::new(subscribe_sandbox::DEMO_TEMPLATE)?,
                Scene::new(4)?,
            )
            .title("到货提醒")
            .content("您关注的商品已到货，点击查看详情。")
            .build()
        })
        .concurrency(n)
        .keep_outcomes(false)
        .run()
        .await
        .unwrap();
    let (wall, cpu) = (t0.elapsed(), crate::cpu_time().saturating_sub(cpu0));
    let database_cpu = pg0.zip(postmaster).map(|(before, pid)| process_tree_cpu(pid).saturating_sub(before));
    assert_eq!(report.progress.delivered, grants as u64, "{:?}", report.progress);
    drop(store);
    if let Some(admin) = admin {
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let per_msg = |d: Duration| (d.as_secs_f64() * 1e6 / grants as f64 * 10.0).round() / 10.0;
    let mut side = json!({
        "per_s": (grants as f64 / wall.as_secs_f64()).round(),
        "cpu_us_per_msg": per_msg(cpu),
        "peak_rss_mib": (crate::mem("VmHWM") as f64 / 1_048_576.0 * 10.0).round() / 10.0,
    });
    if let Some(d) = database_cpu {
        side["database_cpu_us_per_msg"] = json!(per_msg(d));
    }
    side
}

/// The PostgreSQL server's main process (the parent of `pool`'s backend), when on this machine.
pub(crate) async fn postmaster_pid(pool: &sqlx::PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool).await.ok()?;
    // A server elsewhere (another machine, another PID namespace) has a backend pid that may
    // name an unrelated process here: only a `postgres` process and its `postgres` parent count.
    let postgres = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    };
    if !postgres(&backend.to_string()) {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{backend}/status")).ok()?;
    let parent: u32 =
        status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok())?;
    postgres(&parent.to_string()).then_some(parent)
}

/// CPU time (user + system) of process `pid`, of its children it has waited for, and of those
/// still running: the whole server's, backends that came and went included.
pub(crate) fn process_tree_cpu(pid: u32) -> Duration {
    // Fields 14 to 17 of stat(5): utime, stime, cutime, cstime; the ticks after the name.
    let ticks = |pid: &str, own_only: bool| -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let parent = n(1);
        Some((parent, if own_only { n(11) + n(12) } else { n(11) + n(12) + n(13) + n(14) }))
    };
    // A child that exits and is waited for while the children are read moves its time from
    // its own to the parent's between the two reads, and would count nowhere: the read is
    // taken again until the parent's own and children's time did not change across it.
    let mut total = 0;
    for _ in 0..10 {
        let parent_time = ticks(&pid.to_string(), false).map_or(0, |(_, t)| t);
        total = parent_time;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            if let Some((parent, t)) = ticks(name, true)
                && parent == u64::from(pid)
            {
                total += t;
            }
        }
        if ticks(&pid.to_string(), false).map_or(0, |(_, t)| t) == parent_time {
            break;
        }
    }
    Duration::from_millis(total * 10) // USER_HZ is 100 on Linux
}

/// Lets the fake accept what the kernel queued for the previous side (a connection a client
/// started as it exited), so it is not counted against the next.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

struct Side {
    per_s: f64,
    opened: usize,
    handshakes: usize,
    cpu_us: f64,
    peak_mib: f64,
}

/// One `wxsub send-batch` run over `input` with `n` in flight on `transport` (trusting the
/// authority in `ca_file` when given: the TLS fake's).
async fn send_batch(
    server: &Slow,
    input: &std::path::Path,
    dir: &std::path::Path,
    lines: usize,
    n: usize,
    transport: &str,
    ca_file: Option<&std::path::Path>,
) -> Side {
    let out = dir.join(format!("out-{transport}-{n}.jsonl"));
    let mut cmd = std::process::Command::new(crate::wxsub());
    cmd.args(["send-batch", "--input"])
        .arg(input)
        .args(["--concurrency", &n.to_string(), "--transport", transport])
        .env("WXSUB_API_BASE", &server.base)
        .env("WXSUB_APPID", DEMO_APPID)
        .env("WXSUB_SECRET", DEMO_SECRET)
        .env_remove("WXSUB_CA_FILE")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null());
    if let Some(file) = ca_file {
        cmd.arg("--ca-file").arg(file);
    }
    settle().await;
    let before = server.accepted.load(Ordering::Relaxed);
    let shaken = server.handshakes.load(Ordering::Relaxed);
    let (wall, cpu, peak) = tokio::task::spawn_blocking(move || {
        let (t0, cpu0) = (Instant::now(), children_cpu_time());
        let (status, peak) = run_watching_peak(&mut cmd);
        assert!(status.success(), "wxsub send-batch failed: {status}");
        (t0.elapsed(), children_cpu_time().saturating_sub(cpu0), peak)
    })
    .await
    .unwrap();
    settle().await;
    let opened = server.accepted.load(Ordering::Relaxed) - before;
    let handshakes = server.handshakes.load(Ordering::Relaxed) - shaken;
    let delivered = std::fs::read_to_string(&out).unwrap().matches(r#""status":"delivered""#).count();
    assert_eq!(delivered, lines, "every line delivered ({transport}, {n} in flight)");
    Side {
        per_s: lines as f64 / wall.as_secs_f64(),
        opened,
        handshakes,
        cpu_us: cpu.as_secs_f64() * 1e6 / lines as f64,
        peak_mib: peak as f64 / 1_048_576.0,
    }
}

/// Distinct bodies the baseline posts, in turn: few enough that its peak memory is its
/// connections' (the memory row's baseline), not a copy of every line.
const PLAIN_BODIES: usize = 1024;

/// The baseline: `n` keep-alive connections (hyper's own, no pool), each posting
/// pre-serialized bodies one after another until `lines` were answered.
pub(crate) async fn plain_connections(base: &str, lines: usize, n: usize) -> serde_json::Value {
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..lines.min(PLAIN_BODIES))
            .map(|i| Bytes::from(serde_json::to_vec(&message(i, 1)).unwrap()))
            .collect(),
    );
    let authority = base.trim_start_matches("http://").to_owned();
    let path = format!("/cgi-bin/message/template/subscribe?access_token={TOKEN}");
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (bodies, next, authority, path) = (bodies.clone(), next.clone(), authority.clone(), path.clone());
        workers.spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= lines {
                    break;
                }
                sender.ready().await.unwrap();
                let req = hyper::Request::post(path.as_str())
                    .header("host", authority.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(bodies[i % bodies.len()].clone()))
                    .unwrap();
                let r = sender.send_request(req).await.unwrap();
                let b = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
                assert_eq!(b.as_ref(), br#"{"errcode":0,"errmsg":"ok"}"#);
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.unwrap();
    }
    let per_s = (lines as f64 / t0.elapsed().as_secs_f64()).round();
    json!({ "scenario": "plain-connections", "per_s": per_s, "peak_rss_mib": crate::mem("VmHWM") as f64 / 1_048_576.0 })
}
