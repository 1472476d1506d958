//! Three gateways on one store, as behind a load balancer: here three in one process on one
//! SQLite file, which shares the token and elects one refresher (the store's refresh lease)
//! exactly as PostgreSQL and Redis do for gateways on several machines.

use std::net::SocketAddr;
use std::time::Duration;

use subscribe_gateway::Config;
use subscribe_sandbox::DEMO_APPID;
use tempfile::TempDir;

use crate::*;

/// Starts three gateways on the configuration in `dir`; they stop when the senders drop.
async fn three_gateways(
    text: &str,
    dir: &TempDir,
) -> (Vec<SocketAddr>, Vec<tokio::sync::oneshot::Sender<()>>) {
    serve_gateways(&Config::parse(text, dir.path(), &|_| None).unwrap(), 3).await
}

async fn token(http: &reqwest::Client, addr: SocketAddr) -> String {
    let url = format!("http://{addr}/v1/apps/{DEMO_APPID}/access_token");
    let r = http.get(url).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_one_store_refresh_once_for_fifty_reports() {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let text = config_text(dir.path(), &sandbox.base_url());
    let (addrs, _stops) = three_gateways(&text, &dir).await;
    let http = reqwest::Client::new();

    // One token for the fleet: the first gateway asks WeChat, the others find it in the store.
    let stale = token(&http, addrs[0]).await;
    for addr in &addrs[1..] {
        assert_eq!(token(&http, *addr).await, stale);
    }
    assert_eq!(sandbox.state().stats().stable_token_requests, 1, "one token for three gateways");

    sandbox.state().revoke_tokens(Duration::ZERO);
    let mut reports = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (http, addr, stale) = (http.clone(), addrs[i % 3], stale.clone());
        reports.spawn(async move {
            let url = format!("http://{addr}/v1/apps/{DEMO_APPID}/access_token/invalidate");
            let body = serde_json::json!({ "access_token": stale });
            let r = http.post(url).bearer_auth(KEY_A).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
        });
    }
    let mut answers = Vec::new();
    while let Some(a) = reports.join_next().await {
        answers.push(a.unwrap());
    }
    let fresh = answers[0].clone();
    assert_ne!(fresh, stale);
    assert!(answers.iter().all(|a| *a == fresh), "every caller of every gateway gets the one new token");
    for addr in &addrs {
        assert_eq!(token(&http, *addr).await, fresh);
    }
    assert_eq!(
        sandbox.state().stats().stable_token_requests,
        2,
        "exactly one refresh for fifty reports spread over three gateways"
    );
}

/// The reports' floor holds back only a request to WeChat: a gateway whose floor is closed
/// (it replaced a token a moment ago) still takes the token another gateway of the fleet got
/// since, when its callers report the one it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_report_floor_still_takes_the_token_the_fleet_replaced() {
    let sandbox = sandbox().await;
    let dir = TempDir::new().unwrap();
    let text = crate::send::with_senders(&config_text(dir.path(), &sandbox.base_url()));
    let (addrs, _stops) = three_gateways(&text, &dir).await;
    let http = reqwest::Client::new();
    let report = |addr: SocketAddr, token: String| {
        let http = http.clone();
        async move {
            let url = format!("http://{addr}/v1/apps/{DEMO_APPID}/access_token/invalidate");
            let body = serde_json::json!({ "access_token": token });
            let r = http.post(url).bearer_auth(KEY_A).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let t1 = token(&http, addrs[0]).await;
    for addr in &addrs[1..] {
        assert_eq!(token(&http, *addr).await, t1);
    }
    // WeChat ends t1; a report to each gateway replaces it once, and closes each one's floor.
    sandbox.state().revoke_tokens(Duration::ZERO);
    let mut t2 = String::new();
    for addr in &addrs {
        let (status, answer) = report(*addr, t1.clone()).await;
        assert_eq!(status, 200, "{answer}");
        t2 = answer["access_token"].as_str().unwrap().to_owned();
    }
    assert_ne!(t2, t1);
    assert_eq!(sandbox.state().stats().stable_token_requests, 2);

    // WeChat ends t2; a send through the first gateway sees it rejected (WeChat's own word, no
    // floor) and recovers with t3, which it puts in the store.
    sandbox.state().revoke_tokens(Duration::ZERO);
    crate::send::grant_on(&sandbox);
    let url = format!("http://{}/v1/apps/{DEMO_APPID}/messages/one_time", addrs[0]);
    let (status, _, sent) =
        crate::send::post_to(&http, &url, crate::send::KEY_S, None, &crate::send::one_time()).await;
    assert_eq!((status, &sent["outcome"]), (200, &serde_json::json!("delivered")), "{sent}");
    assert_eq!(sandbox.state().stats().stable_token_requests, 3);

    // The other two still hold t2 in memory, and their floors are closed: their callers'
    // reports of t2 are answered with t3 from the store, and WeChat is not asked.
    for addr in &addrs[1..] {
        let (status, answer) = report(*addr, t2.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_ne!(answer["access_token"], t2.as_str());
    }
    assert_eq!(sandbox.state().stats().stable_token_requests, 3, "WeChat asked no more");
    // While a report of the token all three now hold is refused: only that would ask WeChat.
    let t3 = token(&http, addrs[1]).await;
    let (status, answer) = report(addrs[1], t3).await;
    assert_eq!((status, &answer["error"]), (429, &serde_json::json!("report_too_soon")), "{answer}");
}
