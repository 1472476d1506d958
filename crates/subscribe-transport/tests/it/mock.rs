use std::time::Duration;

use subscribe_transport::*;

fn post(path: &str) -> HttpRequest {
    HttpRequest::post(format!("http://api.test{path}?access_token={}", crate::TOKEN), "{}").unwrap()
}

#[tokio::test]
async fn queue_answers_in_order() {
    let mock = MockTransport::new();
    mock.push_response(200, "first").push_response(500, "second");
    let a = mock.send(post("/a")).await.unwrap();
    let b = mock.send(post("/b")).await.unwrap();
    assert_eq!((a.status().as_u16(), a.body().as_ref()), (200, &b"first"[..]));
    assert_eq!((b.status().as_u16(), b.body().as_ref()), (500, &b"second"[..]));
    mock.assert_all_consumed();
}

#[tokio::test]
async fn routes_win_over_the_queue_and_see_the_request() {
    let mock = MockTransport::new();
    mock.push_response(200, "queued");
    mock.route("POST", "/cgi-bin/stable_token")
        .when(|r| r.body().as_ref().windows(4).any(|w| w == b"true"))
        .reply(MockReply::json(200, "forced"));
    mock.route("POST", "/cgi-bin/stable_token")
        .respond_with(|r| MockReply::json(200, format!("len={}", r.body().len())));
    let forced = HttpRequest::post("http://h/cgi-bin/stable_token", r#"{"force_refresh":true}"#).unwrap();
    let normal = HttpRequest::post("http://h/cgi-bin/stable_token", r#"{"force_refresh":false}"#).unwrap();
    assert_eq!(mock.send(forced).await.unwrap().body().as_ref(), b"forced");
    assert_eq!(mock.send(normal).await.unwrap().body().as_ref(), b"len=23");
    // The GET is not routed: the queue answers it.
    assert_eq!(
        mock.send(HttpRequest::get("http://h/cgi-bin/stable_token").unwrap()).await.unwrap().body().as_ref(),
        b"queued"
    );
    mock.assert_all_consumed();
}

#[tokio::test]
async fn limited_routes_are_used_up_then_fall_through() {
    let mock = MockTransport::new();
    mock.route("POST", "/x").times(2).reply(MockReply::json(200, "route"));
    mock.push_response(200, "queue");
    for want in ["route", "route", "queue"] {
        assert_eq!(mock.send(post("/x")).await.unwrap().body().as_ref(), want.as_bytes());
    }
    mock.assert_all_consumed();
}

#[tokio::test]
async fn unused_limited_route_fails_the_consumption_check() {
    let mock = MockTransport::new();
    mock.route("POST", "/x").times(2).reply(MockReply::status(200));
    mock.send(post("/x")).await.unwrap();
    let msg = std::panic::catch_unwind(|| mock.assert_all_consumed()).unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("route POST /x expected 1 more request(s)"), "{msg}");
}

#[tokio::test]
async fn errors_are_injected_per_kind() {
    let mock = MockTransport::new();
    for kind in [
        TransportErrorKind::Connect,
        TransportErrorKind::Timeout,
        TransportErrorKind::Io,
        TransportErrorKind::Other,
    ] {
        mock.push_error(kind);
        let err = mock.send(post("/x")).await.unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_eq!(err.request_never_left(), kind == TransportErrorKind::Connect);
    }
}

#[tokio::test(start_paused = true)]
async fn delays_run_on_the_tokio_clock() {
    let mock = MockTransport::new();
    mock.push(MockReply::json(200, "late").delay(Duration::from_secs(30)));
    let started = tokio::time::Instant::now();
    mock.send(post("/x")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test]
async fn records_requests_redacted_and_counts_per_path() {
    let mock = MockTransport::new();
    mock.route("POST", "/a").reply(MockReply::status(200));
    mock.route("POST", "/b").reply(MockReply::status(200));
    for p in ["/a", "/b", "/a"] {
        mock.send(post(p)).await.unwrap();
    }
    assert_eq!(mock.count("/a"), 2);
    mock.assert_count("/b", 1);
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[1].path(), "/b");
    let shown = format!("{recorded:?} {mock:?}");
    assert!(!shown.contains(crate::TOKEN), "{shown}");
    mock.clear_requests();
    assert_eq!(mock.count("/a"), 0);
}

#[tokio::test]
async fn unexpected_request_panics_naming_it_without_the_token() {
    let mock = MockTransport::new();
    let handle = tokio::spawn({
        let mock = mock.clone();
        async move { mock.send(post("/nowhere")).await }
    });
    let panic = handle.await.unwrap_err().into_panic();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.contains("unexpected request POST http://api.test/nowhere?access_token=[redacted]"), "{msg}");
    assert!(!msg.contains(crate::TOKEN));
    // Also reported afterwards, for panics in tasks nobody joined.
    let msg = std::panic::catch_unwind(|| mock.assert_all_consumed()).unwrap_err();
    assert!(msg.downcast_ref::<String>().unwrap().contains("unexpected request: POST"));
}
