//! What a web page in the developer's browser could do to a sandbox on 127.0.0.1: submit a
//! cross-site form to the control API, or reach it through a DNS name it controls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use subscribe_sandbox::{Faults, ManualClock, SandboxConfig, SandboxHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

#[tokio::test]
async fn the_control_api_takes_only_json_so_a_cross_site_form_changes_nothing() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    s.state().set_faults(Faults { busy_every: Some(3), ..Faults::default() });
    grant(&s, 1);
    // What an HTML form can send without a preflight: urlencoded, multipart, text/plain.
    for content_type in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"]
    {
        for (path, body) in [
            ("/sandbox/api/reset", ""),
            ("/sandbox/api/faults", r#"{"busy_every":1}"#),
            ("/sandbox/api/tokens/revoke", "{}"),
            ("/sandbox/api/tokens/expire", ""),
            ("/sandbox/api/grants", "{}"),
        ] {
            let r = http
                .post(format!("{base}{path}"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 415, "{content_type} {path}");
        }
    }
    let r = http.post(format!("{base}/sandbox/api/reset")).send().await.unwrap();
    assert_eq!(r.status(), 415, "no content type at all");
    assert_eq!(s.state().faults().busy_every, Some(3), "nothing was changed");
    assert_eq!(s.state().unused_grants(), 1, "nothing was reset");
    // A JSON request (which a cross-site page cannot send without CORS, which the sandbox
    // never grants) works.
    let r = http
        .post(format!("{base}/sandbox/api/reset"))
        .header("content-type", "application/json; charset=utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.state().unused_grants(), 0);
}

/// Sends one raw request with `host` as its Host header and returns the status code.
async fn status_with_host(addr: SocketAddr, host: &str) -> u16 {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /sandbox/api/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_foreign_host_header_is_refused_against_dns_rebinding() {
    let config = SandboxConfig { allowed_hosts: vec!["sandbox".into()], ..SandboxConfig::demo() };
    let (s, _) = start(config).await;
    let addr = s.addr();
    for foreign in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "sandbox.evil",
    ] {
        assert_eq!(status_with_host(addr, foreign).await, 421, "{foreign}");
    }
    for ok in [
        "127.0.0.1",
        &addr.to_string(),
        "localhost",
        "LOCALHOST:8080",
        "[::1]:1234",
        "sandbox",
        "sandbox:7000",
    ] {
        assert_eq!(status_with_host(addr, ok).await, 200, "{ok}");
    }
    // A refused request changes nothing and the server keeps serving.
    assert_eq!(s.state().stats().deliveries, 0);
    assert_eq!(status_with_host(addr, "127.0.0.1").await, 200);
}

#[tokio::test]
async fn dead_tokens_are_forgotten_a_lifetime_after_they_stop_working() {
    let clock = ManualClock::new();
    let s = SandboxHandle::start_with_clock(
        SandboxConfig::demo(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let old = classic_token(&s, &http).await;
    s.state().expire_tokens();
    grant(&s, 3);
    assert_eq!(send(&s, &http, &old, message(3)).await["errcode"], 42001, "just expired: 42001");
    clock.advance(Duration::from_secs(3600));
    let _ = classic_token(&s, &http).await;
    assert_eq!(send(&s, &http, &old, message(3)).await["errcode"], 42001, "within a lifetime: still known");
    clock.advance(Duration::from_secs(7200));
    let new = classic_token(&s, &http).await; // issuing prunes
    assert_eq!(send(&s, &http, &old, message(3)).await["errcode"], 40014, "forgotten: an unknown token");
    assert_eq!(send(&s, &http, &new, message(3)).await["errcode"], 0, "the live one works");
}
