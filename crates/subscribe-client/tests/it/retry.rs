use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::transport::TransportErrorKind;
use subscribe_client::{RetryPolicy, SendError};
use subscribe_types::ErrCode;

use crate::*;

#[tokio::test]
async fn system_busy_is_retried_a_bounded_number_of_times_with_growing_jittered_backoff() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(errcode_reply(-1, "system error"));
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert_eq!(err.api_code(), Some(ErrCode::SYSTEM_BUSY));
    assert!(err.is_retryable());
    mock.assert_count(SEND_PATH, 3); // 1 + 2 replays (the default)
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2);
    assert!(sleeps[0] >= Duration::from_millis(100) && sleeps[0] <= Duration::from_millis(200), "{sleeps:?}");
    assert!(sleeps[1] >= Duration::from_millis(200) && sleeps[1] <= Duration::from_millis(400), "{sleeps:?}");
}

#[tokio::test]
async fn system_busy_then_success_is_delivered() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push(errcode_reply(-1, "system error")).push(ok_reply());
    let client = builder(&mock, &clock()).build().unwrap();
    assert_eq!(client.send_one_time(&message()).await.unwrap().attempts, 2);
}

#[tokio::test]
async fn a_timeout_after_sending_is_outcome_unknown_after_exactly_one_request() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push_error(TransportErrorKind::Timeout);
    let client = builder(&mock, &clock()).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(matches!(err, SendError::OutcomeUnknown { .. }), "{err:?}");
    assert!(!err.outcome_known());
    assert!(!err.is_retryable());
    mock.assert_count(SEND_PATH, 1);
    mock.assert_all_consumed();
}

#[tokio::test]
async fn a_reset_after_sending_is_outcome_unknown_too() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push_error(TransportErrorKind::Io);
    let client = builder(&mock, &clock()).build().unwrap();
    assert!(matches!(client.send_one_time(&message()).await.unwrap_err(), SendError::OutcomeUnknown { .. }));
    mock.assert_count(SEND_PATH, 1);
}

#[tokio::test]
async fn a_43101_after_a_replay_is_probably_delivered() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push(errcode_reply(-1, "system error")).push(errcode_reply(43101, "user refuse to accept the msg"));
    let client = builder(&mock, &clock()).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(matches!(err, SendError::ProbablyDelivered(_)), "{err:?}");
    assert!(!err.outcome_known());
    assert!(!err.is_refused_by_user());
    assert!(err.to_string().contains("probably delivered"));
}

/// With replays of lost answers allowed, a replay that is refused, or that cannot be sent,
/// says nothing of the first attempt, which may have delivered: the outcome stays unknown.
#[tokio::test]
async fn a_lost_answer_replayed_then_refused_or_unsent_stays_unknown() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push_error(TransportErrorKind::Timeout).push(errcode_reply(40003, "invalid openid"));
    let policy = RetryPolicy::default().unknown_outcome_retries(1);
    let client = builder(&mock, &clock()).retry_policy(policy.clone()).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(
        matches!(err, SendError::OutcomeUnknown { cause: subscribe_client::UnknownCause::ReplayRefused, .. }),
        "{err:?}"
    );
    assert!(!err.outcome_known(), "{err:?}");
    assert!(err.to_string().contains("replay was refused"), "{err}");

    let mock = mock_with_stable_token("T1", 7200);
    mock.push_error(TransportErrorKind::Timeout)
        .push_error(TransportErrorKind::Connect)
        .push_error(TransportErrorKind::Connect)
        .push_error(TransportErrorKind::Connect);
    let client = builder(&mock, &clock()).retry_policy(policy).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(!err.outcome_known(), "the first attempt may have delivered: {err:?}");
}

#[tokio::test]
async fn a_43101_after_a_token_replay_is_a_real_refusal() {
    // WeChat rejected the token before doing anything, so the first attempt delivered nothing.
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).times(1).reply(token_reply("T1", 7200));
    mock.route("POST", STABLE_TOKEN_PATH).times(1).reply(token_reply("T2", 7200));
    mock.push(errcode_reply(42001, "access_token expired"))
        .push(errcode_reply(43101, "user refuse to accept the msg"));
    let client = builder(&mock, &clock()).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(err.is_refused_by_user(), "{err:?}");
    assert!(err.outcome_known());
}

#[tokio::test]
async fn a_request_that_never_left_is_replayed_with_backoff() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push_error(TransportErrorKind::Connect).push_error(TransportErrorKind::Connect).push(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    assert_eq!(client.send_one_time(&message()).await.unwrap().attempts, 3);
    assert_eq!(clock.sleeps().len(), 2);
}

#[tokio::test]
async fn requests_that_never_left_give_up_known_undelivered() {
    let mock = mock_with_stable_token("T1", 7200);
    for _ in 0..3 {
        mock.push_error(TransportErrorKind::Connect);
    }
    let client = builder(&mock, &clock()).build().unwrap();
    let err = client.send_one_time(&message()).await.unwrap_err();
    assert!(matches!(err, SendError::Transport(_)), "{err:?}");
    assert!(err.outcome_known() && err.is_retryable());
    mock.assert_all_consumed();
}

#[tokio::test]
async fn no_retry_policy_means_a_single_attempt() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push_error(TransportErrorKind::Connect);
    let client = builder(&mock, &clock()).retry_policy(RetryPolicy::none()).build().unwrap();
    assert!(matches!(client.send_one_time(&message()).await.unwrap_err(), SendError::Transport(_)));
    mock.assert_count(SEND_PATH, 1);
}

#[tokio::test]
async fn http_statuses_are_classified() {
    use subscribe_client::ErrorKind::{Configuration, Retryable, Unknown};
    for (status, kind) in [
        (502, Unknown),
        (503, Unknown),
        (400, Configuration),
        (404, Configuration),
        (408, Retryable),
        (429, Retryable),
    ] {
        let mock = mock_with_stable_token("T1", 7200);
        mock.push(MockReply::status(status).body("<html>"));
        let client = builder(&mock, &clock()).build().unwrap();
        let err = client.send_one_time(&message()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}: {err:?}");
        assert_eq!(!err.outcome_known(), kind == Unknown, "{status}: {err:?}");
        assert_eq!(err.is_retryable(), kind == Retryable, "{status}: {err:?}");
        mock.assert_count(SEND_PATH, 1);
    }
}

#[tokio::test]
async fn an_unreadable_answer_is_outcome_unknown() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.push(MockReply::json(200, "{\"errcode\":"));
    let client = builder(&mock, &clock()).build().unwrap();
    assert!(matches!(client.send_one_time(&message()).await.unwrap_err(), SendError::OutcomeUnknown { .. }));
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    for code in [43101, 40003, 47003, 40037, 45009, 48001] {
        let mock = mock_with_stable_token("T1", 7200);
        mock.route("POST", SEND_PATH).reply(errcode_reply(code, "no"));
        let client = builder(&mock, &clock()).build().unwrap();
        let err = client.send_one_time(&message()).await.unwrap_err();
        assert_eq!(err.api_code().map(ErrCode::get), Some(code));
        mock.assert_count(SEND_PATH, 1);
    }
}
