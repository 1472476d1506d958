//! The app API driven as a mobile app would, with the sandbox playing WeChat on the phone.

use std::time::Duration;

use subscribe_sandbox::DEMO_APPID;

use super::*;

impl World {
    /// A token the app's login would hand user `user`.
    fn app_token(&self, user: &str) -> String {
        self.state.issue_app_session(user, Duration::from_secs(3600)).unwrap()
    }

    async fn app_post(
        &self,
        path: &str,
        token: Option<&str>,
        body: String,
    ) -> (StatusCode, serde_json::Value) {
        let mut r = self.http.post(self.url(path)).header("content-type", "application/json").body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// The SDK request for `user`'s app.
    async fn sdk_request(&self, token: &str) -> serde_json::Value {
        let (status, request) = self.app_post("/api/subscriptions/request", Some(token), String::new()).await;
        assert_eq!(status, 200, "{request}");
        request
    }

    /// WeChat on the phone: `openid` decides on `request`; returns the SDK's answer as JSON text.
    async fn phone(&self, request: &serde_json::Value, action: &str, openid: &str) -> String {
        let r = self
            .http
            .post(format!("{}/sandbox/api/phone", self.sandbox.base_url()))
            .header("content-type", "application/json")
            .body(serde_json::json!({"appid": DEMO_APPID, "request": request, "action": action, "openid": openid}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

#[tokio::test]
async fn an_app_user_confirms_on_the_phone_and_gets_exactly_one_message() {
    let w = start().await;
    let alice = w.app_token("user-alice");
    let request = w.sdk_request(&alice).await;
    assert_eq!(request["templateId"], web_app::SANDBOX_TEMPLATE);
    assert_eq!(request["scene"], 1);
    let answer = w.phone(&request, "confirm", ALICE).await;
    assert!(answer.contains("\"openId\""), "{answer}");

    let (status, body) = w.app_post("/api/subscriptions/answer", Some(&alice), answer.clone()).await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &serde_json::json!({"action":"confirm","recorded":"added"}))
    );
    assert_eq!(w.health().await["grants"]["pending"], 1);
    // The same answer again: refused, nothing more recorded.
    let (status, body) = w.app_post("/api/subscriptions/answer", Some(&alice), answer).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("replayed")));

    // The admin's dispatch sends her one message; the next sends nothing.
    let (_, report) = w.dispatch("到货提醒", "您关注的亚麻衬衫已到货").await;
    assert_eq!((cell(&report, "sent"), cell(&report, "delivered")), (1, 1));
    assert_eq!(w.sandbox.state().inbox(ALICE).len(), 1);
    let (_, report) = w.dispatch("到货提醒", "again").await;
    assert_eq!(cell(&report, "sent"), 0);
    assert_eq!(w.sandbox.state().stats().deliveries, 1);
}

#[tokio::test]
async fn a_cancellation_records_nothing() {
    let w = start().await;
    let bob = w.app_token("user-bob");
    let answer = w.phone(&w.sdk_request(&bob).await, "cancel", BOB).await;
    assert!(!answer.contains("openId"), "{answer}");
    let (status, body) = w.app_post("/api/subscriptions/answer", Some(&bob), answer).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({"action":"cancel"})));
    assert_eq!(w.health().await["grants"]["pending"], 0);
}

#[tokio::test]
async fn without_a_valid_session_or_with_anothers_state_nothing_is_recorded() {
    let w = start().await;
    let alice = w.app_token("user-alice");
    let answer = w.phone(&w.sdk_request(&alice).await, "confirm", ALICE).await;
    let expired = w.state.issue_app_session("user-alice", Duration::ZERO).unwrap();
    let flipped = if alice.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}", &alice[..alice.len() - 1]);
    for token in [None, Some("garbage"), Some(expired.as_str()), Some(forged.as_str())] {
        for path in ["/api/subscriptions/request", "/api/subscriptions/answer"] {
            let (status, body) = w.app_post(path, token, answer.clone()).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
                "{token:?} {path}"
            );
        }
    }
    // Mallory forwards Alice's answer from her own session: the state is Alice's.
    let mallory = w.app_token("user-mallory");
    let (status, body) = w.app_post("/api/subscriptions/answer", Some(&mallory), answer.clone()).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("state_not_valid")), "{body}");
    // Tampered: another scene under Alice's state.
    let tampered = answer.replace("\"scene\":1", "\"scene\":2");
    let (status, _) = w.app_post("/api/subscriptions/answer", Some(&alice), tampered).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(w.health().await["grants"]["pending"], 0);
    // Alice's own answer is still good: the refusals used nothing up.
    let (status, _) = w.app_post("/api/subscriptions/answer", Some(&alice), answer).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_bodies_are_typed_errors_and_a_huge_one_is_refused_unread() {
    let w = start().await;
    let alice = w.app_token("user-alice");
    for (body, code) in [
        ("not json".to_owned(), "invalid_answer"),
        (r#"{"action":"confirm","scene":1}"#.to_owned(), "invalid_answer"),
        (
            format!(
                r#"{{"templateId":"{}","scene":1,"action":"confirm","reserved":"x"}}"#,
                web_app::SANDBOX_TEMPLATE
            ),
            "invalid_answer",
        ),
    ] {
        let (status, answer) = w.app_post("/api/subscriptions/answer", Some(&alice), body.clone()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}: {answer}"
        );
        assert_eq!(answer["retryable"], false);
    }
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(web_app::MAX_BODY));
    let (status, _) = w.app_post("/api/subscriptions/answer", Some(&alice), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn each_user_is_rate_limited_and_others_are_not() {
    let w = start_with(&[("WEBAPP_APP_RATE_PER_MINUTE", "5")]).await;
    let alice = w.app_token("user-alice");
    for i in 0..5 {
        let (status, _) = w.app_post("/api/subscriptions/request", Some(&alice), String::new()).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
    let r = w.http.post(w.url("/api/subscriptions/request")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let bob = w.app_token("user-bob");
    assert_eq!(w.app_post("/api/subscriptions/request", Some(&bob), String::new()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn without_a_session_key_the_app_api_is_off() {
    let w = start_with(&[("WEBAPP_APP_SESSION_KEY", "")]).await;
    assert!(w.state.issue_app_session("user-alice", Duration::from_secs(60)).is_none());
    let (status, body) = w.app_post("/api/subscriptions/request", Some("user.1.00"), String::new()).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("app_api_off")));
}
