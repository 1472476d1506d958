//! Known answers computed independently (`tests/fixtures/make_vectors.py`, Python's `hashlib`
//! and `cryptography`), round trips, the shapes seen in the wild, and every refusal.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use serde_json::Value;
use subscribe_events::*;

fn vectors() -> Value {
    serde_json::from_str(include_str!("fixtures/vectors.json")).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn safe_push(v: &Value) -> Push {
    Push::new(
        PushConfig::new(s(&v["token"]), s(&v["appid"]), Mode::Safe)
            .aes_key(EncodingAesKey::new(s(&v["aes_key"])).unwrap())
            .previous_aes_key(EncodingAesKey::new(s(&v["previous_aes_key"])).unwrap()),
    )
}

const NOW: u64 = 1_800_000_030;

fn safe_query(v: &Value, m: &Value) -> String {
    format!(
        "signature={}&timestamp={}&nonce={}&openid=oSandbox_Alice_00000000001&encrypt_type=aes&msg_signature={}",
        s(&m["signature"]),
        s(&v["timestamp"]),
        s(&v["nonce"]),
        s(&m["msg_signature"])
    )
}

fn sealed_xml(encrypt: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
}

#[test]
fn signatures_and_ciphertexts_match_the_independent_vectors() {
    let v = vectors();
    assert_eq!(signature(&[s(&v["token"]), s(&v["timestamp"]), s(&v["nonce"])]), s(&v["url_signature"]));
    let random: [u8; 16] = s(&v["random16"]).as_bytes().try_into().unwrap();
    for m in v["messages"].as_array().unwrap() {
        let key = EncodingAesKey::new(s(&m["key"])).unwrap();
        assert_eq!(
            key.encrypt(s(&m["plaintext"]), s(&v["appid"]), random),
            s(&m["encrypt"]),
            "{}",
            m["name"]
        );
        assert_eq!(key.decrypt(s(&m["encrypt"]), s(&v["appid"])).unwrap(), s(&m["plaintext"]));
        assert_eq!(
            signature(&[s(&v["token"]), s(&v["timestamp"]), s(&v["nonce"]), s(&m["encrypt"])]),
            s(&m["msg_signature"])
        );
    }
}

#[test]
fn a_safe_mode_popup_in_xml_and_a_sent_event_in_json_are_read() {
    let v = vectors();
    let push = safe_push(&v);
    let [popup, sent, rotated] = &v["messages"].as_array().unwrap()[..] else { panic!() };
    let event = push.open(&safe_query(&v, popup), sealed_xml(s(&popup["encrypt"])).as_bytes(), NOW).unwrap();
    assert_eq!((event.from_user.as_str(), event.create_time), ("oSandbox_Alice_00000000001", 1_800_000_000));
    let EventKind::Popup(items) = &event.kind else { panic!("{event:?}") };
    assert_eq!(
        items[..],
        [PopupItem {
            template_id: "SandboxMpRestockAlert_0000000000000000000001".into(),
            status: "accept".into(),
            popup_scene: Some(2)
        }]
    );

    // The same push again: a replay, nothing read twice.
    let again = push.open(&safe_query(&v, popup), sealed_xml(s(&popup["encrypt"])).as_bytes(), NOW);
    assert_eq!(again.unwrap_err(), PushError::Replayed);

    // The vectors share one timestamp and nonce, which makes them one push to a configuration
    // that read one of them (WeChat draws a nonce per push): each of the others is read by a
    // configuration of its own.
    let body =
        serde_json::json!({"ToUserName": "gh_123456789abc", "Encrypt": s(&sent["encrypt"])}).to_string();
    assert_eq!(push.open(&safe_query(&v, sent), body.as_bytes(), NOW), Err(PushError::Replayed));
    let push = safe_push(&v);
    let event = push.open(&safe_query(&v, sent), body.as_bytes(), NOW).unwrap();
    let EventKind::Sent(items) = &event.kind else { panic!("{event:?}") };
    assert_eq!(
        (items[0].msg_id, items[0].error_code, items[0].error_status.as_str()),
        (1_700_000_001, 0, "success")
    );

    // Encrypted with the previous key during a rotation: still read.
    let push = safe_push(&v);
    let event =
        push.open(&safe_query(&v, rotated), sealed_xml(s(&rotated["encrypt"])).as_bytes(), NOW).unwrap();
    assert_eq!(event.name(), "subscribe_msg_popup_event");
}

#[test]
fn every_bad_push_is_refused_with_its_status_and_nothing_remembered() {
    let v = vectors();
    let [popup, ..] = &v["messages"].as_array().unwrap()[..] else { panic!() };
    let good_query = safe_query(&v, popup);
    let good_body = sealed_xml(s(&popup["encrypt"]));
    let cases: Vec<(String, String, u64, PushError)> = vec![
        (
            good_query.replace("msg_signature=", "msg_signature=0"),
            good_body.clone(),
            NOW,
            PushError::BadSignature("msg_signature"),
        ),
        (
            good_query.replace("signature=", "signature=f").replacen("msg_signature=f", "msg_signature=", 1),
            good_body.clone(),
            NOW,
            PushError::BadSignature("signature"),
        ),
        (good_query.clone(), good_body.clone(), NOW + 301, PushError::Stale { skew: 301 + 30, window: 300 }),
        (good_query.replace("&encrypt_type=aes", ""), good_body.clone(), NOW, PushError::NotEncrypted),
        (
            good_query.replace("nonce=", "nonce=x"),
            good_body.clone(),
            NOW,
            PushError::BadSignature("signature"),
        ),
        (
            good_query.clone(),
            "<xml><ToUserName>gh</ToUserName></xml>".into(),
            NOW,
            PushError::Malformed("no Encrypt in the XML"),
        ),
        (good_query.clone(), "x".repeat(MAX_BODY + 1), NOW, PushError::TooLarge),
    ];
    let push = safe_push(&v);
    for (query, body, now, expected) in cases {
        let e = push.open(&query, body.as_bytes(), now).unwrap_err();
        assert_eq!(e, expected, "{query}");
        assert_ne!(e.http_status(), 200);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(s(&v["token"])) && !shown.contains(s(&popup["encrypt"])), "{shown}");
    }
    // Nothing above was remembered: the good push still reads, once.
    assert!(push.open(&good_query, good_body.as_bytes(), NOW).is_ok());
}

