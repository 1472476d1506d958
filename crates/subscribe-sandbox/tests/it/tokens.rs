use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, ManualClock, SandboxConfig, SandboxHandle};

use crate::*;

#[tokio::test]
async fn classic_fetch_issues_a_new_token_and_the_previous_works_only_for_the_grace() {
    // A long grace: the previous token still works.
    let (s, http) = start(with_grace(Duration::from_secs(3600))).await;
    let t1 = classic_token(&s, &http).await;
    let t2 = classic_token(&s, &http).await;
    assert_ne!(t1, t2);
    grant(&s, 1);
    assert_eq!(send(&s, &http, &t1, message(1)).await["errcode"], 0);

    // No grace: the previous token is "not latest" at once.
    let (s, http) = start(with_grace(Duration::ZERO)).await;
    let t1 = classic_token(&s, &http).await;
    let _t2 = classic_token(&s, &http).await;
    grant(&s, 1);
    assert_eq!(send(&s, &http, &t1, message(1)).await["errcode"], 40001);
    assert_eq!(s.state().stats().token_rejections, 1, "the rejection is counted");
    assert_eq!(send(&s, &http, "", message(1)).await["errcode"], 41001);
    assert_eq!(s.state().stats().token_rejections, 1, "a missing token is no rejection to refresh on");
}

#[tokio::test]
async fn stable_token_is_unchanged_until_rotation_and_force_refresh_ends_it() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let a = stable_token(&s, &http, false).await;
    let b = stable_token(&s, &http, false).await;
    assert_eq!(a["access_token"], b["access_token"], "normal mode returns the current token");
    assert!(a["expires_in"].as_u64().unwrap() > 7000);

    let forced = stable_token(&s, &http, true).await;
    assert_ne!(forced["access_token"], a["access_token"]);
    grant(&s, 2);
    let old = a["access_token"].as_str().unwrap();
    assert_eq!(send(&s, &http, old, message(2)).await["errcode"], 40001, "forced refresh ends the old token");
    // Within 30 s of the last forced refresh nothing is refreshed.
    let again = stable_token(&s, &http, true).await;
    assert_eq!(again["access_token"], forced["access_token"]);
    assert_eq!(s.state().stats().tokens_issued, 2);
    assert_eq!(s.state().stats().stable_token_requests, 4);
}

