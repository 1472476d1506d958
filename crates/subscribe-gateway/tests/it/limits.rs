//! Rate limits: a key over its rate is answered 429 while other keys are served; a flood of
//! wrong keys from one address is answered 429 before its keys are looked at, while callers
//! on other addresses are served; `X-Forwarded-For` counts only from a trusted proxy. The
//! rates here earn a request back every 50 seconds, so no test depends on how fast the
//! machine answers.

use std::net::IpAddr;

use subscribe_sandbox::DEMO_APPID;

use crate::*;

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback on Linux).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<IpAddr>().unwrap()).build().unwrap()
}

/// Status and `Retry-After` of a GET of the demo app's token with `key`, sent by `http`.
async fn status(g: &Running, http: &reqwest::Client, key: &str) -> (u16, Option<String>) {
    let r = http.get(g.token_url(DEMO_APPID)).bearer_auth(key).send().await.unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_while_another_key_is_served() {
    let g = Running::start_with(
        |text| {
            text.replacen("name = \"orders\"\n", "name = \"orders\"\nrate_per_second = 0.02\nburst = 3\n", 1)
        },
        None,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(status(&g, &g.http, KEY_A).await, (200, None));
    }
    let r = g.http.get(g.token_url(DEMO_APPID)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=50).contains(&retry), "whole seconds until a request is earned back: {retry}");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "rate_limited");
    // Key B, on the same address, is not slowed.
    for _ in 0..10 {
        assert_eq!(g.get_token(APP_B, KEY_B).await.0, 200);
    }
    assert_eq!(status(&g, &g.http, KEY_A).await.0, 429, "A is still over its rate");
    let text = g.gateway.metrics().render();
    assert!(text.lines().any(|l| l == r#"subscribe_gateway_rate_limited_total{limit="key"} 2"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_keys_is_refused_by_address_while_a_valid_caller_is_served() {
    let g = Running::start_with(
        |text| {
            text.replacen(
                "[server]\n",
                "[server]\nauth_failures_per_second = 0.02\nauth_failure_burst = 5\n",
                1,
            )
        },
        None,
    )
    .await;
    let flood = client_from("127.0.0.2");
    let wrong = "a-wrong-key-a-wrong-key-a-wrong-key-0";
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(status(&g, &flood, wrong).await);
    }
    assert!(statuses[..5].iter().all(|s| *s == (401, None)), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| s.0 == 429 && s.1.is_some()), "{statuses:?}");
    let refused = statuses.iter().filter(|s| s.0 == 429).count();
    // A caller on another address is served meanwhile…
    let valid = client_from("127.0.0.3");
    for _ in 0..5 {
        assert_eq!(status(&g, &valid, KEY_A).await.0, 200);
    }
    // …while the flooding address is refused even a valid key: its keys are not looked at.
    assert_eq!(status(&g, &flood, KEY_A).await.0, 429);
    let text = g.gateway.metrics().render();
    let peer = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"subscribe_gateway_rate_limited_total{limit="peer"} "#))
        .and_then(|v| v.parse::<usize>().ok());
    assert_eq!(peer, Some(refused + 1), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_names_the_peer_only_behind_a_trusted_proxy() {
    // Not trusted (the default): the header is ignored, so a flood that writes a new address
    // into each request is still one peer.
    let g = Running::start_with(
        |text| {
            text.replacen(
                "[server]\n",
                "[server]\nauth_failures_per_second = 0.02\nauth_failure_burst = 3\n",
                1,
            )
        },
        None,
    )
    .await;
    let mut last = 0;
    for i in 0..6 {
        let r = g
            .http
            .get(g.token_url(DEMO_APPID))
            .bearer_auth("a-wrong-key-a-wrong-key-a-wrong-key-0")
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
    }
    assert_eq!(last, 429, "the header did not make six peers of one");

    // Behind a trusted proxy (here 127.0.0.1), the flooding client is refused and another
    // client of the same proxy is served.
    let g = Running::start_with(
        |text| {
            text.replacen(
                "[server]\n",
                "[server]\nauth_failures_per_second = 0.02\nauth_failure_burst = 3\ntrusted_proxies = [\"127.0.0.1\"]\n",
                1,
            )
        },
        None,
    )
    .await;
    let via_proxy = |client: &'static str, key: &'static str| {
        g.http.get(g.token_url(DEMO_APPID)).bearer_auth(key).header("x-forwarded-for", client).send()
    };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses
            .push(via_proxy("203.0.113.9", "a-wrong-key-a-wrong-key-a-wrong-key-0").await.unwrap().status());
    }
    assert_eq!(statuses.iter().filter(|s| s.as_u16() == 429).count(), 3, "{statuses:?}");
    assert_eq!(via_proxy("203.0.113.10", KEY_A).await.unwrap().status(), 200);
}