/// Ciphertexts a signer produced correctly but that do not decrypt properly: bad padding,
/// truncated, another appid. Each is the same refusal; its typed detail is there for the logs.
#[test]
fn ciphertexts_that_do_not_open_are_refused_with_a_typed_detail() {
    let v = vectors();
    let token = s(&v["token"]);
    let key = EncodingAesKey::new(s(&v["aes_key"])).unwrap();
    let push = Push::new(PushConfig::new(token, s(&v["appid"]), Mode::Safe).aes_key(key.clone()));
    let signed = |encrypt: &str, nonce: &str| {
        let msg_sig = signature(&[token, "1800000000", nonce, encrypt]);
        let sig = signature(&[token, "1800000000", nonce]);
        format!("signature={sig}&timestamp=1800000000&nonce={nonce}&encrypt_type=aes&msg_signature={msg_sig}")
    };
    let other_app = key.encrypt("<xml/>", "wxOtherApp000000001", [7; 16]);
    let good = key.encrypt("<xml/>", s(&v["appid"]), [7; 16]);
    let truncated = {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD.decode(&good).unwrap();
        base64::engine::general_purpose::STANDARD.encode(&raw[..raw.len() - 16])
    };
    for (n, (encrypt, expected)) in [
        (other_app, OpenFailure::WrongAppId),
        ("bm90IGJsb2Nrcw==".to_owned(), OpenFailure::NotWholeBlocks),
        ("***".to_owned(), OpenFailure::NotBase64),
        (truncated, OpenFailure::BadPadding),
    ]
    .into_iter()
    .enumerate()
    {
        let nonce = format!("n{n}");
        let e = push.open(&signed(&encrypt, &nonce), sealed_xml(&encrypt).as_bytes(), NOW).unwrap_err();
        assert_eq!(e, PushError::Unopened(expected));
        // The public face says nothing of the detail; the detail names itself.
        assert_eq!((e.to_string().as_str(), e.http_status()), ("the push could not be opened", 400));
        assert!(format!("{e:?}").contains(&format!("{expected:?}")), "{e:?}");
        assert!(!e.to_string().contains(expected.as_str()));
    }
    // Every tampering of `tampered_ciphertexts` has its own detail.
    let push = push_in(Mode::Safe);
    let details: Vec<OpenFailure> = tampered_ciphertexts(&EncodingAesKey::new(KEY).unwrap())
        .into_iter()
        .enumerate()
        .map(|(n, (_, encrypt))| {
            let (ts, nonce) = (TS.to_string(), format!("d{n}"));
            let query = format!(
                "signature={}&timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
                signature(&[TOKEN32, &ts, &nonce]),
                signature(&[TOKEN32, &ts, &nonce, &encrypt])
            );
            match push.open(&query, sealed_xml(&encrypt).as_bytes(), TS) {
                Err(PushError::Unopened(why)) => why,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let bad_padding = OpenFailure::BadPadding;
    assert_eq!(
        details,
        [
            OpenFailure::WrongAppId,
            OpenFailure::NotBase64,
            OpenFailure::NotWholeBlocks,
            bad_padding,
            bad_padding,
            bad_padding,
            bad_padding,
            OpenFailure::LengthPastEnd,
            OpenFailure::NotUtf8,
            OpenFailure::NotAnEvent
        ]
    );
    // Nothing that failed was remembered.
    let sealed = push.seal(&acceptance(Format::Xml), TS, "d0", [7; 16]).unwrap();
    push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap();
}

#[test]
fn the_url_check_answers_echostr_only_when_signed() {
    let v = vectors();
    let push = Push::new(PushConfig::new(s(&v["token"]), s(&v["appid"]), Mode::Plain));
    let q = format!(
        "signature={}&timestamp=1800000000&nonce={}&echostr=ECHO123",
        s(&v["url_signature"]),
        s(&v["nonce"])
    );
    assert_eq!(push.verify_url(&q, NOW).unwrap(), "ECHO123");
    assert_eq!(
        push.verify_url(&q.replace("signature=6", "signature=7"), NOW).unwrap_err().http_status(),
        401
    );
    assert_eq!(
        push.verify_url(&q.replace("&echostr=ECHO123", ""), NOW).unwrap_err(),
        PushError::Missing("echostr")
    );
    // Upper-case hex is the same signature.
    assert!(
        push.verify_url(&q.replace(s(&v["url_signature"]), &s(&v["url_signature"]).to_uppercase()), NOW)
            .is_ok()
    );
}

#[test]
fn the_shapes_seen_in_the_wild_read_alike() {
    let one = r#"{"FromUserName":"oU","CreateTime":1800000000,"Event":"subscribe_msg_change_event","List":{"TemplateId":"T1","SubscribeStatusString":"reject"}}"#;
    let many = r#"{"FromUserName":"oU","CreateTime":"1800000000","Event":"subscribe_msg_change_event","SubscribeMsgChangeEvent":{"List":[{"TemplateId":"T1","SubscribeStatusString":"reject"}]}}"#;
    let bare = r#"{"FromUserName":"oU","CreateTime":"1800000000","Event":"subscribe_msg_change_event","SubscribeMsgChangeEvent":[{"TemplateId":"T1","SubscribeStatusString":"reject"}]}"#;
    let xml = "<xml><FromUserName><![CDATA[oU]]></FromUserName><CreateTime>1800000000</CreateTime><Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent><List><TemplateId>T1</TemplateId><SubscribeStatusString>reject</SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>";
    let expected = EventKind::Change(vec![ChangeItem { template_id: "T1".into(), status: "reject".into() }]);
    for event in [Event::from_json(one), Event::from_json(many), Event::from_json(bare), Event::from_xml(xml)]
    {
        let event = event.unwrap();
        assert_eq!((event.kind, event.create_time), (expected.clone(), 1_800_000_000));
    }
    let two = "<xml><Event>subscribe_msg_sent_event</Event><SubscribeMsgSentEvent><List><TemplateId>A</TemplateId><MsgID>1</MsgID><ErrorCode>0</ErrorCode><ErrorStatus>success</ErrorStatus></List><List><TemplateId>B</TemplateId><MsgID>2</MsgID><ErrorCode>43101</ErrorCode><ErrorStatus>failed:user refuse</ErrorStatus></List></SubscribeMsgSentEvent></xml>";
    let EventKind::Sent(items) = Event::from_xml(two).unwrap().kind else { panic!() };
    assert_eq!((items.len(), items[1].error_code), (2, 43_101));
    let other = Event::from_xml("<xml><MsgType>text</MsgType><Content>hi</Content></xml>").unwrap();
    assert!(matches!(&other.kind, EventKind::Other { event, .. } if event == "text"));
    // An entity the document declares is never expanded.
    let bomb = "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><xml><Event>&a;</Event></xml>";
    assert!(Event::from_xml(bomb).is_err() || Event::from_xml(bomb).unwrap().name() != "aaaa");
}

#[test]
fn keys_and_the_token_never_print() {
    let v = vectors();
    let key = EncodingAesKey::new(s(&v["aes_key"])).unwrap();
    assert_eq!(format!("{key:?}"), "EncodingAesKey([redacted])");
    let config = PushConfig::new(s(&v["token"]), s(&v["appid"]), Mode::Safe).aes_key(key);
    let shown = format!("{:?}", Push::new(config));
    assert!(!shown.contains(s(&v["aes_key"])) && !shown.contains(s(&v["token"])), "{shown}");
    assert!(EncodingAesKey::new("short").is_err());
}

proptest::proptest! {
    /// What the sandbox writes, this crate reads back, in both formats and every mode, whatever
    /// the openid and template ids hold (markup, quotes, CJK).
    #[test]
    fn written_events_read_back_in_every_format_and_mode(
        openid in "[A-Za-z0-9_<>&\"'订阅-]{1,30}",
        template in "[A-Za-z0-9_<>&\"'-]{1,43}",
        msg_id in proptest::prelude::any::<u64>(),
        error_code in proptest::prelude::any::<i64>(),
        accept in proptest::prelude::any::<bool>(),
        nonce in "[a-z0-9]{1,16}",
    ) {
        let status = if accept { "accept" } else { "reject" };
        let events = [
            Event::new("gh_1", openid.clone(), 1_800_000_000, EventKind::Popup(vec![
                PopupItem { template_id: template.clone(), status: status.into(), popup_scene: Some(2) },
                PopupItem { template_id: "second".into(), status: "reject".into(), popup_scene: None },
            ])),
            Event::new("gh_1", openid.clone(), 1_800_000_000, EventKind::Change(vec![
                ChangeItem { template_id: template.clone(), status: "reject".into() },
            ])),
            Event::new("gh_1", openid.clone(), 1_800_000_000, EventKind::Sent(vec![
                SentItem { template_id: template.clone(), msg_id, error_code, error_status: "success".into() },
            ])),
        ];
        let key = EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        for mode in [Mode::Plain, Mode::Compatible, Mode::Safe] {
            let push = Push::new(PushConfig::new("tok", "wxapp", mode).aes_key(key.clone()));
            for (i, event) in events.iter().enumerate() {
                for format in [Format::Xml, Format::Json] {
                    let sealed = push.seal(&event.to_wire(format), 1_800_000_000, &format!("{nonce}{i}{format:?}"), [9; 16]).unwrap();
                    let read = push.open(&sealed.query, sealed.body.as_bytes(), 1_800_000_000).unwrap();
                    proptest::prop_assert_eq!(&read, event, "{:?} {:?}", mode, format);
                }
            }
        }
    }
}

// What an attacker tries with one push they saw: the same push in another spelling, in another
// mode, with another body, with a parameter twice, later or stamped ahead.

const TOKEN32: &str = "pushTokenOfThirtyTwoCharacters32";
const APPID: &str = "wx5a1db0c0ffee0001";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const TS: u64 = 1_800_000_000;

fn push_in(mode: Mode) -> Push {
    Push::new(PushConfig::new(TOKEN32, APPID, mode).aes_key(EncodingAesKey::new(KEY).unwrap()))
}

fn acceptance(format: Format) -> String {
    let item = PopupItem { template_id: "T1".into(), status: "accept".into(), popup_scene: Some(1) };
    Event::new("gh_1", "oAlice", TS, EventKind::Popup(vec![item])).to_wire(format)
}

/// The withdrawal an attacker would like to slip in: it drops Alice's pending grant.
fn withdrawal() -> String {
    let item = ChangeItem { template_id: "T1".into(), status: "reject".into() };
    Event::new("gh_1", "oAlice", TS, EventKind::Change(vec![item])).to_wire(Format::Xml)
}

/// A parameter's value in a query this crate wrote.
fn param(query: &str, name: &str) -> String {
    query.split('&').find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap().to_owned()
}

/// Each character of `s` percent-encoded.
fn percent_all(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}")).unwrap();
        out
    })
}

