//! The axum endpoint: what WeChat gets back for each push, what the callback sees, and what a
//! slow callback, a failing one, a replay, a body that never ends or an oversized one do.

#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::axum::body::Body;
use ::axum::http::{Request, StatusCode};
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use subscribe_events::axum::PushEndpoint;
use subscribe_events::*;
use tower::ServiceExt as _;

const TOKEN: &str = "sandboxPushToken2026";
const APPID: &str = "wx5a1db0c0ffee0001";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const NOW: u64 = 1_800_000_000;

fn push(mode: Mode) -> Push {
    Push::new(PushConfig::new(TOKEN, APPID, mode).aes_key(EncodingAesKey::new(KEY).unwrap()))
}

fn popup(openid: &str) -> Event {
    let item = PopupItem { template_id: "T1".into(), status: "accept".into(), popup_scene: Some(0) };
    Event::new("gh_1", openid, NOW, EventKind::Popup(vec![item]))
}

/// An endpoint whose callback records the events it got, sleeping `delay` and failing the
/// first `failures` times.
fn endpoint(
    delay: Duration,
    failures: usize,
) -> (PushEndpoint, Arc<std::sync::Mutex<Vec<Event>>>, Arc<AtomicUsize>) {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (got.clone(), calls.clone());
    let e = PushEndpoint::new(push(Mode::Safe), move |event: Event| {
        let (g, c) = (g.clone(), c.clone());
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            if n < failures {
                return Err(std::io::Error::other("the database is down"));
            }
            g.lock().unwrap().push(event);
            Ok(())
        }
    })
    .clock(|| NOW + 1)
    .time_limit(Duration::from_millis(300));
    (e, got, calls)
}

async fn post(e: &PushEndpoint, query: &str, body: Body) -> (StatusCode, String) {
    let request = Request::post(format!("/?{query}")).body(body).unwrap();
    let response = e.clone().router().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_url_check_answers_echostr_and_a_bad_one_is_refused() {
    let (e, ..) = endpoint(Duration::ZERO, 0);
    let sig = signature(&[TOKEN, &NOW.to_string(), "n"]);
    for (query, status, body) in [
        (format!("signature={sig}&timestamp={NOW}&nonce=n&echostr=hello"), StatusCode::OK, "hello"),
        (
            format!("signature=0{sig}&timestamp={NOW}&nonce=n&echostr=hello"),
            StatusCode::UNAUTHORIZED,
            "the `signature` does not match",
        ),
    ] {
        let response = e
            .clone()
            .router()
            .oneshot(Request::get(format!("/?{query}")).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), body.as_bytes());
    }
}

#[tokio::test]
async fn each_mode_and_format_reaches_the_callback_once() {
    for mode in [Mode::Plain, Mode::Compatible, Mode::Safe] {
        for format in [Format::Xml, Format::Json] {
            let got = Arc::new(std::sync::Mutex::new(Vec::new()));
            let g = got.clone();
            let e = PushEndpoint::new(push(mode), move |event: Event| {
                let g = g.clone();
                async move {
                    g.lock().unwrap().push(event);
                    Ok::<(), std::io::Error>(())
                }
            })
            .clock(|| NOW);
            let sealed = push(mode).seal(&popup("oAlice").to_wire(format), NOW, "n1", [3; 16]).unwrap();
            assert_eq!(sealed.query.contains("encrypt_type=aes"), mode != Mode::Plain);
            assert_eq!(
                post(&e, &sealed.query, sealed.body.clone().into()).await,
                (StatusCode::OK, "success".into())
            );
            // WeChat resending it: answered, not handled again.
            assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
            assert_eq!(got.lock().unwrap()[..], [popup("oAlice")], "{mode:?} {format:?}");
        }
    }
}

