//! Response bodies are capped: a huge or endless body fails with `ResponseTooLarge` as soon as
//! it passes the limit, on both production transports.

use std::time::Duration;

use subscribe_transport::{HttpRequest, HttpTransport, SharedTransport, TransportErrorKind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the local server sends after the request's headers.
#[derive(Clone, Copy)]
enum Body {
    /// `Content-Length: n` and n bytes.
    Sized(usize),
    /// A chunked body that never ends.
    Endless,
}

/// Serves one connection at a time with `body`, until the test ends.
async fn serve(body: Body) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match body {
                    Body::Sized(n) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {n}\r\n\r\n"
                        );
                        let _ = socket.write_all(head.as_bytes()).await;
                        let _ = socket.write_all(&vec![b' '; n]).await;
                    }
                    Body::Endless => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                        let _ = socket.write_all(head.as_bytes()).await;
                        let chunk = format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192));
                        while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                }
            });
        }
    });
    format!("http://{addr}/cgi-bin/message/template/subscribe?access_token=T")
}

fn transports(limit: Option<usize>) -> Vec<(&'static str, SharedTransport)> {
    let mut out = Vec::new();
    #[cfg(feature = "reqwest")]
    {
        let mut b = subscribe_transport::ReqwestTransport::builder().timeout(Duration::from_secs(10));
        if let Some(n) = limit {
            b = b.max_response_body(n);
        }
        out.push(("reqwest", SharedTransport::new(b.build().unwrap())));
    }
    #[cfg(feature = "hyper")]
    {
        let mut b = subscribe_transport::HyperTransport::builder().timeout(Duration::from_secs(10));
        if let Some(n) = limit {
            b = b.max_response_body(n);
        }
        out.push(("hyper", SharedTransport::new(b.build().unwrap())));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_default_limit_is_response_too_large() {
    let url = serve(Body::Sized(64 * 1024 + 1)).await;
    for (name, t) in transports(None) {
        let e = t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), TransportErrorKind::ResponseTooLarge, "{name}: {e:?}");
        assert!(!e.request_never_left(), "{name}: the server had the request");
    }
    let url = serve(Body::Sized(64 * 1024)).await;
    for (name, t) in transports(None) {
        let r = t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap();
        assert_eq!(r.body().len(), 64 * 1024, "{name}: a body at the limit is read whole");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_configurable() {
    let url = serve(Body::Sized(200 * 1024)).await;
    for (name, t) in transports(Some(256 * 1024)) {
        let r = t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap();
        assert_eq!(r.body().len(), 200 * 1024, "{name}");
    }
    for (name, t) in transports(Some(1024)) {
        let e = t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), TransportErrorKind::ResponseTooLarge, "{name}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_stops_at_the_limit_long_before_the_timeout() {
    let url = serve(Body::Endless).await;
    for (name, t) in transports(None) {
        let started = std::time::Instant::now();
        let e = t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), TransportErrorKind::ResponseTooLarge, "{name}: {e:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: it did not wait for the 10 s timeout");
        assert_eq!(e.to_string(), "the response body was larger than the limit");
    }
}

#[cfg(feature = "reqwest")]
#[test]
fn the_builder_never_prints_its_proxy_url() {
    let b = subscribe_transport::ReqwestTransport::builder()
        .proxy("http://user:proxy-password-77@proxy.example:3128");
    let shown = format!("{b:?} {b:#?}");
    assert!(!shown.contains("proxy-password-77") && !shown.contains("proxy.example"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}
