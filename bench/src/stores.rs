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
//! (`_` for a space).

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
use subscribe_redis::{Redis, RedisGrantLedger};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, SandboxConfig, SandboxHandle};
use subscribe_sql::{Sql, SqlGrantLedger};
use subscribe_types::{AppId, AppSecret, OneTimeMessage, OpenId, Scene};

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
    Redis { aof: bool },
    Postgres,
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
}

struct Row {
    name: &'static str,
    store: Store,
    fault: Fault,
}

const ROWS: [Row; 8] = [
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
];

/// The store-fault table: `n` grants per row at `concurrency` in flight.
pub(crate) async fn store_faults(n: usize, concurrency: usize, args: &[String]) -> serde_json::Value {
    let only: Vec<String> =
        args.iter().filter_map(|a| a.strip_prefix("only=")).map(|w| w.replace('_', " ")).collect();
    let broken = args.iter().any(|a| a == "broken=ack-unwritten");
    let mut rows = Vec::new();
    for row in ROWS.iter().filter(|r| only.iter().all(|w| r.name.contains(w.as_str()))) {
        eprintln!("store-faults: {}", row.name);
        rows.push(run_row(row, n, concurrency, broken).await);
    }
    json!({ "scenario": "store-faults", "grants": n, "concurrency": concurrency, "rows": rows })
}

/// A server the row started, and what its fault does to it.
enum Server {
    Redis(RedisServer),
    Postgres(PasswordCluster),
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
    let (server, ledger): (Arc<Server>, Arc<dyn GrantLedger>) = match row.store {
        Store::Redis { aof } => {
            let server = RedisServer::start(aof);
            let redis = Redis::builder(server.url()).op_timeout(OP_TIMEOUT).connect().await.unwrap();
            let ledger = RedisGrantLedger::new(redis);
            for openid in &openids {
                let r = ledger.record(&scope.key(openid.clone()), SystemTime::now()).await;
                assert!(matches!(r, Ok(Recorded::Added)), "recording a grant: {r:?}");
            }
            (Arc::new(Server::Redis(server)), Arc::new(ledger))
        }
        Store::Postgres => {
            let cluster = tokio::task::spawn_blocking(|| PasswordCluster::start(PASSWORD)).await.unwrap();
            let sql = Sql::builder(cluster.url(PASSWORD)).op_timeout(OP_TIMEOUT).connect().await.unwrap();
            let ledger = SqlGrantLedger::new(sql);
            ledger.record_many(&scope, &openids).await.unwrap();
            (Arc::new(Server::Postgres(cluster)), Arc::new(ledger))
        }
    };
    let ledger: Arc<dyn GrantLedger> = if broken { Arc::new(AckUnwritten::new(ledger)) } else { ledger };
    let c = Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(s.base_url())
        .timeouts(Duration::from_secs(2), Duration::from_secs(3))
        .build()
        .unwrap();