#[tokio::test]
async fn a_failed_callback_answers_500_and_the_retry_is_handled() {
    let (e, got, calls) = endpoint(Duration::ZERO, 1);
    let sealed = push(Mode::Safe).seal(&popup("oBob").to_wire(Format::Xml), NOW, "n2", [1; 16]).unwrap();
    let (status, _) = post(&e, &sealed.query, sealed.body.clone().into()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(got.lock().unwrap().is_empty());
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!((got.lock().unwrap().len(), calls.load(Ordering::SeqCst)), (1, 2));
}

// On tokio's paused clock (the endpoint's time limit and the callback's sleep both run on it),
// not the wall clock: time moves only when every task waits, so a loaded machine cannot
// stretch the answer past the limit.
#[tokio::test(start_paused = true)]
async fn a_slow_callback_is_answered_success_at_the_time_limit_and_still_finishes() {
    let (e, got, _) = endpoint(Duration::from_millis(900), 0);
    let sealed = push(Mode::Safe).seal(&popup("oCarol").to_wire(Format::Json), NOW, "n3", [2; 16]).unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    let answered = started.elapsed();
    // At the 300 ms limit (tokio's timers round up to the millisecond), long before the
    // callback's 900 ms.
    let limit = Duration::from_millis(300);
    assert!(answered >= limit && answered <= limit + Duration::from_millis(1), "answered after {answered:?}");
    assert!(got.lock().unwrap().is_empty(), "answered before the callback finished");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "the callback went on after the answer");
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_at_the_time_limit() {
    let (e, got, calls) = endpoint(Duration::ZERO, 0);
    let sealed = push(Mode::Safe).seal(&popup("oDan").to_wire(Format::Xml), NOW, "n4", [4; 16]).unwrap();
    let first = bytes::Bytes::from(sealed.body[..10].to_owned());
    let endless = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::pending());
    let (status, _) = post(&e, &sealed.query, Body::from_stream(endless)).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!((got.lock().unwrap().len(), calls.load(Ordering::SeqCst)), (0, 0));
}

#[tokio::test]
async fn refused_pushes_get_their_status_and_never_reach_the_callback() {
    let (e, _, calls) = endpoint(Duration::ZERO, 0);
    let sealed = push(Mode::Safe).seal(&popup("oEve").to_wire(Format::Xml), NOW, "n5", [5; 16]).unwrap();
    let other_app = Push::new(
        PushConfig::new(TOKEN, "wx0000000000000000", Mode::Safe).aes_key(EncodingAesKey::new(KEY).unwrap()),
    )
    .seal(&popup("oEve").to_wire(Format::Xml), NOW, "n6", [5; 16])
    .unwrap();
    let plain = push(Mode::Plain).seal(&popup("oEve").to_wire(Format::Xml), NOW, "n7", [5; 16]).unwrap();
    let stale = push(Mode::Safe).seal(&popup("oEve").to_wire(Format::Xml), NOW - 600, "n8", [5; 16]).unwrap();
    // Signed, but not whole AES blocks.
    let undecryptable = format!(
        "signature={}&timestamp={NOW}&nonce=n9&encrypt_type=aes&msg_signature={}",
        signature(&[TOKEN, &NOW.to_string(), "n9"]),
        signature(&[TOKEN, &NOW.to_string(), "n9", "AAAA"])
    );
    for (query, body, status) in [
        (
            sealed.query.replace("msg_signature=", "msg_signature=1"),
            sealed.body.clone(),
            StatusCode::UNAUTHORIZED,
        ),
        // Verified, then another app's: the answer of every push that does not open.
        (other_app.query, other_app.body, StatusCode::BAD_REQUEST),
        (plain.query, plain.body, StatusCode::UNAUTHORIZED),
        (stale.query, stale.body, StatusCode::UNAUTHORIZED),
        (undecryptable, "<xml><Encrypt>AAAA</Encrypt></xml>".into(), StatusCode::BAD_REQUEST),
        (sealed.query.clone(), "x".repeat(MAX_BODY + 1), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (got_status, reason) = post(&e, &query, body.into()).await;
        assert_eq!(got_status, status, "{reason}");
        assert!(!reason.contains(TOKEN) && !reason.contains(KEY), "{reason}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The good push still goes through after all that: nothing refused was remembered.
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
}

#[test]
fn the_endpoint_never_prints_the_token_or_the_key() {
    let (e, ..) = endpoint(Duration::ZERO, 0);
    let shown = format!("{e:?}");
    assert!(!shown.contains(TOKEN) && !shown.contains(KEY) && !shown.contains("abcdefghijklmnop"), "{shown}");
}
