//! The transport contract suite: the default transport passes it, and transports that get the
//! "did the request leave?" mapping wrong fail it, naming the rule.

use std::sync::Arc;
use std::time::Duration;

use subscribe_transport::test_util::transport_contract;
use subscribe_transport::{HttpTransport, SharedTransport, TransportError, TransportErrorKind, transport_fn};

/// A production transport to wrap in the broken ones: reqwest when it is built, else hyper.
fn real() -> SharedTransport {
    #[cfg(feature = "reqwest")]
    let t = subscribe_transport::ReqwestTransport::builder().timeout(Duration::from_secs(1)).build();
    #[cfg(not(feature = "reqwest"))]
    let t = subscribe_transport::HyperTransport::builder().timeout(Duration::from_secs(1)).build();
    SharedTransport::new(t.unwrap())
}

#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_transport_passes_the_contract() {
    let reqwest =
        subscribe_transport::ReqwestTransport::builder().timeout(Duration::from_secs(1)).build().unwrap();
    transport_contract(Arc::new(reqwest)).await;
}

#[cfg(feature = "hyper")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_transport_passes_the_contract() {
    let hyper =
        subscribe_transport::HyperTransport::builder().timeout(Duration::from_secs(1)).build().unwrap();
    transport_contract(Arc::new(hyper)).await;
}

/// Runs the suite on `transport` and returns the rule it broke.
async fn broken_rule(transport: impl HttpTransport + 'static) -> String {
    let failed =
        tokio::spawn(async move { transport_contract(Arc::new(transport)).await }).await.unwrap_err();
    let panic = failed.into_panic();
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_calls_every_failure_never_left_fails() {
    let inner = real();
    let lying = transport_fn(move |req| {
        let inner = inner.clone();
        async move { inner.send(req).await.map_err(|e| TransportError::new(TransportErrorKind::Connect, e)) }
    });
    let rule = broken_rule(lying).await;
    assert!(rule.contains("must not say it never left"), "{rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_calls_a_refusal_unknown_fails() {
    let inner = real();
    let timid = transport_fn(move |req| {
        let inner = inner.clone();
        async move { inner.send(req).await.map_err(|e| TransportError::new(TransportErrorKind::Other, e)) }
    });
    let rule = broken_rule(timid).await;
    assert!(rule.contains("a refused connection must say the request never left"), "{rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_turns_statuses_into_errors_fails() {
    let inner = real();
    let strict = transport_fn(move |req| {
        let inner = inner.clone();
        async move {
            let r = inner.send(req).await?;
            if r.status().is_success() { Ok(r) } else { Err(TransportError::other("HTTP error")) }
        }
    });
    let rule = broken_rule(strict).await;
    assert!(rule.contains("a 503 is a response, not an error"), "{rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_whose_errors_show_the_uri_fails() {
    let inner = real();
    let chatty = transport_fn(move |req| {
        let inner = inner.clone();
        async move {
            let uri = req.uri().to_string();
            inner.send(req).await.map_err(|e| TransportError::new(e.kind(), format!("{uri} failed")))
        }
    });
    let rule = broken_rule(chatty).await;
    assert!(rule.contains("the error shows the access token"), "{rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_retries_after_half_a_second_fails() {
    // Replays a request whose outcome is unknown once, after a pause: a message could be
    // delivered twice. When the replay fails too, it reports the first error.
    let inner = real();
    let eager = transport_fn(move |req| {
        let inner = inner.clone();
        async move {
            match inner.send(req.clone()).await {
                Err(e) if !e.request_never_left() => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    inner.send(req).await.map_err(|_| e)
                }
                other => other,
            }
        }
    });
    let rule = broken_rule(eager).await;
    assert!(rule.contains("the request reached the server once, and was not retried"), "{rule}");
}
