//! The real reqwest transport against a local HTTP server: token fetch, send, 42001,
//! refresh, replay.

use subscribe_client::Client;
use subscribe_client::test_util::{SEND_PATH, STABLE_TOKEN_PATH};
use subscribe_types::AppSecret;
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::*;

fn json(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

#[tokio::test]
async fn token_send_rejection_refresh_replay_over_real_http() {
    let server =
        MockServer::builder().listener(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).start().await;
    let stable = || {
        body_partial_json(
            serde_json::json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET}),
        )
    };
    Mock::given(method("POST"))
        .and(path(STABLE_TOKEN_PATH))
        .and(stable())
        .respond_with(json(r#"{"access_token":"E2E_T1","expires_in":7200}"#))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(STABLE_TOKEN_PATH))
        .and(stable())
        .respond_with(json(r#"{"access_token":"E2E_T2","expires_in":7200}"#))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(query_param("access_token", "E2E_T1"))
        .respond_with(json(r#"{"errcode":42001,"errmsg":"access_token expired rid: x"}"#))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(query_param("access_token", "E2E_T2"))
        .and(body_partial_json(
            serde_json::json!({"touser": "oyAaTjt-xXvP87pubE4eUOF-ttD4", "scene": "1000"}),
        ))
        .respond_with(json(r#"{"errcode":0,"errmsg":"ok"}"#))
        .expect(1)
        .mount(&server)
        .await;

    let client =
        Client::builder(appid(), AppSecret::new(SECRET).unwrap()).api_base(server.uri()).build().unwrap();
    let receipt = client.send_one_time(&message()).await.unwrap();
    assert_eq!(receipt.attempts, 2);
    server.verify().await;
}
