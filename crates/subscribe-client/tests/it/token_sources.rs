use std::sync::{Arc, Mutex};
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::{
    BoxError, CachedToken, Client, ExternalTokenSource, TokenEndpoint, TokenStore, TokenStoreError,
};
use subscribe_types::{AccessToken, AppId, AppSecret};

use crate::*;

#[tokio::test]
async fn classic_endpoint_is_a_get_with_the_secret_in_the_query_never_printed() {
    let mock = MockTransport::new();
    mock.route("GET", CLASSIC_TOKEN_PATH).reply(token_reply("C1", 7200));
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock()).token_endpoint(TokenEndpoint::Classic).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    let token_req = &mock.requests()[0];
    assert_eq!(token_req.query_param("grant_type"), Some("client_credential"));
    assert_eq!(token_req.query_param("appid"), Some(APPID));
    assert_eq!(token_req.query_param("secret"), Some(SECRET));
    assert!(!format!("{token_req:?} {client:?}").contains(SECRET));
    assert_eq!(tokens_used(&mock), ["C1"]);
}

#[tokio::test]
async fn stable_endpoint_posts_json_with_the_secret_in_the_body_only() {
    let mock = mock_with_stable_token("S1", 7200);
    let client = builder(&mock, &clock()).build().unwrap();
    client.access_token().await.unwrap();
    let req = &mock.requests()[0];
    let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"grant_type":"client_credential","appid":APPID,"secret":SECRET,"force_refresh":false})
    );
    assert_eq!(req.uri().query(), None, "no secret in the URL");
    assert_eq!(req.headers()["content-type"], "application/json");
}

/// A central token service: hands out its current token and refreshes when told it was
/// rejected.
#[derive(Debug, Default)]
struct Central {
    current: Mutex<u32>,
    invalidated: Mutex<Vec<String>>,
    fetches: Mutex<u32>,
}

#[subscribe_client::async_trait]
impl ExternalTokenSource for Central {
    async fn fetch(&self, _app: &AppId) -> Result<CachedToken, BoxError> {
        *self.fetches.lock().unwrap() += 1;
        let n = *self.current.lock().unwrap() + 1;
        Ok(CachedToken::new(AccessToken::new(format!("X{n}"))?, t0() + Duration::from_secs(7200)))
    }
    async fn invalidate(&self, _app: &AppId, rejected: &AccessToken) -> Result<(), BoxError> {
        self.invalidated.lock().unwrap().push(rejected.expose_secret().to_owned());
        *self.current.lock().unwrap() += 1;
        Ok(())
    }
}

#[tokio::test]
async fn external_source_is_told_of_a_rejection_and_asked_again() {
    let central = Arc::new(Central::default());
    let mock = MockTransport::new();
    mock.route("POST", SEND_PATH).respond_with(|req| {
        if req.query_param("access_token") == Some("X1") {
            errcode_reply(40014, "invalid access_token")
        } else {
            ok_reply()
        }
    });
    let client = Client::builder_with_token_source(appid(), Arc::clone(&central))
        .transport(mock.clone())
        .clock(clock())
        .state_key([9u8; 32])
        .build()
        .unwrap();
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(tokens_used(&mock), ["X1", "X2"]);
    assert_eq!(*central.invalidated.lock().unwrap(), ["X1"]);
    assert_eq!(*central.fetches.lock().unwrap(), 2, "asked once, then once more after the rejection");
    assert_eq!(mock.count(STABLE_TOKEN_PATH), 0, "WeChat's token endpoint is never called");
    client.send_one_time(&message()).await.unwrap();
    assert_eq!(*central.fetches.lock().unwrap(), 2, "X2 is held: not asked again");
}

#[test]
fn external_source_needs_a_state_key_and_keys_must_be_strong() {
    let e = Client::builder_with_token_source(appid(), Central::default())
        .transport(MockTransport::new())
        .build();
    assert!(matches!(e, Err(subscribe_client::ConfigError::MissingStateKey)));
    let e = Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .transport(MockTransport::new())
        .state_key(vec![1u8; 31])
        .build();
    assert!(matches!(e, Err(subscribe_client::ConfigError::WeakStateKey)));
    let e = Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .transport(MockTransport::new())
        .api_base("not a url")
        .build();
    assert!(matches!(e, Err(subscribe_client::ConfigError::InvalidBaseUrl { which: "api_base" })));
}

#[test]
fn timeouts_with_a_custom_transport_are_refused_not_ignored() {
    let e = Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .transport(MockTransport::new())
        .timeouts(Duration::from_secs(1), Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert!(matches!(e, subscribe_client::ConfigError::TimeoutsWithCustomTransport), "{e:?}");
    assert_eq!(e.kind(), subscribe_client::ErrorKind::Configuration);
    assert!(e.to_string().contains("custom transport"), "{e}");
    // Either one alone builds.
    Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .transport(MockTransport::new())
        .build()
        .unwrap();
    Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .timeouts(Duration::from_secs(1), Duration::from_secs(2))
        .build()
        .unwrap();
}

/// A store whose backend is down.
#[derive(Debug)]
struct Down;

#[subscribe_client::async_trait]
impl TokenStore for Down {
    async fn load(&self, _: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        Err(TokenStoreError::new("connection refused"))
    }
    async fn save(&self, _: &AppId, _: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        Err(TokenStoreError::new("connection refused"))
    }
    async fn invalidate(&self, _: &AppId, _: &AccessToken) -> Result<bool, TokenStoreError> {
        Err(TokenStoreError::new("connection refused"))
    }
}

#[tokio::test]
async fn a_store_that_is_down_does_not_stop_sending() {
    let mock = mock_with_stable_token("T1", 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock()).token_store(Down).build().unwrap();
    for _ in 0..3 {
        client.send_one_time(&message()).await.unwrap();
    }
    mock.assert_count(STABLE_TOKEN_PATH, 1);
}

#[tokio::test]
async fn a_valid_token_is_served_when_its_refresh_fails() {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).times(1).reply(token_reply("T1", 7200));
    mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::status(502));
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let clock = clock();
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    clock.advance(Duration::from_secs(7000));
    for _ in 0..3 {
        client.send_one_time(&message()).await.unwrap(); // T1 still valid for 200 s
        tokio::task::yield_now().await;
    }
    assert!(tokens_used(&mock).iter().all(|t| t == "T1"));
    // One background attempt failed; the next waits out the backoff instead of following
    // every send.
    mock.assert_count(STABLE_TOKEN_PATH, 2);
}
