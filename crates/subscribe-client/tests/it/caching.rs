//! The send path never hands one client's request to another, nor reuses a token after it
//! changed (rejected, or past its refresh point).

use std::time::Duration;

use subscribe_client::test_util::*;

use crate::*;

fn sent_tokens(mock: &subscribe_client::transport::MockTransport) -> Vec<String> {
    mock.requests()
        .iter()
        .filter(|r| r.path() == SEND_PATH)
        .map(|r| r.query_param("access_token").unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn two_clients_with_the_same_token_on_one_thread_keep_their_own_base() {
    let (a, b) = (mock_with_stable_token("SAME", 7200), mock_with_stable_token("SAME", 7200));
    for m in [&a, &b] {
        m.route("POST", SEND_PATH).reply(ok_reply());
    }
    let clock = clock();
    let first = builder(&a, &clock).api_base("https://a.example.com").build().unwrap();
    let second = builder(&b, &clock).api_base("https://b.example.com").build().unwrap();
    for _ in 0..2 {
        first.send_one_time(&message()).await.unwrap();
        second.send_one_time(&message()).await.unwrap();
    }
    for (mock, host) in [(&a, "a.example.com"), (&b, "b.example.com")] {
        let sends: Vec<_> = mock.requests().into_iter().filter(|r| r.path() == SEND_PATH).collect();
        assert_eq!(sends.len(), 2);
        assert!(sends.iter().all(|r| r.uri().host() == Some(host)), "{host}: {sends:?}");
    }
}

#[tokio::test]
async fn a_rejected_token_is_not_reused_by_the_next_send() {
    let mock = subscribe_client::transport::MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).times(1).reply(token_reply("OLD", 7200));
    mock.route("POST", STABLE_TOKEN_PATH).reply(token_reply("NEW", 7200));
    mock.push(ok_reply()).push(errcode_reply(40001, "invalid credential")).push(ok_reply()).push(ok_reply());
    let client = builder(&mock, &clock()).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(client.send_one_time(&message()).await.unwrap().attempts, 2);
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(sent_tokens(&mock), ["OLD", "OLD", "NEW", "NEW"]);
}

/// Past its refresh point (WeChat's 7200 s token with the default 300 s margin: 299 s before
/// expiry) but before expiry, the held token is still served to the send that finds it due,
/// which sets off one background refresh (the design: callers block only without a usable
/// token). Once that refresh has landed, no send uses the old token again, whatever this
/// thread remembers.
#[tokio::test]
async fn a_token_past_its_refresh_point_is_not_reused_once_its_refresh_lands() {
    let mock = subscribe_client::transport::MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).times(1).reply(token_reply("FIRST", 7200));
    mock.route("POST", STABLE_TOKEN_PATH).reply(token_reply("SECOND", 7200));
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    // 200 s before expiry: past the refresh point (299 s before), the token still valid.
    clock.advance(Duration::from_secs(7000));
    client.send_one_time(&message()).await.unwrap();
    // The mock answers without yielding: let the spawned refresh run, as real I/O would, until
    // it has asked (bounded, so a refresh that never comes fails here).
    for _ in 0..1000 {
        if mock.requests().iter().filter(|r| r.path() == STABLE_TOKEN_PATH).count() >= 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    mock.assert_count(STABLE_TOKEN_PATH, 2); // the first fetch + the refresh the due token set off
    // And until its token has landed: a few more turns for the refresh to store what it got.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    for _ in 0..3 {
        client.send_one_time(&message()).await.unwrap();
    }
    assert_eq!(
        sent_tokens(&mock),
        ["FIRST", "FIRST", "SECOND", "SECOND", "SECOND"],
        "the due token serves only until its refresh lands"
    );
}
