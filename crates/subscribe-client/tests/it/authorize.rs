//! Verifying an answer, as a table over both flows: the web page's redirect and the JSON a
//! mobile app forwards from the Open SDK. Each test runs in both, through the one
//! `Client::complete`; only issuing the request and rendering WeChat's answer differ.

use std::time::Duration;

use subscribe_client::test_util::MockTransport;
use subscribe_client::{Answer, AuthorizationError, Client, ManualClock, Session};
use subscribe_types::{
    Action, AppSecret, AuthorizationAnswer, AuthorizeRequest, QueryError, RedirectUrl, Scene, TemplateId,
};

use crate::*;

fn redirect() -> RedirectUrl {
    RedirectUrl::new("https://app.example.com/wechat/callback?from=menu").unwrap()
}

/// What WeChat does with a request: redirect to `redirect_url` with the answer appended.
fn answer(link_url: &str, action: &str, openid: Option<&str>) -> String {
    let req = AuthorizeRequest::from_query(link_url).unwrap();
    Issued {
        template_id: req.template_id.to_string(),
        scene: req.scene.to_string(),
        reserved: req.reserved.as_str().to_owned(),
    }
    .answer(Flow::Web, action, openid)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The authorization page and WeChat's redirect.
    Web,
    /// The Open SDK request and the answer the app forwards as JSON.
    Mobile,
}

const FLOWS: [Flow; 2] = [Flow::Web, Flow::Mobile];

/// What the server handed out, as text a test may tamper with.
#[derive(Clone, Debug)]
struct Issued {
    template_id: String,
    scene: String,
    reserved: String,
}

impl Flow {
    /// Issues a request for `scene` bound to `session`.
    fn issue(self, client: &Client, scene: u32, session: &Session) -> Issued {
        let (tpl, scene) = (TemplateId::new(TEMPLATE).unwrap(), Scene::new(scene).unwrap());
        match self {
            Self::Web => {
                let link = client.authorize_url(&tpl, scene, &redirect(), session);
                assert!(
                    link.url.starts_with(&format!("{MP}/mp/subscribemsg?action=get_confirm&appid={APPID}&"))
                );
                assert!(link.url.ends_with("#wechat_redirect"));
                let r = link.request;
                Issued {
                    template_id: r.template_id.to_string(),
                    scene: r.scene.to_string(),
                    reserved: r.reserved.as_str().to_owned(),
                }
            }
            Self::Mobile => {
                let r = client.mobile_request(&tpl, scene, session);
                let json: serde_json::Value = serde_json::to_value(&r).unwrap();
                assert_eq!(json["templateId"], TEMPLATE);
                assert_eq!(json["scene"], scene.get());
                let reserved = json["reserved"].as_str().unwrap().to_owned();
                assert!(
                    reserved.len() <= 128 && reserved.bytes().all(|b| b.is_ascii_alphanumeric()),
                    "{reserved}"
                );
                Issued { template_id: r.template_id.to_string(), scene: r.scene.to_string(), reserved }
            }
        }
    }

    /// `text` as this flow's answer.
    fn wrap(self, text: &str) -> Answer<'_> {
        match self {
            Self::Web => Answer::Redirect(text),
            Self::Mobile => Answer::Mobile(text),
        }
    }

    /// Verifies `answer` in `session` and accepts it.
    async fn complete(
        self,
        client: &Client,
        answer: &str,
        session: &Session,
    ) -> Result<AuthorizationAnswer, AuthorizationError> {
        Ok(client.complete(self.wrap(answer), session).await?.accept().await)
    }

    /// Something that is no answer at all.
    fn garbage(self) -> &'static str {
        match self {
            Self::Web => "action=maybe",
            Self::Mobile => r#"{"action":"maybe","templateId":"t","scene":1}"#,
        }
    }
}

impl Issued {
    /// WeChat's answer in `flow`: the redirect URL (web) or the SDK's answer as the app
    /// forwards it (mobile; iOS spelling, no `openId` on a cancellation).
    fn answer(&self, flow: Flow, action: &str, openid: Option<&str>) -> String {
        match flow {
            Flow::Web => {
                let base = redirect().as_str().to_owned();
                let openid = openid.map(|o| format!("openid={o}&")).unwrap_or_default();
                format!(
                    "{base}&{openid}template_id={}&action={action}&scene={}&reserved={}",
                    self.template_id, self.scene, self.reserved
                )
            }
            Flow::Mobile => {
                let mut json = serde_json::json!({
                    "templateId": self.template_id, "scene": self.scene.parse::<u64>().unwrap(),
                    "action": action, "reserved": self.reserved,
                });
                if let Some(o) = openid {
                    json["openId"] = o.into();
                }
                json.to_string()
            }
        }
    }
}

