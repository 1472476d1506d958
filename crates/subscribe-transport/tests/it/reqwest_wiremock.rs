use std::error::Error as _;
use std::fmt::Write as _;
use std::time::Duration;

use subscribe_transport::*;
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{SECRET, TOKEN};

async fn server() -> MockServer {
    MockServer::builder().listener(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).start().await
}

fn transport() -> ReqwestTransport {
    ReqwestTransport::builder().timeout(Duration::from_millis(500)).build().unwrap()
}

fn assert_no_secret(e: &TransportError) {
    let mut shown = format!("{e} | {e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        write!(shown, " | {s} | {s:?}").unwrap();
        source = s.source();
    }
    assert!(!shown.contains(TOKEN) && !shown.contains(SECRET), "{shown}");
}

#[tokio::test]
async fn method_path_query_and_body_arrive_intact() {
    let server = server().await;
    let body = r#"{"touser":"o1","title":"到货提醒"}"#;
    Mock::given(method("POST"))
        .and(path("/cgi-bin/message/template/subscribe"))
        .and(query_param("access_token", TOKEN))
        .and(header("content-type", "application/json"))
        .and(body_string(body))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"errcode":0,"errmsg":"ok"}"#))
        .expect(1)
        .mount(&server)
        .await;
    let req = HttpRequest::post(
        format!("{}/cgi-bin/message/template/subscribe?access_token={TOKEN}", server.uri()),
        body,
    )
    .unwrap();
    let resp = transport().send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), br#"{"errcode":0,"errmsg":"ok"}"#);
    let got = &server.received_requests().await.unwrap()[0];
    assert!(got.headers.get("user-agent").unwrap().to_str().unwrap().starts_with("subscribe-transport/"));
}

#[tokio::test]
async fn non_2xx_is_returned_not_an_error() {
    let server = server().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .mount(&server)
        .await;
    let resp = transport().send(HttpRequest::get(format!("{}/x", server.uri())).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.body().as_ref(), b"bad gateway");
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let server = server().await;
    Mock::given(path("/from"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", format!("{}/to", server.uri())))
        .mount(&server)
        .await;
    Mock::given(path("/to")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&server).await;
    let resp = transport().send(HttpRequest::get(format!("{}/from", server.uri())).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(resp.headers().get("location").unwrap().to_str().unwrap().ends_with("/to"));
}

#[tokio::test]
async fn slow_server_gives_the_timeout_kind_without_the_token() {
    let server = server().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let req = HttpRequest::post(format!("{}/slow?access_token={TOKEN}&secret={SECRET}", server.uri()), "{}")
        .unwrap();
    let err = transport().send(req).await.unwrap_err();
    assert_eq!(err.kind(), TransportErrorKind::Timeout);
    assert!(!err.request_never_left());
    assert_no_secret(&err);
}

#[tokio::test]
async fn closed_port_gives_the_never_left_kind_without_the_token() {
    // Bind, note the port, close: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let req = HttpRequest::post(
        format!("http://127.0.0.1:{port}/cgi-bin/token?access_token={TOKEN}&secret={SECRET}"),
        "{}",
    )
    .unwrap();
    let err = transport().send(req).await.unwrap_err();
    assert_eq!(err.kind(), TransportErrorKind::Connect);
    assert!(err.request_never_left());
    assert_no_secret(&err);
}

#[tokio::test]
async fn connection_dropped_after_sending_is_io_not_connect() {
    // A raw server that reads the request and closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf).await;
        drop(sock);
    });
    let req = HttpRequest::post(format!("http://{addr}/x?access_token={TOKEN}"), "{}").unwrap();
    let err = transport().send(req).await.unwrap_err();
    assert_eq!(err.kind(), TransportErrorKind::Io, "a reset after sending is Io, not Connect: {err:?}");
    assert!(!err.request_never_left());
    assert_no_secret(&err);
}

#[tokio::test]
async fn built_from_an_existing_client() {
    let server = server().await;
    Mock::given(path("/x")).respond_with(ResponseTemplate::new(204)).mount(&server).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let t = ReqwestTransport::from(client);
    assert_eq!(t.send(HttpRequest::get(format!("{}/x", server.uri())).unwrap()).await.unwrap().status(), 204);
}

#[tokio::test]
async fn invalid_proxy_is_an_error_without_its_credentials() {
    let err = ReqwestTransport::builder().proxy(format!("http://u:{SECRET}@[bad")).build().unwrap_err();
    assert_eq!(err.kind(), TransportErrorKind::InvalidRequest);
    assert_no_secret(&err);
}

#[tokio::test]
async fn alternating_uris_on_one_thread_each_reach_their_own_path() {
    // Requests on one thread to alternating URIs each reach their own path.
    let server = server().await;
    for p in ["/a", "/b"] {
        Mock::given(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_string(p))
            .expect(3)
            .mount(&server)
            .await;
    }
    let t = transport();
    for p in ["/a", "/b", "/b", "/a", "/a", "/b"] {
        let resp = t
            .send(HttpRequest::get(format!("{}{p}?access_token={TOKEN}", server.uri())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.body().as_ref(), p.as_bytes());
    }
}
