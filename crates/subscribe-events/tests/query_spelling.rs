//! A push's query is read as the bare query it is (what axum's `RawQuery` hands the endpoint):
//! a `?` inside it is a character of a value, never the start of the "real" query. Otherwise
//! `signature=<bad>&x=?signature=<good>&…` would verify here on the part after the `?` while
//! every other reader of the request (a proxy, its log, a framework's query extractor) sees
//! the bad signature.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use subscribe_events::*;

const TOKEN: &str = "pushTokenOfThirtyTwoCharacters32";
const APPID: &str = "wx5a1db0c0ffee0001";
const TS: u64 = 1_800_000_000;

fn plain() -> Push {
    Push::new(PushConfig::new(TOKEN, APPID, Mode::Plain))
}

fn good_signature(nonce: &str) -> String {
    signature(&[TOKEN, &TS.to_string(), nonce])
}

fn acceptance() -> String {
    let item = PopupItem { template_id: "T1".into(), status: "accept".into(), popup_scene: Some(1) };
    Event::new("gh_1", "oAlice", TS, EventKind::Popup(vec![item])).to_wire(Format::Xml)
}

fn refused(e: &PushError) -> bool {
    matches!(e, PushError::BadSignature(_) | PushError::Malformed(_) | PushError::Missing(_))
}

#[test]
fn a_good_signature_behind_a_question_mark_does_not_sign_the_url_check() {
    let push = plain();
    let good = good_signature("7");
    // The genuine check passes, so the refusals below are about the spelling alone.
    let genuine = format!("signature={good}&timestamp={TS}&nonce=7&echostr=hello");
    assert_eq!(push.verify_url(&genuine, TS).unwrap(), "hello");
    for query in [
        format!("signature=bad&x=?signature={good}&timestamp={TS}&nonce=7&echostr=hello"),
        format!("signature=bad&?signature={good}&timestamp={TS}&nonce=7&echostr=hello"),
        format!("x=?signature={good}&timestamp={TS}&nonce=7&echostr=hello"),
    ] {
        let e = push.verify_url(&query, TS).unwrap_err();
        assert!(refused(&e), "{query}: {e:?}");
    }
    assert_eq!(
        push.verify_url(
            &format!("signature=bad&x=?signature={good}&timestamp={TS}&nonce=7&echostr=hello"),
            TS
        ),
        Err(PushError::BadSignature("signature"))
    );
}

#[test]
fn a_good_signature_behind_a_question_mark_does_not_open_a_push() {
    let push = plain();
    let good = good_signature("8");
    let query = format!("signature=bad&x=?signature={good}&timestamp={TS}&nonce=8");
    assert_eq!(push.open(&query, acceptance().as_bytes(), TS), Err(PushError::BadSignature("signature")));
    // Refused, it was not remembered: the genuine push still opens once.
    let genuine = format!("signature={good}&timestamp={TS}&nonce=8");
    assert_eq!(push.open(&genuine, acceptance().as_bytes(), TS).unwrap().name(), "subscribe_msg_popup_event");
}