const MP: &str = "http://127.0.0.1:9999";

fn client_with(clock: &ManualClock, secret: &str) -> Client {
    Client::builder(appid(), AppSecret::new(secret).unwrap())
        .transport(MockTransport::new())
        .clock(clock.clone())
        .mp_base(MP)
        .build()
        .unwrap()
}

fn assert_rejected(
    flow: Flow,
    result: Result<AuthorizationAnswer, AuthorizationError>,
    want: fn(&AuthorizationError) -> bool,
) {
    match result {
        Err(e) if want(&e) => {}
        other => panic!("{flow:?}: unexpected: {other:?}"),
    }
}

#[tokio::test]
async fn round_trip_confirm_and_cancel() {
    for flow in FLOWS {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let issued = flow.issue(&client, 1000, &SESSION);
        assert!(!issued.reserved.is_empty());
        let confirmed =
            flow.complete(&client, &issued.answer(flow, "confirm", Some("oUser1")), &SESSION).await.unwrap();
        let AuthorizationAnswer::Confirmed(c) = confirmed else { panic!("{flow:?}: confirmed") };
        assert_eq!((c.openid.as_str(), c.scene.get(), c.template_id.as_str()), ("oUser1", 1000, TEMPLATE));
        let cancelled = flow.complete(&client, &issued.answer(flow, "cancel", None), &SESSION).await.unwrap();
        assert_eq!(cancelled.action(), Action::Cancel, "{flow:?}");
    }
}

#[tokio::test]
async fn tampered_state_is_rejected() {
    for flow in FLOWS {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let issued = flow.issue(&client, 1, &SESSION);
        let forged = |f: &dyn Fn(&mut Issued)| {
            let mut i = issued.clone();
            f(&mut i);
            i.answer(flow, "confirm", Some("oUser1"))
        };
        let is_forged: fn(&AuthorizationError) -> bool = |e| matches!(e, AuthorizationError::ForgedState);
        // Flip one hex digit of the MAC, then one of the expiry (extending one's own state).
        for pos in [issued.reserved.len() - 1, 3] {
            let flip = |i: &mut Issued| {
                let mut chars: Vec<char> = i.reserved.chars().collect();
                chars[pos] = if chars[pos] == '0' { '1' } else { '0' };
                i.reserved = chars.into_iter().collect();
            };
            assert_rejected(flow, flow.complete(&client, &forged(&flip), &SESSION).await, is_forged);
        }
        // The answer's template or scene swapped under a valid state.
        assert_rejected(
            flow,
            flow.complete(&client, &forged(&|i| i.scene = "2".into()), &SESSION).await,
            is_forged,
        );
        assert_rejected(
            flow,
            flow.complete(&client, &forged(&|i| i.template_id = "another_template".into()), &SESSION).await,
            is_forged,
        );
        // No state at all.
        assert_rejected(
            flow,
            flow.complete(&client, &forged(&|i| i.reserved.clear()), &SESSION).await,
            |e| matches!(e, AuthorizationError::MissingState),
        );
        // Not an answer.
        assert_rejected(flow, flow.complete(&client, flow.garbage(), &SESSION).await, |e| {
            matches!(e, AuthorizationError::Query(_))
        });
    }
}

#[tokio::test]
async fn expired_state_is_rejected() {
    for flow in FLOWS {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let answer = flow.issue(&client, 1, &SESSION).answer(flow, "confirm", Some("oUser1"));
        clock.advance(Duration::from_secs(14 * 60));
        flow.complete(&client, &answer, &SESSION).await.unwrap();
        clock.advance(Duration::from_secs(2 * 60));
        assert_rejected(flow, flow.complete(&client, &answer, &SESSION).await, |e| {
            matches!(e, AuthorizationError::ExpiredState { .. })
        });
    }
}

#[tokio::test]
async fn foreign_state_is_rejected() {
    for flow in FLOWS {
        let clock = clock();
        let ours = client_with(&clock, SECRET);
        let theirs = client_with(&clock, "another-apps-secret");
        let answer = flow.issue(&theirs, 1, &SESSION).answer(flow, "confirm", Some("o1"));
        assert_rejected(flow, flow.complete(&ours, &answer, &SESSION).await, |e| {
            matches!(e, AuthorizationError::ForgedState)
        });
    }
}

