//! The mini-program and notification sends and the template library, against `MockTransport` (and, for the
//! one-at-a-time rule, a transport that answers 43108 as WeChat does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::transport::{HttpRequest, HttpResponse, HttpTransport, MockReply, TransportError};
use subscribe_client::{GrantLedger, GrantScope, SendError};
use subscribe_types::*;

use crate::*;

const MP_SEND: &str = "/cgi-bin/message/subscribe/send";
const BIZSEND: &str = "/cgi-bin/message/subscribe/bizsend";
const LIBRARY_TEMPLATE: &str = "bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY";

fn data() -> MessageData {
    MessageData::from_pairs([("thing1", "亚麻衬衫"), ("time2", "2019-10-01 15:01")]).unwrap()
}

fn mini_program(to: &str) -> MiniProgramMessage {
    MiniProgramMessage::builder(OpenId::new(to).unwrap(), TemplateId::new(LIBRARY_TEMPLATE).unwrap(), data())
        .page("pages/order/index?id=42")
        .build()
        .unwrap()
}

fn json_of(r: &HttpRequest) -> serde_json::Value {
    serde_json::from_slice(r.body()).unwrap()
}

#[tokio::test]
async fn a_mini_program_message_is_posted_with_its_data_and_the_token() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", MP_SEND).reply(ok_reply());
    let client = builder(&mock, &clock()).build().unwrap();
    assert_eq!(client.send_mini_program(&mini_program("oAlice")).await.unwrap().attempts, 1);
    let sent = mock.requests().into_iter().find(|r| r.path() == MP_SEND).unwrap();
    assert!(sent.uri().query().unwrap().starts_with("access_token=T1"));
    let body = json_of(&sent);
    assert_eq!(body["touser"], "oAlice");
    assert_eq!(body["data"]["thing1"]["value"], "亚麻衬衫");
    assert_eq!(body["page"], "pages/order/index?id=42");
    assert_eq!(client.openids_in_flight(), 0);
}

#[tokio::test]
async fn a_notification_returns_its_msgid() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", BIZSEND)
        .reply(MockReply::json(200, r#"{"errcode":0,"errmsg":"ok","msgid":1700000123}"#));
    let client = builder(&mock, &clock()).build().unwrap();
    let n = NotificationMessage::builder(
        OpenId::new("oAlice").unwrap(),
        TemplateId::new(LIBRARY_TEMPLATE).unwrap(),
        data(),
    )
    .page("https://shop.example.com/orders/42")
    .build()
    .unwrap();
    let sent = client.send_notification(&n).await.unwrap();
    assert_eq!((sent.response.msgid, sent.receipt.attempts), (1_700_000_123, 1));
}

#[tokio::test]
async fn a_refused_value_names_its_field_and_is_not_replayed() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", MP_SEND)
        .reply(errcode_reply(47003, "argument invalid! data.thing1.value invalid rid: 1"));
    let client = builder(&mock, &clock()).build().unwrap();
    let SendError::Api(e) = client.send_mini_program(&mini_program("oAlice")).await.unwrap_err() else {
        panic!("an API error")
    };
    assert_eq!(e.invalid_field(), Some("data.thing1.value"));
    mock.assert_count(MP_SEND, 1);
}

#[tokio::test]
async fn a_43108_is_replayed_after_a_backoff() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push(errcode_reply(43108, "concurrent call for the same openid")).push(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    assert_eq!(client.send_mini_program(&mini_program("oAlice")).await.unwrap().attempts, 2);
    assert_eq!(clock.sleeps().len(), 1, "one backoff before the replay");
}

