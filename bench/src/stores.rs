//! The store-fault table (`cargo xtask faults`, its second section): a dispatch of `n` grants
//! at `concurrency` in flight against the sandbox, on a Redis or PostgreSQL server the row
//! starts itself (bound to 127.0.0.1, in a directory of its own), with the store failing
//! mid-dispatch: its connections killed, the server paused, restarted, its tables locked, its
//! connection slots taken.
//!
//! The fault strikes once the sandbox has delivered a third of the messages. The dispatch is run
//! as a service runs it: again whenever it stops (a ledger error ends a run; `kind()` says
//! retry), half a second apart, until nothing is pending or reserved, all in this process,
//! which is never restarted. Every row checks, from the sandbox's side and the ledger's:
//! every grant ended delivered or under review, none pending, reserved or dropped; the sandbox
//! delivered every message once (its count is the ledger's delivered plus its reviews); it was
//! asked to send each grant once, plus once more for each grant under review (a second attempt
//! after an unrecorded delivery, which WeChat refuses: never a second message); no more grants
//! in review than deliveries the dispatcher could not record; and the ledger holds at least every
//! delivery the dispatcher reported recorded. The row with Redis's data lost instead checks that
//! nothing was sent twice and that what the ledger forgot is reported so.
//!
//! `broken=ack-unwritten` puts a deliberately broken store in front of the ledger (it
//! acknowledges one delivered settlement in 50 without writing it): `cargo xtask faults` checks
//! that the expectations catch it. `only=<words>` runs the rows whose name contains the words
//! (`_` for a space); `together` runs a few rows at a time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use subscribe_client::{
    Client, DispatchObserver, Dispatcher, GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope,
    LedgerError, OutcomeKind, RecipientOutcome, Recorded, Reservation, Resolution, ReviewItem, Settlement,
};
use subscribe_redis::{Redis, RedisGrantLedger, RedisTokenStore};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, SandboxConfig, SandboxHandle};
use subscribe_sql::{Sql, SqlGrantLedger};
use subscribe_types::{AppId, AppSecret, OneTimeMessage, OpenId, Scene};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cluster::PasswordCluster;

/// How long a claimed grant is held: a grant whose settlement was lost comes back after it.
const LEASE: Duration = Duration::from_secs(6);
/// The stores' operation timeout: the faults outlast it.
const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a pause, a lock or a taken set of connection slots lasts; a restarted server is
/// down about as long.
const OUTAGE: Duration = Duration::from_secs(3);
/// A row that has not settled every grant by then fails.
const DEADLINE: Duration = Duration::from_secs(180);
/// The throwaway PostgreSQL cluster's password (it listens on 127.0.0.1 only).
const PASSWORD: &str = "wxsub-store-faults";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Redis {
        aof: bool,
    },
    Postgres,
    /// A file on a small filesystem of its own (a tmpfs the row mounts).
    Sqlite,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `CLIENT KILL TYPE normal`: every client connection cut.
    KillClients,
    /// `CLIENT PAUSE <OUTAGE> ALL`: no answer for longer than the operation timeout.
    Pause,
    /// `SHUTDOWN` (or `SHUTDOWN NOSAVE` without persistence), then started again on its files.
    RedisRestart,
    /// `pg_terminate_backend` on every client backend.
    Terminate,
    /// `pg_ctl stop -m fast`, then started again.
    PostgresRestart,
    /// Another transaction holds `LOCK TABLE wxsub_grants IN ACCESS EXCLUSIVE MODE`.
    LockGrants,
    /// The dispatcher's backends terminated while another client holds every connection slot.
    TakeSlots,
    /// The SQLite file's filesystem filled up (writes fail with `ENOSPC`), then room made.
    DiskFull,
    /// The SQLite database read-only to the ledger's connection (`PRAGMA query_only`), then
    /// writable again.
    ReadOnly,
    /// Between the ledger and its server, a proxy that cuts every connection, every 250 ms.
    Cut,
    /// The proxy forwards nothing on any connection, then forwards again (late, not lost).
    Stall,
    /// The proxy drops the connections open (and opened) during the fault into a black hole:
    /// no answer and no reset, ever; connections opened after it are forwarded.
    BlackHole,
}

struct Row {
    name: &'static str,
    store: Store,
    fault: Fault,
}

