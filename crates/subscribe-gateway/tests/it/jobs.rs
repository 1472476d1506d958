//! The job stores' and the webhook outbox's contracts, the same for each: in memory, SQLite,
//! PostgreSQL and Redis. A job is inserted once per scope while it runs, renewed, ended and
//! given up only by its holder, adopted by one gateway once its lease has ended, and kept after
//! it ends until pruned. The outbox numbers each app's events in order and hands their delivery
//! to one gateway at a time.

use std::sync::Arc;
use std::time::Duration;

use subscribe_gateway::jobs::{
    Created, JobProgress, JobRecord, JobState, JobStore, MemoryJobStore, NewJob, RedisJobStore, SqlJobStore,
};
use subscribe_gateway::outbox::{MemoryOutbox, OutboxItem, OutboxStore, RedisOutbox, SqlOutbox};
use subscribe_redis::Redis;
use subscribe_sql::Sql;
use tempfile::TempDir;

/// Job ids for one run of the contract: 28 hexadecimal characters, in order, unique to the run.
struct Ids(String);

impl Ids {
    fn new() -> Self {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).unwrap();
        Self(hex::encode(b))
    }

    /// The `n`th id of the run.
    fn id(&self, n: u8) -> String {
        format!("{}{:016x}", self.0, n)
    }
}

