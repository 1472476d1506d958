//! Three backends written the way an integrator writes them, against the SDK's public API only:
//!
//! - [`TracingTransport`]: wraps the default transport, adds a header to every request and
//!   counts requests and failures (for metrics);
//! - [`FileTokenStore`]: keeps access tokens in a JSON file, so a restart does not cost a token
//!   request;
//! - [`FileGrantLedger`]: keeps grants in a JSON file, so a restart loses no confirmation.
//!
//! The files serve **one process**: every change rewrites the file (write to a temporary file,
//! then rename, so a crash leaves the old or the new file, never half of one), under a lock held
//! by this process. For a fleet, keep tokens in a store with a refresh lease (`subscribe-redis`,
//! checked with `shared_token_store_contract`) and grants in a database.
//!
//! `tests/backends.rs` runs the SDK's contract suites against all three and dispatches to 100
//! users of the sandbox through them; `cargo run -p custom-backends` does the dispatch and
//! prints what happened.

mod ledger;
mod token_store;
mod transport;

pub use ledger::FileGrantLedger;
pub use token_store::FileTokenStore;
pub use transport::{Counters, TracingTransport};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use subscribe_client::{Client, Clock, Dispatcher, GrantKey, GrantLedger, SystemClock};
use subscribe_sandbox::{DEMO_SECRET, SandboxConfig, SandboxHandle};
use subscribe_types::{AppSecret, OneTimeMessage, OpenId, Scene};

/// What [`dispatch_to_sandbox`] saw.
#[derive(Debug)]
pub struct DemoReport {
    /// Grants the dispatcher delivered.
    pub delivered: u64,
    /// Messages the sandbox's users received.
    pub received: usize,
    /// Requests [`TracingTransport`] handed on (token requests and sends).
    pub requests: u64,
    /// Requests in the sandbox's log that carried the transport's header.
    pub requests_with_header: usize,
    /// Grants the ledger counts as delivered afterwards.
    pub ledger_delivered: u64,
}

/// Starts a sandbox with `users` users who each confirmed once, records their grants in a
/// [`FileGrantLedger`] in `dir`, and dispatches one message to each through a client on a
/// [`TracingTransport`] and a [`FileTokenStore`] in `dir`.
///
/// # Errors
/// When the sandbox cannot start, a file cannot be written, or the dispatch fails.
pub async fn dispatch_to_sandbox(dir: &Path, users: usize) -> Result<DemoReport, Box<dyn std::error::Error>> {
    let sandbox = SandboxHandle::start(SandboxConfig::demo().with_generated_users(users)).await?;
    let (appid, template, scene) =
        (SandboxConfig::demo_appid(), SandboxConfig::demo_template(), Scene::new(42)?);

    let transport =
        TracingTransport::new(subscribe_client::transport::ReqwestTransport::new()?, "custom-backends")?;
    let counters = transport.counters();
    let client = Client::builder(appid.clone(), AppSecret::new(DEMO_SECRET)?)
        .api_base(sandbox.base_url())
        .mp_base(sandbox.base_url())
        .transport(transport)
        .token_store(FileTokenStore::new(dir.join("tokens.json")))
        .build()?;
    let ledger = Arc::new(FileGrantLedger::open(dir.join("grants.json"))?);

    // Each user confirmed once: at WeChat (the sandbox) and in our ledger, as the callback
    // handler's `Client::complete` then `Completion::record` would have recorded it.
    for i in 0..users {
        let openid = OpenId::new(format!("oUser{i:010}"))?;
        sandbox.state().add_grant(&appid, &openid, &template, scene);
        let key = GrantKey { appid: appid.clone(), openid, template_id: template.clone(), scene };
        ledger.record(&key, SystemClock.now()).await?;
    }

    let message_template = template.clone();
    let report =
        Dispatcher::one_time(client, Arc::clone(&ledger), template.clone(), scene, move |to: &OpenId| {
            OneTimeMessage::builder(to.clone(), message_template.clone(), scene)
                .title("到货提醒")
                .content("您关注的商品已到货")
                .build()
        })
        .concurrency(8)
        .run()
        .await?;

    let received = (0..users).map(|i| sandbox.state().inbox(&format!("oUser{i:010}")).len()).sum();
    let requests_with_header = sandbox
        .state()
        .log()
        .iter()
        .filter(|e| e.headers.iter().any(|(n, v)| n == TracingTransport::HEADER && v == "custom-backends"))
        .count();
    let scope = subscribe_client::GrantScope { appid, template_id: template, scene };
    let ledger_delivered = ledger.counts(&scope, SystemClock.now()).await?.delivered;
    sandbox.shutdown().await;
    Ok(DemoReport {
        delivered: report.progress.delivered,
        received,
        requests: counters.requests.load(Ordering::Relaxed),
        requests_with_header,
        ledger_delivered,
    })
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Reads `path` as JSON, or `T::default()` when the file does not exist yet.
fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> std::io::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}
