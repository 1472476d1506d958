//! Test support: [`ManualClock`](crate::ManualClock), canned WeChat answers for
//! [`MockTransport`] ([`mock_with_stable_token`], [`mock_with_rotating_token`] for the 40001
//! scenario, with the client's token refresh sequence documented there), what a test of a
//! transport needs ([`HttpRequest`], [`TransportErrorKind`]), and the contract suites
//! ([`token_store_contract`], [`shared_token_store_contract`], [`grant_ledger_contract`],
//! [`used_states_contract`], and with the feature `events` `replay_cache_contract`) that a backend runs in its own tests, with [`LostAnswers`], a
//! store of used states whose writes land and whose answers are lost.

mod grant_ledger;
mod grant_review;
mod lost_answers;
#[cfg(feature = "events")]
mod notification_results;
#[cfg(feature = "events")]
mod replay_cache;
mod token_store;
mod used_states;

use std::time::{Duration, SystemTime};

pub use subscribe_transport::{HttpRequest, MockReply, MockTransport, TransportErrorKind};
use subscribe_types::AppId;

pub use grant_ledger::grant_ledger_contract;
pub use lost_answers::LostAnswers;
#[cfg(feature = "events")]
pub use notification_results::notification_results_contract;
#[cfg(feature = "events")]
pub use replay_cache::replay_cache_contract;
pub use token_store::{shared_token_store_contract, token_store_contract};
pub use used_states::used_states_contract;

/// The send endpoint's path.
pub const SEND_PATH: &str = "/cgi-bin/message/template/subscribe";
/// The stable token endpoint's path.
pub const STABLE_TOKEN_PATH: &str = "/cgi-bin/stable_token";
/// The classic token endpoint's path.
pub const CLASSIC_TOKEN_PATH: &str = "/cgi-bin/token";

/// A token endpoint's success: `{"access_token", "expires_in"}`.
pub fn token_reply(token: &str, expires_in: u32) -> MockReply {
    MockReply::json(200, format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#))
}

/// `{"errcode": code, "errmsg": msg}`.
pub fn errcode_reply(code: i64, msg: &str) -> MockReply {
    MockReply::json(200, format!(r#"{{"errcode":{code},"errmsg":"{msg}"}}"#))
}

/// `{"errcode":0,"errmsg":"ok"}`.
pub fn ok_reply() -> MockReply {
    errcode_reply(0, "ok")
}

/// A mock with the stable-token endpoint always answering `token` valid for `expires_in`.
pub fn mock_with_stable_token(token: &str, expires_in: u32) -> MockTransport {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(token_reply(token, expires_in));
    mock
}

/// A mock whose stable-token endpoint hands out a new token on every request: `TOKEN-1`,
/// `TOKEN-2`, …, each valid for `expires_in` seconds. Script the 40001 scenario with it.
///
/// When WeChat rejects a token (40001, 40014, 42001), the client forgets **that** token, asks
/// `/cgi-bin/stable_token` again with `force_refresh: false`, and replays the call once with the
/// token it gets. Only if the endpoint hands back the very token just rejected does it ask once
/// more with `force_refresh: true` (WeChat allows 20 of those a day, 30 s apart). So with this
/// mock a rejected `TOKEN-1` is followed by exactly one token request and a replay with
/// `TOKEN-2`:
///
/// ```
/// use subscribe_client::test_util::{SEND_PATH, STABLE_TOKEN_PATH, errcode_reply, mock_with_rotating_token, ok_reply};
/// # use subscribe_types::*;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let wechat = mock_with_rotating_token(7200);
/// wechat.push(errcode_reply(40001, "invalid credential")).push(ok_reply());
/// let client = subscribe_client::Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("secret")?)
///     .transport(wechat.clone())
///     .build()?;
/// # let msg = OneTimeMessage::builder(OpenId::new("oUser")?, TemplateId::new("tpl")?, Scene::new(1)?)
/// #     .title("t").content("c").build()?;
/// let receipt = client.send_one_time(&msg).await?;
/// assert_eq!(receipt.attempts, 2);
/// wechat.assert_count(STABLE_TOKEN_PATH, 2);
/// let sends: Vec<_> = wechat.requests().into_iter().filter(|r| r.path() == SEND_PATH).collect();
/// assert_eq!(sends[1].query_param("access_token").as_deref(), Some("TOKEN-2"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub fn mock_with_rotating_token(expires_in: u32) -> MockTransport {
    let mock = MockTransport::new();
    let issued = std::sync::atomic::AtomicU64::new(0);
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| {
        let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        token_reply(&format!("TOKEN-{n}"), expires_in)
    });
    mock
}

/// The system clock's now, to the millisecond (what stores keep of an instant).
fn now_to_the_millisecond() -> SystemTime {
    let ms = crate::Clock::now(&crate::SystemClock)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn unique_app(label: &str) -> AppId {
    let mut n = [0u8; 6];
    let _ = getrandom::fill(&mut n);
    let suffix = u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], 0, 0]);
    AppId::new(format!("wxcontract{label}{suffix:012x}")).unwrap_or_else(|e| panic!("contract app id: {e}"))
}
