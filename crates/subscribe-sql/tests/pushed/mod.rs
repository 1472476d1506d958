//! The pushed-event chain on SQLite, with no application around it: the sandbox (WeChat's side)
//! pushes what a user did (a popup's acceptance or rejection, a withdrawal) and a notification's
//! result, signed and encrypted, to a server URL; `subscribe_events::axum::PushEndpoint` serves
//! that URL on 127.0.0.1, and its handler applies each event with `Client::apply_event` into an
//! `SqlGrantLedger` and `SqlNotificationResults`, reading each push once through an
//! `SqlReplayCache` on the same file. A forged or replayed push changes nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use subscribe_client::{Client, GrantLedger as _, GrantScope, NotificationResults as _};
use subscribe_events::axum::{PushEndpoint, PushStats};
use subscribe_events::{
    ChangeItem, EncodingAesKey, Event, EventKind, Format, Mode, PopupItem, Push, PushConfig, Sealed,
};
use subscribe_sandbox::{
    DEMO_APPID, DEMO_LONG_TERM_TEMPLATE, DEMO_MP_TEMPLATE, DEMO_SECRET, PushSettings, SandboxConfig,
    SandboxHandle,
};
use subscribe_sql::{SqlGrantLedger, SqlNotificationResults, SqlReplayCache};
use subscribe_types::{AppId, AppSecret, MessageData, NotificationMessage, OpenId, TemplateId};

use crate::{fresh_path, open};

const ALICE: &str = "oSandbox_Alice_00000000001";
const BOB: &str = "oSandbox_Bob_0000000000002";
const PUSH_TOKEN: &str = "sqlPushChainToken2026";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// The grants `Client::apply_event` records for `template`: the demo app's, scene 0.
fn scope(template: &str) -> GrantScope {
    GrantScope::mini_program(AppId::new(DEMO_APPID).unwrap(), TemplateId::new(template).unwrap())
}

/// One instance of the integrator's server: its client, its stores on a SQLite file, and its
/// server URL served on 127.0.0.1 (stopped when dropped).
struct Receiver {
    url: String,
    client: Client,
    ledger: SqlGrantLedger,
    results: SqlNotificationResults,
    endpoint: PushEndpoint,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    /// `(pending, dropped)` grants of `template`.
    async fn grants(&self, template: &str) -> (u64, u64) {
        let counts = self.ledger.counts(&scope(template), self.client.clock().now()).await.unwrap();
        (counts.pending, counts.dropped)
    }

    /// The users with a pending grant of `template`.
    async fn waiting(&self, template: &str) -> Vec<String> {
        let page =
            self.ledger.pending_page(&scope(template), None, 10, self.client.clock().now()).await.unwrap();
        page.iter().map(|o| o.as_str().to_owned()).collect()
    }

    fn stats(&self) -> PushStats {
        self.endpoint.stats()
    }
}

/// A server on `path` taking `mode`'s pushes at `/wechat/push`, as an integrator wires it.
async fn receiver(path: &Path, sandbox: &SandboxHandle, mode: Mode) -> Receiver {
    let sql = open(path).await;
    let client = Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(sandbox.base_url())
        .build()
        .unwrap();
    let ledger = SqlGrantLedger::new(sql.clone());
    let results = SqlNotificationResults::new(sql.clone(), AppId::new(DEMO_APPID).unwrap());
    let mut config = PushConfig::new(PUSH_TOKEN, DEMO_APPID, mode);
    if mode != Mode::Plain {
        config = config.aes_key(EncodingAesKey::new(AES_KEY).unwrap());
    }
    let (c, l, r) = (client.clone(), ledger.clone(), results.clone());
    let endpoint = PushEndpoint::new(Push::new(config), move |event: Event| {
        let (c, l, r) = (c.clone(), l.clone(), r.clone());
        async move { c.apply_event(&event, &l, &r).await.map(drop) }
    })
    .replay_cache(Arc::new(SqlReplayCache::new(sql)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wechat/push", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/wechat/push", endpoint.clone().method_router());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, client, ledger, results, endpoint, server }
}

/// What the operator does in the account's console: the server URL and its settings.
fn point_sandbox_at(sandbox: &SandboxHandle, r: &Receiver, mode: &str, format: &str) {
    let settings = PushSettings {
        appid: DEMO_APPID.into(),
        url: r.url.clone(),
        token: PUSH_TOKEN.into(),
        aes_key: Some(AES_KEY.into()),
        mode: mode.into(),
        format: format.into(),
    };
    sandbox.state().configure_push(&settings).unwrap();
}

