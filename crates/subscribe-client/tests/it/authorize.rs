use std::time::Duration;

use subscribe_client::test_util::MockTransport;
use subscribe_client::{AuthorizationError, Client};
use subscribe_types::{Action, AppSecret, AuthorizationAnswer, AuthorizeRequest, HttpUrl, Scene, TemplateId};

use crate::*;

fn redirect() -> HttpUrl {
    HttpUrl::new("https://app.example.com/wechat/callback?from=menu").unwrap()
}

/// What WeChat does with a request: redirect to `redirect_url` with the answer appended.
fn answer(link_url: &str, action: &str, openid: Option<&str>) -> String {
    let req = AuthorizeRequest::from_query(link_url).unwrap();
    let base = req.redirect_url.as_str();
    let sep = if base.contains('?') { '&' } else { '?' };
    let openid = openid.map(|o| format!("openid={o}&")).unwrap_or_default();
    format!(
        "{base}{sep}{openid}template_id={}&action={action}&scene={}&reserved={}",
        req.template_id,
        req.scene,
        req.reserved.as_str()
    )
}

fn client_with(clock: &ManualClock, secret: &str) -> Client {
    Client::builder(appid(), AppSecret::new(secret).unwrap())
        .transport(MockTransport::new())
        .clock(clock.clone())
        .mp_base("http://127.0.0.1:9999")
        .build()
        .unwrap()
}

use subscribe_client::ManualClock;

fn assert_rejected(
    result: Result<AuthorizationAnswer, AuthorizationError>,
    want: fn(&AuthorizationError) -> bool,
) {
    match result {
        Err(e) if want(&e) => {}
        other => panic!("unexpected: {other:?}"),
    }
}

#[tokio::test]
async fn round_trip_confirm_and_cancel() {
    let clock = clock();
    let client = client_with(&clock, SECRET);
    let tpl = TemplateId::new(TEMPLATE).unwrap();
    let link = client.authorize_url(&tpl, Scene::new(1000).unwrap(), &redirect());
    assert!(
        link.url.starts_with(
            "http://127.0.0.1:9999/mp/subscribemsg?action=get_confirm&appid=wx0123456789abcdef&"
        )
    );
    assert!(link.url.ends_with("#wechat_redirect"));
    assert!(!link.request.reserved.is_empty());

    let confirmed =
        client.complete_authorization(&answer(&link.url, "confirm", Some("oUser1"))).await.unwrap();
    let AuthorizationAnswer::Confirmed(c) = confirmed else { panic!("confirmed") };
    assert_eq!((c.openid.as_str(), c.scene.get(), c.template_id.as_str()), ("oUser1", 1000, TEMPLATE));

    let cancelled = client.complete_authorization(&answer(&link.url, "cancel", None)).await.unwrap();
    assert_eq!(cancelled.action(), Action::Cancel);
}

