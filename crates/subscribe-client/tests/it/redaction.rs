//! Nothing the client prints, returns or logs contains the AppSecret, an access token or a
//! user's session id, nor (in its logs, errors and an answer's `Debug`) an answer's openid.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subscribe_client::test_util::*;
use subscribe_client::transport::TransportErrorKind;
use subscribe_client::{CachedToken, Client, TokenEndpoint, TokenStore as _, TokenStoreError};
use subscribe_types::{AccessToken, AppId, AppSecret, Scene, TemplateId};

use crate::*;

const TOKEN: &str = "TOKEN_never_printed_1a2b";
/// A user's session id: a credential, never printed.
const SESSION_ID: &str = "SESSION_never_printed_3c4d";
/// An openid in an authorization answer: personal data, never logged (nor shown by an answer's
/// or a completion's `Debug`).
const ANSWER_OPENID: &str = "oOpenidNeverLogged5e6f";

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn shown(e: &dyn std::error::Error) -> String {
    let mut s = format!("{e} | {e:?}");
    let mut src = e.source();
    while let Some(x) = src {
        write!(s, " | {x} | {x:?}").unwrap();
        src = x.source();
    }
    s
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the AppSecret: {text}");
    assert!(!text.contains(TOKEN), "{what} shows the access token: {text}");
    assert!(!text.contains(SESSION_ID), "{what} shows the user's session id: {text}");
    assert!(!text.contains(ANSWER_OPENID), "{what} shows the openid of an authorization answer: {text}");
}

