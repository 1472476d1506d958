//! [`transport_contract`]: what every [`HttpTransport`] must do, checked against a local
//! server that misbehaves on purpose.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{HttpRequest, HttpTransport, TransportError};

/// The access token in every URI the suite sends: no error may show it.
const SECRET: &str = "CONTRACT-SECRET-TOKEN";
/// How long the suite waits for one request before it calls the transport hung.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the server does once it has read a request.
#[derive(Clone, Copy)]
enum Then {
    /// Answers with this status and body.
    Answer(u16, &'static str),
    /// Answers `302` to another path.
    Redirect,
    /// Closes the connection without a word.
    Close,
    /// Keeps the connection open and never answers.
    Hang,
    /// Sends headers promising 100 bytes, then 10, then closes.
    CutBody,
}

/// A request as the server read it.
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// How long a server that is [`Server::finish`]ed waits for another connection before it stops:
/// one connection is all a well-behaved transport makes there (no redirect, no retry); a
/// second one within this while is recorded too, so the suite can name it.
const IDLE: Duration = Duration::from_millis(300);

/// How long a server that is [`Server::stop`]ped keeps counting after the transport returned:
/// a request whose outcome is unknown must not be sent again, neither during the call (at any
/// delay: the server counts for the whole call) nor just after it.
const AFTER_RETURN: Duration = Duration::from_secs(1);

/// A contract server: its address, and what it read so far.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Waits until it has seen no connection for [`IDLE`], then returns what it read.
    async fn finish(self) -> Vec<Seen> {
        self.task.await.expect("the contract server");
        take(&self.seen)
    }

    /// Stops it now, and returns what it read.
    async fn stop(self) -> Vec<Seen> {
        self.task.abort();
        let _ = self.task.await;
        take(&self.seen)
    }
}

fn take(seen: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    std::mem::take(&mut *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// A server on `127.0.0.1` that does `then` to every request, recording what it read, until it
/// has been idle for `idle` (`None`: until it is stopped).
async fn serve(then: Then, idle: Option<Duration>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("the contract server binds a port");
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let accepted = match idle {
                Some(idle) => match tokio::time::timeout(idle, listener.accept()).await {
                    Ok(accepted) => accepted,
                    Err(_) => break,
                },
                None => listener.accept().await,
            };
            let Ok((mut conn, _)) = accepted else { break };
            let Some(request) = read_request(&mut conn).await else { continue };
            record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request);
            match then {
                Then::Answer(status, body) => {
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                }
                Then::Redirect => {
                    let head = "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = conn.write_all(head.as_bytes()).await;
                }
                Then::Close => {}
                Then::Hang => {
                    // Until the transport gives up and closes its end.
                    let _ = tokio::time::timeout(PATIENCE, conn.read(&mut [0u8; 1])).await;
                }
                Then::CutBody => {
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"errcode\"";
                    let _ = conn.write_all(head.as_bytes()).await;
                }
            }
            let _ = conn.shutdown().await;
        }
    });
    Server { base, seen, task }
}

/// Reads one HTTP/1.1 request (head, then a `Content-Length` body).
async fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { head, body: buf[head_end..].to_vec() })
}

async fn send<T: HttpTransport + ?Sized>(
    transport: &T,
    request: HttpRequest,
    rule: &str,
) -> Result<crate::HttpResponse, TransportError> {
    tokio::time::timeout(PATIENCE, transport.send(request)).await.unwrap_or_else(|_| {
        panic!("{rule}: the transport did not return within {PATIENCE:?}; give it a timeout below 5 s")
    })
}

fn post(base: &str, body: &'static str) -> HttpRequest {
    HttpRequest::post(format!("{base}/cgi-bin/contract?access_token={SECRET}&x=a%2Bb"), Bytes::from(body))
        .expect("a valid request")
}

/// The error, its `Debug` and its sources must not show the access token.
fn assert_no_secret(e: &TransportError, rule: &str) {
    let mut text = format!("{e} {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, " {s} {s:?}");
        source = s.source();
    }
    assert!(!text.contains(SECRET), "{rule}: the error shows the access token: {text}");
}

/// The failure `rule` expects, or a panic naming it.
fn expect_err(result: Result<crate::HttpResponse, TransportError>, rule: &str) -> TransportError {
    match result {
        Err(e) => {
            assert_no_secret(&e, rule);
            e
        }
        Ok(r) => panic!("{rule}: expected an error, got HTTP {}", r.status()),
    }
}

