//! Integration tests of `subscribe-client`: `MockTransport` + `ManualClock`, no sleeping (one
//! module talks to wiremock over real HTTP).

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod authorize;
mod caching;
mod dispatch;
mod e2e_wiremock;
mod grants;
mod ledger_contract;
mod mini_program_and_notification;
#[cfg(feature = "events")]
mod pushed;
mod redaction;
#[cfg(feature = "events")]
mod replay_cache_contract;
mod retry;
mod states;
mod token_outage;
mod token_refresh;
mod token_sources;
mod token_store_contract;
mod used_states_contract;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subscribe_client::test_util::{MockTransport, SEND_PATH};
use subscribe_client::{Client, ClientBuilder, ManualClock};
use subscribe_types::{AppId, AppSecret, OneTimeMessage, OpenId, Scene, TemplateId};

/// The AppSecret used everywhere; it must never appear in output.
pub const SECRET: &str = "AppSecret_never_printed_7d3f";
/// The test app.
pub const APPID: &str = "wx0123456789abcdef";
/// The template used by the tests.
pub const TEMPLATE: &str = "7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM";
/// The user's session, where a test is not about sessions.
pub static SESSION: std::sync::LazyLock<subscribe_client::Session> =
    std::sync::LazyLock::new(|| subscribe_client::Session::new("session-1").unwrap());

/// The start of every manual clock.
pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A manual clock at [`t0`].
pub fn clock() -> ManualClock {
    ManualClock::new(t0())
}

/// The test app's id.
pub fn appid() -> AppId {
    AppId::new(APPID).unwrap()
}

/// A client builder on `mock` and `clock`.
pub fn builder(mock: &MockTransport, clock: &ManualClock) -> ClientBuilder {
    Client::builder(appid(), AppSecret::new(SECRET).unwrap()).transport(mock.clone()).clock(clock.clone())
}

/// A valid message.
pub fn message() -> OneTimeMessage {
    OneTimeMessage::builder(
        OpenId::new("oyAaTjt-xXvP87pubE4eUOF-ttD4").unwrap(),
        TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(1000).unwrap(),
    )
    .title("到货提醒")
    .content("您关注的商品已到货")
    .build()
    .unwrap()
}

/// The access tokens used by the recorded send requests, in order.
pub fn tokens_used(mock: &MockTransport) -> Vec<String> {
    mock.requests()
        .iter()
        .filter(|r| r.path() == SEND_PATH)
        .map(|r| r.query_param("access_token").unwrap_or_default().to_owned())
        .collect()
}

/// Runs `n` sends at once on `client`.
pub async fn send_concurrently(
    client: &Client,
    n: usize,
) -> Vec<Result<subscribe_client::SendReceipt, subscribe_client::SendError>> {
    let msg = Arc::new(message());
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, m) = (client.clone(), Arc::clone(&msg));
            tokio::spawn(async move { c.send_one_time(&m).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Completes WeChat's redirect `callback` in [`SESSION`] and records its grant in `ledger`.
///
/// # Errors
/// `complete`'s, or `record`'s.
pub async fn record_redirect(
    client: &Client,
    callback: &str,
    ledger: &dyn subscribe_client::GrantLedger,
) -> Result<
    (subscribe_types::AuthorizationAnswer, Option<subscribe_client::Recorded>),
    subscribe_client::RecordError,
> {
    client.complete(subscribe_client::Answer::Redirect(callback), &SESSION).await?.record(ledger).await
}

/// The message a task panicked with (a contract suite's broken rule).
pub fn panic_text(failed: tokio::task::JoinError) -> String {
    let panic = failed.into_panic();
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}