#[tokio::test]
async fn tampered_state_is_rejected() {
    let clock = clock();
    let client = client_with(&clock, SECRET);
    let link = client.authorize_url(&TemplateId::new(TEMPLATE).unwrap(), Scene::new(1).unwrap(), &redirect());
    let good = answer(&link.url, "confirm", Some("oUser1"));
    let state = link.request.reserved.as_str().to_owned();
    // Flip one hex digit of the MAC, then one of the expiry (extending one's own state).
    for pos in [state.len() - 1, 3] {
        let mut chars: Vec<char> = state.chars().collect();
        chars[pos] = if chars[pos] == '0' { '1' } else { '0' };
        let forged = good.replace(&state, &chars.iter().collect::<String>());
        assert_rejected(client.complete_authorization(&forged).await, |e| {
            matches!(e, AuthorizationError::ForgedState)
        });
    }
    // The answer's template or scene swapped under a valid state.
    let other_scene = good.replace("scene=1&", "scene=2&");
    assert_rejected(client.complete_authorization(&other_scene).await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
    let other_tpl = good.replace(TEMPLATE, "another_template");
    assert_rejected(client.complete_authorization(&other_tpl).await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
    // No state at all.
    let none = good.replace(&format!("reserved={state}"), "reserved=");
    assert_rejected(client.complete_authorization(&none).await, |e| {
        matches!(e, AuthorizationError::MissingState)
    });
    // Not a callback.
    assert_rejected(client.complete_authorization("action=maybe").await, |e| {
        matches!(e, AuthorizationError::Query(_))
    });
}

#[tokio::test]
async fn expired_state_is_rejected() {
    let clock = clock();
    let client = client_with(&clock, SECRET);
    let link = client.authorize_url(&TemplateId::new(TEMPLATE).unwrap(), Scene::new(1).unwrap(), &redirect());
    let callback = answer(&link.url, "confirm", Some("oUser1"));
    clock.advance(Duration::from_secs(14 * 60));
    client.complete_authorization(&callback).await.unwrap();
    clock.advance(Duration::from_secs(2 * 60));
    assert_rejected(client.complete_authorization(&callback).await, |e| {
        matches!(e, AuthorizationError::ExpiredState { .. })
    });
}

#[tokio::test]
async fn foreign_state_is_rejected() {
    let clock = clock();
    let ours = client_with(&clock, SECRET);
    let theirs = client_with(&clock, "another-apps-secret");
    let link = theirs.authorize_url(&TemplateId::new(TEMPLATE).unwrap(), Scene::new(1).unwrap(), &redirect());
    assert_rejected(ours.complete_authorization(&answer(&link.url, "confirm", Some("o1"))).await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
}

#[tokio::test]
async fn session_bound_state_verifies_only_in_its_session() {
    let clock = clock();
    let client = client_with(&clock, SECRET);
    let link = client.authorize_url_for_session(
        &TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(5).unwrap(),
        &redirect(),
        "session-alice",
    );
    let cb = answer(&link.url, "confirm", Some("oAlice"));
    client.complete_authorization_for_session(&cb, "session-alice").await.unwrap();
    assert_rejected(client.complete_authorization_for_session(&cb, "session-mallory").await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
    assert_rejected(client.complete_authorization(&cb).await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
}

#[tokio::test]
async fn every_instance_with_the_same_secret_agrees() {
    let clock = clock();
    let a = client_with(&clock, SECRET);
    let b = client_with(&clock, SECRET);
    let link = a.authorize_url(&TemplateId::new(TEMPLATE).unwrap(), Scene::new(1).unwrap(), &redirect());
    b.complete_authorization(&answer(&link.url, "confirm", Some("o1"))).await.unwrap();
}

#[tokio::test]
async fn a_rotated_key_keeps_the_confirmations_signed_before_the_rotation() {
    let clock = clock();
    let tpl = TemplateId::new(TEMPLATE).unwrap();
    let build = |current: [u8; 32], previous: Option<[u8; 32]>| {
        let mut b = Client::builder(appid(), AppSecret::new(SECRET).unwrap())
            .transport(MockTransport::new())
            .clock(clock.clone())
            .state_key(current.to_vec());
        if let Some(p) = previous {
            b = b.previous_state_key(p.to_vec());
        }
        b.build().unwrap()
    };
    let before = build([1; 32], None);
    let link = before.authorize_url(&tpl, Scene::new(1000).unwrap(), &redirect());
    let callback = answer(&link.url, "confirm", Some("oUser"));

    // Rotated without the ring: a confirmation WeChat recorded is turned away as forged.
    let rotated = build([2; 32], None);
    assert_rejected(rotated.complete_authorization(&callback).await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
    // With the old key as the previous one, it verifies; the new key signs new states.
    let ring = build([2; 32], Some([1; 32]));
    assert!(matches!(ring.complete_authorization(&callback).await, Ok(AuthorizationAnswer::Confirmed(_))));
    let fresh = ring.authorize_url(&tpl, Scene::new(1000).unwrap(), &redirect());
    assert!(matches!(
        rotated.complete_authorization(&answer(&fresh.url, "confirm", Some("oUser"))).await,
        Ok(AuthorizationAnswer::Confirmed(_))
    ));
    // Once the old states have expired, the previous key verifies nothing of theirs.
    clock.advance(Duration::from_secs(15 * 60 + 1));
    assert_rejected(ring.complete_authorization(&callback).await, |e| {
        matches!(e, AuthorizationError::ExpiredState { .. })
    });
    // A previous key is held to the same strength as the current one.
    let weak = Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .transport(MockTransport::new())
        .previous_state_key(vec![0u8; 31])
        .build();
    assert!(matches!(weak, Err(subscribe_client::ConfigError::WeakStateKey)));
}

#[tokio::test]
async fn a_reset_app_secret_keeps_the_states_of_the_old_one_with_previous_app_secret() {
    let clock = clock();
    let tpl = TemplateId::new(TEMPLATE).unwrap();
    let old = client_with(&clock, SECRET);
    let link = old.authorize_url(&tpl, Scene::new(7).unwrap(), &redirect());
    let callback = answer(&link.url, "confirm", Some("oUser"));
    let reset = Client::builder(appid(), AppSecret::new("a-new-app-secret").unwrap())
        .transport(MockTransport::new())
        .clock(clock.clone())
        .previous_app_secret(AppSecret::new(SECRET).unwrap())
        .build()
        .unwrap();
    assert!(matches!(reset.complete_authorization(&callback).await, Ok(AuthorizationAnswer::Confirmed(_))));
    assert_rejected(client_with(&clock, "a-new-app-secret").complete_authorization(&callback).await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
}
