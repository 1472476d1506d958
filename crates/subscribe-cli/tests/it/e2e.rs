//! The client with the reqwest transport against the sandbox, over real HTTP.

use std::time::Duration;

use subscribe_client::{Answer, Client, RetryPolicy, SendError, TokenEndpoint};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, Faults, SandboxConfig, SandboxHandle};
use subscribe_types::{AppId, AppSecret, AuthorizationAnswer, OneTimeMessage, OpenId, Scene, TemplateId};

use crate::ALICE;

fn client(s: &SandboxHandle) -> subscribe_client::ClientBuilder {
    Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(s.base_url())
        .mp_base(s.base_url())
}

fn message(scene: u32) -> OneTimeMessage {
    OneTimeMessage::builder(
        OpenId::new(ALICE).unwrap(),
        TemplateId::new(DEMO_TEMPLATE).unwrap(),
        Scene::new(scene).unwrap(),
    )
    .title("到货提醒")
    .content("您关注的商品已到货")
    .build()
    .unwrap()
}

fn grant(s: &SandboxHandle, scene: u32) {
    s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &OpenId::new(ALICE).unwrap(),
        &SandboxConfig::demo_template(),
        Scene::new(scene).unwrap(),
    );
}

#[tokio::test]
async fn authorization_callback_send_inbox_and_no_second_send() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let c = client(&s).build().unwrap();
    let link = c.authorize_url(
        &TemplateId::new(DEMO_TEMPLATE).unwrap(),
        Scene::new(42).unwrap(),
        &subscribe_types::RedirectUrl::new("https://shop.example.com/cb").unwrap(),
        &subscribe_client::Session::new("session-alice").unwrap(),
    );
    // The user confirms on the sandbox's page, as a browser would.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page_url = link.url.split('#').next().unwrap();
    assert_eq!(http.get(page_url).send().await.unwrap().status(), 200);
    let q = page_url.split_once('?').unwrap().1;
    let form = format!(
        "q={}&openid={ALICE}&decision=confirm",
        q.replace('%', "%25").replace('&', "%26").replace('=', "%3D")
    );
    let r = http
        .post(format!("{}/mp/subscribemsg/decide", s.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();

    let answer = c
        .complete(Answer::Redirect(&location), &subscribe_client::Session::new("session-alice").unwrap())
        .await
        .unwrap()
        .accept()
        .await;
    let AuthorizationAnswer::Confirmed(grant) = answer else { panic!("confirmed") };
    let msg = OneTimeMessage::builder(grant.openid, grant.template_id, grant.scene)
        .title("到货提醒")
        .content("line 1\nline 2")
        .url("https://shop.example.com/items/1")
        .build()
        .unwrap();
    assert_eq!(c.send_one_time(&msg).await.unwrap().attempts, 1);
    let inbox = s.state().inbox(ALICE);
    assert_eq!(inbox.len(), 1);
    assert_eq!((inbox[0].content.as_str(), inbox[0].scene), ("line 1\nline 2", 42));
    assert_eq!(inbox[0].url.as_deref(), Some("https://shop.example.com/items/1"));

    let again = c.send_one_time(&msg).await.unwrap_err();
    assert!(again.is_refused_by_user(), "{again:?}");
    assert_eq!(s.state().stats().deliveries, 1);
}

#[tokio::test]
async fn classic_rotation_within_grace_keeps_both_instances_working() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let a = client(&s).token_endpoint(TokenEndpoint::Classic).build().unwrap();
    let b = client(&s).token_endpoint(TokenEndpoint::Classic).build().unwrap();
    grant(&s, 1);
    grant(&s, 2);
    a.access_token().await.unwrap();
    b.access_token().await.unwrap(); // supersedes A's token; the grace keeps it working
    a.send_one_time(&message(1)).await.unwrap();
    b.send_one_time(&message(2)).await.unwrap();
    assert_eq!(s.state().stats().classic_token_requests, 2);
}

#[tokio::test]
async fn classic_rotation_without_grace_is_healed_by_one_refresh() {
    let s = SandboxHandle::start(SandboxConfig { classic_grace: Duration::ZERO, ..SandboxConfig::demo() })
        .await
        .unwrap();
    let a = client(&s).token_endpoint(TokenEndpoint::Classic).build().unwrap();
    let b = client(&s).token_endpoint(TokenEndpoint::Classic).build().unwrap();
    grant(&s, 1);
    a.access_token().await.unwrap();
    b.access_token().await.unwrap(); // A's token is now "not latest"
    let receipt = a.send_one_time(&message(1)).await.unwrap();
    assert_eq!(receipt.attempts, 2, "40001, one refresh, one replay");
    assert_eq!(s.state().stats().classic_token_requests, 3);
}

