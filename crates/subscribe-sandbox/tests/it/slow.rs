//! Slow clients: connections that never finish their headers, or sit idle, are closed after the
//! header-read timeout, and while they hang a normal request still answers at once.

use std::time::{Duration, Instant};

use subscribe_sandbox::SandboxConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::*;

/// Whether the server closed `conn` (a read returns end of file or an error) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // an answer (a 408): keep reading until the close
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_shed_and_a_normal_request_still_answers() {
    let config = SandboxConfig { header_read_timeout: Duration::from_secs(1), ..SandboxConfig::demo() };
    let (s, http) = start(config).await;
    // 100 connections that start a request and never finish its headers.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut c = TcpStream::connect(s.addr()).await.unwrap();
        c.write_all(b"POST /cgi-bin/stable_token HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
        slow.push(c);
    }
    let started = Instant::now();
    let r = http.get(format!("{}/sandbox/api/state", s.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1), "answered in {:?}", started.elapsed());

    for c in &mut slow {
        assert!(closed_within(c, Duration::from_secs(3)).await, "a slow connection was kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
    let config = SandboxConfig { header_read_timeout: Duration::from_secs(1), ..SandboxConfig::demo() };
    let (s, _) = start(config).await;
    let mut c = TcpStream::connect(s.addr()).await.unwrap();
    c.write_all(b"GET /sandbox/api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(closed_within(&mut c, Duration::from_secs(3)).await, "an idle connection was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_and_are_served_when_one_frees() {
    let config = SandboxConfig {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 4,
        ..SandboxConfig::demo()
    };
    let (s, http) = start(config).await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(s.addr()).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        slow.push(c);
    }
    // The fifth waits in the listen queue until the timeout frees a slot, then is served.
    let started = Instant::now();
    let r = http.get(format!("{}/sandbox/api/state", s.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(500), "it did not wait: {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}
