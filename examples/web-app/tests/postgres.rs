//! The web app on the PostgreSQL at `POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a schema of its own. This test fails, never
//! skips, without PostgreSQL: `cargo xtask ci` checks for it first and reports it as not run.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use subscribe_sandbox::SandboxConfig;

#[allow(clippy::disallowed_methods)] // a name unique on a shared server
fn unique() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_postgresql_share_grants_and_the_token_and_a_restart_loses_nothing() {
    let url =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("webapp_{}_{}", std::process::id(), unique());
    // The schema, created and migrated; the app reaches it through the URL's search_path, as a
    // deployment with a schema of its own would.
    subscribe_sql::Sql::builder(url.clone())
        .schema(schema.clone())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at POSTGRES_URL (or 127.0.0.1:5432/test) is required: {e}"));
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options[search_path]={schema}");
    common::two_instances_and_a_restart_share_one_backend(&url, SandboxConfig::demo()).await;
}