#[tokio::test]
async fn session_bound_state_verifies_only_in_its_session() {
    for flow in FLOWS {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let alice = Session::new("session-alice").unwrap();
        let answer = flow.issue(&client, 5, &alice).answer(flow, "confirm", Some("oAlice"));
        for wrong in ["session-mallory", "session-alic", "session-alice\0", "Session-alice"] {
            let wrong = Session::new(wrong).unwrap();
            assert_rejected(flow, flow.complete(&client, &answer, &wrong).await, |e| {
                matches!(e, AuthorizationError::ForgedState)
            });
        }
        flow.complete(&client, &answer, &alice).await.unwrap();
    }
}

#[tokio::test]
async fn a_confirmation_is_accepted_once_in_either_flow() {
    for flow in FLOWS {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let issued = flow.issue(&client, 5, &SESSION);
        flow.complete(&client, &issued.answer(flow, "confirm", Some("oAlice")), &SESSION).await.unwrap();
        // Alice's own answer again (a refresh after success) is already accepted; anyone
        // else's is a replay.
        assert_rejected(
            flow,
            flow.complete(&client, &issued.answer(flow, "confirm", Some("oAlice")), &SESSION).await,
            |e| matches!(e, AuthorizationError::AlreadyAccepted),
        );
        assert_rejected(
            flow,
            flow.complete(&client, &issued.answer(flow, "confirm", Some("oMallory")), &SESSION).await,
            |e| matches!(e, AuthorizationError::ReplayedState),
        );
        // A cancellation uses nothing up.
        let cancel = flow.issue(&client, 5, &SESSION).answer(flow, "cancel", None);
        flow.complete(&client, &cancel, &SESSION).await.unwrap();
        flow.complete(&client, &cancel, &SESSION).await.unwrap();
    }
}

#[tokio::test]
async fn every_instance_with_the_same_secret_agrees() {
    for flow in FLOWS {
        let clock = clock();
        let a = client_with(&clock, SECRET);
        let b = client_with(&clock, SECRET);
        let answer = flow.issue(&a, 1, &SESSION).answer(flow, "confirm", Some("o1"));
        flow.complete(&b, &answer, &SESSION).await.unwrap();
    }
}

