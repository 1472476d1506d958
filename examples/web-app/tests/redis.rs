//! The web app on the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`), with an AppID
//! of its own so runs sharing the server never meet. This test fails, never skips, without
//! Redis: `cargo xtask ci` checks for it first and reports it as not run.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use subscribe_sandbox::SandboxConfig;
use subscribe_types::AppId;

#[allow(clippy::disallowed_methods)] // a name unique on a shared server
fn unique() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    (t.as_secs() << 20) ^ u64::from(t.subsec_nanos()) ^ (u64::from(std::process::id()) << 40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_redis_share_grants_the_token_and_used_states() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut sandbox = SandboxConfig::demo();
    sandbox.apps[0].appid = AppId::new(format!("wx{:016x}", unique())).unwrap();
    common::two_instances_and_a_restart_share_one_backend(&url, sandbox).await;
}
