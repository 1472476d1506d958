//! `subscribe-sql` on SQLite (no server needed): a fresh database file per test.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;
// The pushed-event chain needs the `events` feature (`SqlNotificationResults`, `Client::apply_event`).
#[cfg(feature = "events")]
mod pushed;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use subscribe_sql::{Backend, Sql};

fn fresh_path() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("subscribe-sql");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{}.db", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

async fn open(path: &std::path::Path) -> Sql {
    let sql = Sql::builder(format!("sqlite:{}", path.display())).connect().await.unwrap();
    assert_eq!(sql.backend(), Backend::Sqlite);
    sql
}

async fn sqlite() -> Sql {
    open(&fresh_path()).await
}

backend_tests!(sqlite().await);

#[tokio::test]
async fn grants_survive_a_restart_in_the_file() {
    let path = fresh_path();
    common::grants_survive_a_new_connection(open(&path).await, open(&path).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_answer_is_refused_by_another_instance_and_after_a_restart() {
    let path = fresh_path();
    common::a_replay_at_another_instance_or_after_a_restart_is_refused(open(&path).await, open(&path).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_state_marks_are_timed_by_the_database_clock_whatever_the_callers_clock() {
    let path = fresh_path();
    let sql = open(&path).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    common::marks_are_timed_by_the_database_clock_whatever_the_callers_clock(sql, |state| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar("SELECT COUNT(*) FROM wxsub_used_states WHERE state = $1")
                .bind(state)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_read_by_one_instance_is_a_replay_at_another() {
    let path = fresh_path();
    common::a_push_read_by_one_instance_is_a_replay_at_another(open(&path).await, open(&path).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_pushes_are_deleted_at_most_once_a_minute() {
    let path = fresh_path();
    let (first, second) = (open(&path).await, open(&path).await);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    common::ended_pushes_are_deleted_at_most_once_a_minute(first, second, |key| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar("SELECT COUNT(*) FROM wxsub_push_replays WHERE key = $1")
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    })
    .await;
}

/// The purge of ended pushes deletes them through the index on their end, never the whole
/// table.
#[tokio::test]
async fn the_purge_of_ended_pushes_reads_the_index_not_the_table() {
    let path = fresh_path();
    drop(open(&path).await);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as("EXPLAIN QUERY PLAN DELETE FROM wxsub_push_replays WHERE expires_at < 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    assert!(
        details.iter().any(|d| d.starts_with("SEARCH") && d.contains("wxsub_push_replays_expires")),
        "{details:?}"
    );
}

/// The sweep of ended marks reads them through the index on their end, never the whole table.
#[tokio::test]
async fn the_sweep_of_ended_marks_reads_the_index_not_the_table() {
    let path = fresh_path();
    drop(open(&path).await);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT state FROM wxsub_used_states WHERE until_ms <= 1 ORDER BY until_ms LIMIT 256",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    assert!(
        details.iter().any(|d| d.starts_with("SEARCH") && d.contains("wxsub_used_states_until")),
        "{details:?}"
    );
    assert!(!details.iter().any(|d| d.starts_with("SCAN wxsub_used_states")), "{details:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reservations_are_counted_from_lease_buckets() {
    let path = fresh_path();
    let sql = open(&path).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    common::live_reservations_are_counted_from_lease_buckets(sql, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar("SELECT COUNT(*) FROM wxsub_grant_leases").fetch_one(&pool).await.unwrap()
        }
    })
    .await;
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    common::secrets_stay_out_of_debug_and_errors(sqlite().await, "postgres://u:s3cr3t@127.0.0.1:1/db").await;
}

#[tokio::test]
async fn a_schema_is_refused_for_sqlite_and_a_bad_url_names_the_rule() {
    let e = Sql::builder("sqlite::memory:").schema("x").lazy().unwrap_err();
    assert!(e.is_configuration(), "{e}");
    let e = Sql::builder("redis://127.0.0.1").lazy().unwrap_err();
    assert!(e.is_configuration());
}

#[tokio::test]
async fn an_unwritable_file_is_a_typed_error() {
    let e = Sql::builder("sqlite:/proc/no/such/dir/grants.db").connect().await.unwrap_err();
    assert!(e.is_connection() || e.is_migration(), "{e:?}");
    assert!(!e.to_string().contains("/proc"), "the path is in the source, not the message: {e}");
}

/// The file holds the access token and the grants: the crate creates it `0600`, and the
/// directories it creates for it `0700`; a directory that was there is left as it was, and a
/// file that was there with a wider mode is tightened to its owner's bits (its WAL and
/// shared-memory files too).
#[cfg(unix)]
#[tokio::test]
async fn the_file_and_the_directories_created_for_it_are_private_and_a_wider_file_is_tightened() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |p: &std::path::Path| format!("{:o}", std::fs::metadata(p).unwrap().permissions().mode() & 0o777);
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let base = fresh_path().with_extension("dir");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    set(&base, 0o755);
    let path = base.join("new").join("deeper").join("grants.db");
    let sql = open(&path).await;
    // A write, so the WAL and shared-memory files exist too.
    let store = subscribe_sql::SqlTokenStore::new(sql.clone());
    let app = common::scope("mode").appid;
    let token = subscribe_client::CachedToken::new(
        subscribe_types::AccessToken::new("ACCESS_TOKEN_IN_A_PRIVATE_FILE").unwrap(),
        common::now() + std::time::Duration::from_secs(7200),
    );
    subscribe_client::TokenStore::save(&store, &app, &token).await.unwrap();
    assert_eq!(mode(&base.join("new")), "700", "a directory the crate created");
    assert_eq!(mode(&base.join("new").join("deeper")), "700", "each directory the crate created");
    assert_eq!(mode(&base), "755", "a directory that was there is left as it was");
    for file in ["grants.db", "grants.db-wal", "grants.db-shm"] {
        assert_eq!(mode(&path.with_file_name(file)), "600", "{file}");
    }

    // A file made elsewhere (an older version, a copy) with the default 0644.
    let old = base.join("old.db");
    std::fs::write(&old, b"").unwrap();
    set(&old, 0o664);
    drop(open(&old).await);
    assert_eq!(mode(&old), "600", "tightened to the owner's bits");
}

/// A stored value this crate never writes (a negative attempt count written by hand, a bad openid)
/// is a corrupt row: `Unusable` (kind `Configuration`, someone must act), never `Backend`
/// (`Retryable`), so a dispatcher stops on it instead of retrying it for ever.
#[tokio::test]
async fn a_corrupt_row_is_unusable_not_retryable() {
    use subscribe_client::{ErrorKind, GrantLedger as _, LedgerError};
    let path = fresh_path();
    let ledger = subscribe_sql::SqlGrantLedger::new(open(&path).await);
    let scope = common::scope("corrupt");
    let (good, bad) = (scope.key(common::user(1)), scope.key(common::user(2)));
    ledger.record(&good, common::now()).await.unwrap();
    ledger.record(&bad, common::now()).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    sqlx::query("UPDATE wxsub_grants SET attempts = -5 WHERE openid = $1")
        .bind(bad.openid.as_str())
        .execute(&pool)
        .await
        .unwrap();
    let e = ledger.get(&bad).await.unwrap_err();
    assert!(matches!(e, LedgerError::Unusable(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Configuration);
    let source = std::error::Error::source(&e).unwrap().downcast_ref::<subscribe_sql::SqlError>().unwrap();
    assert!(source.is_corrupt(), "{source}");
    assert!(ledger.get(&good).await.unwrap().is_some(), "the other rows still read");
    sqlx::query("UPDATE wxsub_grants SET openid = 'not an openid!' WHERE openid = $1")
        .bind(good.openid.as_str())
        .execute(&pool)
        .await
        .unwrap();
    let e = ledger.pending_page(&scope, None, 10, common::now()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration, "{e:?}");
}

/// SQLite ends a transaction by itself on some errors (a full disk: `SQLITE_FULL`), behind
/// sqlx's back; sqlx's own `ROLLBACK` then fails and its count of open transactions never comes
/// down, so every later `BEGIN` on that connection failed ("`begin_with` at non-zero transaction
/// depth") until the process restarted. The pool now closes such a connection and opens
/// another: the next operation works.
#[tokio::test]
async fn a_connection_left_inside_a_transaction_is_replaced_not_reused() {
    use subscribe_client::GrantLedger as _;
    let sql = sqlite().await;
    let ledger = subscribe_sql::SqlGrantLedger::new(sql.clone());
    let scope = common::scope("stuck");
    ledger.record(&scope.key(common::user(1)), common::now()).await.unwrap();
    {
        let pool = sql.sqlite_pool().unwrap();
        let mut tx = pool.begin().await.unwrap();
        // SQLite ends the transaction, as it does on a full disk; sqlx still counts it open.
        sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
        drop(tx); // sqlx's ROLLBACK now fails: "no transaction is active"
    }
    for i in 2..5 {
        ledger
            .record(&scope.key(common::user(i)), common::now())
            .await
            .unwrap_or_else(|e| panic!("the ledger is usable again (grant {i}): {e:?}"));
    }
    assert_eq!(ledger.counts(&scope, common::now()).await.unwrap().pending, 4);
}