#[test]
fn a_seen_push_is_refused_in_every_spelling_and_mode() {
    for format in [Format::Xml, Format::Json] {
        let push = push_in(Mode::Compatible);
        let sealed = push.seal(&acceptance(format), TS, "4242", [1; 16]).unwrap();
        assert!(sealed.query.contains("encrypt_type=aes"));
        push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap();
        let (sig, msg_sig) = (param(&sealed.query, "signature"), param(&sealed.query, "msg_signature"));
        let (up, msg_up) = (sig.to_uppercase(), msg_sig.to_uppercase());
        let body = sealed.body.clone();
        let spellings: Vec<(&str, String, String)> = vec![
            ("as sent", sealed.query.clone(), body.clone()),
            ("signature in upper case", sealed.query.replace(&sig, &up), body.clone()),
            (
                "both signatures in upper case",
                sealed.query.replace(&sig, &up).replace(&msg_sig, &msg_up),
                body.clone(),
            ),
            ("mixed case", sealed.query.replacen(&sig[..4], &sig[..4].to_uppercase(), 1), body.clone()),
            (
                "every value percent-encoded",
                format!(
                    "signature={}&timestamp={}&nonce={}&encrypt_type={}&msg_signature={}",
                    percent_all(&sig),
                    percent_all(&TS.to_string()),
                    percent_all("4242"),
                    percent_all("aes"),
                    percent_all(&msg_up)
                ),
                body.clone(),
            ),
            (
                "reordered, with a leading ? and parameters of no meaning",
                format!(
                    "?openid=oAlice&msg_signature={msg_sig}&encrypt_type=aes&x=1&nonce=4242&timestamp={TS}&signature={sig}&x=2"
                ),
                body.clone(),
            ),
            // Compatible mode takes plain pushes too: the encrypted push's query stripped of
            // `encrypt_type` and `msg_signature` carries any plain body.
            (
                "as a plain push with a withdrawal",
                format!("signature={sig}&timestamp={TS}&nonce=4242"),
                withdrawal(),
            ),
            (
                "as a plain push, upper case",
                format!("nonce=4242&signature={up}&timestamp={TS}"),
                withdrawal(),
            ),
            (
                "msg_signature kept, encrypt_type dropped",
                sealed.query.replace("&encrypt_type=aes", ""),
                withdrawal(),
            ),
            (
                "as a plain push carrying the sealed body",
                format!("signature={sig}&timestamp={TS}&nonce=4242"),
                body.clone(),
            ),
        ];
        for (how, query, body) in spellings {
            let answer = push.open(&query, body.as_bytes(), TS + 1);
            assert_eq!(answer, Err(PushError::Replayed), "{format:?}, {how}: {query}");
        }
        // The same push seen by a configuration in safe mode and one in plain mode: each reads
        // it once, whatever the spelling.
        for mode in [Mode::Safe, Mode::Plain] {
            let other = push_in(mode);
            let (first, again) = match mode {
                Mode::Plain => (
                    (format!("signature={sig}&timestamp={TS}&nonce=4242"), acceptance(format)),
                    (format!("signature={up}&timestamp={TS}&nonce=%34242"), withdrawal()),
                ),
                _ => ((sealed.query.clone(), body.clone()), (sealed.query.replace(&sig, &up), body.clone())),
            };
            other.open(&first.0, first.1.as_bytes(), TS).unwrap();
            assert_eq!(other.open(&again.0, again.1.as_bytes(), TS), Err(PushError::Replayed), "{mode:?}");
        }
    }
}