#[tokio::test]
async fn stable_tokens_are_shared_by_independent_instances() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let a = client(&s).build().unwrap();
    let b = client(&s).build().unwrap();
    let (ta, tb) = (a.access_token().await.unwrap(), b.access_token().await.unwrap());
    assert_eq!(ta, tb, "normal mode hands out the current stable token");
    assert_eq!(s.state().stats().tokens_issued, 1);
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refreshed_and_replayed() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let c = client(&s).build().unwrap();
    grant(&s, 1);
    grant(&s, 2);
    c.access_token().await.unwrap();
    s.state().revoke_tokens(Duration::ZERO);
    assert_eq!(c.send_one_time(&message(1)).await.unwrap().attempts, 2);
    s.state().expire_tokens();
    assert_eq!(c.send_one_time(&message(2)).await.unwrap().attempts, 2);
    assert_eq!(s.state().stats().stable_token_requests, 3);
}

#[tokio::test]
async fn every_fault_reaches_the_client_as_the_right_typed_error() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let c = client(&s).timeouts(Duration::from_secs(2), Duration::from_millis(500)).build().unwrap();
    c.access_token().await.unwrap();

    // -1 on every send: bounded replays, then the error.
    grant(&s, 1);
    s.state().set_faults(Faults { busy_every: Some(1), ..Faults::default() });
    let before = s.state().stats().send_requests;
    let e = c.send_one_time(&message(1)).await.unwrap_err();
    assert_eq!(e.api_code().map(subscribe_types::ErrCode::get), Some(-1));
    assert_eq!(s.state().stats().send_requests - before, 3);

    // -1 on every 2nd send: replayed and delivered.
    s.state().reset();
    grant(&s, 1);
    s.state().set_faults(Faults { busy_every: Some(2), ..Faults::default() });
    let c2 = client(&s).build().unwrap();
    assert!(c2.send_one_time(&message(7)).await.unwrap_err().is_refused_by_user()); // send #1: no grant
    let receipt = c2.send_one_time(&message(1)).await.unwrap(); // #2 busy, #3 delivered
    assert_eq!(receipt.attempts, 2);
    assert_eq!(s.state().stats().deliveries, 1);

    for (faults, what) in [
        (Faults { http_502_every: Some(1), ..Faults::default() }, "HTTP 502"),
        (Faults { malformed_every: Some(1), ..Faults::default() }, "malformed JSON"),
        (Faults { drop_every: Some(1), ..Faults::default() }, "dropped connection"),
        (
            Faults { stall_every: Some(1), stall_ms: Some(3_000), ..Faults::default() },
            "stall past the timeout",
        ),
    ] {
        s.state().reset();
        grant(&s, 1);
        s.state().set_faults(faults);
        let c = client(&s).timeouts(Duration::from_secs(2), Duration::from_millis(500)).build().unwrap();
        c.access_token().await.unwrap();
        let before = s.state().stats().send_requests;
        let e = c.send_one_time(&message(1)).await.unwrap_err();
        assert!(matches!(e, SendError::OutcomeUnknown { .. }), "{what}: {e:?}");
        assert!(!e.outcome_known(), "{what}");
        assert_eq!(s.state().stats().send_requests - before, 1, "{what}: not replayed");
    }

    // Latency alone changes nothing.
    s.state().reset();
    grant(&s, 1);
    s.state().set_faults(Faults { latency_ms: Some(20), ..Faults::default() });
    client(&s).build().unwrap().send_one_time(&message(1)).await.unwrap();

    // A connection refused: the request never left, so it is replayed (twice by default), then
    // reported as not sent. The token comes from elsewhere, so the send itself meets the
    // refusal; the transport counts the attempts.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reqwest = subscribe_client::transport::ReqwestTransport::builder().build().unwrap();
    let counting = subscribe_client::transport::transport_fn({
        let attempts = std::sync::Arc::clone(&attempts);
        move |req| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let reqwest = reqwest.clone();
            async move { subscribe_client::transport::HttpTransport::send(&reqwest, req).await }
        }
    });
    let dead = Client::builder_with_token_source(AppId::new(DEMO_APPID).unwrap(), FixedToken)
        .state_key([7u8; 32])
        .api_base(format!("http://127.0.0.1:{port}"))
        .transport(counting)
        .retry_policy(RetryPolicy::default().base_delay(Duration::from_millis(1)))
        .build()
        .unwrap();
    let e = dead.send_one_time(&message(1)).await.unwrap_err();
    assert!(
        matches!(&e, SendError::Transport(t) if t.kind() == subscribe_client::transport::TransportErrorKind::Connect),
        "{e:?}"
    );
    assert!(e.outcome_known() && e.is_retryable(), "not sent, and safe to send later");
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3, "one attempt and two replays");
}

/// A token service that always hands out the same token.
#[derive(Debug)]
struct FixedToken;

#[subscribe_client::async_trait]
impl subscribe_client::ExternalTokenSource for FixedToken {
    async fn fetch(&self, _: &AppId) -> Result<subscribe_client::CachedToken, subscribe_client::BoxError> {
        let expires = std::time::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX));
        Ok(subscribe_client::CachedToken::new(subscribe_types::AccessToken::new("FIXED")?, expires))
    }
    async fn invalidate(
        &self,
        _: &AppId,
        _: &subscribe_types::AccessToken,
    ) -> Result<(), subscribe_client::BoxError> {
        Ok(())
    }
}
