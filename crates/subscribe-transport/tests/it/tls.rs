//! TLS as WeChat is reached: the server's certificate is checked against a root the transport
//! was told to trust, never with the check turned off; connections (and so handshakes) follow
//! the sends in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use subscribe_transport::test_util::TestAuthority;
use subscribe_transport::{HttpRequest, HttpTransport, SharedTransport, TransportErrorKind};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

struct Tls {
    url: String,
    handshakes: Arc<AtomicUsize>,
}

/// A keep-alive HTTPS server answering every POST with WeChat's `ok` after `delay`, counting
/// completed TLS handshakes.
async fn serve(ca: &TestAuthority, delay: Duration) -> Tls {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(socket).await else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut conn = BufReader::new(stream);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match conn.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {
                                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                    length = v.trim().parse().unwrap();
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
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", ok.len());
                    let stream = conn.get_mut();
                    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(ok).await.is_err()
                    {
                        return;
                    }
                    let _ = stream.flush().await;
                }
            });
        }
    });
    Tls { url: format!("https://{addr}/cgi-bin/message/template/subscribe?access_token=T"), handshakes }
}

fn transports(pem: Option<&str>) -> Vec<(&'static str, SharedTransport)> {
    let mut out = Vec::new();
    #[cfg(feature = "reqwest")]
    {
        let mut b = subscribe_transport::ReqwestTransport::builder();
        if let Some(pem) = pem {
            b = b.add_root_certificates_pem(pem);
        }
        out.push(("reqwest", SharedTransport::new(b.build().unwrap())));
    }
    #[cfg(feature = "hyper")]
    {
        let mut b = subscribe_transport::HyperTransport::builder();
        if let Some(pem) = pem {
            b = b.add_root_certificates_pem(pem);
        }
        out.push(("hyper", SharedTransport::new(b.build().unwrap())));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_a_trusted_test_authority_is_reached() {
    let ca = TestAuthority::new();
    let server = serve(&ca, Duration::ZERO).await;
    for (name, t) in transports(Some(ca.ca_pem())) {
        let r = t.send(HttpRequest::post(server.url.as_str(), "{}").unwrap()).await.unwrap();
        assert_eq!(r.body().as_ref(), br#"{"errcode":0,"errmsg":"ok"}"#, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_an_authority_not_trusted_is_refused_before_anything_is_sent() {
    let ca = TestAuthority::new();
    let server = serve(&ca, Duration::ZERO).await;
    let other = TestAuthority::new();
    for (pem, what) in [(None, "the platform's roots only"), (Some(other.ca_pem()), "another test authority")]
    {
        for (name, t) in transports(pem) {
            let e = t.send(HttpRequest::post(server.url.as_str(), "{}").unwrap()).await.unwrap_err();
            assert!(e.request_never_left(), "{name}, {what}: {e:?}");
            // Refused for its issuer, not for some other failure to connect.
            // (rustls: "invalid peer certificate: …"; OpenSSL, with `native-tls`: "certificate
            // verify failed".)
            let why = chain(&e);
            assert!(
                why.contains("invalid peer certificate") || why.contains("certificate verify failed"),
                "{name}, {what}: {why}"
            );
            assert!(!format!("{e} {e:?}").contains("access_token=T"), "{name}: {e:?}");
        }
    }
    assert_eq!(server.handshakes.load(Ordering::SeqCst), 0, "no handshake completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_authority_does_not_vouch_for_another_name() {
    // The certificate names `example.test`; the server is reached as 127.0.0.1.
    let ca = TestAuthority::for_names(&["example.test"]);
    let server = serve(&ca, Duration::ZERO).await;
    for (name, t) in transports(Some(ca.ca_pem())) {
        let e = t.send(HttpRequest::post(server.url.as_str(), "{}").unwrap()).await.unwrap_err();
        assert!(e.request_never_left(), "{name}: {e:?}");
        let why = chain(&e);
        assert!(why.contains("not valid for name") || why.contains("IP address mismatch"), "{name}: {why}");
    }
    assert_eq!(server.handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn text_without_a_certificate_is_refused_when_the_transport_is_built() {
    let pasted_key = "-----BEGIN PRIVATE KEY-----\\nSECRETKEYMATERIAL\\n-----END PRIVATE KEY-----";
    for pem in
        ["", "not a certificate", "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n", pasted_key]
    {
        #[cfg(feature = "reqwest")]
        {
            let e = subscribe_transport::ReqwestTransport::builder()
                .add_root_certificates_pem(pem)
                .build()
                .unwrap_err();
            assert_eq!(e.kind(), TransportErrorKind::InvalidRequest, "reqwest, {pem:?}");
            assert!(chain(&e).contains("add_root_certificates_pem"), "{}", chain(&e));
        }
        #[cfg(feature = "hyper")]
        {
            let e = subscribe_transport::HyperTransport::builder()
                .add_root_certificates_pem(pem)
                .build()
                .unwrap_err();
            assert_eq!(e.kind(), TransportErrorKind::InvalidRequest, "hyper, {pem:?}");
            assert!(chain(&e).contains("add_root_certificates_pem"), "{}", chain(&e));
        }
    }
}

#[cfg(feature = "hyper")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_n_sends_in_flight_make_at_most_n_handshakes() {
    let ca = TestAuthority::new();
    let server = serve(&ca, Duration::from_millis(20)).await;
    let t = Arc::new(
        subscribe_transport::HyperTransport::builder()
            .add_root_certificates_pem(ca.ca_pem())
            .build()
            .unwrap(),
    );
    let in_flight = 64;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (t, next, url) = (t.clone(), next.clone(), server.url.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < in_flight * 5 {
                t.send(HttpRequest::post(url.as_str(), "{}").unwrap()).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let handshakes = server.handshakes.load(Ordering::SeqCst);
    assert!(handshakes <= in_flight, "{handshakes} handshakes for {in_flight} in flight");
}

/// An error and its sources, one after another.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        next = inner.source();
    }
    out
}
