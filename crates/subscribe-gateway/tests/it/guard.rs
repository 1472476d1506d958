use std::time::{Duration, Instant};

use subscribe_sandbox::DEMO_APPID;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

/// Status, `WWW-Authenticate` and body of a GET of `app`'s token with `auth` as the
/// `Authorization` header (none for `None`).
async fn answer(g: &Running, app: &str, auth: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = g.http.get(g.token_url(app));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let r = req.send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_none(), "no cookies");
    let www = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), www, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_and_a_missing_key_answer_identically() {
    let g = Running::start().await;
    let missing = answer(&g, DEMO_APPID, None).await;
    assert_eq!(missing.0, 401);
    assert_eq!(missing.1.as_deref(), Some("Bearer"));
    let wrong = format!("Bearer {}", KEY_A.replace('a', "b"));
    for auth in [wrong.as_str(), "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", &format!("Token {KEY_A}")] {
        assert_eq!(answer(&g, DEMO_APPID, Some(auth)).await, missing, "{auth}");
    }
    // Also for an app that does not exist.
    assert_eq!(answer(&g, "wxffffffffffffffff", None).await, missing);
    let r = g.http.post(g.invalidate_url(DEMO_APPID)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_for_app_a_is_refused_on_app_b_as_on_an_app_that_does_not_exist() {
    let g = Running::start().await;
    let a_on_b = answer(&g, APP_B, Some(&format!("Bearer {KEY_A}"))).await;
    assert_eq!(a_on_b.0, 403);
    let a_on_nothing = answer(&g, "wxffffffffffffffff", Some(&format!("Bearer {KEY_A}"))).await;
    assert_eq!(a_on_b, a_on_nothing, "nothing tells which apps exist");
    let a_on_garbage = answer(&g, "..%2F..", Some(&format!("Bearer {KEY_A}"))).await;
    assert_eq!(a_on_b, a_on_garbage);
    let (status, _) = g.report(APP_B, KEY_A, "whatever").await;
    assert_eq!(status, 403);
    // Each key works on its own app.
    assert_eq!(g.get_token(APP_B, KEY_B).await.0, 200);
    assert_eq!(g.get_token(DEMO_APPID, KEY_A).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused() {
    let g = Running::start().await;
    let big = format!(r#"{{"access_token": "{}"}}"#, "x".repeat(2048));
    let r =
        g.http.post(g.invalidate_url(DEMO_APPID)).bearer_auth(KEY_A).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413, "with a Content-Length");
    // Streamed in chunks, without a length: cut off while it is read.
    let mut conn = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let head = format!(
        "POST /v1/apps/{DEMO_APPID}/access_token/invalidate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n\
         Connection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in big.as_bytes().chunks(100) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if conn.write_all(&framed).await.is_err() {
            break; // the server already answered and closed
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "streamed: {answer}");
    assert_eq!(g.sandbox.state().stats().stable_token_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_cut_off_while_others_are_served() {
    let g = Running::start().await;
    let mut silent = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // never finishes
    let started = Instant::now();
    // Others are served meanwhile.
    for _ in 0..5 {
        assert_eq!(g.get_token(DEMO_APPID, KEY_A).await.0, 200);
    }
    for conn in [&mut silent, &mut slow] {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
        let n = read.expect("the server closes the connection").unwrap_or(0);
        // Closed (0), or answered 408 and then closed: never served.
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "not before the header-read timeout: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_is_cut_off_while_others_are_served() {
    let g = Running::start_with(
        |text| text.replacen("[server]\n", "[server]\nrequest_timeout_ms = 500\n", 1),
        None,
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let head = format!(
        "POST /v1/apps/{DEMO_APPID}/access_token/invalidate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"access"
    );
    conn.write_all(head.as_bytes()).await.unwrap(); // and the other 92 bytes never come
    let started = Instant::now();
    assert_eq!(g.get_token(DEMO_APPID, KEY_A).await.0, 200, "another caller is served meanwhile");
    let mut answer = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
        .await
        .expect("the trickling request is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_hold_every_connection_while_another_waits() {
    // Four connections in all, two per peer: one host opening connections that send nothing
    // (each held up to the header-read timeout, then opened again) would otherwise hold them
    // all, and every other caller would wait in the listen queue.
    let g = Running::start_with(
        |text| {
            text.replacen(
                "header_read_timeout_ms = 300\n",
                "max_connections = 4\nmax_connections_per_peer = 2\nheader_read_timeout_ms = 30000\n",
                1,
            )
        },
        None,
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(tokio::net::TcpStream::connect(g.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    for _ in 0..3 {
        let r = other.get(g.token_url(DEMO_APPID)).bearer_auth(KEY_A).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "served at once, not after a timeout");
    // The host's connections over its two were closed as they came.
    let mut refused = 0;
    for conn in &mut silent {
        let mut answer = Vec::new();
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(100), conn.read_to_end(&mut answer)).await
        {
            let answer = String::from_utf8_lossy(&answer);
            assert!(read.is_err() || answer.is_empty() || answer.starts_with("HTTP/1.1 503"), "{answer}");
            refused += 1;
        }
    }
    assert_eq!(refused, 14, "all but two answered 503 and closed");
}

#[test]
fn the_limit_per_peer_is_refused_above_the_whole() {
    let dir = tempfile::TempDir::new().unwrap();
    let text = config_text(dir.path(), "http://127.0.0.1:9").replacen(
        "[server]\n",
        "[server]\nmax_connections = 4\nmax_connections_per_peer = 5\n",
        1,
    );
    let e = Config::parse(&text, dir.path(), &|_| None).unwrap_err().to_string();
    assert!(e.contains("server.max_connections_per_peer"), "{e}");
    let zero = text.replace("max_connections_per_peer = 5", "max_connections_per_peer = 0");
    let e = Config::parse(&zero, dir.path(), &|_| None).unwrap_err().to_string();
    assert!(e.contains("server.max_connections_per_peer"), "{e}");
    let text = config_text(dir.path(), "http://127.0.0.1:9").replacen(
        "[server]\n",
        "[server]\nmax_connections = 4\n",
        1,
    );
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
    assert_eq!(config.server.max_connections_per_peer, 4, "the default, at most the whole");
    // A proxy written as an IPv4-mapped address is the IPv4 peer it connects as, for its
    // X-Forwarded-For and for its connections alike.
    let text = text.replacen("[server]\n", "[server]\ntrusted_proxies = [\"::ffff:10.0.0.2\"]\n", 1);
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
    assert_eq!(config.server.trusted_proxies, [std::net::IpAddr::from([10, 0, 0, 2])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_64_kib_is_refused() {
    let g = Running::start().await;
    let mut conn = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(80 * 1024));
    let _ = conn.write_all(head.as_bytes()).await; // the server may close before it is all read
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A request with headers under it is served.
    let mut conn = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}