#[test]
fn a_plain_query_seen_once_carries_no_other_body() {
    let push = push_in(Mode::Plain);
    // The console's URL check (a GET with the same signature a push carries), captured and
    // posted with a withdrawal: refused. The check itself may come again.
    let sig = signature(&[TOKEN32, &TS.to_string(), "7"]);
    let check = format!("signature={sig}&timestamp={TS}&nonce=7&echostr=hello");
    assert_eq!(push.verify_url(&check, TS).unwrap(), "hello");
    assert_eq!(push.verify_url(&check.replace(&sig, &sig.to_uppercase()), TS + 1).unwrap(), "hello");
    assert_eq!(push.open(&check, withdrawal().as_bytes(), TS + 1), Err(PushError::Replayed));
    let without_echostr = format!("signature={}&timestamp={TS}&nonce=7", sig.to_uppercase());
    assert_eq!(push.open(&without_echostr, withdrawal().as_bytes(), TS + 1), Err(PushError::Replayed));

    // An acceptance read once; its query with the withdrawal, or with a body that does not even
    // parse, is a replay however it is spelt: the body is not signed in plain mode.
    let sealed = push.seal(&acceptance(Format::Xml), TS, "8", [0; 16]).unwrap();
    assert_eq!(
        push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap().name(),
        "subscribe_msg_popup_event"
    );
    let up = sealed
        .query
        .replace(&param(&sealed.query, "signature"), &param(&sealed.query, "signature").to_uppercase());
    for (query, body) in [
        (sealed.query.clone(), withdrawal()),
        (up.clone(), withdrawal()),
        (up.clone(), sealed.body.clone()),
        (up, "not a push at all".to_owned()),
    ] {
        assert_eq!(push.open(&query, body.as_bytes(), TS + 2), Err(PushError::Replayed), "{query} {body}");
    }
}