static ROWS: [Row; 15] = [
    Row {
        name: "Redis: every connection killed (CLIENT KILL)",
        store: Store::Redis { aof: true },
        fault: Fault::KillClients,
    },
    Row {
        name: "Redis: paused 3 s (CLIENT PAUSE ALL), operation timeout 1 s",
        store: Store::Redis { aof: true },
        fault: Fault::Pause,
    },
    Row {
        name: "Redis: restarted, down 3 s, AOF on (appendfsync always)",
        store: Store::Redis { aof: true },
        fault: Fault::RedisRestart,
    },
    Row {
        name: "Redis: restarted, down 3 s, persistence off: its data lost",
        store: Store::Redis { aof: false },
        fault: Fault::RedisRestart,
    },
    Row {
        name: "PostgreSQL: the dispatcher's backends terminated",
        store: Store::Postgres,
        fault: Fault::Terminate,
    },
    Row {
        name: "PostgreSQL: restarted (fast shutdown), down 3 s",
        store: Store::Postgres,
        fault: Fault::PostgresRestart,
    },
    Row {
        name: "PostgreSQL: the grants table locked 3 s by another transaction, operation timeout 1 s",
        store: Store::Postgres,
        fault: Fault::LockGrants,
    },
    Row {
        name: "PostgreSQL: backends terminated while another client holds every connection slot for 3 s",
        store: Store::Postgres,
        fault: Fault::TakeSlots,
    },
    Row { name: "SQLite: its filesystem full for 3 s", store: Store::Sqlite, fault: Fault::DiskFull },
    Row {
        name: "SQLite: the database read-only for 3 s (PRAGMA query_only)",
        store: Store::Sqlite,
        fault: Fault::ReadOnly,
    },
    Row {
        name: "Redis through a proxy: every connection cut every 250 ms for 3 s",
        store: Store::Redis { aof: true },
        fault: Fault::Cut,
    },
    Row {
        name: "Redis through a proxy: connections black-holed (no answer, no reset) for 3 s",
        store: Store::Redis { aof: true },
        fault: Fault::BlackHole,
    },
    Row {
        name: "PostgreSQL through a proxy: every connection cut every 250 ms for 3 s",
        store: Store::Postgres,
        fault: Fault::Cut,
    },
    Row {
        name: "PostgreSQL through a proxy: every connection stalled 3 s",
        store: Store::Postgres,
        fault: Fault::Stall,
    },
    Row {
        name: "PostgreSQL through a proxy: connections black-holed (no answer, no reset) for 3 s",
        store: Store::Postgres,
        fault: Fault::BlackHole,
    },
];

/// Rows run at once under `together` (the quick run in CI); the published figures come from
/// rows run one after another, each with the machine to itself.
const TOGETHER: usize = 3;

/// The store-fault table: `n` grants per row at `concurrency` in flight.
pub(crate) async fn store_faults(n: usize, concurrency: usize, args: &[String]) -> serde_json::Value {
    let only: Vec<String> =
        args.iter().filter_map(|a| a.strip_prefix("only=")).map(|w| w.replace('_', " ")).collect();
    let broken = args.iter().any(|a| a == "broken=ack-unwritten");
    let selected = ROWS.iter().filter(|r| only.iter().all(|w| r.name.contains(w.as_str())));
    let mut rows = Vec::new();
    if args.iter().any(|a| a == "together") {
        // A few rows at a time, each on servers of its own: a row mostly waits (its outage, a
        // lease, a restart), so they overlap well; a few, not all, so that two cores still
        // carry each row's dispatch and the fault still strikes mid-dispatch. Each of the few
        // threads runs its rows on a runtime of its own: a row blocks its runtime at times
        // (starting redis-server, pg_ctl, filling a disk), which must not stall another row's
        // dispatch and fire its timeouts and leases.
        let selected: Vec<(usize, &'static Row)> = selected.enumerate().collect();
        let mut done: Vec<(usize, serde_json::Value)> = tokio::task::spawn_blocking(move || {
            let next = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..TOGETHER)
                    .map(|_| {
                        scope.spawn(|| {
                            let rt =
                                tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
                            let mut rows = Vec::new();
                            while let Some(&(index, row)) = selected.get(next.fetch_add(1, Ordering::Relaxed))
                            {
                                eprintln!("store-faults: {}", row.name);
                                rows.push((index, rt.block_on(run_row(row, n, concurrency, broken))));
                            }
                            rows
                        })
                    })
                    .collect();
                threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
            })
        })
        .await
        .unwrap();
        done.sort_by_key(|(index, _)| *index);
        rows.extend(done.into_iter().map(|(_, row)| row));
    } else {
        for row in selected {
            eprintln!("store-faults: {}", row.name);
            rows.push(run_row(row, n, concurrency, broken).await);
        }
    }
    // The gateway's rows: a fifth as many keyed sends, at 16 in flight.
    let gateway_rows = crate::gateway_faults::gateway_rows(n / 5, 16, &only).await;
    let violations: Vec<String> = gateway_rows
        .iter()
        .flat_map(|r| {
            let name = r["name"].as_str().unwrap_or("").to_owned();
            r["violations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |v| format!("{name}: {}", v.as_str().unwrap_or("")))
        })
        .collect();
    json!({ "scenario": "store-faults", "grants": n, "concurrency": concurrency, "rows": rows,
            "gateway_keys": n / 5, "gateway_concurrency": 16, "gateway_rows": gateway_rows, "violations": violations })
}