#[tokio::test]
async fn errors_debug_and_logs_in_every_scenario_are_free_of_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global, not scoped to this thread: the other tests of this binary run on other threads
    // at the same time, and a callsite they reach first while no subscriber is interested
    // would stay switched off for a scoped one (seen as missing lines under `cargo test`).
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");
    let mut texts: Vec<(String, String)> = Vec::new();

    // Token rejected twice (40001), with the token in the URL of every request.
    let mock = mock_with_stable_token(TOKEN, 7200);
    mock.route("POST", SEND_PATH).reply(errcode_reply(40001, "invalid credential"));
    let client = builder(&mock, &clock()).build().unwrap();
    let e = client.send_one_time(&message()).await.unwrap_err();
    texts.push(("40001 error".into(), shown(&e)));
    texts.push(("client".into(), format!("{client:?} {client:#?}")));
    texts.push(("recorded requests".into(), format!("{:?}", mock.requests())));
    texts.push(("mock".into(), format!("{mock:?}")));

    // Token endpoint refusals and the cool-down, classic endpoint (secret in the query).
    for code in [40164, 40013, 40125, 40243, 45009, -1] {
        let mock = MockTransport::new();
        mock.route("GET", CLASSIC_TOKEN_PATH).reply(errcode_reply(code, "refused"));
        let client = builder(&mock, &clock()).token_endpoint(TokenEndpoint::Classic).build().unwrap();
        texts.push((format!("{code}"), shown(&client.send_one_time(&message()).await.unwrap_err())));
        texts.push((format!("{code} again"), shown(&client.send_one_time(&message()).await.unwrap_err())));
    }

    // Token responses that are not tokens, one of which contains the token.
    for body in [format!(r#"{{"access_token":"{TOKEN}","expires_in":"{TOKEN}"}}"#), format!("<{TOKEN}>")] {
        let mock = MockTransport::new();
        mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::json(200, body));
        let client = builder(&mock, &clock()).build().unwrap();
        texts.push(("bad token body".into(), shown(&client.send_one_time(&message()).await.unwrap_err())));
    }

    // Transport failures of every kind, unreadable answers, HTTP statuses.
    for kind in [TransportErrorKind::Connect, TransportErrorKind::Timeout, TransportErrorKind::Io] {
        let mock = mock_with_stable_token(TOKEN, 7200);
        for _ in 0..3 {
            mock.push_error(kind);
        }
        let client = builder(&mock, &clock()).build().unwrap();
        texts.push((format!("{kind:?}"), shown(&client.send_one_time(&message()).await.unwrap_err())));
    }
    for reply in [MockReply::json(200, format!("{{{TOKEN}")), MockReply::status(502).body(TOKEN)] {
        let mock = mock_with_stable_token(TOKEN, 7200);
        mock.push(reply);
        let client = builder(&mock, &clock()).build().unwrap();
        texts.push(("answer".into(), shown(&client.send_one_time(&message()).await.unwrap_err())));
    }

    // An outage of the token endpoint (its error pages echo the request), waited out and
    // reported, and the hold-off another instance reads from the shared store.
    let store = Arc::new(subscribe_client::InMemoryTokenStore::new());
    for _ in 0..2 {
        let mock = MockTransport::new();
        mock.route("POST", STABLE_TOKEN_PATH).reply(MockReply::status(502).body(format!("{SECRET} {TOKEN}")));
        let client = builder(&mock, &clock())
            .token_store(Arc::clone(&store))
            .token_wait(Duration::from_secs(2))
            .build()
            .unwrap();
        texts.push(("token outage".into(), shown(&client.send_one_time(&message()).await.unwrap_err())));
    }
    let hold_off = subscribe_client::RefreshLease::refresh_hold_off(&*store, &appid()).await.unwrap();
    texts.push(("hold-off".into(), format!("{hold_off:?}")));

    // Refresh ahead in the background, and authorization errors.
    let clock = clock();
    let mock = mock_with_stable_token(TOKEN, 7200);
    mock.route("POST", SEND_PATH).reply(ok_reply());
    let client = builder(&mock, &clock).build().unwrap();
    client.send_one_time(&message()).await.unwrap();
    clock.advance(Duration::from_secs(7100));
    client.send_one_time(&message()).await.unwrap();
    tokio::task::yield_now().await;
    texts.extend(authorization(&client).await);

    texts.extend(library_ledger_and_store(&clock).await);

    // Values that hold secrets.
    let builder_dbg =
        format!("{:?}", Client::builder(appid(), AppSecret::new(SECRET).unwrap()).state_key([1u8; 32]));
    texts.push(("builder".into(), builder_dbg));
    let cached = CachedToken::new(AccessToken::new(TOKEN).unwrap(), t0());
    texts.push(("cached token".into(), format!("{cached:?} {cached:#?}")));
    let config = Client::builder(appid(), AppSecret::new(SECRET).unwrap())
        .transport(MockTransport::new())
        .api_base(format!("http://x/?secret={SECRET}&access_token={TOKEN} y"))
        .build()
        .unwrap_err();
    texts.push(("config error".into(), format!("{config} {config:?}")));

    captured.0.lock().unwrap().flush().unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("requesting an access token"), "tracing was captured: {logs}");
    assert!(logs.contains("errcode=40001"), "events carry the errcode: {logs}");
    assert!(logs.contains("wechat.call"), "spans carry the call: {logs}");
    assert!(logs.contains("token store unavailable"), "the store's outage was logged: {logs}");
    texts.push(("tracing output".into(), logs));
    for (what, text) in &texts {
        assert_clean(what, text);
    }
}

/// A token store whose backend is down.
#[derive(Debug)]
struct DownStore;