#[test]
fn a_push_is_remembered_while_its_timestamp_could_still_pass() {
    let push = push_in(Mode::Safe);
    let seal = |ts: u64, nonce: &str| push.seal(&acceptance(Format::Xml), ts, nonce, [2; 16]).unwrap();
    let open = |sealed: &Sealed, now: u64| push.open(&sealed.query, sealed.body.as_bytes(), now);
    let stale = |skew| Err(PushError::Stale { skew, window: 300 });

    // Stamped as far ahead as the window allows, received now: it passes the freshness check
    // until its own timestamp plus the window, and must be remembered that long.
    let ahead = seal(TS + 300, "ahead");
    open(&ahead, TS).unwrap();
    for (i, now) in [TS + 1, TS + 300, TS + 301, TS + 450, TS + 599, TS + 600].into_iter().enumerate() {
        // Another push arrives first at that time (whatever purges the cache runs).
        open(&seal(now, &format!("other{i}")), now).unwrap();
        assert_eq!(open(&ahead, now), Err(PushError::Replayed), "at now + {}", now - TS);
    }
    assert_eq!(open(&ahead, TS + 601), stale(301));

    // Stamped as far behind as the window allows: read once, then stale a second later.
    let behind = seal(TS - 300, "behind");
    open(&behind, TS).unwrap();
    assert_eq!(open(&behind, TS), Err(PushError::Replayed));
    assert_eq!(open(&behind, TS + 1), stale(301));

    // A clock stepped back: the push is still fresh, and still a replay.
    let now_push = seal(TS + 1000, "stepped");
    open(&now_push, TS + 1000).unwrap();
    assert_eq!(open(&now_push, TS + 700), Err(PushError::Replayed));
    assert_eq!(open(&now_push, TS + 699), stale(301));

    // One second past either edge is refused and remembered by nobody.
    assert_eq!(open(&seal(TS - 301, "late"), TS), stale(301));
    assert_eq!(open(&seal(TS + 301, "early"), TS), stale(301));
    open(&seal(TS - 301, "late"), TS - 1).unwrap();
    open(&seal(TS + 301, "early"), TS + 1).unwrap();
}

