//! `HyperTransport`'s pool: with N sends in flight, at most N connections for the whole run,
//! against a server that answers after a delay as WeChat does; connections the server closes
//! are replaced without failing a send.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use subscribe_transport::{HttpRequest, HttpTransport, HyperTransport};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

/// How the counting server treats a connection after an answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    /// Keeps it open for the next request.
    KeepAlive,
    /// Answers with `Connection: close` and closes it.
    Close,
    /// Keeps it open, but closes it silently once it has been idle for this long.
    IdleClose(Duration),
}

struct Counting {
    url: String,
    accepted: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    hosts: Arc<std::sync::Mutex<Vec<String>>>,
}

/// An HTTP/1.1 server that answers every POST with WeChat's `ok` after `delay`, counting the
/// connections it accepts.
async fn counting(delay: Duration, after: After) -> Counting {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let hosts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (a, n, h) = (accepted.clone(), answered.clone(), hosts.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let (n, h) = (n.clone(), h.clone());
            tokio::spawn(async move {
                let mut conn = BufReader::new(socket);
                loop {
                    let wait = match after {
                        After::IdleClose(idle) => idle,
                        _ => Duration::from_secs(60),
                    };
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        let read = if first {
                            match tokio::time::timeout(wait, conn.read_line(&mut line)).await {
                                Ok(r) => r,
                                Err(_) => return, // idle too long: closed without a word
                            }
                        } else {
                            conn.read_line(&mut line).await
                        };
                        first = false;
                        match read {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {
                                let lower = line.to_ascii_lowercase();
                                if let Some(v) = lower.strip_prefix("content-length:") {
                                    length = v.trim().parse().unwrap();
                                }
                                if let Some(v) = lower.strip_prefix("host:") {
                                    h.lock().unwrap().push(v.trim().to_owned());
                                }
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    let ok = br#"{"errcode":0,"errmsg":"ok"}"#;
                    let close = if after == After::Close { "connection: close\r\n" } else { "" };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{close}content-length: {}\r\n\r\n",
                        ok.len()
                    );
                    // Counted before it is written: once written, the client may finish and the
                    // test read the count before this task runs again.
                    n.fetch_add(1, Ordering::SeqCst);
                    let socket = conn.get_mut();
                    if socket.write_all(head.as_bytes()).await.is_err() || socket.write_all(ok).await.is_err()
                    {
                        return;
                    }
                    if after == After::Close {
                        return;
                    }
                }
            });
        }
    });
    Counting {
        url: format!("http://{addr}/cgi-bin/message/template/subscribe?access_token=T"),
        accepted,
        answered,
        hosts,
    }
}

