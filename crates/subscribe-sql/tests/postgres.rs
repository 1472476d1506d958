//! `subscribe-sql` on the PostgreSQL at `POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), a fresh schema per test. These tests fail, never
//! skip, when PostgreSQL is absent: `cargo xtask ci` checks for it first and reports them as not
//! run.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod cluster;
mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use subscribe_sql::{Backend, Sql};

fn url() -> String {
    std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn fresh_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = common::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

async fn open(schema: &str) -> Sql {
    let sql =
        Sql::builder(url()).schema(schema).connect().await.unwrap_or_else(|e| {
            panic!("PostgreSQL at POSTGRES_URL (or 127.0.0.1:5432/test) is required: {e}")
        });
    assert_eq!(sql.backend(), Backend::Postgres);
    sql
}

async fn postgres() -> Sql {
    open(&fresh_schema()).await
}

backend_tests!(postgres().await);

/// Instances started together on a new schema (a fleet's first rollout) all open it: the
/// schema's creation races, and the loser of the race must not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_instances_opening_one_new_schema_at_once_all_open_it() {
    for _ in 0..5 {
        let schema = fresh_schema();
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (url, schema) = (url(), schema.clone());
            opens.spawn(async move { Sql::builder(url).schema(schema).connect().await.map(drop) });
        }
        for opened in opens.join_all().await {
            opened.unwrap();
        }
    }
}

#[tokio::test]
async fn grants_survive_a_restart_in_the_schema() {
    let schema = fresh_schema();
    common::grants_survive_a_new_connection(open(&schema).await, open(&schema).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_answer_is_refused_by_another_instance_and_after_a_restart() {
    let schema = fresh_schema();
    common::a_replay_at_another_instance_or_after_a_restart_is_refused(
        open(&schema).await,
        open(&schema).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_state_marks_are_timed_by_the_database_clock_whatever_the_callers_clock() {
    let schema = fresh_schema();
    let sql = open(&schema).await;
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    let count = format!("SELECT COUNT(*) FROM {schema}.wxsub_used_states WHERE state = $1");
    common::marks_are_timed_by_the_database_clock_whatever_the_callers_clock(sql, |state| {
        let (pool, count) = (pool.clone(), count.clone());
        async move { sqlx::query_scalar(&count).bind(state).fetch_one(&pool).await.unwrap() }
    })
    .await;
}

/// The sweep of ended marks can read them through the index on their end (PostgreSQL picks a
/// sequential scan for a table this small, so the test turns that off to see the index used).
#[tokio::test]
async fn the_sweep_of_ended_marks_can_read_the_index_not_the_table() {
    let schema = fresh_schema();
    drop(open(&schema).await);
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN SELECT state FROM {schema}.wxsub_used_states WHERE until_ms <= 1 ORDER BY until_ms LIMIT 256 \
         FOR UPDATE SKIP LOCKED"
    ))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(plan.iter().any(|l| l.contains("Index") && l.contains("wxsub_used_states_until")), "{plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_read_by_one_instance_is_a_replay_at_another() {
    let schema = fresh_schema();
    common::a_push_read_by_one_instance_is_a_replay_at_another(open(&schema).await, open(&schema).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_pushes_are_deleted_at_most_once_a_minute() {
    let schema = fresh_schema();
    let (first, second) = (open(&schema).await, open(&schema).await);
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    let count = format!("SELECT COUNT(*) FROM {schema}.wxsub_push_replays WHERE key = $1");
    common::ended_pushes_are_deleted_at_most_once_a_minute(first, second, |key| {
        let (pool, count) = (pool.clone(), count.clone());
        async move { sqlx::query_scalar(&count).bind(key).fetch_one(&pool).await.unwrap() }
    })
    .await;
}

/// The purge of ended pushes can read them through the index on their end (with sequential
/// scans turned off, as PostgreSQL scans a table this small).
#[tokio::test]
async fn the_purge_of_ended_pushes_can_read_the_index_not_the_table() {
    let schema = fresh_schema();
    drop(open(&schema).await);
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar(&format!("EXPLAIN DELETE FROM {schema}.wxsub_push_replays WHERE expires_at < 1"))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert!(plan.iter().any(|l| l.contains("Index") && l.contains("wxsub_push_replays_expires")), "{plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reservations_are_counted_from_lease_buckets() {
    let schema = fresh_schema();
    let sql = open(&schema).await;
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    let count = format!("SELECT COUNT(*) FROM {schema}.wxsub_grant_leases");
    common::live_reservations_are_counted_from_lease_buckets(sql, || {
        let (pool, count) = (pool.clone(), count.clone());
        async move { sqlx::query_scalar(&count).fetch_one(&pool).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    common::secrets_stay_out_of_debug_and_errors(postgres().await, "postgres://u:s3cr3t@127.0.0.1:5432/test")
        .await;
}

#[tokio::test]
async fn an_absent_server_fails_fast_and_typed() {
    // Nothing listens on port 1.
    common::an_absent_database_fails_fast_and_typed("postgres://u:s3cr3t@127.0.0.1:1/test").await;
}

#[tokio::test]
async fn a_wrong_password_is_a_typed_error_without_the_password() {
    const RIGHT: &str = "r1ght-pa55phrase";
    const WRONG: &str = "s3cr3t-but-wrong";
    let cluster = cluster::PasswordCluster::start(RIGHT);
    // The role and the rule that checks its password are real: the right password is let in.
    let sql = Sql::builder(cluster.url(RIGHT)).connect().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(sql.backend(), Backend::Postgres);
    let e = Sql::builder(cluster.url(WRONG)).connect().await.unwrap_err();
    assert!(e.is_authentication(), "{e:?}");
    assert!(!e.is_connection() && !e.is_migration() && !e.is_timeout(), "one kind only: {e:?}");
    // PostgreSQL's own word for it: invalid_password, not a missing role (28000).
    let code = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<sqlx::Error>())
        .and_then(sqlx::Error::as_database_error)
        .and_then(|d| d.code().map(std::borrow::Cow::into_owned));
    assert_eq!(code.as_deref(), Some("28P01"), "{e:?}");
    let shown = shown_with_sources(&e);
    assert!(!shown.contains(WRONG) && !shown.contains(RIGHT), "{shown}");
}

#[tokio::test]
async fn an_unknown_role_is_an_authentication_error_without_the_password() {
    let server = url();
    let host = server.split_once("://").map_or(server.as_str(), |(_, rest)| rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let e = Sql::builder(format!("postgres://nosuchuser:s3cr3t@{host}")).connect().await.unwrap_err();
    assert!(e.is_authentication(), "{e:?}");
    let shown = shown_with_sources(&e);
    assert!(!shown.contains("s3cr3t"), "{shown}");
    // As a ledger's error, a refused login is the configuration's to fix, not a retry's.
    let ledger_error = subscribe_client::LedgerError::from(e);
    assert_eq!(ledger_error.kind(), subscribe_client::ErrorKind::Configuration, "{ledger_error:?}");
    assert!(!shown_with_sources(&ledger_error).contains("s3cr3t"));
}

/// The error as shown, debugged, and each of its sources.
fn shown_with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    use std::fmt::Write as _;
    let mut shown = format!("{e} {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(shown, " {s} {s:?}");
        source = s.source();
    }
    shown
}

#[tokio::test]
async fn a_schema_name_is_checked_before_it_reaches_sql() {
    for bad in ["", "Public", "a;drop table x", "1abc", &"a".repeat(64)] {
        let e = Sql::builder(url()).schema(bad).lazy().unwrap_err();
        assert!(e.is_configuration(), "{bad}: {e}");
    }
}