#[test]
fn a_repeated_signed_parameter_is_refused_whichever_copy_is_good() {
    let push = push_in(Mode::Plain);
    let sealed = push.seal(&acceptance(Format::Xml), TS, "9", [0; 16]).unwrap();
    let sig = param(&sealed.query, "signature");
    let q = &sealed.query;
    for (query, param) in [
        // The forged copy first and the genuine one last: a parser where the last one wins
        // reads the genuine one, and a proxy or a log where the first wins sees the other.
        (format!("signature=0000&{q}"), "signature"),
        (format!("{q}&signature=0000"), "signature"),
        (format!("{q}&signature={sig}"), "signature"),
        (format!("{q}&%73ignature={sig}"), "signature"),
        (format!("timestamp={}&{q}", TS + 100), "timestamp"),
        (format!("{q}&timestamp={TS}"), "timestamp"),
        (format!("nonce=1&{q}"), "nonce"),
        (format!("{q}&nonce"), "nonce"),
    ] {
        let e = push.open(&query, sealed.body.as_bytes(), TS).unwrap_err();
        assert_eq!(e.http_status(), 400, "{query}: {e}");
        assert_eq!(e.to_string(), format!("parameter `{param}` appears more than once"), "{query}");
    }
    // The URL check and the safe mode's own parameters too.
    let check = format!("{q}&echostr=a&echostr=b");
    assert_eq!(
        push.verify_url(&check, TS).unwrap_err().to_string(),
        "parameter `echostr` appears more than once"
    );
    let safe = push_in(Mode::Safe);
    let sealed_safe = safe.seal(&acceptance(Format::Xml), TS, "10", [0; 16]).unwrap();
    for extra in ["&msg_signature=0000", "&encrypt_type=aes", "&encrypt_type=raw"] {
        let query = format!("{}{extra}", sealed_safe.query);
        let e = safe.open(&query, sealed_safe.body.as_bytes(), TS).unwrap_err();
        assert_eq!(e.http_status(), 400, "{query}: {e}");
        assert!(e.to_string().ends_with("appears more than once"), "{query}: {e}");
    }
    // Nothing refused was remembered: each push as sent reads once.
    push.open(q, sealed.body.as_bytes(), TS).unwrap();
    safe.open(&sealed_safe.query, sealed_safe.body.as_bytes(), TS).unwrap();
}

/// Ciphertexts an attacker who knows the Token (a short one is found offline from one push)
/// signs: another app's message, and a genuine ciphertext with bits flipped the way a padding
/// oracle attack flips them. Each fails somewhere else inside the decryption; each must look
/// the same from outside, or the answers decrypt and forge safe-mode pushes without the key.
fn tampered_ciphertexts(key: &EncodingAesKey) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let good = key.encrypt(&acceptance(Format::Xml), APPID, [7; 16]);
    let raw = b64.decode(&good).unwrap();
    let flipped = |at: usize, mask: u8| {
        let mut r = raw.clone();
        r[at] ^= mask;
        b64.encode(r)
    };
    let n = raw.len();
    let pad = 32 - (20 + acceptance(Format::Xml).len() + APPID.len()) % 32;
    vec![
        ("another app's message", key.encrypt(&acceptance(Format::Xml), "wxOtherApp000000001", [7; 16])),
        ("not base64", "***".to_owned()),
        ("not whole blocks", "bm90IGJsb2Nrcw==".to_owned()),
        ("truncated: bad padding", b64.encode(&raw[..n - 16])),
        // The last plaintext byte (the padding's) is the last block decrypted XOR the byte
        // before it in the ciphertext.
        ("the padding byte flipped", flipped(n - 17, 0x01)),
        ("the padding byte made 0", flipped(n - 17, u8::try_from(pad).unwrap())),
        ("the padding byte made 33", flipped(n - 17, u8::try_from(pad ^ 0x21).unwrap())),
        // The first block is XORed into the second: byte 0 into the length's high byte, byte 4
        // into the message's first byte, and the 16 random bytes it garbles are ignored.
        ("a length past the end", flipped(0, 0x80)),
        ("a message that is not UTF-8", flipped(4, 0x80)),
        ("a message that is not an event", flipped(4, 0x01)),
    ]
}