#[tokio::test]
async fn jobs_in_memory_keep_the_contract() {
    let store = MemoryJobStore::new();
    holds(&store).await;
    lapses(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_sqlite_keep_the_contract() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite:{}", dir.path().join("jobs.db").display());
    let store = SqlJobStore::open(Sql::builder(url).connect().await.unwrap()).await.unwrap();
    holds(&store).await;
    lapses(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_postgres_keep_the_contract() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let sql = Sql::builder(url).schema(unique("gwjobs")).connect().await.unwrap();
    // Two gateways opening the table at once.
    let (a, b) = tokio::join!(SqlJobStore::open(sql.clone()), SqlJobStore::open(sql));
    let (a, _b) = (a.unwrap(), b.unwrap());
    holds(&a).await;
    lapses(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_redis_keep_the_contract() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = Redis::builder(url).prefix(unique("gwjobs")).connect().await.unwrap();
    let store: Arc<dyn JobStore> = Arc::new(RedisJobStore::new(redis));
    holds(&*store).await;
    lapses(&*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_gateways_adopting_at_once_one_gets_each_job_on_postgres() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let sql = Sql::builder(url).schema(unique("gwadopt")).connect().await.unwrap();
    let store = Arc::new(SqlJobStore::open(sql).await.unwrap());
    adopted_once(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_gateways_adopting_at_once_one_gets_each_job_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = Redis::builder(url).prefix(unique("gwadopt")).connect().await.unwrap();
    adopted_once(Arc::new(RedisJobStore::new(redis))).await;
}

/// Twenty lapsed jobs, eight gateways adopting at once: each job adopted by one.
async fn adopted_once(store: Arc<dyn JobStore>) {
    let (ids, app) = (Ids::new(), unique("wxadopt"));
    for n in 0..20 {
        let (id, scope) = (ids.id(n), format!("{app}/t/{n}"));
        let job = NewJob::new(&id, &app, &scope, "{}", "ops", "gw-dead");
        assert_eq!(store.create(&job, Duration::from_millis(1)).await.unwrap(), Created::Created);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut tasks = Vec::new();
    for g in 0..8 {
        let (store, app) = (Arc::clone(&store), app.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let apps = [app.as_str()];
            while let Some(job) =
                store.adopt(&format!("gw-{g}"), Duration::from_secs(60), &apps).await.unwrap()
            {
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let expected: Vec<String> = (0..20).map(|n| ids.id(n)).collect();
    assert_eq!(all, expected, "each job adopted once");
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}_{}_{}", std::process::id(), hex::encode(b))
}

async fn holds(store: &dyn JobStore) {
    let (ids, app) = (Ids::new(), unique("wxapp"));
    let (scope, other) = (format!("{app}/t/1"), format!("{app}/t/2"));
    let lease = Duration::from_secs(30);
    let id10 = ids.id(10);
    let first = NewJob::new(&id10, &app, &scope, "{\"k\":1}", "ops", "gw-1");
    assert_eq!(store.create(&first, lease).await.unwrap(), Created::Created);
    // One live job per scope; another scope is free.
    let id11 = ids.id(11);
    let second = NewJob::new(&id11, &app, &scope, "{}", "ops", "gw-2");
    assert_eq!(store.create(&second, lease).await.unwrap(), Created::Busy(ids.id(10)));
    let id12 = ids.id(12);
    let third = NewJob::new(&id12, &app, &other, "{}", "ci", "gw-2");
    assert_eq!(store.create(&third, lease).await.unwrap(), Created::Created);

    let job = store.get(&app, &ids.id(10)).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.spec.as_str(), job.created_by.as_str()),
        (JobState::Running, "{\"k\":1}", "ops")
    );
    assert!(job.created_ms > 1_600_000_000_000, "{}", job.created_ms);
    // Another app's id is not found.
    assert!(store.get("wxother", &ids.id(10)).await.unwrap().is_none());

    // Only the holder renews; a stop asked is seen at the renewal.
    let progress = JobProgress::from_json(
        r#"{"sent":3,"delivered":2,"failed":1,"unknown":0,"dropped":0,"remaining":7}"#,
    )
    .unwrap();
    assert_eq!(store.renew(&ids.id(10), "gw-1", &progress, lease).await.unwrap(), Some(false));
    assert_eq!(store.renew(&ids.id(10), "gw-2", &progress, lease).await.unwrap(), None);
    let asked = store.cancel(&app, &ids.id(10)).await.unwrap().unwrap();
    assert!(asked.cancel_requested && asked.state == JobState::Running);
    assert_eq!(store.renew(&ids.id(10), "gw-1", &progress, lease).await.unwrap(), Some(true));
    assert_eq!(store.get(&app, &ids.id(10)).await.unwrap().unwrap().progress, progress);
    assert!(store.cancel(&app, &ids.id(255)).await.unwrap().is_none());

    // A held job is not adopted; one whose hold was given up is, once, counted resumed.
    let apps = [app.as_str()];
    assert!(store.adopt("gw-3", lease, &apps).await.unwrap().is_none());
    assert!(store.release(&ids.id(12), "gw-2", &progress).await.unwrap());
    // Not by a gateway without the app.
    assert!(store.adopt("gw-3", lease, &["wxother"]).await.unwrap().is_none());
    let adopted = store.adopt("gw-3", lease, &apps).await.unwrap().expect("the released job is adopted");
    assert_eq!(adopted.id, ids.id(12));
    assert_eq!((adopted.resumed, adopted.progress), (1, progress));
    assert!(store.adopt("gw-4", lease, &apps).await.unwrap().is_none());
    assert_eq!(store.renew(&ids.id(12), "gw-2", &progress, lease).await.unwrap(), None);
    assert_eq!(store.renew(&ids.id(12), "gw-3", &progress, lease).await.unwrap(), Some(false));

    // Ended by its holder only; then the scope is free again, and the job is kept.
    assert!(!store.finish(&ids.id(10), "gw-2", JobState::Cancelled, &progress, None).await.unwrap());
    assert!(store.finish(&ids.id(10), "gw-1", JobState::Cancelled, &progress, None).await.unwrap());
    assert!(!store.finish(&ids.id(10), "gw-1", JobState::Finished, &progress, None).await.unwrap());
    let ended = store.get(&app, &ids.id(10)).await.unwrap().unwrap();
    assert_eq!(ended.state, JobState::Cancelled);
    assert!(ended.ended_ms.is_some_and(|e| e >= ended.created_ms));
    assert_eq!(store.renew(&ids.id(10), "gw-1", &progress, lease).await.unwrap(), None);
    // A cancel of an ended job changes nothing.
    let again = store.cancel(&app, &ids.id(10)).await.unwrap().unwrap();
    assert_eq!(again.state, JobState::Cancelled);
    let id13 = ids.id(13);
    let fourth = NewJob::new(&id13, &app, &scope, "{}", "ops", "gw-1");
    assert_eq!(store.create(&fourth, lease).await.unwrap(), Created::Created);
    assert!(
        store
            .finish(&ids.id(12), "gw-3", JobState::Failed, &progress, Some("the ledger failed"))
            .await
            .unwrap()
    );
    let failed = store.get(&app, &ids.id(12)).await.unwrap().unwrap();
    assert_eq!((failed.state, failed.detail.as_deref()), (JobState::Failed, Some("the ledger failed")));

    // Newest first, a page at a time.
    let listed = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(listed(store.list(&app, None, 10).await.unwrap()), [ids.id(13), ids.id(12), ids.id(10)]);
    assert_eq!(listed(store.list(&app, None, 2).await.unwrap()), [ids.id(13), ids.id(12)]);
    assert_eq!(listed(store.list(&app, Some(&ids.id(12)), 2).await.unwrap()), [ids.id(10)]);
    assert!(store.list("wxother", None, 10).await.unwrap().is_empty());

    // Ended jobs past their retention are deleted; the running one is kept.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.prune(Duration::from_secs(3600)).await.unwrap(), 0, "ended just now");
    let mut pruned = 0;
    loop {
        let n = store.prune(Duration::from_millis(1)).await.unwrap();
        if n == 0 {
            break;
        }
        pruned += n;
    }
    assert!(pruned >= 2, "{pruned}");
    assert_eq!(listed(store.list(&app, None, 10).await.unwrap()), [ids.id(13)]);
    assert!(store.get(&app, &ids.id(10)).await.unwrap().is_none());
}

/// A hold that is not renewed ends with its lease: another gateway adopts the job.
async fn lapses(store: &dyn JobStore) {
    let (ids, app) = (Ids::new(), unique("wxlapse"));
    let scope = format!("{app}/t/1");
    let id26 = ids.id(26);
    let job = NewJob::new(&id26, &app, &scope, "{}", "ops", "gw-dead");
    assert_eq!(store.create(&job, Duration::from_millis(50)).await.unwrap(), Created::Created);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let mut found = false;
    while let Some(j) = store.adopt("gw-alive", Duration::from_secs(30), &[app.as_str()]).await.unwrap() {
        found |= j.appid == app;
    }
    assert!(found, "the lapsed job was adopted");
    assert_eq!(
        store.renew(&ids.id(26), "gw-dead", &JobProgress::default(), Duration::from_secs(1)).await.unwrap(),
        None
    );
}

/// The webhook outbox's contract on `store`: numbered in order per app, an event kept once
/// however often it is appended, read oldest first, removed once taken, its delivery held by one
/// owner at a time (and given up by it).
async fn outbox_keeps_order(store: Arc<dyn OutboxStore>) {
    let (a, b) = (unique("wxa"), unique("wxb"));
    let first = store.append(&a, "k1", "{\"n\":1}").await.unwrap();
    let second = store.append(&a, "k2", "{\"n\":2}").await.unwrap();
    let third = store.append(&a, "k3", "{\"n\":3}").await.unwrap();
    assert!(first < second && second < third, "{first} {second} {third}");
    // The same event again (WeChat's retry after an answer lost): kept once, its number.
    assert_eq!(store.append(&a, "k2", "{\"n\":2}").await.unwrap(), second);
    let other = store.append(&b, "k1", "{\"b\":1}").await.unwrap();
    assert!(other >= 1);
    assert_eq!(store.len(&a).await.unwrap(), 3);
    let head = store.peek(&a, 2).await.unwrap();
    assert_eq!(head, [OutboxItem::new(first, "k1", "{\"n\":1}"), OutboxItem::new(second, "k2", "{\"n\":2}")]);
    assert!(store.remove(&a, first).await.unwrap());
    assert!(!store.remove(&a, first).await.unwrap(), "removed once");
    // Delivered, then appended again (a copy read again): not kept twice.
    assert_eq!(store.append(&a, "k1", "{\"n\":1}").await.unwrap(), first);
    assert_eq!(store.len(&a).await.unwrap(), 2);
    assert_eq!(store.peek(&a, 10).await.unwrap().first().map(|i| i.seq), Some(second));
    assert_eq!(store.peek(&b, 10).await.unwrap(), [OutboxItem::new(other, "k1", "{\"b\":1}")]);
    assert!(store.peek(&unique("wxc"), 10).await.unwrap().is_empty());

    // Appends at once (four gateways): every number visible in order, none skipped, none twice.
    let c = unique("wxc");
    let mut tasks = Vec::new();
    for g in 0..4 {
        let (store, c) = (Arc::clone(&store), c.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                store.append(&c, &format!("g{g}e{i}"), "{}").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seqs: Vec<u64> = store.peek(&c, 100).await.unwrap().iter().map(|i| i.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());

    // One holder at a time; its own renewal holds; another takes it once the lease ended, or
    // once its holder gave it up.
    assert!(store.lease(&a, "gw-1", Duration::from_millis(200)).await.unwrap());
    assert!(!store.lease(&a, "gw-2", Duration::from_secs(30)).await.unwrap());
    assert!(store.lease(&a, "gw-1", Duration::from_millis(200)).await.unwrap());
    assert!(store.lease(&b, "gw-2", Duration::from_secs(30)).await.unwrap(), "per app");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.lease(&a, "gw-2", Duration::from_secs(30)).await.unwrap());
    assert!(!store.lease(&a, "gw-1", Duration::from_secs(30)).await.unwrap());
    store.release(&a, "gw-1").await.unwrap();
    assert!(!store.lease(&a, "gw-3", Duration::from_secs(30)).await.unwrap(), "released by its holder only");
    store.release(&a, "gw-2").await.unwrap();
    assert!(store.lease(&a, "gw-3", Duration::from_secs(30)).await.unwrap());
}

#[tokio::test]
async fn the_outbox_in_memory_keeps_order() {
    outbox_keeps_order(Arc::new(MemoryOutbox::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_on_sqlite_keeps_order() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite:{}", dir.path().join("outbox.db").display());
    outbox_keeps_order(Arc::new(SqlOutbox::open(Sql::builder(url).connect().await.unwrap()).await.unwrap()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_on_postgres_keeps_order() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let sql = Sql::builder(url).schema(unique("gwoutbox")).connect().await.unwrap();
    let (a, b) = tokio::join!(SqlOutbox::open(sql.clone()), SqlOutbox::open(sql));
    let (a, _b) = (a.unwrap(), b.unwrap());
    outbox_keeps_order(Arc::new(a)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_on_redis_keeps_order() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = Redis::builder(url).prefix(unique("gwoutbox")).connect().await.unwrap();
    outbox_keeps_order(Arc::new(RedisOutbox::new(redis))).await;
}