#[tokio::test]
async fn the_library_calls_carry_their_query_after_the_token() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("GET", "/wxaapi/newtmpl/getpubtemplatekeywords").reply(MockReply::json(
        200,
        r#"{"errcode":0,"count":1,"data":[{"kid":1,"name":"物品名称","example":"衬衫","rule":"thing"}]}"#,
    ));
    mock.route("GET", "/wxaapi/newtmpl/getpubtemplatetitles").reply(MockReply::json(
        200,
        r#"{"errcode":0,"count":1,"data":[{"tid":99,"title":"到货提醒","type":2,"categoryId":"616"}]}"#,
    ));
    mock.route("POST", "/wxaapi/newtmpl/addtemplate")
        .reply(MockReply::json(200, format!(r#"{{"errcode":0,"priTmplId":"{LIBRARY_TEMPLATE}"}}"#)));
    mock.route("POST", "/wxaapi/newtmpl/deltemplate").reply(ok_reply());
    mock.route("GET", "/wxaapi/newtmpl/gettemplate").reply(MockReply::json(
        200,
        format!(r#"{{"errcode":0,"data":[{{"priTmplId":"{LIBRARY_TEMPLATE}","content":"{{{{thing1.DATA}}}}","type":2}}]}}"#),
    ));
    mock.route("GET", "/wxaapi/newtmpl/getcategory")
        .reply(MockReply::json(200, r#"{"errcode":0,"data":[{"id":616,"name":"公交"}]}"#));
    let client = builder(&mock, &clock()).build().unwrap();

    assert_eq!(client.template_keywords(99).await.unwrap().data[0].keyword_type(), Some(KeywordType::Thing));
    assert_eq!(
        client.public_templates(&TitlesQuery::new([616], 0, 30).unwrap()).await.unwrap().data[0].tid,
        99
    );
    let id = client.add_template(&AddTemplate::new(99, [1, 2], Some("到货")).unwrap()).await.unwrap();
    assert_eq!(id.as_str(), LIBRARY_TEMPLATE);
    client.delete_template(&id).await.unwrap();
    assert_eq!(client.templates().await.unwrap().data[0].keys(), ["thing1"]);
    assert_eq!(client.template_categories().await.unwrap().data[0].id, 616);

    let queries: HashMap<String, String> = mock
        .requests()
        .iter()
        .map(|r| (r.path().to_owned(), r.uri().query().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(queries["/wxaapi/newtmpl/getpubtemplatekeywords"], "access_token=T1&tid=99");
    assert_eq!(queries["/wxaapi/newtmpl/getpubtemplatetitles"], "access_token=T1&ids=616&start=0&limit=30");
    assert_eq!(queries["/wxaapi/newtmpl/gettemplate"], "access_token=T1");
    let add = mock.requests().into_iter().find(|r| r.path() == "/wxaapi/newtmpl/addtemplate").unwrap();
    assert_eq!(json_of(&add), serde_json::json!({"tid": "99", "kidList": [1, 2], "sceneDesc": "到货"}));
    let del = mock.requests().into_iter().find(|r| r.path() == "/wxaapi/newtmpl/deltemplate").unwrap();
    assert_eq!(json_of(&del), serde_json::json!({"priTmplId": LIBRARY_TEMPLATE}));
}

/// Plays WeChat's rule: a send to an openid that already has one in flight gets 43108. Sends
/// take 5 ms; token requests go to the mock.
#[derive(Clone, Debug)]
struct OneAtATime {
    token: MockTransport,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    refused: Arc<Mutex<usize>>,
    delivered: Arc<Mutex<HashMap<String, usize>>>,
}

#[async_trait::async_trait]
impl HttpTransport for OneAtATime {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if request.path() != MP_SEND {
            return self.token.send(request).await;
        }
        let to = json_of(&request)["touser"].as_str().unwrap().to_owned();
        let busy = {
            let mut in_flight = self.in_flight.lock().unwrap();
            let n = in_flight.entry(to.clone()).or_default();
            *n += 1;
            *n > 1
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        *self.in_flight.lock().unwrap().get_mut(&to).unwrap() -= 1;
        let reply = if busy {
            *self.refused.lock().unwrap() += 1;
            errcode_reply(43108, "concurrent call for the same openid")
        } else {
            *self.delivered.lock().unwrap().entry(to).or_default() += 1;
            ok_reply()
        };
        let mock = MockTransport::new();
        mock.push(reply);
        mock.send(request).await
    }
}

#[tokio::test(start_paused = true)]
async fn many_sends_to_one_user_go_one_at_a_time_and_all_complete() {
    let wechat = OneAtATime {
        token: mock_with_stable_token("T1", 7200),
        in_flight: Arc::default(),
        refused: Arc::default(),
        delivered: Arc::default(),
    };
    let client =
        Client::builder(appid(), AppSecret::new(SECRET).unwrap()).transport(wechat.clone()).build().unwrap();
    let mut sends = Vec::new();
    for i in 0..30 {
        let client = client.clone();
        // 20 to Alice, 10 spread over others.
        let to = if i % 3 == 2 { format!("oOther{i}") } else { "oAlice".to_owned() };
        sends.push(tokio::spawn(async move { client.send_mini_program(&mini_program(&to)).await }));
    }
    for s in sends {
        assert_eq!(s.await.unwrap().unwrap().attempts, 1, "never refused, so never replayed");
    }
    assert_eq!(*wechat.refused.lock().unwrap(), 0, "no two sends to one openid at once");
    assert_eq!(wechat.delivered.lock().unwrap()["oAlice"], 20);
    assert_eq!(client.openids_in_flight(), 0, "no lock is kept once the sends end");
}

fn accepted(template: &str) -> SubscribeAnswers {
    SubscribeAnswers::from_request_subscribe_message(&format!(
        r#"{{"errMsg":"requestSubscribeMessage:ok","{template}":"accept"}}"#
    ))
    .unwrap()
}

async fn dispatch_mini_program(
    client: &Client,
    ledger: &Arc<subscribe_client::InMemoryGrantLedger>,
    kind: TemplateKind,
) -> subscribe_client::DispatchReport {
    subscribe_client::Dispatcher::mini_program(
        client.clone(),
        Arc::clone(ledger),
        TemplateId::new(LIBRARY_TEMPLATE).unwrap(),
        kind,
        |to: &OpenId| {
            MiniProgramMessage::builder(to.clone(), TemplateId::new(LIBRARY_TEMPLATE).unwrap(), data())
                .build()
        },
    )
    .run()
    .await
    .unwrap()
}

#[tokio::test]
async fn accepted_one_time_templates_become_grants_that_one_dispatch_uses_up() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", MP_SEND).reply(ok_reply());
    let client = builder(&mock, &clock()).build().unwrap();
    let ledger = Arc::new(subscribe_client::InMemoryGrantLedger::new());
    for user in ["oAlice", "oBob", "oCarol"] {
        let recorded =
            client.record_accepted(&OpenId::new(user).unwrap(), &accepted(LIBRARY_TEMPLATE), &*ledger).await;
        assert_eq!(recorded.unwrap()[0].1, subscribe_client::Recorded::Added);
    }
    // A second acceptance of a pending template adds nothing: never more than one message.
    let again =
        client.record_accepted(&OpenId::new("oAlice").unwrap(), &accepted(LIBRARY_TEMPLATE), &*ledger).await;
    assert_eq!(again.unwrap()[0].1, subscribe_client::Recorded::AlreadyPending);

    let report = dispatch_mini_program(&client, &ledger, TemplateKind::OneTime).await;
    assert_eq!(report.progress.delivered, 3);
    mock.assert_count(MP_SEND, 3);
    let scope = GrantScope::mini_program(appid(), TemplateId::new(LIBRARY_TEMPLATE).unwrap());
    let counts = ledger.counts(&scope, t0()).await.unwrap();
    assert_eq!((counts.pending, counts.delivered), (0, 3), "one-time grants are used up");
    assert_eq!(dispatch_mini_program(&client, &ledger, TemplateKind::OneTime).await.progress.sent, 0);
}

/// A dispatch of subscribe notifications: each grant's notification sent through `bizsend`
/// with its msgid in the outcome; a one-time template's grants are used up, a long-term one's
/// stay pending; a message for another user is not sent.
#[tokio::test]
async fn a_notification_dispatch_reports_each_msgid_and_keeps_long_term_grants() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", BIZSEND)
        .reply(MockReply::json(200, r#"{"errcode":0,"errmsg":"ok","msgid":1700000123}"#));
    let client = builder(&mock, &clock()).build().unwrap();
    let ledger = Arc::new(subscribe_client::InMemoryGrantLedger::new());
    for user in ["oAlice", "oBob"] {
        let recorded =
            client.record_accepted(&OpenId::new(user).unwrap(), &accepted(LIBRARY_TEMPLATE), &*ledger).await;
        assert_eq!(recorded.unwrap()[0].1, subscribe_client::Recorded::Added);
    }
    let dispatch = |kind: TemplateKind| {
        subscribe_client::Dispatcher::notification(
            client.clone(),
            Arc::clone(&ledger),
            TemplateId::new(LIBRARY_TEMPLATE).unwrap(),
            kind,
            |to: &OpenId| {
                NotificationMessage::builder(to.clone(), TemplateId::new(LIBRARY_TEMPLATE).unwrap(), data())
                    .build()
            },
        )
    };
    let scope = GrantScope::notification(appid(), TemplateId::new(LIBRARY_TEMPLATE).unwrap());
    // `record_accepted` cannot tell a mini program from a service account: both kinds' grants
    // are kept in the one scope their constructors name.
    assert_eq!(scope, GrantScope::mini_program(appid(), TemplateId::new(LIBRARY_TEMPLATE).unwrap()));
    let report = dispatch(TemplateKind::LongTerm).run().await.unwrap();
    assert_eq!(report.progress.delivered, 2);
    assert!(report.outcomes.iter().all(|o| o.msgid == Some(1_700_000_123)), "{:?}", report.outcomes);
    assert_eq!(ledger.counts(&scope, t0()).await.unwrap().pending, 2, "long-term grants stay pending");
    let report = dispatch(TemplateKind::OneTime).run().await.unwrap();
    assert_eq!(report.progress.delivered, 2);
    let counts = ledger.counts(&scope, t0()).await.unwrap();
    assert_eq!((counts.pending, counts.delivered), (0, 2), "one-time grants are used up");
    mock.assert_count(BIZSEND, 4);
    assert!(
        mock.requests().iter().all(|r| !r.path().contains(MP_SEND)),
        "nothing through the mini-program door"
    );

    // A function that builds a notification for someone else: not sent, the grant kept.
    client
        .record_accepted(&OpenId::new("oCarol").unwrap(), &accepted(LIBRARY_TEMPLATE), &*ledger)
        .await
        .unwrap();
    let report = subscribe_client::Dispatcher::notification(
        client.clone(),
        Arc::clone(&ledger),
        TemplateId::new(LIBRARY_TEMPLATE).unwrap(),
        TemplateKind::OneTime,
        |_: &OpenId| {
            NotificationMessage::builder(
                OpenId::new("oMallory").unwrap(),
                TemplateId::new(LIBRARY_TEMPLATE).unwrap(),
                data(),
            )
            .build()
        },
    )
    .run()
    .await
    .unwrap();
    assert_eq!((report.progress.delivered, report.progress.failed), (0, 1), "{report:?}");
    mock.assert_count(BIZSEND, 4);
}

#[tokio::test]
async fn a_long_term_subscription_stays_pending_after_a_dispatch_until_withdrawn() {
    let mock = mock_with_stable_token("T1", 7200);
    // Alice's sends succeed; Bob withdrew his subscription (43101).
    mock.route("POST", MP_SEND).when(|r| json_of(r)["touser"] == "oAlice").reply(ok_reply());
    mock.route("POST", MP_SEND)
        .when(|r| json_of(r)["touser"] == "oBob")
        .reply(errcode_reply(43101, "user refuse to accept the msg"));
    let client = builder(&mock, &clock()).build().unwrap();
    let ledger = Arc::new(subscribe_client::InMemoryGrantLedger::new());
    for user in ["oAlice", "oBob"] {
        client
            .record_accepted(&OpenId::new(user).unwrap(), &accepted(LIBRARY_TEMPLATE), &ledger)
            .await
            .unwrap();
    }
    let scope = GrantScope::mini_program(appid(), TemplateId::new(LIBRARY_TEMPLATE).unwrap());
    for round in 1..=2 {
        let report = dispatch_mini_program(&client, &ledger, TemplateKind::LongTerm).await;
        assert_eq!(report.progress.delivered, 1, "round {round}: Alice, again");
        let counts = ledger.counts(&scope, t0()).await.unwrap();
        assert_eq!((counts.pending, counts.delivered, counts.dropped), (1, 0, 1), "round {round}");
    }
}

/// The dispatcher trusts the `kind` it is given. A one-time template stated as long-term keeps
/// its delivered grant pending; WeChat refuses the next dispatch's send (43101), which drops the
/// grant: one refused send, and no user gets a second message.
#[tokio::test]
async fn a_one_time_template_stated_as_long_term_costs_one_refused_send_and_no_second_message() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push(ok_reply()).push(errcode_reply(43101, "user refuse to accept the msg"));
    let client = builder(&mock, &clock()).build().unwrap();
    let ledger = Arc::new(subscribe_client::InMemoryGrantLedger::new());
    let alice = OpenId::new("oAlice").unwrap();
    client.record_accepted(&alice, &accepted(LIBRARY_TEMPLATE), &ledger).await.unwrap();
    let scope = GrantScope::mini_program(appid(), TemplateId::new(LIBRARY_TEMPLATE).unwrap());
    let first = dispatch_mini_program(&client, &ledger, TemplateKind::LongTerm).await;
    assert_eq!(first.progress.delivered, 1);
    assert_eq!(ledger.counts(&scope, t0()).await.unwrap().pending, 1, "kept, as stated");
    let second = dispatch_mini_program(&client, &ledger, TemplateKind::LongTerm).await;
    assert_eq!((second.progress.delivered, second.progress.dropped), (0, 1), "{second:?}");
    let counts = ledger.counts(&scope, t0()).await.unwrap();
    assert_eq!((counts.pending, counts.dropped), (0, 1), "WeChat's refusal drops it");
    let third = dispatch_mini_program(&client, &ledger, TemplateKind::LongTerm).await;
    assert_eq!(third.progress.sent, 0, "nothing left to send");
    mock.assert_count(MP_SEND, 2);
}

/// What WeChat did, its answer, the reads' kind, the changes' kind, the errcode.
type LibraryCase =
    (&'static str, fn() -> MockReply, subscribe_client::ErrorKind, subscribe_client::ErrorKind, Option<i64>);

/// An error and its sources, each in `Display` and `Debug`, as a CLI or `anyhow`'s `{:#}`
/// prints them.
fn chain(e: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = format!("{e} {e:?}");
    let mut source = e.source();
    while let Some(x) = source {
        write!(text, " | {x} | {x:?}").unwrap();
        source = x.source();
    }
    text
}

/// The library's three calls that can fail alike: a read with a query, a read without, and
/// the two changes, each answered `reply`.
fn library_mock(reply: fn() -> MockReply) -> MockTransport {
    let mock = mock_with_stable_token("T1", 7200);
    for (method, path) in [
        ("GET", "/wxaapi/newtmpl/getpubtemplatekeywords"),
        ("GET", "/wxaapi/newtmpl/gettemplate"),
        ("POST", "/wxaapi/newtmpl/addtemplate"),
        ("POST", "/wxaapi/newtmpl/deltemplate"),
    ] {
        mock.route(method, path).reply(reply());
    }
    mock
}

#[tokio::test]
async fn a_library_call_is_unknown_only_when_a_change_may_have_happened() {
    use ErrorKind::{Configuration, Invalid, Other, Retryable, Unknown};
    use subscribe_client::transport::TransportErrorKind;
    use subscribe_client::{ErrorKind, LibraryCall, RetryPolicy};
    let cases: [LibraryCase; 10] = [
        (
            "a timeout after the request left",
            || MockReply::error(TransportErrorKind::Timeout),
            Retryable,
            Unknown,
            None,
        ),
        (
            "a reset after the request left",
            || MockReply::error(TransportErrorKind::Io),
            Retryable,
            Unknown,
            None,
        ),
        ("HTTP 502 from a gateway", || MockReply::status(502), Retryable, Unknown, None),
        (
            "a 200 that is not WeChat's envelope",
            || MockReply::json(200, "<html>busy</html>"),
            Retryable,
            Unknown,
            None,
        ),
        (
            "errcode 0 with an answer that does not decode",
            || MockReply::json(200, r#"{"errcode":0,"data":"x","priTmplId":7}"#),
            Invalid,
            Unknown,
            None,
        ),
        (
            "the request never left",
            || MockReply::error(TransportErrorKind::Connect),
            Retryable,
            Retryable,
            None,
        ),
        ("an invalid tid", || errcode_reply(200_014, "invalid tid"), Invalid, Invalid, Some(200_014)),
        (
            "a banned account",
            || errcode_reply(200_011, "banned"),
            Configuration,
            Configuration,
            Some(200_011),
        ),
        (
            "43101, which means nothing here",
            || errcode_reply(43101, "user refuse"),
            Other,
            Other,
            Some(43101),
        ),
        ("HTTP 404", || MockReply::status(404), Configuration, Configuration, None),
    ];
    for (what, reply, read, change, errcode) in cases {
        let mock = library_mock(reply);
        let client = builder(&mock, &clock()).retry_policy(RetryPolicy::none()).build().unwrap();
        let reads = [client.template_keywords(99).await.unwrap_err(), client.templates().await.unwrap_err()];
        let mut changes = vec![
            client.add_template(&AddTemplate::new(99, [1, 2], Some("到货")).unwrap()).await.unwrap_err(),
        ];
        match client.delete_template(&TemplateId::new(LIBRARY_TEMPLATE).unwrap()).await {
            Err(e) => changes.push(e),
            // `deltemplate` answers nothing but the envelope: any errcode 0 is its success.
            Ok(()) => assert!(what.starts_with("errcode 0"), "{what}: deleted"),
        }
        for (e, kind) in reads.iter().map(|e| (e, read)).chain(changes.iter().map(|e| (e, change))) {
            assert_eq!(e.kind(), kind, "{what}: {}: {e:?}", e.call());
            assert_eq!(e.outcome_known(), kind != Unknown, "{what}: {}", e.call());
            assert_eq!(e.api_code().map(ErrCode::get), errcode, "{what}: {}", e.call());
            assert!(!matches!(e.kind(), ErrorKind::Refused | ErrorKind::ProbablyDelivered), "{what}");
            // The call's own error stays readable, with what it says about a delivery.
            assert_eq!(e.execute_error().api_code(), e.api_code(), "{what}");
        }
        let calls: Vec<_> = reads.iter().chain(&changes).map(subscribe_client::LibraryError::call).collect();
        let all = [
            LibraryCall::Keywords,
            LibraryCall::Templates,
            LibraryCall::AddTemplate,
            LibraryCall::DeleteTemplate,
        ];
        assert_eq!(calls, all[..2 + changes.len()], "{what}");
    }
}

#[tokio::test]
async fn a_library_call_without_a_token_is_the_tokens_kind_and_names_its_call() {
    use subscribe_client::{ErrorKind, LibraryCall};
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(errcode_reply(40013, "invalid appid"));
    let client = builder(&mock, &clock()).build().unwrap();
    let e = client.template_categories().await.unwrap_err();
    assert_eq!(
        (e.kind(), e.outcome_known(), e.api_code()),
        (ErrorKind::Token, true, Some(ErrCode::new(40013)))
    );
    assert_eq!(e.to_string(), "template library call `getcategory` failed");
    assert!(matches!(e.execute_error(), SendError::Token(_)), "{e:?}");
    let source = std::error::Error::source(&e).expect("the call's error is the source");
    assert_eq!(source.to_string(), "no access token");
    assert!(chain(&e).contains("the AppID is invalid (errcode 40013)"), "{}", chain(&e));
    let e = client.public_templates(&TitlesQuery::new([616], 0, 30).unwrap()).await.unwrap_err();
    assert_eq!((e.call(), e.kind()), (LibraryCall::PublicTemplates, ErrorKind::Token));
    let names = [
        LibraryCall::Categories,
        LibraryCall::PublicTemplates,
        LibraryCall::Keywords,
        LibraryCall::AddTemplate,
        LibraryCall::DeleteTemplate,
        LibraryCall::Templates,
    ]
    .map(|c| (c.to_string(), c.changes_templates()));
    assert_eq!(
        names.iter().map(|(n, c)| (n.as_str(), *c)).collect::<Vec<_>>(),
        [
            ("getcategory", false),
            ("getpubtemplatetitles", false),
            ("getpubtemplatekeywords", false),
            ("addtemplate", true),
            ("deltemplate", true),
            ("gettemplate", false),
        ]
    );
}

#[tokio::test]
async fn the_token_in_a_library_query_never_shows_in_errors_or_logs() {
    let token = "TOKEN_never_printed_9f8e7d";
    let mock = mock_with_stable_token(token, 7200);
    mock.route("GET", "/wxaapi/newtmpl/getpubtemplatekeywords").reply(errcode_reply(200_014, "invalid tid"));
    mock.route("POST", MP_SEND).reply(subscribe_client::transport::MockReply::status(502));
    // A gateway that echoes the request, token and all, and an answer lost on the way.
    mock.route("POST", "/wxaapi/newtmpl/addtemplate")
        .reply(MockReply::status(502).body(format!("GET /?access_token={token}")));
    mock.route("GET", "/wxaapi/newtmpl/gettemplate").reply(MockReply::json(200, format!("<{token}>")));
    mock.route("POST", "/wxaapi/newtmpl/deltemplate")
        .reply(MockReply::error(subscribe_client::transport::TransportErrorKind::Timeout));
    let client = builder(&mock, &clock()).build().unwrap();
    let e = client.template_keywords(1).await.unwrap_err();
    let e2 = client.send_mini_program(&mini_program("oAlice")).await.unwrap_err();
    let library = [
        client.add_template(&AddTemplate::new(99, [1, 2], None).unwrap()).await.unwrap_err(),
        client.templates().await.unwrap_err(),
        client.delete_template(&TemplateId::new(LIBRARY_TEMPLATE).unwrap()).await.unwrap_err(),
    ];
    let mut texts = vec![format!("{e} {e:?}"), format!("{e2} {e2:?}"), format!("{:?}", mock.requests())];
    for e in library.iter().chain([&e]) {
        let text = chain(e);
        assert!(!text.contains("access_token="), "no URL with a token: {text}");
        texts.push(text);
    }
    for shown in texts {
        assert!(!shown.contains(token), "{shown}");
    }
    assert_eq!(e.api_code(), Some(ErrCode::LIBRARY_INVALID_TID));
    assert_eq!(library.map(|e| e.outcome_known()), [false, true, false]);
}