#[test]
fn every_failure_after_the_signature_answers_alike() {
    let key = EncodingAesKey::new(KEY).unwrap();
    let push = push_in(Mode::Safe);
    let mut answers = std::collections::BTreeMap::new();
    for (n, (how, encrypt)) in tampered_ciphertexts(&key).into_iter().enumerate() {
        let nonce = format!("t{n}");
        let ts = TS.to_string();
        let query = format!(
            "signature={}&timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
            signature(&[TOKEN32, &ts, &nonce]),
            signature(&[TOKEN32, &ts, &nonce, &encrypt])
        );
        let e = push.open(&query, sealed_xml(&encrypt).as_bytes(), TS).unwrap_err();
        answers.entry((e.http_status(), e.to_string())).or_insert_with(Vec::new).push(how);
    }
    assert_eq!(answers.len(), 1, "{answers:#?}");
}

#[test]
fn a_swapped_or_re_split_signed_text_is_the_same_push() {
    // WeChat sorts the Token, the timestamp and the nonce before hashing: swapping the two
    // values keeps the signature. A nonce of ten digits reads as a time (here 100 s ahead), so
    // the swapped spelling passes the freshness check until that time plus the window, after
    // the original is stale.
    let push = push_in(Mode::Plain);
    let nonce = (TS + 100).to_string();
    let sig = signature(&[TOKEN32, &TS.to_string(), &nonce]);
    let genuine = format!("signature={sig}&timestamp={TS}&nonce={nonce}");
    push.open(&genuine, acceptance(Format::Xml).as_bytes(), TS).unwrap();
    let swapped = format!("signature={sig}&timestamp={nonce}&nonce={TS}");
    for now in [TS + 1, TS + 301, TS + 350, TS + 400] {
        // Another push first at that time, so whatever purges the cache has run.
        let other = push.seal(&acceptance(Format::Xml), now, &format!("o{now}"), [0; 16]).unwrap();
        push.open(&other.query, other.body.as_bytes(), now).unwrap();
        assert!(push.open(&genuine, withdrawal().as_bytes(), now).is_err(), "at +{}", now - TS);
        assert_eq!(
            push.open(&swapped, withdrawal().as_bytes(), now),
            Err(PushError::Replayed),
            "swapped, at +{}",
            now - TS
        );
    }
    assert!(matches!(push.open(&swapped, withdrawal().as_bytes(), TS + 401), Err(PushError::Stale { .. })));

    // Re-split: `05` + `1800000000` and `051` + `800000000` sort and join to the same text.
    // Only a wide window lets the second timestamp pass; the push is the same either way.
    let wide = Push::new(PushConfig::new(TOKEN32, APPID, Mode::Plain).window(1_000_000_000));
    let sig = signature(&[TOKEN32, &TS.to_string(), "05"]);
    assert_eq!(sig, signature(&[TOKEN32, "800000000", "051"]));
    wide.open(&format!("signature={sig}&timestamp={TS}&nonce=05"), acceptance(Format::Xml).as_bytes(), TS)
        .unwrap();
    assert_eq!(
        wide.open(&format!("signature={sig}&timestamp=800000000&nonce=051"), withdrawal().as_bytes(), TS),
        Err(PushError::Replayed)
    );

    // A re-split whose timestamp is later than both values sent: `1800000001` + `800010000`
    // is `180000000` + `1800010000`, fresh 10,000 s later. Remembered until then.
    let (ts, nonce) = (TS + 1, "800010000");
    let sig = signature(&[TOKEN32, &ts.to_string(), nonce]);
    assert_eq!(sig, signature(&[TOKEN32, "1800010000", "180000000"]));
    push.open(
        &format!("signature={sig}&timestamp={ts}&nonce={nonce}"),
        acceptance(Format::Xml).as_bytes(),
        ts,
    )
    .unwrap();
    let re_split = format!("signature={sig}&timestamp=1800010000&nonce=180000000");
    for now in [TS + 9_800, TS + 10_000, TS + 10_300] {
        let other = push.seal(&acceptance(Format::Xml), now, &format!("r{now}"), [0; 16]).unwrap();
        push.open(&other.query, other.body.as_bytes(), now).unwrap();
        assert_eq!(
            push.open(&re_split, withdrawal().as_bytes(), now),
            Err(PushError::Replayed),
            "+{}",
            now - TS
        );
    }
}

