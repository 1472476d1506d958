//! Three gateways on one store, as behind a load balancer: here three in one process on one
//! SQLite file, which shares the token and elects one refresher (the store's refresh lease)
//! exactly as PostgreSQL and Redis do for gateways on several machines.

use std::net::SocketAddr;
use std::time::Duration;

use subscribe_gateway::{Config, Gateway, ServeLimits, serve};
use subscribe_sandbox::DEMO_APPID;
use tempfile::TempDir;

use crate::*;

/// Starts three gateways on the configuration in `dir`; they stop when the senders drop.
async fn three_gateways(
    text: &str,
    dir: &TempDir,
) -> (Vec<SocketAddr>, Vec<tokio::sync::oneshot::Sender<()>>) {
    let config = Config::parse(text, dir.path(), &|_| None).unwrap();
    let (mut addrs, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let gateway = Gateway::start(&config).await.unwrap();
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, gateway.router(), ServeLimits::from(&config.server), async {
            let _ = rx.await;
        }));
        stops.push(tx);
    }
    (addrs, stops)
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