#[tokio::test]
async fn stable_tokens_rotate_inside_the_window_with_overlap() {
    // WeChat's own numbers (7200 s, a 5-minute window), on a clock the test moves.
    let clock = ManualClock::new();
    let s = SandboxHandle::start_with_clock(
        SandboxConfig::demo(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let a = stable_token(&s, &http, false).await;
    let a_token = a["access_token"].as_str().unwrap().to_owned();
    assert_eq!(a["expires_in"], 7200);
    let again = stable_token(&s, &http, false).await;
    assert_eq!(again["access_token"], a["access_token"], "before the window: the same token");

    clock.advance(Duration::from_secs(7200 - 299)); // 299 s left: inside the window
    let b = stable_token(&s, &http, false).await;
    let b_token = b["access_token"].as_str().unwrap().to_owned();
    assert_ne!(b_token, a_token, "inside the window: a new token");
    assert_eq!(stable_token(&s, &http, false).await["access_token"], b["access_token"], "then that one");
    grant(&s, 4);
    assert_eq!(send(&s, &http, &a_token, message(4)).await["errcode"], 0, "the old one still works: overlap");

    clock.advance(Duration::from_secs(300)); // the old one's own expiry passed
    grant(&s, 5);
    assert_eq!(send(&s, &http, &a_token, message(5)).await["errcode"], 42001, "the old one expired");
    assert_eq!(send(&s, &http, &b_token, message(5)).await["errcode"], 0, "the new one works");
    assert_eq!(s.state().stats().tokens_issued, 2);
}

#[tokio::test]
async fn stable_and_classic_are_isolated() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let stable = stable_token(&s, &http, false).await;
    let _classic = classic_token(&s, &http).await;
    let _classic2 = classic_token(&s, &http).await;
    grant(&s, 3);
    assert_eq!(send(&s, &http, stable["access_token"].as_str().unwrap(), message(3)).await["errcode"], 0);
}

#[tokio::test]
async fn bad_token_requests_get_wechat_errcodes() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    let get = |q: String| {
        let http = http.clone();
        let url = format!("{base}/cgi-bin/token?{q}");
        async move { body(http.get(url).send().await.unwrap()).await["errcode"].as_i64().unwrap() }
    };
    assert_eq!(get(format!("grant_type=password&appid={DEMO_APPID}&secret={DEMO_SECRET}")).await, 40002);
    assert_eq!(get(format!("grant_type=client_credential&secret={DEMO_SECRET}")).await, 41002);
    assert_eq!(
        get(format!("grant_type=client_credential&appid=wxunknown&secret={DEMO_SECRET}")).await,
        40013
    );
    assert_eq!(get(format!("grant_type=client_credential&appid={DEMO_APPID}")).await, 41004);
    assert_eq!(get(format!("grant_type=client_credential&appid={DEMO_APPID}&secret=wrong")).await, 40001);

    let post = |b: &'static str| {
        let http = http.clone();
        let url = format!("{base}/cgi-bin/stable_token");
        async move { body(http.post(url).body(b).send().await.unwrap()).await["errcode"].as_i64().unwrap() }
    };
    assert_eq!(post("appid=x&secret=y").await, 41002, "form-encoded, as WeChat: appid missing");
    assert_eq!(
        post(r#"{"grant_type":"client_credential","appid":"wx5a1db0c0ffee0001","secret":"wrong"}"#).await,
        40125
    );
    assert_eq!(post(r#"{"grant_type":"x","appid":"wx5a1db0c0ffee0001","secret":"s"}"#).await, 40002);
    // GET on a POST endpoint.
    let r = body(http.get(format!("{base}/cgi-bin/stable_token")).send().await.unwrap()).await;
    assert_eq!(r["errcode"], 43002);
}

#[tokio::test]
async fn classic_daily_quota_is_enforced() {
    let (s, http) = start(SandboxConfig { classic_daily_quota: 2, ..SandboxConfig::demo() }).await;
    classic_token(&s, &http).await;
    classic_token(&s, &http).await;
    let v = body(
        http.get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}",
            s.base_url()
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["errcode"], 45009);
}

#[tokio::test]
async fn token_faults_answer_every_token_request_and_a_timed_one_ends() {
    use subscribe_sandbox::{Faults, TokenFault};
    let (s, http) = start(SandboxConfig::demo()).await;
    let post = || {
        http.post(format!("{}/cgi-bin/stable_token", s.base_url()))
            .body(
                serde_json::json!({"grant_type":"client_credential","appid":DEMO_APPID,"secret":DEMO_SECRET})
                    .to_string(),
            )
            .send()
    };
    let set = |fault, ms| {
        s.state().set_faults(Faults { token_fault: Some(fault), token_fault_ms: ms, ..Faults::default() });
    };

    set(TokenFault::Http502, None);
    assert_eq!(post().await.unwrap().status(), 502);
    set(TokenFault::Busy, None);
    assert_eq!(body(post().await.unwrap()).await["errcode"], -1);
    set(TokenFault::Quota, None);
    assert_eq!(body(post().await.unwrap()).await["errcode"], 45009);
    set(TokenFault::Malformed, None);
    assert!(serde_json::from_slice::<Value>(&post().await.unwrap().bytes().await.unwrap()).is_err());
    set(TokenFault::Drop, None);
    let dropped = match post().await {
        Ok(r) => r.bytes().await.is_err(),
        Err(_) => true,
    };
    assert!(dropped, "the answer never completes");
    // The classic endpoint fails the same way.
    set(TokenFault::Http502, None);
    let classic = http
        .get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}",
            s.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(classic.status(), 502);
    assert_eq!(s.state().stats().tokens_issued, 0);

    // A stall answers normally, late.
    s.state().set_faults(Faults {
        token_fault: Some(TokenFault::Stall),
        token_stall_ms: Some(300),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    assert!(body(post().await.unwrap()).await["access_token"].is_string());
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A timed outage ends by itself.
    set(TokenFault::Http502, Some(300));
    assert_eq!(post().await.unwrap().status(), 502);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(body(post().await.unwrap()).await["access_token"].is_string());
    assert_eq!(s.state().stats().stable_token_requests, 8);
}

#[test]
fn token_faults_are_spelled_like_the_send_faults() {
    use subscribe_sandbox::Faults;
    let f: Faults = serde_json::from_str(r#"{"token_fault":"http_502","token_fault_ms":2000}"#).unwrap();
    assert_eq!(f.token_fault, Some(subscribe_sandbox::TokenFault::Http502));
    for name in ["drop", "busy", "quota", "malformed", "stall"] {
        let json = format!(r#"{{"token_fault":"{name}"}}"#);
        assert!(serde_json::from_str::<Faults>(&json).is_ok(), "{name}");
    }
    assert!(serde_json::from_str::<Faults>(r#"{"token_fault":"http502"}"#).is_err());
}

#[tokio::test]
async fn the_classic_quota_is_per_beijing_day() {
    let clock = ManualClock::new();
    let config = SandboxConfig { classic_daily_quota: 2, ..SandboxConfig::demo() };
    let s = SandboxHandle::start_with_clock(
        config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}",
        s.base_url()
    );
    let get = || async { body(http.get(&url).send().await.unwrap()).await };
    assert!(get().await["access_token"].is_string());
    assert!(get().await["access_token"].is_string());
    assert_eq!(get().await["errcode"], 45009, "the third of the day is refused");
    clock.advance(Duration::from_secs(24 * 3600));
    assert!(get().await["access_token"].is_string(), "a new day, a new quota");
}

/// The credential a query carries is read once: two copies (a forged one and the genuine one,
/// in either order, or the same one twice) are refused, not resolved by "the last one wins".
#[tokio::test]
async fn a_credential_repeated_in_the_query_is_refused_whichever_copy_is_good() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token = stable_token(&s, &http, false).await["access_token"].as_str().unwrap().to_owned();
    grant(&s, 5);
    let base = s.base_url();
    for query in [
        format!("access_token=forged&access_token={token}"),
        format!("access_token={token}&access_token=forged"),
        format!("access_token={token}&access_token={token}"),
        format!("access_token={token}&%61ccess_token={token}"),
    ] {
        let sent = body(
            http.post(format!("{base}/cgi-bin/message/template/subscribe?{query}"))
                .body(message(5))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(sent["errcode"], 40035, "{query}: {sent}");
        let titles = body(
            http.get(format!("{base}/wxaapi/newtmpl/getpubtemplatetitles?{query}&ids=1&start=0&limit=1"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(titles["errcode"], 40035, "{query}: {titles}");
    }
    for query in [
        format!("grant_type=client_credential&appid={DEMO_APPID}&secret=wrong&secret={DEMO_SECRET}"),
        format!("grant_type=client_credential&appid={DEMO_APPID}&appid={DEMO_APPID}&secret={DEMO_SECRET}"),
    ] {
        let issued = body(http.get(format!("{base}/cgi-bin/token?{query}")).send().await.unwrap()).await;
        assert_eq!(issued["errcode"], 40035, "{query}: {issued}");
    }
    // Nothing was delivered: the grant still sends once, with the token given once.
    assert_eq!(send(&s, &http, &token, message(5)).await["errcode"], 0);
}
