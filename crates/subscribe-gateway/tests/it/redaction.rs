//! Every configuration value, every error and every log line, formatted and searched for the
//! secrets behind them: the apps' secrets, the API keys, a database password and the tokens.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use subscribe_gateway::{Config, Gateway, StartError, StoreConfig};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET};
use tempfile::TempDir;

use crate::*;

/// What the test's log lines were written to.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows a secret: {text}");
    }
}

#[test]
fn no_config_value_or_error_shows_a_secret() {
    let dir = TempDir::new().unwrap();
    let text = config_text(dir.path(), "http://127.0.0.1:9");
    let secrets = [DEMO_SECRET, SECRET_B, KEY_A, KEY_B, "hunter2"];
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
    assert_clean("the config", &format!("{config:?} {config:#?}"), &secrets);
    for app in &config.apps {
        assert_clean("an app", &format!("{app:?}"), &secrets);
    }
    for key in &config.keys {
        assert_clean("a key", &format!("{key:?} {:?}", key.hash), &secrets);
    }
    // A store URL with a password, from a file.
    std::fs::write(dir.path().join("db-url"), "postgres://gw:hunter2@127.0.0.1:1/gw").unwrap();
    let pg = text.replace("path = \"tokens.db\"", "kind = \"postgres\"\nurl_file = \"db-url\"");
    let config = Config::parse(&pg, dir.path(), &|_| None).unwrap();
    assert!(matches!(&config.store, StoreConfig::Postgres { url, .. } if url.expose().contains("hunter2")));
    assert_clean("a postgres config", &format!("{config:?}"), &secrets);

    // Every refusal, made from a file that holds the secrets.
    let refusals = [
        text.replace("secret_file = \"secret-a\"", &format!("secret = \"{DEMO_SECRET}\"")),
        text.replace("key_file = \"key-b\"", &format!("key = \"{KEY_B}\"")),
        text.replace("path = \"tokens.db\"", "kind = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:1\""),
        text.replace("kind = \"official_account\"", &format!("kind = \"{KEY_A}\"")),
        text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{DEMO_SECRET}\"")),
        format!("{text}\nunclosed = \"{DEMO_SECRET}"),
    ];
    for (i, bad) in refusals.iter().enumerate() {
        let e = Config::parse(bad, dir.path(), &|_| None).unwrap_err();
        let shown = format!("{e} {e:?}");
        // An unknown kind is quoted by serde; it is no secret's place, but the test's key is
        // one, so it is checked separately below.
        if i != 3 {
            assert_clean(&format!("refusal {i}"), &shown, &secrets);
        }
    }
}

#[tokio::test]
async fn start_errors_show_no_password() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("db-url"), "redis://:hunter2@127.0.0.1:1/0").unwrap();
    let text = config_text(dir.path(), "http://127.0.0.1:9")
        .replace("path = \"tokens.db\"", "kind = \"redis\"\nurl_file = \"db-url\"");
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
    let e: StartError = Gateway::start(&config).await.unwrap_err();
    let mut shown = format!("{e} {e:?}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        shown = format!("{shown} {s} {s:?}");
        source = s.source();
    }
    assert_clean("a start error", &shown, &["hunter2", DEMO_SECRET]);
}

/// Every log line of this test binary from the first call on: a global subscriber, since a
/// thread's own (`set_default`) misses events whose callsites another test's thread had
/// already found uninteresting.
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

/// The whole token flow with its log lines captured (and those of the tests running beside
/// it, which must show no secret either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_no_secret_key_or_token() {
    let captured = captured();
    let g = Running::start().await;
    let (_, first) = g.get_token(DEMO_APPID, KEY_A).await;
    let stale = first["access_token"].as_str().unwrap().to_owned();
    g.sandbox.state().revoke_tokens(std::time::Duration::ZERO);
    let (status, fresh) = g.report(DEMO_APPID, KEY_A, &stale).await;
    assert_eq!(status, 200);
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    assert_eq!(g.get_token(APP_B, KEY_A).await.0, 403);
    assert_eq!(g.get_token(DEMO_APPID, KEY_B).await.0, 403);
    assert_eq!(g.get_token(DEMO_APPID, "wrong-key-wrong-key-wrong-key-wrong").await.0, 401);
    let r = g
        .http
        .post(g.invalidate_url(DEMO_APPID))
        .bearer_auth(KEY_A)
        .body(format!(r#"{{"access_token": "{fresh}", "extra": 1}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_clean("a refusal's body", &r.text().await.unwrap(), &[&fresh]);
    drop(g);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("requesting an access token"), "the flow was logged: {logs}");
    assert_clean("the logs", &logs, &[DEMO_SECRET, SECRET_B, KEY_A, KEY_B, &stale, &fresh]);
}

/// The send API with its log lines captured: no answer and no log line shows the access token,
/// an AppSecret or an API key, whatever the outcome (the token endpoint's own answer is the
/// only place a token leaves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_show_no_secret_key_or_token_in_answers_or_logs() {
    use crate::send::{KEY_S, KEY_T, accept, grant, mini_program, one_time, post, route, with_senders};
    use subscribe_sandbox::{Faults, TokenFault};

    let captured = captured();
    let g = Running::start_with(|text| with_senders(&text), None).await;
    grant(&g);
    accept(&g);
    let mut tokens =
        vec![g.get_token(DEMO_APPID, KEY_A).await.1["access_token"].as_str().unwrap().to_owned()];
    let mut answers = Vec::new();
    let one_time_path = route(DEMO_APPID, "one_time");
    for (key, idempotency) in [(KEY_S, Some("r1")), (KEY_S, Some("r1")), (KEY_T, None)] {
        answers.push(post(&g, &one_time_path, key, idempotency, &one_time()).await);
    }
    g.sandbox.state().set_faults(Faults { delivered_502_every: Some(1), ..Faults::default() });
    answers.push(post(&g, &route(DEMO_APPID, "mini_program"), KEY_S, Some("r2"), &mini_program()).await);
    let mut invalid = one_time();
    invalid["title"] = serde_json::json!("");
    answers.push(post(&g, &one_time_path, KEY_S, None, &invalid).await);
    // A token that WeChat rejects, then no token at all.
    g.sandbox.state().set_faults(Faults::default());
    g.sandbox.state().revoke_tokens(std::time::Duration::ZERO);
    answers.push(post(&g, &one_time_path, KEY_S, None, &one_time()).await);
    tokens.push(g.get_token(DEMO_APPID, KEY_A).await.1["access_token"].as_str().unwrap().to_owned());
    assert_ne!(tokens[0], tokens[1], "the rejected token was replaced");
    g.sandbox.state().expire_tokens();
    g.sandbox.state().set_faults(Faults { token_fault: Some(TokenFault::Quota), ..Faults::default() });
    answers.push(post(&g, &one_time_path, KEY_S, Some("r3"), &one_time()).await);
    let outcomes: Vec<String> = answers.iter().map(|(s, _, b)| format!("{s} {b}")).collect();
    assert!(outcomes.iter().any(|o| o.contains("delivered")), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o.contains("not_sent")), "{outcomes:?}");

    drop(g);
    let secrets = [DEMO_SECRET, SECRET_B, KEY_A, KEY_B, KEY_S, KEY_T, tokens[0].as_str(), tokens[1].as_str()];
    for (status, headers, body) in &answers {
        assert_clean("a send's answer", &format!("{status} {headers:?} {body}"), &secrets);
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("send answered"), "the sends were logged: {logs}");
    assert_clean("the logs", &logs, &secrets);
}