/// A server the row started, and what its fault does to it.
enum Server {
    Redis(RedisServer),
    Postgres(PasswordCluster),
    Sqlite(SqliteDisk),
}

/// What a row's fault acts on: its server, the proxy in front of it (for the network's faults),
/// the other client's connections (the slots row), and the SQLite ledger's pool.
struct Rig {
    server: Server,
    proxy: Option<Proxy>,
    hog: Hog,
    sqlite: Option<Sql>,
}

impl Fault {
    fn through_proxy(self) -> bool {
        matches!(self, Self::Cut | Self::Stall | Self::BlackHole)
    }
}

#[allow(clippy::too_many_lines)] // one row: set up, dispatch through the fault, read both sides, check
#[allow(clippy::disallowed_methods)] // a row against real servers runs on wall-clock time
async fn run_row(row: &Row, n: usize, concurrency: usize, broken: bool) -> serde_json::Value {
    let s = Arc::new(SandboxHandle::start(SandboxConfig::demo().with_generated_users(n)).await.unwrap());
    let (appid, template, scene) =
        (SandboxConfig::demo_appid(), SandboxConfig::demo_template(), Scene::new(5).unwrap());
    let openids: Vec<OpenId> = (0..n).map(|i| OpenId::new(format!("oUser{i:010}")).unwrap()).collect();
    for openid in &openids {
        s.state().add_grant(&appid, openid, &template, scene);
    }
    let scope = GrantScope { appid: appid.clone(), template_id: template.clone(), scene };
    let (rig, ledger, tokens) = rig(row, &scope, &openids).await;
    let rig = Arc::new(rig);
    let ledger: Arc<dyn GrantLedger> = if broken { Arc::new(AckUnwritten::new(ledger)) } else { ledger };
    let mut c = Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(s.base_url())
        .timeouts(Duration::from_secs(2), Duration::from_secs(3));
    // On Redis, the tokens are kept there too, and every token is revoked as the fault strikes:
    // the refresh happens while the store fails.
    if let Some(tokens) = tokens {
        c = c.token_store(tokens);
    }
    let c = c.build().unwrap();

    let started = Instant::now();
    let tally = Tally::default();
    // The fault: once the sandbox has delivered a third of the messages.
    let fault = {
        let (s, rig, fault, tally) = (Arc::clone(&s), Arc::clone(&rig), row.fault, tally.clone());
        let revoke = matches!(row.store, Store::Redis { .. });
        tokio::spawn(async move {
            while s.state().stats().deliveries < (n as u64) / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            *tally.fault_struck.lock().unwrap() = Some(Instant::now());
            if revoke {
                s.state().revoke_tokens(Duration::ZERO);
            }
            strike(&rig, fault).await;
            *tally.fault_ended.lock().unwrap() = Some(Instant::now());
        })
    };
    // When the store answers again after the fault, and when a grant is settled again: a read
    // every 20 ms (from the ledger's side: an outcome is reported only once its whole batch
    // of settlements is written).
    let back = {
        let (ledger, scope) = (Arc::clone(&ledger), scope.clone());
        let fault = Arc::clone(&tally.fault_ended);
        tokio::spawn(async move {
            let (mut answered, mut settled_at_end) = (None, None);
            loop {
                let ended = *fault.lock().unwrap();
                if let Some(ended) = ended {
                    if let Ok(c) = ledger.counts(&scope, SystemTime::now()).await {
                        answered.get_or_insert(ended.elapsed());
                        let settled = c.delivered + c.review;
                        if settled > *settled_at_end.get_or_insert(settled) || c.pending + c.reserved == 0 {
                            let again = (settled > settled_at_end.unwrap_or(0)).then(|| ended.elapsed());
                            return (answered, again);
                        }
                    }
                    if ended.elapsed() > Duration::from_secs(60) {
                        return (answered, None);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut fault = Some(fault);
    let (mut runs, mut run_errors) = (0u64, Vec::<String>::new());
    let mut violations = Vec::new();
    let counts = loop {
        runs += 1;
        let build = {
            let (template, scene) = (template.clone(), scene);
            move |to: &OpenId| {
                OneTimeMessage::builder(to.clone(), template.clone(), scene)
                    .title("到货提醒")
                    .content("您关注的商品已到货")
                    .build()
            }
        };
        let run = Dispatcher::one_time(c.clone(), Arc::clone(&ledger), template.clone(), scene, build)
            .concurrency(concurrency)
            .lease(LEASE)
            .keep_outcomes(false)
            .observer(tally.clone())
            .run()
            .await;
        if let Err(e) = run {
            let text = format!("{e}: {}", source_text(&e));
            if run_errors.len() < 3 && !run_errors.contains(&text) {
                run_errors.push(text);
            }
        }
        if let Some(f) = fault.take_if(|f| f.is_finished()) {
            f.await.unwrap();
        }
        if fault.is_none()
            && let Ok(counts) = ledger.counts(&scope, SystemTime::now()).await
            && counts.pending == 0
            && counts.reserved == 0
        {
            break Some(counts);
        }
        if started.elapsed() > DEADLINE {
            violations.push(format!("not every grant settled within {DEADLINE:?} of the dispatch's start"));
            break ledger.counts(&scope, SystemTime::now()).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let elapsed = started.elapsed();
    let (store_back, settling_back) = tokio::time::timeout(Duration::from_secs(90), back)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or((None, None));
    let stats = s.state().stats();
    let token_requests = stats.classic_token_requests + stats.stable_token_requests;
    let inbox_max = openids.iter().map(|o| s.state().inbox(o.as_str()).len()).max().unwrap_or(0);
    let t = tally.snapshot();
    let counts = counts.unwrap_or_default();
    let loses_data = row.store == (Store::Redis { aof: false }) && row.fault == Fault::RedisRestart;
    let n64 = n as u64;
    let in_review = counts.review;
    // What every row checks.
    if inbox_max > 1 {
        violations
            .push(format!("a user received {inbox_max} messages; the dispatch meant to send each user one"));
    }
    // On Redis every token is revoked as the fault strikes: one request at the start, one for
    // the refresh, and one more if the refresh met the store down (the client then asks WeChat
    // itself). Elsewhere the token is never refreshed.
    let token_budget = if matches!(row.store, Store::Redis { .. }) { 3 } else { 1 };
    if token_requests > token_budget {
        violations.push(format!("{token_requests} token requests, at most {token_budget}"));
    }
    if t.recorded > counts.delivered && !loses_data {
        violations.push(format!(
            "the dispatcher reported {} deliveries recorded; the ledger holds {} delivered",
            t.recorded, counts.delivered
        ));
    }
    if loses_data {
        // The ledger forgot; what it forgot is not sent again, and is reported.
        if stats.send_requests != stats.deliveries + stats.token_rejections {
            violations.push(format!(
                "{} send requests for {} deliveries and {} replays of a send whose token was rejected: a grant was sent again after Redis lost its record",
                stats.send_requests, stats.deliveries, stats.token_rejections
            ));
        }
        if counts.pending + counts.reserved + counts.delivered + counts.review + counts.dropped != 0 {
            violations.push(format!("Redis kept grants through a restart without persistence: {counts:?}"));
        }
        if t.forgotten + t.unrecorded == 0 && stats.deliveries < n64 {
            violations.push("no settlement was refused though the ledger lost its records".to_owned());
        }
    } else {
        if counts.pending + counts.reserved + counts.dropped != 0 || counts.delivered + counts.review != n64 {
            violations.push(format!(
                "grants not each delivered or in review: {} pending, {} reserved, {} dropped, {} delivered, {} in review (of {n})",
                counts.pending, counts.reserved, counts.dropped, counts.delivered, counts.review
            ));
        }
        if stats.deliveries != counts.delivered + counts.review || stats.deliveries != n64 {
            violations.push(format!(
                "the sandbox delivered {}; the ledger holds {} delivered and {} in review (of {n})",
                stats.deliveries, counts.delivered, counts.review
            ));
        }
        if stats.send_requests != n64 + counts.review + stats.token_rejections {
            violations.push(format!(
                "{} send requests, want {} (one per grant, plus one per grant in review, plus one replay per send whose token was rejected: {})",
                stats.send_requests,
                n64 + counts.review + stats.token_rejections,
                stats.token_rejections
            ));
        }
        if counts.review > t.unrecorded {
            violations.push(format!(
                "{} grants in review, but only {} deliveries went unrecorded: a settlement acknowledged was not kept",
                counts.review, t.unrecorded
            ));
        }
    }
    let secs = |d: Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
    json!({
        "name": row.name,
        "grants": n,
        "concurrency": concurrency,
        "delivered": counts.delivered,
        "in_review": in_review,
        "forgotten_by_the_store": if loses_data { n64 - counts.delivered - counts.review } else { 0 },
        "sandbox_deliveries": stats.deliveries,
        "send_requests": stats.send_requests,
        "unrecorded": t.unrecorded,
        "forgotten_reported": t.forgotten,
        "recorded": t.recorded,
        "dispatch_runs": runs,
        "run_errors": run_errors,
        "ledger_errors": t.errors,
        "fault_s": t.fault_struck.zip(t.fault_ended).map(|(a, b)| secs(b.saturating_duration_since(a))),
        "store_back_s": store_back.map(secs),
        "dispatch_back_s": settling_back.map(secs),
        "elapsed_s": secs(elapsed),
        "most_in_one_inbox": inbox_max,
        "token_requests": token_requests,
        "token_rejections": stats.token_rejections,
        "expect": if loses_data {
            "nothing sent twice (send requests = deliveries), each user at most one message; the ledger holds nothing after the restart; what it forgot is reported"
        } else {
            "every grant delivered or in review; the sandbox delivered each once (= the ledger's delivered + in review); send requests = grants + in review + replays of sends whose token was rejected; in review <= deliveries left unrecorded; the ledger holds every delivery reported recorded; token requests at most 3 on Redis (the token revoked as the fault strikes), 1 elsewhere"
        },
        "passed": violations.is_empty(),
        "violations": violations,
    })
}

/// The error's causes, joined (a ledger error's text names no cause).
fn source_text(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s.to_string());
        next = s.source();
    }
    out.join(": ")
}

/// The other client's connections, opened before the dispatch.
type Hog = tokio::sync::Mutex<Vec<sqlx::PgConnection>>;

/// Does the row's fault; returns when the fault is over.
#[allow(clippy::too_many_lines)] // one arm per fault
async fn strike(rig: &Arc<Rig>, fault: Fault) {
    if let Some(proxy) = &rig.proxy {
        match fault {
            Fault::Cut => {
                let until = Instant::now() + OUTAGE;
                while Instant::now() < until {
                    proxy.cut();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            Fault::Stall => {
                proxy.set(Mode::Stall);
                tokio::time::sleep(OUTAGE).await;
                proxy.set(Mode::Forward);
            }
            Fault::BlackHole => {
                proxy.set(Mode::BlackHole);
                tokio::time::sleep(OUTAGE).await;
                proxy.set(Mode::Forward);
            }
            _ => unreachable!("a proxy's row has a network fault"),
        }
        return;
    }
    match (&rig.server, fault) {
        (Server::Redis(r), Fault::KillClients) => {
            r.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        }
        (Server::Redis(r), Fault::Pause) => {
            r.cli(&["CLIENT", "PAUSE", &OUTAGE.as_millis().to_string(), "ALL"]);
            tokio::time::sleep(OUTAGE).await;
        }
        (Server::Redis(r), Fault::RedisRestart) => {
            r.shutdown();
            tokio::time::sleep(OUTAGE).await;
            r.spawn();
        }
        (Server::Postgres(pg), Fault::Terminate) => {
            use sqlx::ConnectOptions as _;
            let mut conn = other_client(pg).connect().await.unwrap();
            terminate_backends(&mut conn).await;
        }
        (Server::Postgres(_), Fault::PostgresRestart) => {
            let rig = Arc::clone(rig);
            tokio::task::spawn_blocking(move || {
                let Server::Postgres(pg) = &rig.server else { unreachable!() };
                pg.stop_fast();
                std::thread::sleep(OUTAGE);
                pg.start_again();
            })
            .await
            .unwrap();
        }
        (Server::Postgres(pg), Fault::LockGrants) => {
            use sqlx::{ConnectOptions as _, Connection as _};
            let mut conn = other_client(pg).connect().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("LOCK TABLE wxsub_grants IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
            tokio::time::sleep(OUTAGE).await;
            tx.rollback().await.unwrap();
        }
        (Server::Postgres(pg), Fault::TakeSlots) => {
            // Another client took every slot but a dozen before the dispatch (`rig`); now the
            // dispatcher's backends are ended and the other client takes the slots they free,
            // until no backend of the dispatcher is left: its pool must connect again, and
            // cannot until the slots are given back.
            let mut taken = take_slots(pg, usize::MAX).await;
            taken.extend(std::mem::take(&mut *rig.hog.lock().await));
            for _ in 0..50 {
                let mine = terminate_backends(&mut taken[0]).await;
                taken.extend(take_slots(pg, usize::MAX).await);
                if mine == 0 {
                    break;
                }
            }
            tokio::time::sleep(OUTAGE).await;
            drop(taken);
        }
        (Server::Sqlite(disk), Fault::DiskFull) => {
            let filler = disk.fill();
            tokio::time::sleep(OUTAGE).await;
            std::fs::remove_file(filler).unwrap();
        }
        (Server::Sqlite(_), Fault::ReadOnly) => {
            let pool = rig.sqlite.as_ref().and_then(Sql::sqlite_pool).expect("the SQLite ledger's pool");
            sqlx::query("PRAGMA query_only = ON").execute(pool).await.unwrap();
            tokio::time::sleep(OUTAGE).await;
            // The one connection may be busy with a write that is failing: try until it is free.
            while sqlx::query("PRAGMA query_only = OFF").execute(pool).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        _ => unreachable!("a row's fault is for its store"),
    }
}

/// The row's server (and proxy), its ledger holding the grants, and, on Redis, a token store
/// on the same server.
#[allow(clippy::disallowed_methods)] // a row against real servers runs on wall-clock time
async fn rig(
    row: &Row,
    scope: &GrantScope,
    openids: &[OpenId],
) -> (Rig, Arc<dyn GrantLedger>, Option<RedisTokenStore>) {
    let (server, upstream) = match row.store {
        Store::Redis { aof } => {
            let server = RedisServer::start(aof);
            let port = server.port;
            (Server::Redis(server), port)
        }
        Store::Postgres => {
            let cluster = tokio::task::spawn_blocking(|| PasswordCluster::start(PASSWORD)).await.unwrap();
            let port = cluster.port();
            (Server::Postgres(cluster), port)
        }
        Store::Sqlite => (Server::Sqlite(SqliteDisk::mount()), 0),
    };
    let proxy = if row.fault.through_proxy() { Some(Proxy::start(upstream).await) } else { None };
    let port = proxy.as_ref().map_or(upstream, |p| p.port);
    let mut rig = Rig { server, proxy, hog: Hog::default(), sqlite: None };
    let (ledger, tokens): (Arc<dyn GrantLedger>, _) = match &rig.server {
        Server::Redis(_) => {
            let redis = Redis::builder(format!("redis://127.0.0.1:{port}"))
                .op_timeout(OP_TIMEOUT)
                .connect()
                .await
                .unwrap();
            let ledger = RedisGrantLedger::new(redis.clone());
            for openid in openids {
                let r = ledger.record(&scope.key(openid.clone()), SystemTime::now()).await;
                assert!(matches!(r, Ok(Recorded::Added)), "recording a grant: {r:?}");
            }
            (Arc::new(ledger), Some(RedisTokenStore::new(redis)))
        }
        Server::Postgres(pg) => {
            let url = pg.url(PASSWORD).replace(&format!(":{}/", pg.port()), &format!(":{port}/"));
            let sql = Sql::builder(url).op_timeout(OP_TIMEOUT).connect().await.unwrap();
            let ledger = SqlGrantLedger::new(sql);
            ledger.record_many(scope, openids).await.unwrap();
            (Arc::new(ledger), None)
        }
        Server::Sqlite(disk) => {
            let sql = Sql::builder(format!("sqlite:{}", disk.dir.join("grants.db").display()))
                .op_timeout(OP_TIMEOUT)
                .connect()
                .await
                .unwrap();
            let ledger = SqlGrantLedger::new(sql.clone());
            ledger.record_many(scope, openids).await.unwrap();
            rig.sqlite = Some(sql);
            (Arc::new(ledger), None)
        }
    };
    // The other client of the slots row takes all but a dozen slots before the dispatch.
    if let (Server::Postgres(pg), Fault::TakeSlots) = (&rig.server, row.fault) {
        use sqlx::ConnectOptions as _;
        let mut admin = other_client(pg).connect().await.unwrap();
        let max: String = sqlx::query_scalar("SHOW max_connections").fetch_one(&mut admin).await.unwrap();
        let reserved: String =
            sqlx::query_scalar("SHOW superuser_reserved_connections").fetch_one(&mut admin).await.unwrap();
        let free = max.parse::<usize>().unwrap() - reserved.parse::<usize>().unwrap();
        let mut taken = take_slots(pg, free.saturating_sub(12)).await;
        taken.push(admin);
        *rig.hog.lock().await = taken;
    }
    (rig, ledger, tokens)
}

/// The application name of the client that takes every connection slot.
const HOG: &str = "wxsub-store-faults-other-client";

/// Options for a client other than the dispatcher (named, so its backends are told apart).
fn other_client(pg: &PasswordCluster) -> sqlx::postgres::PgConnectOptions {
    let options: sqlx::postgres::PgConnectOptions = pg.url(PASSWORD).parse().unwrap();
    options.application_name(HOG)
}

/// Ends every client backend of the dispatcher (every one the other client does not own);
/// returns how many there were.
async fn terminate_backends(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND application_name <> '{HOG}'"
    ))
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Up to `most` more connections for the other client, opened at once, as many as the server
/// gives.
async fn take_slots(pg: &PasswordCluster, most: usize) -> Vec<sqlx::PgConnection> {
    use sqlx::ConnectOptions as _;
    let mut taken = Vec::new();
    loop {
        let want = most.saturating_sub(taken.len()).min(32);
        if want == 0 {
            return taken;
        }
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..want {
            let options = other_client(pg);
            opening.spawn(async move { options.connect().await });
        }
        let before = taken.len();
        while let Some(r) = opening.join_next().await {
            if let Ok(Ok(conn)) = r {
                taken.push(conn);
            }
        }
        if taken.len() - before < want {
            return taken;
        }
    }
}

/// What the dispatcher reported, across its runs.
#[derive(Clone, Default)]
struct Tally {
    inner: Arc<Mutex<Counted>>,
    fault_struck: Arc<Mutex<Option<Instant>>>,
    fault_ended: Arc<Mutex<Option<Instant>>>,
}

#[derive(Clone, Default)]
struct Counted {
    /// Delivered, and the ledger acknowledged it.
    recorded: u64,
    /// Delivered, but the ledger could not record it.
    unrecorded: u64,
    /// Settlements the ledger refused because it no longer held the grant.
    forgotten: u64,
    /// The first few distinct ledger errors.
    errors: Vec<String>,
    fault_struck: Option<Instant>,
    fault_ended: Option<Instant>,
}

impl Tally {
    fn snapshot(&self) -> Counted {
        let mut c = self.inner.lock().unwrap().clone();
        c.fault_struck = *self.fault_struck.lock().unwrap();
        c.fault_ended = *self.fault_ended.lock().unwrap();
        c
    }
}

impl DispatchObserver for Tally {
    fn on_outcome(&mut self, outcome: &RecipientOutcome) {
        let mut c = self.inner.lock().unwrap();
        if let Some(e) = &outcome.ledger_error {
            if e.contains("no longer holds") {
                c.forgotten += 1;
            }
            if c.errors.len() < 4 && !c.errors.contains(e) {
                c.errors.push(e.clone());
            }
        }
        if outcome.kind == OutcomeKind::Delivered {
            if outcome.ledger_error.is_none() {
                c.recorded += 1;
            } else {
                c.unrecorded += 1;
            }
        }
    }
}

/// A deliberately broken store: it acknowledges one delivered settlement in 50 without writing
/// it (the grant stays reserved, so it comes back after its lease as a second attempt).
#[derive(Debug)]
struct AckUnwritten {
    inner: Arc<dyn GrantLedger>,
    seen: AtomicU64,
}

impl AckUnwritten {
    fn new(inner: Arc<dyn GrantLedger>) -> Self {
        Self { inner, seen: AtomicU64::new(0) }
    }

    fn skips(&self, s: &Settlement) -> bool {
        matches!(s, Settlement::Delivered) && self.seen.fetch_add(1, Ordering::Relaxed) % 50 == 49
    }
}

#[async_trait::async_trait]
impl GrantLedger for AckUnwritten {
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError> {
        self.inner.record(key, now).await
    }
    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        self.inner.pending_page(scope, after, limit, now).await
    }
    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        self.inner.reserve(key, holder, lease, now).await
    }
    async fn settle(&self, r: &Reservation, s: Settlement) -> Result<(), LedgerError> {
        if self.skips(&s) { Ok(()) } else { self.inner.settle(r, s).await }
    }
    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        self.inner.get(key).await
    }
    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError> {
        self.inner.counts(scope, now).await
    }
    async fn reserve_next(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<subscribe_client::Claimed, LedgerError> {
        self.inner.reserve_next(scope, after, limit, holder, lease, now).await
    }
    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError> {
        self.inner.reviews(scope, after, limit).await
    }
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        now: SystemTime,
    ) -> Result<bool, LedgerError> {
        self.inner.resolve(key, resolution, note, now).await
    }
    async fn settle_many(&self, items: Vec<(Reservation, Settlement)>) -> Vec<Result<(), LedgerError>> {
        let mut kept = Vec::new();
        let mut skipped = Vec::new();
        for (i, (r, s)) in items.into_iter().enumerate() {
            if self.skips(&s) {
                skipped.push(i);
            } else {
                kept.push((i, (r, s)));
            }
        }
        let (at, items): (Vec<usize>, Vec<_>) = kept.into_iter().unzip();
        let mut results: Vec<Option<Result<(), LedgerError>>> =
            (0..at.len() + skipped.len()).map(|_| None).collect();
        for i in skipped {
            results[i] = Some(Ok(()));
        }
        for (i, r) in at.into_iter().zip(self.inner.settle_many(items).await) {
            results[i] = Some(r);
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }
}

/// A throwaway `redis-server` on a free port of 127.0.0.1, its files in a directory of its own;
/// stopped and removed when dropped.
pub(crate) struct RedisServer {
    dir: PathBuf,
    pub(crate) port: u16,
    aof: bool,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    pub(crate) fn start(aof: bool) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wxsub-store-faults-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Self { dir, port, aof, child: Mutex::new(None) };
        server.spawn();
        server
    }

    /// Starts the server (again) on its port and files, and waits until it answers.
    pub(crate) fn spawn(&self) {
        let appendonly = if self.aof { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", appendonly, "--appendfsync", "always", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server (apt-get install redis-server): {e}"));
        *self.child.lock().unwrap() = Some(child);
        let t0 = Instant::now();
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(t0.elapsed() < Duration::from_secs(20), "redis-server did not start: {:?}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server as an operator does (`SHUTDOWN`; `NOSAVE` without persistence).
    pub(crate) fn shutdown(&self) {
        let _ = if self.aof { self.cli(&["SHUTDOWN"]) } else { self.cli(&["SHUTDOWN", "NOSAVE"]) };
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A small filesystem of its own (a 64 MiB tmpfs mounted for the row) for the SQLite file, so
/// the row can fill it; unmounted and removed when dropped. Mounting needs root (with
/// `CAP_SYS_ADMIN`), as `cargo xtask faults` runs in CI.
struct SqliteDisk {
    dir: PathBuf,
}

impl SqliteDisk {
    fn mount() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wxsub-store-faults-sqlite-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            out.status.success(),
            "the SQLite rows mount a small tmpfs to fill it (root with CAP_SYS_ADMIN is needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    /// Fills the filesystem: a file that takes every byte left. Returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for size in [1 << 20, 4096, 512] {
            let chunk = vec![0u8; size];
            while file.write_all(&chunk).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SqliteDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the proxy does with the bytes it is given.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Forward,
    /// Holds every byte until forwarding resumes.
    Stall,
    /// Every connection open or opened now is dropped into a black hole: never forwarded
    /// again, never closed (until the row ends).
    BlackHole,
}

/// A TCP proxy on 127.0.0.1 in front of the row's server, whose faults the row sets.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    mode: tokio::sync::watch::Sender<Mode>,
    conns: Arc<Mutex<tokio::task::JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, _) = tokio::sync::watch::channel(Mode::Forward);
        let conns = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
        let accept = {
            let (conns, mode) = (Arc::clone(&conns), mode.clone());
            tokio::spawn(async move {
                while let Ok((down, _)) = listener.accept().await {
                    let rx = mode.subscribe();
                    conns.lock().unwrap().spawn(async move {
                        let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                            return;
                        };
                        let (dr, dw) = down.into_split();
                        let (ur, uw) = up.into_split();
                        tokio::join!(pipe(dr, uw, rx.clone()), pipe(ur, dw, rx));
                    });
                }
            })
        };
        Self { port, mode, conns, accept }
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every connection (the client and the server each see theirs closed).
    fn cut(&self) {
        self.conns.lock().unwrap().abort_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.conns.lock().unwrap().abort_all();
    }
}

/// Copies `from` to `to` as the mode allows.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !forwarding(&mut mode).await {
            std::future::pending::<()>().await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !forwarding(&mut mode).await {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while the proxy stalls; `false` once the connection is in a black hole.
async fn forwarding(mode: &mut tokio::sync::watch::Receiver<Mode>) -> bool {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Forward => return true,
            Mode::BlackHole => return false,
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}
