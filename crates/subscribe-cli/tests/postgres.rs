//! `wxsub grants dispatch` processes on the PostgreSQL at `POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`): a killed dispatcher and a fleet of four. These
//! tests fail, never skip, without PostgreSQL: `cargo xtask ci` checks for it first and
//! reports them as not run.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

#[path = "common/dispatchers.rs"]
mod dispatchers;

use subscribe_sql::{Sql, SqlGrantLedger};

#[allow(clippy::disallowed_methods)] // real processes, real time
fn common_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// A fresh schema, migrated, and the URL that points the processes at it.
async fn database(label: &str) -> (String, SqlGrantLedger) {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let nanos = common_now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let schema = format!("cli_{label}_{}_{nanos}", std::process::id());
    let sql =
        Sql::builder(url.clone()).schema(schema.clone()).connect().await.unwrap_or_else(|e| {
            panic!("PostgreSQL at POSTGRES_URL (or 127.0.0.1:5432/test) is required: {e}")
        });
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}options[search_path]={schema}"), SqlGrantLedger::new(sql))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_run_and_restarted_sends_each_grant_once_or_sets_it_aside() {
    let (url, ledger) = database("crash").await;
    dispatchers::killed_and_restarted(&url, &ledger, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_dispatcher_processes_on_one_database_deliver_each_grant_once() {
    let (url, ledger) = database("fleet").await;
    dispatchers::fleet_of_four(&url, &ledger, 10_000).await;
}
