//! The idempotency stores' contract, the same for each: in memory, SQLite, PostgreSQL and Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use subscribe_gateway::idempotency::{
    Claim, IdempotencyStore, MemoryIdempotencyStore, NewClaim, Record, RecordState, RedisIdempotencyStore,
    SqlIdempotencyStore, StoredAnswer,
};
use subscribe_redis::Redis;
use subscribe_sql::Sql;
use tempfile::TempDir;

const LONG: Duration = Duration::from_secs(60);
const FP: &str = "f00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeed";

/// A record id no other test (or run) uses: 64 hexadecimal characters.
fn id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{:032x}{:032x}", u128::from(std::process::id()), N.fetch_add(1, Ordering::Relaxed))
}

fn done(body: &str) -> StoredAnswer {
    StoredAnswer::new(200, format!(r#"{{"outcome":"{body}"}}"#))
}

async fn claim(
    store: &dyn IdempotencyStore,
    id: &str,
    owner: &str,
    lease: Duration,
    keep: Duration,
) -> Claim {
    store.claim(&NewClaim::new(id, FP, owner, lease, keep)).await.unwrap()
}

fn found(state: RecordState) -> Claim {
    Claim::Found(Record::new(FP, state))
}

/// Every step of the contract on `store`.
async fn contract(store: Arc<dyn IdempotencyStore>) {
    let st = &*store;
    // A claim, then the record: in flight, then answered by its owner only.
    let answered = id();
    assert_eq!(claim(st, &answered, "owner-1", LONG, LONG).await, Claim::Claimed);
    assert_eq!(
        claim(st, &answered, "owner-2", LONG, LONG).await,
        found(RecordState::InFlight { lease_ended: false })
    );
    assert!(!st.complete(&answered, "owner-2", &done("stolen")).await.unwrap());
    assert!(st.complete(&answered, "owner-1", &done("delivered")).await.unwrap());
    assert!(!st.complete(&answered, "owner-1", &done("twice")).await.unwrap(), "answered once");
    assert_eq!(
        claim(st, &answered, "owner-3", LONG, LONG).await,
        found(RecordState::Done(done("delivered")))
    );
    assert!(!st.release(&answered, "owner-1").await.unwrap(), "an answered record is never released");

    // A release by the owner frees the id.
    let released = id();
    assert_eq!(claim(st, &released, "owner-1", LONG, LONG).await, Claim::Claimed);
    assert!(!st.release(&released, "owner-2").await.unwrap());
    assert!(st.release(&released, "owner-1").await.unwrap());
    assert_eq!(claim(st, &released, "owner-2", LONG, LONG).await, Claim::Claimed);

    // A lease that ended: taken over once, with the fingerprint; the late owner loses.
    let orphaned = id();
    assert_eq!(claim(st, &orphaned, "owner-1", Duration::from_millis(1), LONG).await, Claim::Claimed);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        claim(st, &orphaned, "owner-2", LONG, LONG).await,
        found(RecordState::InFlight { lease_ended: true })
    );
    let other_fp = st.take_over(&orphaned, &FP.replace('f', "e"), &done("unknown")).await.unwrap();
    assert_eq!(
        other_fp,
        Some(Record::new(FP, RecordState::InFlight { lease_ended: true })),
        "another request's"
    );
    let taken = st.take_over(&orphaned, FP, &done("unknown")).await.unwrap();
    assert_eq!(taken, Some(Record::new(FP, RecordState::Done(done("unknown")))));
    let again = st.take_over(&orphaned, FP, &done("other")).await.unwrap();
    assert_eq!(again, Some(Record::new(FP, RecordState::Done(done("unknown")))), "the first answer stays");
    assert!(!st.complete(&orphaned, "owner-1", &done("delivered")).await.unwrap());
    // A live lease is not taken over.
    let live_lease = id();
    assert_eq!(claim(st, &live_lease, "owner-1", LONG, LONG).await, Claim::Claimed);
    let live = st.take_over(&live_lease, FP, &done("unknown")).await.unwrap();
    assert_eq!(live, Some(Record::new(FP, RecordState::InFlight { lease_ended: false })));
    assert_eq!(st.take_over(&id(), FP, &done("unknown")).await.unwrap(), None, "no record");

    // Past its retention a record is gone: claimed anew, and pruned.
    let expired = id();
    assert_eq!(
        claim(st, &expired, "owner-1", Duration::from_millis(1), Duration::from_millis(20)).await,
        Claim::Claimed
    );
    assert!(st.complete(&expired, "owner-1", &done("delivered")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        claim(st, &expired, "owner-2", LONG, LONG).await,
        Claim::Claimed,
        "an expired record is replaced"
    );
    let pruned = id();
    assert_eq!(
        claim(st, &pruned, "owner-1", Duration::from_millis(1), Duration::from_millis(20)).await,
        Claim::Claimed
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    st.prune().await.unwrap();
    assert_eq!(st.take_over(&pruned, FP, &done("unknown")).await.unwrap(), None, "pruned (or expired)");

    // Of twenty concurrent claims, one wins.
    let contested = id();
    let mut claims = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (store, contested) = (Arc::clone(&store), contested.clone());
        claims.spawn(async move { claim(&*store, &contested, &format!("owner-{i}"), LONG, LONG).await });
    }
    let mut won = 0;
    while let Some(c) = claims.join_next().await {
        if c.unwrap() == Claim::Claimed {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryIdempotencyStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_keeps_the_contract_and_prunes() {
    let dir = TempDir::new().unwrap();
    let sql = Sql::builder(format!("sqlite:{}", dir.path().join("gw.db").display())).connect().await.unwrap();
    let store = SqlIdempotencyStore::open(sql.clone()).await.unwrap();
    contract(Arc::new(store.clone())).await;
    let expired = id();
    assert_eq!(
        claim(&store, &expired, "o", Duration::from_millis(1), Duration::from_millis(10)).await,
        Claim::Claimed
    );
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(store.prune().await.unwrap(), 1, "the one expired record left");
    assert_eq!(store.prune().await.unwrap(), 0);
    // Opening again (a restart) keeps the table and its records.
    let again = SqlIdempotencyStore::open(sql).await.unwrap();
    let kept = id();
    assert_eq!(claim(&store, &kept, "o", LONG, LONG).await, Claim::Claimed);
    assert_eq!(
        claim(&again, &kept, "p", LONG, LONG).await,
        found(RecordState::InFlight { lease_ended: false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_contract() {
    static N: AtomicU64 = AtomicU64::new(0);
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("gw_store_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let connect = || async {
        Sql::builder(&url).schema(&schema).connect().await.expect("PostgreSQL at POSTGRES_URL is required")
    };
    let (one, two) = (connect().await, connect().await);
    // Two pools on one schema, opened at once, as gateways starting together do.
    let (a, b) = tokio::join!(SqlIdempotencyStore::open(one), SqlIdempotencyStore::open(two));
    let (a, b) = (a.unwrap(), b.unwrap());
    contract(Arc::new(a.clone())).await;
    let shared = id();
    assert_eq!(claim(&a, &shared, "o", LONG, LONG).await, Claim::Claimed);
    assert_eq!(
        claim(&b, &shared, "p", LONG, LONG).await,
        found(RecordState::InFlight { lease_ended: false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_contract() {
    static N: AtomicU64 = AtomicU64::new(0);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("gw-store-test:{}:{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let redis = Redis::builder(url).prefix(prefix).connect().await.expect("Redis at REDIS_URL is required");
    contract(Arc::new(RedisIdempotencyStore::new(redis))).await;
}

/// Stops the Redis server a test started.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis that evicts keys when its memory is full would lose idempotency records (a retry
/// would then send again): the gateway refuses it at start, naming the setting; the same
/// server with `noeviction` is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_evicts_keys_is_refused_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port_arg = port.to_string();
    let server = std::process::Command::new("redis-server")
        .args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--maxmemory-policy", "allkeys-lru"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (the gateway's Redis tests need it)");
    let _server = Server(server);
    let ready = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), ready).await.expect("the test's Redis starts");
    let url = format!("redis://127.0.0.1:{port}");
    let dir = TempDir::new().unwrap();
    let text = crate::config_text(dir.path(), "http://127.0.0.1:9").replacen(
        "path = \"tokens.db\"",
        "kind = \"redis\"\nurl_env = \"EVICTING_REDIS_URL\"",
        1,
    );
    let env = |name: &str| (name == "EVICTING_REDIS_URL").then(|| url.clone().into());
    let config = subscribe_gateway::Config::parse(&text, dir.path(), &env).unwrap();

    let e = subscribe_gateway::Gateway::start(&config).await.expect_err("an evicting Redis is refused");
    let mut said = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        said = format!("{said}: {c}");
        cause = c.source();
    }
    assert!(said.contains("maxmemory-policy is allkeys-lru"), "{said}");
    assert!(said.contains("set maxmemory-policy noeviction"), "{said}");

    let set = std::process::Command::new("redis-cli")
        .args(["-p", &port_arg, "CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    subscribe_gateway::Gateway::start(&config).await.expect("a Redis that keeps every key is taken");
}