    let started = Instant::now();
    let tally = Tally::default();
    // The fault: once the sandbox has delivered a third of the messages.
    // The other client of the slots row takes all but a dozen slots before the dispatch.
    let hog = Arc::new(Hog::default());
    if let (Server::Postgres(pg), Fault::TakeSlots) = (&*server, row.fault) {
        use sqlx::ConnectOptions as _;
        let mut admin = other_client(pg).connect().await.unwrap();
        let max: String = sqlx::query_scalar("SHOW max_connections").fetch_one(&mut admin).await.unwrap();
        let reserved: String =
            sqlx::query_scalar("SHOW superuser_reserved_connections").fetch_one(&mut admin).await.unwrap();
        let free = max.parse::<usize>().unwrap() - reserved.parse::<usize>().unwrap();
        let mut taken = take_slots(pg, free.saturating_sub(12)).await;
        taken.push(admin);
        *hog.lock().await = taken;
    }
    let fault = {
        let (s, server, fault, tally, hog) =
            (Arc::clone(&s), Arc::clone(&server), row.fault, tally.clone(), Arc::clone(&hog));
        tokio::spawn(async move {
            while s.state().stats().deliveries < (n as u64) / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            *tally.fault_struck.lock().unwrap() = Some(Instant::now());
            strike(&server, fault, &hog).await;
            *tally.fault_ended.lock().unwrap() = Some(Instant::now());
        })
    };
    // When the store answers again after the fault: a read every 20 ms.
    let back = {
        let (ledger, scope) = (Arc::clone(&ledger), scope.clone());
        let fault = Arc::clone(&tally.fault_ended);
        tokio::spawn(async move {
            loop {
                let ended = *fault.lock().unwrap();
                if let Some(ended) = ended
                    && ledger.counts(&scope, SystemTime::now()).await.is_ok()
                {
                    return ended.elapsed();
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
    let store_back = tokio::time::timeout(Duration::from_secs(30), back).await.ok().and_then(Result::ok);
    let stats = s.state().stats();
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
    if t.recorded > counts.delivered && !loses_data {
        violations.push(format!(
            "the dispatcher reported {} deliveries recorded; the ledger holds {} delivered",
            t.recorded, counts.delivered
        ));
    }
    if loses_data {
        // The ledger forgot; what it forgot is not sent again, and is reported.
        if stats.send_requests != stats.deliveries {
            violations.push(format!(
                "{} send requests for {} deliveries: a grant was sent again after Redis lost its record",
                stats.send_requests, stats.deliveries
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
        if stats.send_requests != n64 + counts.review {
            violations.push(format!(
                "{} send requests, want {} (one per grant, plus one per grant in review)",
                stats.send_requests,
                n64 + counts.review
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
    let dispatch_back = match (t.fault_ended, t.first_recorded_after) {
        (Some(_), Some(d)) => Some(secs(d)),
        _ => None,
    };
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
        "dispatch_back_s": dispatch_back,
        "elapsed_s": secs(elapsed),
        "most_in_one_inbox": inbox_max,
        "expect": if loses_data {
            "nothing sent twice (send requests = deliveries), each user at most one message; the ledger holds nothing after the restart; what it forgot is reported"
        } else {
            "every grant delivered or in review; the sandbox delivered each once (= the ledger's delivered + in review); send requests = grants + in review; in review <= deliveries left unrecorded; the ledger holds every delivery reported recorded"
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

/// Does the row's fault to its server; returns when the fault is over.
async fn strike(server: &Arc<Server>, fault: Fault, hog: &Hog) {
    match (&**server, fault) {
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
            terminate_backends(pg, &mut conn).await;
        }
        (Server::Postgres(_), Fault::PostgresRestart) => {
            let server = Arc::clone(server);
            tokio::task::spawn_blocking(move || {
                let Server::Postgres(pg) = &*server else { unreachable!() };
                pg.stop_fast();
                std::thread::sleep(OUTAGE);
                pg.start_again();
            })
            .await
            .unwrap();
        }
        (Server::Postgres(pg), Fault::LockGrants) => {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&pg.url(PASSWORD)).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("LOCK TABLE wxsub_grants IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
            tokio::time::sleep(OUTAGE).await;
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        }
        (Server::Postgres(pg), Fault::TakeSlots) => {
            // Another client took every slot but a dozen before the dispatch (`take_slots`);
            // now the dispatcher's backends are ended and the other client takes the slots
            // they free, until no backend of the dispatcher is left: its pool must connect
            // again, and cannot until the slots are given back.
            let mut taken = take_slots(pg, usize::MAX).await;
            for _ in 0..50 {
                let mine = terminate_backends(pg, &mut taken[0]).await;
                taken.extend(take_slots(pg, usize::MAX).await);
                if mine == 0 {
                    break;
                }
            }
            tokio::time::sleep(OUTAGE).await;
            drop(taken);
            drop(std::mem::take(&mut *hog.lock().await));
        }
        _ => unreachable!("a row's fault is for its store"),
    }
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
async fn terminate_backends(_pg: &PasswordCluster, conn: &mut sqlx::PgConnection) -> i64 {
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
    /// The first recorded delivery after the fault ended, from its end.
    first_recorded_after: Option<Duration>,
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
        let ended = *self.fault_ended.lock().unwrap();
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
                if let Some(ended) = ended
                    && c.first_recorded_after.is_none()
                {
                    c.first_recorded_after = Some(ended.elapsed());
                }
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
struct RedisServer {
    dir: PathBuf,
    port: u16,
    aof: bool,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    fn start(aof: bool) -> Self {
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and files, and waits until it answers.
    fn spawn(&self) {
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
    fn shutdown(&self) {
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
