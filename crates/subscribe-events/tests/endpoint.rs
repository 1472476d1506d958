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
            let stats = e.stats();
            assert_eq!((stats.refused, stats.replayed, stats.handled, stats.failed), (0, 1, 1, 0));
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
    let counted = e.stats();
    assert_eq!((counted.refused, counted.replayed, counted.handled, counted.failed), (0, 0, 1, 1));
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

// A callback that must keep the event before it is acknowledged: 503 at the time limit, so
// WeChat sends it again; the copy that comes once the callback finished is a replay.
#[tokio::test(start_paused = true)]
async fn a_slow_callback_can_be_answered_503_at_the_time_limit_and_its_retry_is_a_replay() {
    let (e, got, calls) = endpoint(Duration::from_millis(900), 0);
    let e = e.busy_past_time_limit(true);
    let sealed = push(Mode::Safe).seal(&popup("oDave").to_wire(Format::Xml), NOW, "n9", [4; 16]).unwrap();
    let (status, _) = post(&e, &sealed.query, sealed.body.clone().into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not acknowledged while the callback runs");
    // A copy while it still runs: 503 again, not handled twice.
    assert_eq!(post(&e, &sealed.query, sealed.body.clone().into()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "the callback went on after the answer");
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "handled once");
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

thread_local! {
    static LOG: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes the log lines of the thread that emits them into that thread's buffer: each test
/// (on tokio's current-thread runtime, the endpoint's tasks included) reads its own lines.
struct ThreadLog;

impl std::io::Write for ThreadLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.with(|l| l.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// This thread's log since the last call. The first call installs the binary's one global
/// subscriber (a scoped one would miss callsites another test reached first).
fn logged() -> String {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| ThreadLog)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("the only global subscriber of this binary");
    });
    LOG.with(|l| String::from_utf8(std::mem::take(&mut *l.borrow_mut())).unwrap())
}

fn quiet(push: Push) -> PushEndpoint {
    PushEndpoint::new(push, |_: Event| async { Ok::<(), std::io::Error>(()) }).clock(|| NOW)
}

#[tokio::test]
async fn every_failure_after_the_signature_gets_one_answer_from_the_endpoint() {
    use base64::Engine as _;
    let key = EncodingAesKey::new(KEY).unwrap();
    let e = quiet(push(Mode::Safe));
    let b64 = base64::engine::general_purpose::STANDARD;
    let good = key.encrypt(&popup("oEve").to_wire(Format::Xml), APPID, [7; 16]);
    let raw = b64.decode(&good).unwrap();
    let flipped = |at: usize, mask: u8| {
        let mut r = raw.clone();
        r[at] ^= mask;
        b64.encode(r)
    };
    let mut answers = std::collections::BTreeMap::new();
    for (n, (how, encrypt)) in [
        ("another app's", key.encrypt(&popup("oEve").to_wire(Format::Xml), "wx0000000000000000", [7; 16])),
        ("not base64", "***".to_owned()),
        ("not whole blocks", "AAAA".to_owned()),
        ("bad padding", b64.encode(&raw[..raw.len() - 16])),
        ("a length past the end", flipped(0, 0x80)),
        ("not UTF-8", flipped(4, 0x80)),
        ("not an event", flipped(4, 0x01)),
    ]
    .into_iter()
    .enumerate()
    {
        let nonce = format!("o{n}");
        let query = format!(
            "signature={}&timestamp={NOW}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
            signature(&[TOKEN, &NOW.to_string(), &nonce]),
            signature(&[TOKEN, &NOW.to_string(), &nonce, &encrypt])
        );
        let answer = post(&e, &query, format!("<xml><Encrypt>{encrypt}</Encrypt></xml>").into()).await;
        answers.entry(answer).or_insert_with(Vec::new).push(how);
    }
    assert_eq!(answers.len(), 1, "{answers:#?}");
}

#[test]
fn a_short_token_and_a_mode_that_takes_plain_pushes_are_warned_at_start_up() {
    let key = || EncodingAesKey::new(KEY).unwrap();
    let random32 = "Q7vX2mR9kL4pW8zN3cT6yB1hF5jD0sGa";
    logged();
    let _ = quiet(Push::new(PushConfig::new(random32, APPID, Mode::Safe).aes_key(key())));
    assert_eq!(logged(), "", "32 random characters in safe mode: nothing to say");

    let _ = quiet(Push::new(PushConfig::new("x9Q", APPID, Mode::Safe).aes_key(key())));
    let log = logged();
    assert!(log.contains("WARN") && log.contains("3 characters") && log.contains("32 random"), "{log}");
    assert!(!log.contains("x9Q"), "the Token itself never prints: {log}");

    for mode in [Mode::Plain, Mode::Compatible] {
        let _ = quiet(Push::new(PushConfig::new(random32, APPID, mode).aes_key(key())));
        let log = logged();
        assert!(
            log.contains("WARN") && log.contains("not signed") && log.contains("safe mode"),
            "{mode:?}: {log}"
        );
        assert!(!log.contains("characters"), "{mode:?}: {log}");
    }
}

/// The log's rate lives on tokio's clock, paused here: time moves only when the test advances
/// it, so the count of warnings is exact however slow the machine.
#[tokio::test(start_paused = true)]
async fn a_flood_of_refused_pushes_cannot_flood_the_log() {
    use subscribe_events::axum::{REFUSAL_LOG_BURST, REFUSAL_LOG_EVERY};
    const FLOOD: u32 = 1000;
    logged();
    let e = quiet(push(Mode::Safe));
    let forged = |i: u32| format!("signature=0&timestamp={NOW}&nonce={i}&encrypt_type=aes&msg_signature=0");
    for i in 0..FLOOD {
        let (status, _) = post(&e, &forged(i), "<xml><Encrypt>AAAA</Encrypt></xml>".into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let warnings = |log: &str| -> Vec<String> {
        log.lines().filter(|l| l.contains("WARN") && l.contains("refused")).map(str::to_owned).collect()
    };
    let log = logged();
    let first = warnings(&log);
    assert_eq!(first.len(), REFUSAL_LOG_BURST as usize, "{log}");
    assert!(first.iter().all(|l| l.contains("BadSignature") && l.contains("unlogged=0")), "{log}");

    // A period later, one more is logged, and it counts the ones that were not.
    tokio::time::advance(REFUSAL_LOG_EVERY).await;
    for i in 0..10 {
        post(&e, &forged(FLOOD + i), Body::empty()).await;
    }
    let log = logged();
    let next = warnings(&log);
    let unlogged = FLOOD - REFUSAL_LOG_BURST;
    assert_eq!(next.len(), 1, "{log}");
    assert!(next[0].contains(&format!("unlogged={unlogged}")) && next[0].contains("refused=1001"), "{log}");

    // Every refusal is counted, logged or not.
    let stats = e.stats();
    assert_eq!(
        (stats.refused, stats.replayed, stats.handled, stats.failed),
        (u64::from(FLOOD) + 10, 0, 0, 0)
    );
}

#[tokio::test]
async fn a_failing_callback_is_read_again_as_often_as_wechat_retries_and_no_more() {
    let (e, got, calls) = endpoint(Duration::ZERO, usize::MAX);
    let sealed = push(Mode::Safe).seal(&popup("oBob").to_wire(Format::Xml), NOW, "n9", [1; 16]).unwrap();
    // The first sight and WeChat's three retries run the callback; a fifth copy is a replay.
    for attempt in 0..=MAX_FORGETS {
        let (status, _) = post(&e, &sealed.query, sealed.body.clone().into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "attempt {attempt}");
    }
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert!(got.lock().unwrap().is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), usize::from(MAX_FORGETS) + 1);
    let counted = e.stats();
    assert_eq!((counted.replayed, counted.failed), (1, u64::from(MAX_FORGETS) + 1));
}

#[tokio::test]
async fn instances_sharing_a_replay_cache_read_a_push_once() {
    let shared: Arc<dyn replay::ReplayCache> = Arc::new(replay::MemoryReplayCache::default());
    let (first, got_first, _) = endpoint(Duration::ZERO, 0);
    let (second, got_second, _) = endpoint(Duration::ZERO, 0);
    let (first, second) = (first.replay_cache(shared.clone()), second.replay_cache(shared));
    let sealed = push(Mode::Safe).seal(&popup("oCarol").to_wire(Format::Json), NOW, "lb", [4; 16]).unwrap();
    assert_eq!(post(&first, &sealed.query, sealed.body.clone().into()).await.0, StatusCode::OK);
    // The load balancer sends the replay to the other instance, in another case.
    let sig = sealed.query.split('&').find_map(|p| p.strip_prefix("signature=")).unwrap();
    let upper = sealed.query.replace(sig, &sig.to_uppercase());
    assert_eq!(post(&second, &upper, sealed.body.clone().into()).await, (StatusCode::OK, "success".into()));
    assert_eq!((got_first.lock().unwrap().len(), got_second.lock().unwrap().len()), (1, 0));
    assert_eq!(second.stats().replayed, 1);

    // With a cache each (the default), the second instance reads it again: why it is shared.
    let (alone, got_alone, _) = endpoint(Duration::ZERO, 0);
    assert_eq!(post(&alone, &sealed.query, sealed.body.into()).await.0, StatusCode::OK);
    assert_eq!(got_alone.lock().unwrap().len(), 1);
}

/// A fleet whose callback keeps the event: the first instance is still keeping it at the time
/// limit (503), and WeChat's copy reaches the second instance; with an idempotent callback the
/// second hands the copy to its callback instead of answering `success` unread, so the event is
/// kept even if the first fails. A plain push's copy is still answered as a replay.
#[tokio::test(start_paused = true)]
async fn with_an_idempotent_callback_a_copy_on_another_instance_is_read_again() {
    let shared: Arc<dyn replay::ReplayCache> = Arc::new(replay::MemoryReplayCache::default());
    let (first, _, first_calls) = endpoint(Duration::from_millis(900), 1);
    let (second, got_second, second_calls) = endpoint(Duration::ZERO, 0);
    let first = first.replay_cache(shared.clone()).busy_past_time_limit(true).idempotent_callback(true);
    let second = second.replay_cache(shared.clone()).busy_past_time_limit(true).idempotent_callback(true);
    let (unread, got_unread, _) = endpoint(Duration::ZERO, 0);
    let unread = unread.replay_cache(shared);
    let sealed = push(Mode::Safe).seal(&popup("oErin").to_wire(Format::Xml), NOW, "f1", [5; 16]).unwrap();
    assert_eq!(
        post(&first, &sealed.query, sealed.body.clone().into()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Without the option (the default), the copy is taken for a replay and never read: had the
    // first instance failed, the event would be lost.
    assert_eq!(
        post(&unread, &sealed.query, sealed.body.clone().into()).await,
        (StatusCode::OK, "success".into())
    );
    assert!(got_unread.lock().unwrap().is_empty());
    assert_eq!(post(&second, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!(got_second.lock().unwrap().len(), 1, "kept by the second instance");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!((first_calls.load(Ordering::SeqCst), second_calls.load(Ordering::SeqCst)), (1, 1));
}

/// A replay cache whose backend is down.
#[derive(Debug)]
struct Down;

#[async_trait::async_trait]
impl replay::ReplayCache for Down {
    async fn first_sight(&self, _: &replay::ReplayKey, _: u64) -> Result<bool, replay::ReplayCacheError> {
        Err(replay::ReplayCacheError::new("connection refused"))
    }
    async fn forget(&self, _: &replay::ReplayKey) -> Result<(), replay::ReplayCacheError> {
        Err(replay::ReplayCacheError::new("connection refused"))
    }
}

#[tokio::test]
async fn a_replay_cache_that_fails_answers_503_and_reads_nothing() {
    let (e, got, calls) = endpoint(Duration::ZERO, 0);
    let e = e.replay_cache(Arc::new(Down));
    let sealed = push(Mode::Safe).seal(&popup("oDan").to_wire(Format::Xml), NOW, "d", [8; 16]).unwrap();
    for _ in 0..2 {
        let (status, body) = post(&e, &sealed.query, sealed.body.clone().into()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "the push cannot be checked for a replay now")
        );
    }
    assert_eq!((got.lock().unwrap().len(), calls.load(Ordering::SeqCst)), (0, 0));
    let counted = e.stats();
    assert_eq!((counted.unavailable, counted.refused, counted.handled), (2, 2, 0));
}

/// What a test holds of a [`gated`] endpoint's callback.
struct Gate {
    started: Arc<tokio::sync::Notify>,
    verdicts: tokio::sync::mpsc::Sender<bool>,
    calls: Arc<AtomicUsize>,
}

/// An endpoint whose callback says when it started and then waits to be told whether to fail.
fn gated() -> (PushEndpoint, Gate) {
    let started = Arc::new(tokio::sync::Notify::new());
    let (verdicts, rx) = tokio::sync::mpsc::channel::<bool>(8);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, r, c) = (started.clone(), rx, calls.clone());
    let e = PushEndpoint::new(push(Mode::Safe), move |_: Event| {
        let (s, r, c) = (s.clone(), r.clone(), c.clone());
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            s.notify_one();
            let ok = r.lock().await.recv().await.unwrap_or(true);
            if ok { Ok(()) } else { Err(std::io::Error::other("the database is down")) }
        }
    })
    .clock(|| NOW)
    .time_limit(Duration::from_secs(3600));
    (e, Gate { started, verdicts, calls })
}

#[tokio::test]
async fn a_caller_that_hangs_up_cannot_keep_a_failed_push_from_being_forgotten() {
    let (e, Gate { started, verdicts, calls }) = gated();
    let sealed = push(Mode::Safe).seal(&popup("oErin").to_wire(Format::Xml), NOW, "hang", [2; 16]).unwrap();
    // Someone posts a captured copy and hangs up while the callback runs; the callback fails.
    let request = tokio::spawn({
        let (e, q, b) = (e.clone(), sealed.query.clone(), sealed.body.clone());
        async move { post(&e, &q, b.into()).await }
    });
    started.notified().await;
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    verdicts.send(false).await.unwrap();
    // WeChat's copy, once the failure is settled, is read and handled.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    verdicts.send(true).await.unwrap();
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(e.stats().handled, 1);
}

#[tokio::test]
async fn a_copy_that_arrives_while_the_first_is_handled_is_told_to_come_back() {
    let (e, Gate { started, verdicts, calls }) = gated();
    let sealed = push(Mode::Safe).seal(&popup("oFay").to_wire(Format::Xml), NOW, "race", [3; 16]).unwrap();
    let first = tokio::spawn({
        let (e, q, b) = (e.clone(), sealed.query.clone(), sealed.body.clone());
        async move { post(&e, &q, b.into()).await }
    });
    started.notified().await;
    // WeChat's copy arrives while the attacker's runs: not `success`, which would end WeChat's
    // retries, since the first may yet fail.
    let (status, _) = post(&e, &sealed.query, sealed.body.clone().into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    verdicts.send(false).await.unwrap();
    assert_eq!(first.await.unwrap().0, StatusCode::INTERNAL_SERVER_ERROR);
    // Its retry is read, and handled.
    verdicts.send(true).await.unwrap();
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let counted = e.stats();
    assert_eq!((counted.busy, counted.failed, counted.handled, counted.replayed), (1, 1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_forged_pushes_cannot_hide_a_failing_callback() {
    use subscribe_events::axum::REFUSAL_LOG_BURST;
    logged();
    let (e, ..) = endpoint(Duration::ZERO, usize::MAX);
    let e = e.clock(|| NOW);
    for i in 0..100 {
        let forged = format!("signature=0&timestamp={NOW}&nonce={i}");
        assert_eq!(post(&e, &forged, Body::empty()).await.0, StatusCode::UNAUTHORIZED);
    }
    let sealed = push(Mode::Safe).seal(&popup("oGus").to_wire(Format::Xml), NOW, "hide", [4; 16]).unwrap();
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let log = logged();
    let refusals = log.lines().filter(|l| l.contains("an event push was refused")).count();
    assert_eq!(refusals, REFUSAL_LOG_BURST as usize, "{log}");
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains("the event push callback failed")),
        "{log}"
    );
}

// A second attacker review's reproductions: a copy that uses up the time limit, a shared
// cache's round trip, a callback that panics before its future exists, a cache that hangs.

#[tokio::test(start_paused = true)]
async fn a_copy_that_uses_up_the_time_limit_cannot_keep_a_failed_push_remembered() {
    // The attacker trickles a captured copy's body until the limit is nearly spent: answered
    // `success` at once, while the callback (50 ms) goes on and fails.
    let (e, _, calls) = endpoint(Duration::from_millis(50), 1);
    let sealed = push(Mode::Safe).seal(&popup("oHal").to_wire(Format::Xml), NOW, "trickle", [1; 16]).unwrap();
    let body = sealed.body.clone();
    let slow = Body::from_stream(futures_util::stream::once(async move {
        tokio::time::sleep(Duration::from_millis(290)).await;
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))
    }));
    assert_eq!(post(&e, &sealed.query, slow).await, (StatusCode::OK, "success".into()));
    // WeChat's copy while the callback runs: told to come back.
    assert_eq!(post(&e, &sealed.query, sealed.body.clone().into()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The callback failed: its retry is read, and handled.
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A cache whose first answer comes back late (a shared cache's round trip), and whose
/// `forget` may hang.
#[derive(Debug)]
struct Slow {
    inner: replay::MemoryReplayCache,
    first_answer_late_by: Duration,
    forget_hangs: bool,
    sights: AtomicUsize,
}

#[async_trait::async_trait]
impl replay::ReplayCache for Slow {
    async fn first_sight(&self, key: &replay::ReplayKey, now: u64) -> Result<bool, replay::ReplayCacheError> {
        let recorded = self.inner.first_sight(key, now).await;
        if self.sights.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(self.first_answer_late_by).await;
        }
        recorded
    }
    async fn forget(&self, key: &replay::ReplayKey) -> Result<(), replay::ReplayCacheError> {
        if self.forget_hangs {
            std::future::pending::<()>().await;
        }
        self.inner.forget(key).await
    }
}

fn slow(first_answer_late_by: Duration, forget_hangs: bool) -> Arc<Slow> {
    let inner = replay::MemoryReplayCache::default();
    Arc::new(Slow { inner, first_answer_late_by, forget_hangs, sights: AtomicUsize::new(0) })
}

#[tokio::test(start_paused = true)]
async fn a_copy_answered_by_the_cache_before_the_first_is_told_to_come_back() {
    let (e, _, calls) = endpoint(Duration::from_millis(10), 1);
    let e = e.replay_cache(slow(Duration::from_millis(20), false));
    let sealed = push(Mode::Safe).seal(&popup("oIda").to_wire(Format::Xml), NOW, "window", [2; 16]).unwrap();
    let first = tokio::spawn({
        let (e, q, b) = (e.clone(), sealed.query.clone(), sealed.body.clone());
        async move { post(&e, &q, b.into()).await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The first copy is recorded, its answer still on the way back: the second is not told
    // `success`, since the first's callback fails.
    assert_eq!(post(&e, &sealed.query, sealed.body.clone().into()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.await.unwrap().0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_callback_that_panics_before_its_future_exists_is_a_failure_and_forgotten() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let e = PushEndpoint::new(push(Mode::Safe), move |_: Event| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        assert!(n > 0, "panics building the future, on the first call");
        async move { Ok::<(), std::io::Error>(()) }
    })
    .clock(|| NOW);
    let sealed =
        push(Mode::Safe).seal(&popup("oJo").to_wire(Format::Xml), NOW, "syncpanic", [3; 16]).unwrap();
    assert_eq!(
        post(&e, &sealed.query, sealed.body.clone().into()).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_forget_that_hangs_neither_turns_a_failure_into_success_nor_holds_the_push_for_ever() {
    let (e, _, calls) = endpoint(Duration::ZERO, 1);
    let e = e.replay_cache(slow(Duration::ZERO, true));
    let sealed = push(Mode::Safe).seal(&popup("oKim").to_wire(Format::Xml), NOW, "hang", [4; 16]).unwrap();
    assert_eq!(
        post(&e, &sealed.query, sealed.body.clone().into()).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // The forget is given up after its limit: the push is no longer in flight (it stayed
    // remembered, as the cache did not forget it: a replay).
    tokio::time::sleep(subscribe_events::axum::FORGET_TIME_LIMIT + Duration::from_secs(1)).await;
    assert_eq!(post(&e, &sealed.query, sealed.body.into()).await, (StatusCode::OK, "success".into()));
    assert_eq!((calls.load(Ordering::SeqCst), e.stats().replayed), (1, 1));
}