#[tokio::test]
async fn a_forwarded_sdk_answer_is_read_in_both_spellings_and_never_echoed() {
    let clock = clock();
    let client = client_with(&clock, SECRET);
    let issued = Flow::Mobile.issue(&client, 9, &SESSION);
    // Android's spelling: `templateID`, `openid`, the scene as a string, the SDK's own fields.
    let android = format!(
        r#"{{"errCode":0,"errStr":"","openid":"oAndroidUser","templateID":"{TEMPLATE}","scene":"9","action":"confirm","reserved":"{}"}}"#,
        issued.reserved
    );
    let AuthorizationAnswer::Confirmed(c) = Flow::Mobile.complete(&client, &android, &SESSION).await.unwrap()
    else {
        panic!("confirmed")
    };
    assert_eq!(c.openid.as_str(), "oAndroidUser");
    // An openId on a cancellation is ignored, as on the web.
    let cancel = Flow::Mobile.issue(&client, 9, &SESSION).answer(Flow::Mobile, "cancel", Some("oSomeone"));
    assert_eq!(Flow::Mobile.complete(&client, &cancel, &SESSION).await.unwrap().openid(), None);
    // What is wrong is named; the text is never repeated (it may hold an openid).
    let secret_openid = "oPrivateOpenId_123";
    for (body, want) in [
        (
            format!(r#"{{"openId":"{secret_openid}","scene":9,"action":"confirm"}}"#),
            QueryError::Missing { param: "templateId" },
        ),
        (
            format!(r#"{{"openId":"{secret_openid}","templateId":"{TEMPLATE}","action":"confirm"}}"#),
            QueryError::Missing { param: "scene" },
        ),
        (
            format!(
                r#"{{"templateId":"{TEMPLATE}","scene":9,"action":"confirm","reserved":"{}"}}"#,
                issued.reserved
            ),
            QueryError::ConfirmWithoutOpenId,
        ),
        (
            format!(
                r#"{{"openId":"{secret_openid}","templateId":"{TEMPLATE}","scene":"nine","action":"confirm"}}"#
            ),
            QueryError::Invalid(subscribe_types::ValidationError::NotANumber { field: "scene", len: 4 }),
        ),
        (
            format!(
                r#"{{"openId":"{secret_openid}","templateId":"{TEMPLATE}","scene":10001,"action":"confirm"}}"#
            ),
            QueryError::Invalid(subscribe_types::Scene::new(10001).unwrap_err()),
        ),
        (format!(r#"{{"openId":"{secret_openid}" "#), QueryError::NotJson { line: 1, column: 34 }),
        (format!(r#"["{secret_openid}"]"#), QueryError::NotJson { line: 1, column: 0 }),
        (" ".repeat(9000), QueryError::TooLarge { len: 9000, max: subscribe_types::MAX_QUERY_LEN }),
    ] {
        let err = client.complete(Answer::Mobile(&body), &SESSION).await.unwrap_err();
        let AuthorizationError::Query(q) = &err else { panic!("{body}: {err:?}") };
        if let QueryError::NotJson { line, .. } = q {
            assert!(matches!(want, QueryError::NotJson { .. }) && *line <= 1, "{body}: {q:?}");
        } else {
            assert_eq!(q, &want, "{body}");
        }
        assert_eq!(err.kind(), subscribe_client::ErrorKind::Invalid);
        let shown = format!("{err} {err:?} {q}");
        assert!(!shown.contains(secret_openid), "{shown}");
    }
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
    let link = before.authorize_url(&tpl, Scene::new(1000).unwrap(), &redirect(), &SESSION);
    let callback = answer(&link.url, "confirm", Some("oUser"));

    // Rotated without the ring: a confirmation WeChat recorded is turned away as forged.
    let rotated = build([2; 32], None);
    assert_rejected(Flow::Web, Flow::Web.complete(&rotated, &callback, &SESSION).await, |e| {
        matches!(e, AuthorizationError::ForgedState)
    });
    // With the old key as the previous one, it verifies; the new key signs new states.
    let ring = build([2; 32], Some([1; 32]));
    assert!(matches!(
        Flow::Web.complete(&ring, &callback, &SESSION).await,
        Ok(AuthorizationAnswer::Confirmed(_))
    ));
    let fresh = ring.authorize_url(&tpl, Scene::new(1000).unwrap(), &redirect(), &SESSION);
    assert!(matches!(
        Flow::Web.complete(&rotated, &answer(&fresh.url, "confirm", Some("oUser")), &SESSION).await,
        Ok(AuthorizationAnswer::Confirmed(_))
    ));
    // Once the old states have expired, the previous key verifies nothing of theirs.
    clock.advance(Duration::from_secs(15 * 60 + 1));
    assert_rejected(Flow::Web, Flow::Web.complete(&ring, &callback, &SESSION).await, |e| {
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
    let link = old.authorize_url(&tpl, Scene::new(7).unwrap(), &redirect(), &SESSION);
    let callback = answer(&link.url, "confirm", Some("oUser"));
    let reset = Client::builder(appid(), AppSecret::new("a-new-app-secret").unwrap())
        .transport(MockTransport::new())
        .clock(clock.clone())
        .previous_app_secret(AppSecret::new(SECRET).unwrap())
        .build()
        .unwrap();
    assert!(matches!(
        Flow::Web.complete(&reset, &callback, &SESSION).await,
        Ok(AuthorizationAnswer::Confirmed(_))
    ));
    assert_rejected(
        Flow::Web,
        Flow::Web.complete(&client_with(&clock, "a-new-app-secret"), &callback, &SESSION).await,
        |e| matches!(e, AuthorizationError::ForgedState),
    );
}

#[tokio::test]
async fn a_web_and_a_mobile_answer_complete_through_the_same_call_and_record_alike() {
    let clock = clock();
    let client = client_with(&clock, SECRET);
    let ledger = subscribe_client::InMemoryGrantLedger::new();
    for (flow, openid) in [(Flow::Web, "oWebUser"), (Flow::Mobile, "oAppUser")] {
        let text = flow.issue(&client, 1000, &SESSION).answer(flow, "confirm", Some(openid));
        let completion = client.complete(flow.wrap(&text), &SESSION).await.unwrap();
        assert_eq!(
            completion.answer().openid().map(subscribe_types::OpenId::as_str),
            Some(openid),
            "{flow:?}"
        );
        let (answer, recorded) = completion.record(&ledger).await.unwrap();
        assert_eq!((answer.action(), recorded), (Action::Confirm, Some(subscribe_client::Recorded::Added)));
        assert_rejected(flow, flow.complete(&client, &text, &SESSION).await, |e| {
            matches!(e, AuthorizationError::AlreadyAccepted)
        });
    }
}

#[tokio::test]
async fn an_answer_given_as_the_other_flows_is_refused_and_uses_nothing_up() {
    for (flow, other) in [(Flow::Web, Flow::Mobile), (Flow::Mobile, Flow::Web)] {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let issued = flow.issue(&client, 1000, &SESSION);
        for action in ["confirm", "cancel"] {
            let text = issued.answer(flow, action, Some("oUser1"));
            let err = client.complete(other.wrap(&text), &SESSION).await.unwrap_err();
            assert!(matches!(err, AuthorizationError::Query(_)), "{flow:?} as {other:?}: {err:?}");
            assert_eq!(err.kind(), subscribe_client::ErrorKind::Invalid);
            assert!(!format!("{err} {err:?}").contains("oUser1"), "{err:?}");
        }
        // Nothing was marked: the answer read as its own flow's is the first.
        let confirmed =
            flow.complete(&client, &issued.answer(flow, "confirm", Some("oUser1")), &SESSION).await;
        assert!(matches!(confirmed, Ok(AuthorizationAnswer::Confirmed(_))), "{flow:?}: {confirmed:?}");
    }
}

#[tokio::test]
async fn a_dropped_completion_keeps_the_state_for_the_same_answer_until_it_expires() {
    for flow in FLOWS {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let issued = flow.issue(&client, 1000, &SESSION);
        let alice = issued.answer(flow, "confirm", Some("oAlice"));
        let mallory = issued.answer(flow, "confirm", Some("oMallory"));
        let completion = client.complete(flow.wrap(&alice), &SESSION).await.unwrap();
        let shown = format!("{completion:?}");
        assert!(!shown.contains("oAlice") && !shown.contains(&issued.reserved), "{shown}");
        drop(completion);
        // The mark stays Alice's answer's: anyone else is refused; her answer waits while the
        // dropped completion's claim is live, and is a retry once it lapsed.
        assert_rejected(flow, flow.complete(&client, &mallory, &SESSION).await, |e| {
            matches!(e, AuthorizationError::ReplayedState)
        });
        assert_rejected(flow, flow.complete(&client, &alice, &SESSION).await, |e| {
            matches!(e, AuthorizationError::InProgress)
        });
        clock.advance(subscribe_client::Claim::CLAIM_PERIOD);
        drop(client.complete(flow.wrap(&alice), &SESSION).await.unwrap());
        // Until the state expires: then it is refused as expired, whoever answers.
        clock.advance(Duration::from_secs(15 * 60 + 1));
        for text in [&alice, &mallory] {
            assert_rejected(flow, flow.complete(&client, text, &SESSION).await, |e| {
                matches!(e, AuthorizationError::ExpiredState { .. })
            });
        }
        // Accepted in time, the same answer is already accepted.
        let fresh = flow.issue(&client, 1000, &SESSION).answer(flow, "confirm", Some("oAlice"));
        drop(client.complete(flow.wrap(&fresh), &SESSION).await.unwrap());
        clock.advance(subscribe_client::Claim::CLAIM_PERIOD);
        flow.complete(&client, &fresh, &SESSION).await.unwrap();
        assert_rejected(flow, flow.complete(&client, &fresh, &SESSION).await, |e| {
            matches!(e, AuthorizationError::AlreadyAccepted)
        });
    }
}

#[tokio::test]
async fn when_recording_fails_in_either_flow_the_same_answer_is_retried_and_no_other() {
    use std::sync::atomic::Ordering::SeqCst;
    for flow in FLOWS {
        let clock = clock();
        let client = client_with(&clock, SECRET);
        let ledger = crate::grants::DownLedger::default();
        ledger.1.store(true, SeqCst);
        let issued = flow.issue(&client, 1000, &SESSION);
        let alice = issued.answer(flow, "confirm", Some("oAlice"));
        let completion = client.complete(flow.wrap(&alice), &SESSION).await.unwrap();
        let err = completion.record(&ledger).await.unwrap_err();
        assert!(matches!(err, subscribe_client::RecordError::Ledger(_)), "{flow:?}: {err:?}");
        assert_eq!(err.kind(), subscribe_client::ErrorKind::Retryable);
        let mallory = issued.answer(flow, "confirm", Some("oMallory"));
        assert_rejected(flow, flow.complete(&client, &mallory, &SESSION).await, |e| {
            matches!(e, AuthorizationError::ReplayedState)
        });
        ledger.1.store(false, SeqCst);
        let (_, recorded) =
            client.complete(flow.wrap(&alice), &SESSION).await.unwrap().record(&ledger).await.unwrap();
        assert_eq!(recorded, Some(subscribe_client::Recorded::Added), "{flow:?}: the retry is recorded");
        assert_rejected(flow, flow.complete(&client, &alice, &SESSION).await, |e| {
            matches!(e, AuthorizationError::AlreadyAccepted)
        });
    }
}