/// `sends` requests through `transport`, `in_flight` at a time (each worker sends the next as
/// soon as its last is answered, as `send-batch` and the dispatcher do).
async fn run(transport: Arc<HyperTransport>, url: &str, in_flight: usize, sends: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (t, next, url) = (transport.clone(), next.clone(), url.to_owned());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < sends {
                let r = t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap();
                assert_eq!(r.body().as_ref(), br#"{"errcode":0,"errmsg":"ok"}"#);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_sends_in_flight_open_at_most_n_connections() {
    for in_flight in [1, 2, 16, 128, 512] {
        let server = counting(Duration::from_millis(20), After::KeepAlive).await;
        let transport = Arc::new(HyperTransport::new().unwrap());
        let sends = in_flight * 6;
        run(transport.clone(), &server.url, in_flight, sends).await;
        assert_eq!(server.answered.load(Ordering::SeqCst), sends);
        let opened = server.accepted.load(Ordering::SeqCst);
        assert!(opened <= in_flight, "{in_flight} in flight opened {opened} connections for {sends} sends");
        // And they are reused: a second run at the same concurrency opens none.
        run(transport, &server.url, in_flight, sends).await;
        assert_eq!(server.accepted.load(Ordering::SeqCst), opened, "{in_flight} in flight, second run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_on_idle_connections_is_kept() {
    let server = counting(Duration::from_millis(20), After::KeepAlive).await;
    let transport = Arc::new(HyperTransport::builder().pool_max_idle_per_host(4).build().unwrap());
    run(transport.clone(), &server.url, 16, 16).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 16);
    // Four were kept, the other twelve closed as they came back: the same sixteen in flight
    // again open twelve.
    run(transport, &server.url, 16, 16).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 16 + 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_each_connection_costs_a_connection_per_send_and_no_failure() {
    let server = counting(Duration::ZERO, After::Close).await;
    let transport = Arc::new(HyperTransport::new().unwrap());
    run(transport, &server.url, 4, 40).await;
    assert_eq!(server.answered.load(Ordering::SeqCst), 40);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_server_closed_while_idle_is_replaced_not_failed() {
    let server = counting(Duration::ZERO, After::IdleClose(Duration::from_millis(100))).await;
    let transport = Arc::new(HyperTransport::new().unwrap());
    run(transport.clone(), &server.url, 3, 9).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The three idle connections are closed by now; every send still succeeds, on new ones.
    run(transport, &server.url, 3, 9).await;
    assert_eq!(server.answered.load(Ordering::SeqCst), 18);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_names_the_host_and_a_port_that_is_not_the_default() {
    let server = counting(Duration::ZERO, After::KeepAlive).await;
    let transport = HyperTransport::new().unwrap();
    let r = transport.send(HttpRequest::post(server.url.as_str(), "{}").unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    let port = server.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    assert_eq!(server.hosts.lock().unwrap().as_slice(), [format!("127.0.0.1:{port}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_pooled_connection_took_is_never_sent_again() {
    // Answers the first request of each connection; reads the second and hangs up unanswered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(socket);
                for answered in [true, false] {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match conn.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let mut body = [0u8; 2];
                    conn.read_exact(&mut body).await.unwrap();
                    seen.fetch_add(1, Ordering::SeqCst);
                    if answered {
                        let ok = br#"{"errcode":0,"errmsg":"ok"}"#;
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", ok.len());
                        conn.get_mut().write_all(head.as_bytes()).await.unwrap();
                        conn.get_mut().write_all(ok).await.unwrap();
                    }
                }
            });
        }
    });
    let url = format!("http://{addr}/cgi-bin/message/template/subscribe?access_token=T");
    let transport = HyperTransport::new().unwrap();
    transport.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap();
    let e = transport.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap_err();
    assert!(!e.request_never_left(), "the server read it: its outcome is unknown, not never-left: {e:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(requests.load(Ordering::SeqCst), 2, "the second request reached the server once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_other_than_http_1_is_refused_before_anything_is_sent() {
    let server = counting(Duration::ZERO, After::KeepAlive).await;
    let transport = HyperTransport::new().unwrap();
    for version in [http::Version::HTTP_09, http::Version::HTTP_2, http::Version::HTTP_3] {
        let mut request = http::Request::new(bytes::Bytes::from_static(b"{}"));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = server.url.parse().unwrap();
        *request.version_mut() = version;
        let e = transport.send(HttpRequest::new(request)).await.unwrap_err();
        assert_eq!(e.kind(), subscribe_transport::TransportErrorKind::InvalidRequest, "{version:?}: {e:?}");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
    // And the transport still works.
    transport.send(HttpRequest::post(server.url.as_str(), "{}").unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_while_still_connecting_means_the_request_never_left() {
    // Accepts TCP, never answers the TLS handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let transport = HyperTransport::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let url = format!("https://{addr}/cgi-bin/message/template/subscribe?access_token=T");
    let e = transport.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap_err();
    assert!(e.request_never_left(), "no connection was made: {e:?}");
    assert!(!format!("{e} {e:?}").contains("access_token=T"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_one_host_share_its_connections() {
    let server = counting(Duration::ZERO, After::KeepAlive).await;
    let transport = HyperTransport::new().unwrap();
    let port = server.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    for base in [format!("http://127.0.0.1:{port}"), format!("HTTP://user@127.0.0.1:{port}")] {
        let url = format!("{base}/cgi-bin/message/template/subscribe?access_token=T");
        transport.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap();
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

/// A server that closes idle connections after 5 s (Node's and Apache's default) must never
/// be sent a request on a connection it is closing: the request would be written and its
/// answer never come, an unknown outcome. Both transports drop a connection idle for 4 s by
/// default, so a send after a 4.5 s pause opens a new one instead of reusing the old.
#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_connection_is_dropped_before_a_five_second_server_closes_it() {
    let (hyper, reqwest) = tokio::join!(
        counting(Duration::ZERO, After::IdleClose(Duration::from_secs(5))),
        counting(Duration::ZERO, After::IdleClose(Duration::from_secs(5)))
    );
    let transports: [(Arc<dyn HttpTransport>, &Counting); 2] = [
        (Arc::new(HyperTransport::new().unwrap()), &hyper),
        (Arc::new(subscribe_transport::ReqwestTransport::new().unwrap()), &reqwest),
    ];
    let send = |t: Arc<dyn HttpTransport>, url: String| async move {
        let r = t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap();
        assert_eq!(r.body().as_ref(), br#"{"errcode":0,"errmsg":"ok"}"#);
    };
    for (t, server) in &transports {
        send(t.clone(), server.url.clone()).await;
        send(t.clone(), server.url.clone()).await;
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1, "a busy connection is reused");
    }
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    for (i, (t, server)) in transports.iter().enumerate() {
        send(t.clone(), server.url.clone()).await;
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            2,
            "transport {i}: the idle connection was dropped"
        );
        assert_eq!(server.answered.load(Ordering::SeqCst), 3);
    }
}