#[test]
fn a_timestamp_or_a_nonce_in_another_spelling_is_refused() {
    let push = push_in(Mode::Plain);
    let signed = |ts: &str, nonce: &str| {
        format!("signature={}&timestamp={ts}&nonce={nonce}", signature(&[TOKEN32, ts, nonce]))
    };
    for (ts, nonce) in [
        (format!("0{TS}"), "n"),
        (format!("+{TS}"), "n"),
        (format!("{TS} "), "n"),
        (format!("{TS}.0"), "n"),
        (TS.to_string(), ""),
    ] {
        let answer = push.open(&signed(&ts, nonce), acceptance(Format::Xml).as_bytes(), TS);
        assert!(matches!(answer, Err(PushError::Malformed(_))), "{ts:?} {nonce:?}: {answer:?}");
        let check = format!("{}&echostr=x", signed(&ts, nonce));
        assert!(matches!(push.verify_url(&check, TS), Err(PushError::Malformed(_))), "{ts:?} {nonce:?}");
    }
    push.open(&signed(&TS.to_string(), "n"), acceptance(Format::Xml).as_bytes(), TS).unwrap();
}

#[test]
fn a_url_check_in_safe_mode_does_not_use_up_a_push() {
    // Someone who captured a push's query sends it as a URL check (a GET with an echostr)
    // before WeChat's retry arrives: in safe mode the check's query cannot be a push (it has
    // no msg_signature over a body), so it is not remembered and the push is still read.
    let push = push_in(Mode::Safe);
    let sealed = push.seal(&acceptance(Format::Json), TS, "77", [5; 16]).unwrap();
    let check =
        format!("signature={}&timestamp={TS}&nonce=77&echostr=burn", param(&sealed.query, "signature"));
    assert_eq!(push.verify_url(&check, TS).unwrap(), "burn");
    assert!(push.check_url(&check, TS).unwrap().key.is_none());
    push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap();
    assert_eq!(push.open(&sealed.query, sealed.body.as_bytes(), TS), Err(PushError::Replayed));
    // In the plain and compatible modes the check's query is a push: it is remembered.
    for mode in [Mode::Plain, Mode::Compatible] {
        assert!(push_in(mode).check_url(&check, TS).unwrap().key.is_some(), "{mode:?}");
    }
}

#[test]
fn a_push_is_forgotten_at_most_as_often_as_wechat_retries() {
    let push = push_in(Mode::Safe);
    let sealed = push.seal(&acceptance(Format::Xml), TS, "f", [6; 16]).unwrap();
    push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap();
    for retry in 1..=MAX_FORGETS {
        assert!(push.forget(&sealed.query, TS), "forget {retry}");
        push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap();
    }
    // A fourth failure is not WeChat's retry: the push stays remembered.
    assert!(!push.forget(&sealed.query, TS));
    assert_eq!(push.open(&sealed.query, sealed.body.as_bytes(), TS), Err(PushError::Replayed));
    // A query that does not verify forgets nothing.
    assert!(!push.forget(&sealed.query.replace("signature=", "signature=0"), TS));
}

#[test]
fn a_swap_beyond_the_horizon_is_refused_by_the_events_own_date() {
    // The nonce reads as a time two days ahead: too far to keep the key for, so the swapped
    // spelling is fresh again on that day, carrying the same encrypted event. Its CreateTime
    // (inside the signed body) is two days older than the push: refused like any push that
    // did not open.
    let push = push_in(Mode::Safe);
    let nonce = (TS + 2 * 86_400).to_string();
    let sealed = push.seal(&acceptance(Format::Xml), TS, &nonce, [9; 16]).unwrap();
    push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap();
    let swapped = sealed
        .query
        .replace(&format!("timestamp={TS}"), "timestamp=SWAP")
        .replace(&format!("nonce={nonce}"), &format!("nonce={TS}"))
        .replace("timestamp=SWAP", &format!("timestamp={nonce}"));
    let later = TS + 2 * 86_400;
    assert_eq!(
        push.open(&swapped, sealed.body.as_bytes(), later),
        Err(PushError::Unopened(OpenFailure::OutdatedEvent))
    );
    assert_eq!(
        push.plaintext(&swapped, sealed.body.as_bytes(), later),
        Err(PushError::Unopened(OpenFailure::OutdatedEvent)),
        "plaintext refuses it too"
    );
    // A push of an event created a day ago to the second is still read.
    let day_old = Event::new("gh_1", "oAlice", TS - 86_400, EventKind::Popup(vec![])).to_wire(Format::Xml);
    let sealed = push.seal(&day_old, TS, "d1", [9; 16]).unwrap();
    push.open(&sealed.query, sealed.body.as_bytes(), TS).unwrap();
}