#[subscribe_client::async_trait]
impl subscribe_client::TokenStore for DownStore {
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

/// A link, a forged answer and its error, and a verified answer's `Completion`.
async fn authorization(client: &Client) -> Vec<(String, String)> {
    let mut texts: Vec<(String, String)> = Vec::new();
    let session = subscribe_client::Session::new(SESSION_ID).unwrap();
    texts.push(("session".into(), format!("{session:?} {session:#?}")));
    let link = client.authorize_url(
        &TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(1).unwrap(),
        &subscribe_types::RedirectUrl::new("https://a.example/cb").unwrap(),
        &session,
    );
    texts.push(("link".into(), format!("{link:?}")));
    let forged =
        subscribe_client::Answer::Redirect("action=confirm&openid=o&template_id=t&scene=1&reserved=abc");
    texts.push(("answer".into(), format!("{forged:?}")));
    let e = client.complete(forged, &session).await.unwrap_err();
    texts.push(("authorization".into(), shown(&e)));
    let callback = format!(
        "/cb?openid={ANSWER_OPENID}&template_id={TEMPLATE}&action=confirm&scene=1&reserved={}",
        link.request.reserved.as_str()
    );
    let answer = subscribe_client::Answer::Redirect(&callback);
    texts.push(("answer".into(), format!("{answer:?} {answer:#?}")));
    let completion = client.complete(answer, &session).await.unwrap();
    texts.push(("completion".into(), format!("{completion:?} {completion:#?}")));
    // Completed again while it is being completed, then after it was accepted: both logged.
    texts.push(("in progress".into(), shown(&client.complete(answer, &session).await.unwrap_err())));
    completion.accept().await;
    texts.push(("accepted".into(), shown(&client.complete(answer, &session).await.unwrap_err())));
    let replay = format!(
        "/cb?openid={ANSWER_OPENID}x&template_id={TEMPLATE}&action=confirm&scene=1&reserved={}",
        link.request.reserved.as_str()
    );
    let e = client.complete(subscribe_client::Answer::Redirect(&replay), &session).await.unwrap_err();
    texts.push(("replayed".into(), shown(&e)));
    texts
}

/// What the template library's errors, a token store's outage and the ledger's errors show.
async fn library_ledger_and_store(clock: &subscribe_client::ManualClock) -> Vec<(String, String)> {
    let mut texts: Vec<(String, String)> = Vec::new();
    // Template-library calls: refused, their answers lost or echoing the request.
    let mock = mock_with_stable_token(TOKEN, 7200);
    mock.route("GET", "/wxaapi/newtmpl/gettemplate").reply(errcode_reply(40001, "invalid credential"));
    mock.route("GET", "/wxaapi/newtmpl/getcategory").reply(MockReply::json(200, format!("{{{TOKEN}")));
    mock.route("POST", "/wxaapi/newtmpl/addtemplate")
        .reply(MockReply::status(502).body(format!("?access_token={TOKEN}&secret={SECRET}")));
    mock.route("POST", "/wxaapi/newtmpl/deltemplate").reply(MockReply::error(TransportErrorKind::Timeout));
    let client = builder(&mock, clock).build().unwrap();
    let add = subscribe_types::AddTemplate::new(99, [1, 2], Some("到货")).unwrap();
    texts.push(("library: token rejected".into(), shown(&client.templates().await.unwrap_err())));
    texts.push(("library: unreadable".into(), shown(&client.template_categories().await.unwrap_err())));
    texts.push(("library: 502".into(), shown(&client.add_template(&add).await.unwrap_err())));
    let del = client.delete_template(&TemplateId::new(TEMPLATE).unwrap()).await.unwrap_err();
    texts.push(("library: lost".into(), shown(&del)));

    // A token store that is out (its error logged as the client goes on without it), and the
    // ledger's errors.
    let mock = mock_with_stable_token(TOKEN, 7200);
    mock.route("POST", SEND_PATH).reply(errcode_reply(40001, "invalid credential"));
    let client = builder(&mock, clock).token_store(DownStore).build().unwrap();
    texts.push(("token store out".into(), shown(&client.send_one_time(&message()).await.unwrap_err())));
    texts.push(("token store error".into(), shown(&DownStore.load(&appid()).await.unwrap_err())));
    texts.push(("lease lost".into(), shown(&subscribe_client::LedgerError::LeaseLost)));
    texts.push(("ledger out".into(), shown(&subscribe_client::LedgerError::backend("connection refused"))));

    texts
}