/// The [`HttpTransport`] contract. Panics, naming the broken rule, when `transport` breaks it.
///
/// Against local servers that answer, refuse, redirect, hang up, never answer and cut a body
/// short, it checks what the client relies on:
/// - the request arrives as built: method, path and query byte for byte (the access token is
///   percent-encoded there), body, `Content-Type`;
/// - any status is a response, not an error, and a redirect is returned, never followed;
/// - **whether the request left**: a refused connection is
///   [`Connect`](crate::TransportErrorKind::Connect) (`request_never_left()`), while a
///   connection closed after the request was read, a response that never comes, or a body cut
///   short must *not* say "never left", because the client replays those only as "unknown
///   outcome" and a wrong answer here can deliver a message twice;
/// - and those three are **not retried**: each server counts the requests that reach it for
///   the whole call, at whatever delay, and for a second after the transport returned; exactly
///   one may arrive;
/// - no error's `Display`, `Debug` or source shows the access token.
///
/// Give it a transport whose overall timeout is below 5 s (the suite waits 10 s for each
/// request). It takes about as long as that timeout, plus two seconds.
///
/// ```
/// # #[cfg(feature = "reqwest")]
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let transport = subscribe_transport::ReqwestTransport::builder()
///     .timeout(std::time::Duration::from_secs(1))
///     .build()
///     .unwrap();
/// subscribe_transport::test_util::transport_contract(std::sync::Arc::new(transport)).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
pub async fn transport_contract<T: HttpTransport + ?Sized>(transport: std::sync::Arc<T>) {
    let transport: &T = &transport;
    // The request arrives as built, and the answer comes back whole.
    let server = serve(Then::Answer(200, r#"{"errcode":0,"errmsg":"ok"}"#), Some(IDLE)).await;
    let rule = "a 200 answer";
    let r = send(transport, post(&server.base, r#"{"touser":"o1"}"#), rule).await.expect(rule);
    assert_eq!(r.status(), 200, "{rule}: status");
    assert_eq!(r.body().as_ref(), br#"{"errcode":0,"errmsg":"ok"}"#, "{rule}: the body, whole");
    let seen = server.finish().await;
    assert_eq!(seen.len(), 1, "{rule}: one request, on one connection");
    let request_line = seen[0].head.lines().next().unwrap_or_default();
    assert_eq!(
        request_line,
        format!("POST /cgi-bin/contract?access_token={SECRET}&x=a%2Bb HTTP/1.1"),
        "the method, path and query arrive byte for byte"
    );
    assert!(
        seen[0].head.to_ascii_lowercase().contains("content-type: application/json"),
        "a POST keeps its Content-Type: {}",
        seen[0].head
    );
    assert_eq!(seen[0].body, br#"{"touser":"o1"}"#, "the body arrives byte for byte");

    let server = serve(Then::Answer(200, "{}"), Some(IDLE)).await;
    let get = HttpRequest::get(format!("{}/cgi-bin/token?appid=wx1", server.base)).expect("a valid request");
    send(transport, get, "a GET").await.expect("a GET is answered");
    let seen = server.finish().await;
    assert!(seen[0].head.starts_with("GET /cgi-bin/token?appid=wx1 HTTP/1.1"), "a GET stays a GET");
    assert!(seen[0].body.is_empty(), "a GET has no body");

    // Any status is a response; the caller decides what it means.
    let server = serve(Then::Answer(503, "busy"), Some(IDLE)).await;
    let rule = "a 503 answer";
    let r = send(transport, post(&server.base, "{}"), rule).await.expect("a 503 is a response, not an error");
    assert_eq!((r.status().as_u16(), r.body().as_ref()), (503, &b"busy"[..]), "{rule}");
    server.finish().await;

    // A redirect is returned, never followed.
    let server = serve(Then::Redirect, Some(IDLE)).await;
    let r = send(transport, post(&server.base, "{}"), "a redirect").await.expect("a redirect is a response");
    assert_eq!(r.status(), 302, "a redirect is returned as it is");
    assert_eq!(server.finish().await.len(), 1, "a redirect is never followed");

    // Refused: the request never left.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        l.local_addr().expect("a bound address")
    };
    let rule = "a refused connection";
    let e = expect_err(send(transport, post(&format!("http://{closed}"), "{}"), rule).await, rule);
    assert!(e.request_never_left(), "{rule} must say the request never left (Connect), got {:?}", e.kind());

    // The request was read, then: a hang-up, a cut body, silence. It may have been processed,
    // so it is neither reported as "never left" nor sent again. Each server counts the requests
    // that reach it for the whole call and for `AFTER_RETURN` after it, so a retry is caught
    // whatever its delay; the three run at once, so that wait is paid once.
    let cases = [
        (Then::Close, "a connection closed after the request was read"),
        (Then::CutBody, "a body cut short"),
        (Then::Hang, "no answer in time"),
    ];
    let mut servers = Vec::with_capacity(cases.len());
    for (then, _) in cases {
        servers.push(serve(then, None).await);
    }
    let (closed, cut, silent) = tokio::join!(
        send(transport, post(&servers[0].base, "{}"), cases[0].1),
        send(transport, post(&servers[1].base, "{}"), cases[1].1),
        send(transport, post(&servers[2].base, "{}"), cases[2].1),
    );
    tokio::time::sleep(AFTER_RETURN).await;
    for (((_, rule), result), server) in cases.into_iter().zip([closed, cut, silent]).zip(servers) {
        let seen = server.stop().await;
        let e = expect_err(result, rule);
        assert!(
            !e.request_never_left(),
            "{rule}: the server read the request, so the error must not say it never left (got {:?}); \
             the client would replay it and could deliver twice",
            e.kind()
        );
        assert_eq!(
            seen.len(),
            1,
            "{rule}: the request reached the server once, and was not retried (the server read it {} \
             times during the call and the {AFTER_RETURN:?} after it)",
            seen.len()
        );
    }
}
