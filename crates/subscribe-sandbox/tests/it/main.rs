//! Integration tests of the sandbox over real HTTP (raw requests: the sandbox is tested as the
//! other side of the wire, without the client).

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod authorize;
mod control;
mod guard;
mod mini_program_and_notification;
mod phone;
mod push;
mod send;
mod slow;
mod tokens;

use std::time::Duration;

use serde_json::Value;
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};
use subscribe_types::Scene;

/// Alice, a demo user.
pub const ALICE: &str = "oSandbox_Alice_00000000001";

/// A started demo sandbox and an HTTP client that does not follow redirects.
pub async fn start(config: SandboxConfig) -> (SandboxHandle, reqwest::Client) {
    let sandbox = SandboxHandle::start(config).await.unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    (sandbox, http)
}

/// Parses a JSON body.
pub async fn body(r: reqwest::Response) -> Value {
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// A stable token for the demo app.
pub async fn stable_token(s: &SandboxHandle, http: &reqwest::Client, force: bool) -> Value {
    body(
        http.post(format!("{}/cgi-bin/stable_token", s.base_url()))
            .body(
                serde_json::json!({"grant_type":"client_credential","appid":DEMO_APPID,"secret":DEMO_SECRET,"force_refresh":force})
                    .to_string(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A classic token for the demo app.
pub async fn classic_token(s: &SandboxHandle, http: &reqwest::Client) -> String {
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
    v["access_token"].as_str().unwrap().to_owned()
}

/// A valid message body for Alice under `scene`.
pub fn message(scene: u16) -> String {
    serde_json::json!({
        "touser": ALICE, "template_id": DEMO_TEMPLATE, "scene": scene.to_string(),
        "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货", "color": "#173177"}}
    })
    .to_string()
}

/// Posts `body` to the send endpoint with `token`.
pub async fn send(s: &SandboxHandle, http: &reqwest::Client, token: &str, body: String) -> Value {
    let r = http
        .post(format!("{}/cgi-bin/message/template/subscribe?access_token={token}", s.base_url()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "WeChat answers errors with HTTP 200");
    self::body(r).await
}

/// Grants Alice one message under `scene`.
pub fn grant(s: &SandboxHandle, scene: u16) {
    s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &subscribe_types::OpenId::new(ALICE).unwrap(),
        &SandboxConfig::demo_template(),
        Scene::new(u32::from(scene)).unwrap(),
    );
}

/// A demo configuration with classic tokens superseded after `grace`.
pub fn with_grace(grace: Duration) -> SandboxConfig {
    SandboxConfig { classic_grace: grace, ..SandboxConfig::demo() }
}