/// Waits until the sandbox made `n` pushes and each was answered; all must have been taken.
async fn pushes_answered(sandbox: &SandboxHandle, n: usize) {
    for _ in 0..250 {
        let pushes = sandbox.state().pushes();
        if pushes.len() >= n && pushes.iter().all(|p| p.attempts > 0) {
            assert!(pushes.iter().all(|p| p.delivered && p.status == Some(200)), "{pushes:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("pushes not answered: {:?}", sandbox.state().pushes());
}

async fn sandbox() -> SandboxHandle {
    SandboxHandle::start(SandboxConfig::demo()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_popup_acceptance_in_the_sandbox_becomes_a_pending_grant_through_an_encrypted_push() {
    for (mode, format, receiving) in [
        ("safe", "xml", Mode::Safe),
        ("safe", "json", Mode::Safe),
        ("compatible", "xml", Mode::Compatible),
        ("plain", "json", Mode::Plain),
    ] {
        let sandbox = sandbox().await;
        let r = receiver(&fresh_path(), &sandbox, receiving).await;
        point_sandbox_at(&sandbox, &r, mode, format);
        sandbox.state().subscribe(DEMO_APPID, ALICE, DEMO_MP_TEMPLATE, true).unwrap();
        sandbox.state().subscribe(DEMO_APPID, BOB, DEMO_MP_TEMPLATE, false).unwrap();
        pushes_answered(&sandbox, 2).await;
        let pushes = sandbox.state().pushes();
        assert!(pushes.iter().all(|p| (p.mode, p.format) == (mode, format)), "{pushes:?}");
        assert_eq!(
            r.grants(DEMO_MP_TEMPLATE).await,
            (1, 0),
            "{mode} {format}: Alice's acceptance, not Bob's rejection"
        );
        assert_eq!(r.waiting(DEMO_MP_TEMPLATE).await, [ALICE], "{mode} {format}");
        let stats = r.stats();
        assert_eq!((stats.handled, stats.refused, stats.replayed), (2, 0, 0), "{mode} {format}: both read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_drops_the_grant_and_a_notifications_result_is_kept_by_msgid_across_a_restart() {
    let (sandbox, path) = (sandbox().await, fresh_path());
    let first = receiver(&path, &sandbox, Mode::Safe).await;
    point_sandbox_at(&sandbox, &first, "safe", "xml");
    sandbox.state().subscribe(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE, true).unwrap();
    pushes_answered(&sandbox, 1).await;
    assert_eq!(first.grants(DEMO_LONG_TERM_TEMPLATE).await, (1, 0));

    // A notification to Alice: `bizsend` answers its msgid, and its result comes back by push.
    let data = MessageData::from_pairs([("enum1", "黄金会员"), ("date2", "2019-10-01")]).unwrap();
    let notification = NotificationMessage::builder(
        OpenId::new(ALICE).unwrap(),
        TemplateId::new(DEMO_LONG_TERM_TEMPLATE).unwrap(),
        data,
    )
    .page("https://shop.example.com/member")
    .build()
    .unwrap();
    let msgid = first.client.send_notification(&notification).await.unwrap().response.msgid;
    pushes_answered(&sandbox, 2).await;
    let result = first.results.result(msgid).await.unwrap().unwrap();
    assert!(result.delivered() && result.openid == ALICE, "{result:?}");
    assert_eq!(result.template_id, DEMO_LONG_TERM_TEMPLATE);

    // A restart on the same file: the result and the grant are still there.
    drop(first);
    let restarted = receiver(&path, &sandbox, Mode::Safe).await;
    assert_eq!(restarted.results.result(msgid).await.unwrap(), Some(result));
    assert_eq!(restarted.grants(DEMO_LONG_TERM_TEMPLATE).await, (1, 0));

    // Alice turns the subscription off in WeChat's settings: the pending grant is dropped.
    point_sandbox_at(&sandbox, &restarted, "safe", "xml");
    sandbox.state().withdraw(DEMO_APPID, ALICE, DEMO_LONG_TERM_TEMPLATE).unwrap();
    pushes_answered(&sandbox, 3).await;
    assert_eq!(restarted.grants(DEMO_LONG_TERM_TEMPLATE).await, (0, 1));
}

/// Alice's acceptance of the mini-program template's popup, as WeChat writes it (XML), at `now`.
fn acceptance(now: u64) -> String {
    let item =
        PopupItem { template_id: DEMO_MP_TEMPLATE.into(), status: "accept".into(), popup_scene: Some(1) };
    Event::new("gh_5a1db0c0ffee", ALICE, now, EventKind::Popup(vec![item])).to_wire(Format::Xml)
}

/// Alice's acceptance and her withdrawal of the mini-program template, sealed in safe mode as
/// WeChat sends them, at `now`.
fn acceptance_and_withdrawal(now: u64) -> (Sealed, Sealed) {
    let key = EncodingAesKey::new(AES_KEY).unwrap();
    let safe = Push::new(PushConfig::new(PUSH_TOKEN, DEMO_APPID, Mode::Safe).aes_key(key));
    let item = ChangeItem { template_id: DEMO_MP_TEMPLATE.into(), status: "reject".into() };
    let withdrawal =
        Event::new("gh_5a1db0c0ffee", ALICE, now, EventKind::Change(vec![item])).to_wire(Format::Xml);
    (
        safe.seal(&acceptance(now), now, "78", [1; 16]).unwrap(),
        safe.seal(&withdrawal, now, "79", [2; 16]).unwrap(),
    )
}

/// Posts `push` to `r`: its status and text.
async fn post(http: &reqwest::Client, r: &Receiver, push: &Sealed) -> (u16, String) {
    let answer = http.post(format!("{}?{}", r.url, push.query)).body(push.body.clone()).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

fn unix_now(r: &Receiver) -> u64 {
    r.client.clock().now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_replayed_push_changes_nothing() {
    let sandbox = sandbox().await;
    let r = receiver(&fresh_path(), &sandbox, Mode::Safe).await;
    let http = reqwest::Client::new();
    let now = unix_now(&r);

    // A bad signature: 401, nothing read.
    let forged = Sealed {
        query: format!("signature=0&timestamp={now}&nonce=1&encrypt_type=aes&msg_signature=0"),
        body: "<xml><Encrypt>AAAA</Encrypt></xml>".into(),
    };
    assert_eq!(post(&http, &r, &forged).await.0, 401);
    // A plain push in safe mode, correctly signed with the Token: 401 too.
    let (accepted, withdrawn) = acceptance_and_withdrawal(now);
    let plain = Push::new(PushConfig::new(PUSH_TOKEN, DEMO_APPID, Mode::Plain))
        .seal(&acceptance(now), now, "77", [0; 16])
        .unwrap();
    assert_eq!(post(&http, &r, &plain).await.0, 401);
    assert_eq!(r.grants(DEMO_MP_TEMPLATE).await, (0, 0));
    assert_eq!((r.stats().refused, r.stats().handled), (2, 0));

    // An acceptance, then a withdrawal; the acceptance captured and sent again is answered
    // `success` (WeChat would otherwise resend it) but not applied: the grant stays withdrawn.
    for (push, after) in [(&accepted, (1, 0)), (&withdrawn, (0, 1)), (&accepted, (0, 1))] {
        assert_eq!(post(&http, &r, push).await, (200, "success".to_owned()));
        assert_eq!(r.grants(DEMO_MP_TEMPLATE).await, after);
    }
    assert_eq!((r.stats().handled, r.stats().replayed), (2, 1));

    // The URL check the console makes when the server URL is saved.
    let sig = subscribe_events::signature(&[PUSH_TOKEN, &now.to_string(), "5"]);
    let check = http
        .get(format!("{}?signature={sig}&timestamp={now}&nonce=5&echostr=hi", r.url))
        .send()
        .await
        .unwrap();
    assert_eq!((check.status().as_u16(), check.text().await.unwrap()), (200, "hi".to_owned()));
}

/// Two endpoints on one SQLite file (two pools, as two processes would have): a push read by
/// the first is answered `success` by the second and not applied again. Without the shared
/// replay cache the second would read the captured acceptance afresh and make the withdrawn
/// grant pending again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_read_by_one_endpoint_is_not_applied_again_by_another_on_the_same_file() {
    let (sandbox, path) = (sandbox().await, fresh_path());
    let first = receiver(&path, &sandbox, Mode::Safe).await;
    let second = receiver(&path, &sandbox, Mode::Safe).await;
    let http = reqwest::Client::new();
    let (accepted, withdrawn) = acceptance_and_withdrawal(unix_now(&first));
    // The acceptance and the withdrawal reach the first; the acceptance, captured, is sent to
    // the second, then to the first again.
    for (r, push, after) in [
        (&first, &accepted, (1, 0)),
        (&first, &withdrawn, (0, 1)),
        (&second, &accepted, (0, 1)),
        (&first, &accepted, (0, 1)),
    ] {
        assert_eq!(post(&http, r, push).await, (200, "success".to_owned()));
        assert_eq!(first.grants(DEMO_MP_TEMPLATE).await, after);
        assert_eq!(second.grants(DEMO_MP_TEMPLATE).await, after, "one file, one ledger");
    }
    assert_eq!((first.stats().handled, first.stats().replayed), (2, 1));
    assert_eq!((second.stats().handled, second.stats().replayed), (0, 1));
}
