//! The grant routes: counts by state, the grants under review a page at a time, and a person's
//! decision on one, recorded with the key's name; every parameter checked, in every spelling.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use subscribe_client::{
    GrantLedger, GrantScope, GrantStatus, InMemoryGrantLedger, InMemoryUsedStates, Settlement,
    SharedTokenStore,
};
use subscribe_gateway::idempotency::MemoryIdempotencyStore;
use subscribe_gateway::jobs::MemoryJobStore;
use subscribe_gateway::{Config, Gateway, KeyHash, ServeLimits, Stores, serve};
use subscribe_sandbox::{DEMO_APPID, SandboxConfig};
use subscribe_types::{OpenId, Scene};
use tempfile::TempDir;

use crate::*;

/// Key G: `grants:review` on the demo app.
const KEY_G: &str = "gw-test-key-g-5c8e1f4a7d0b3e6c9f2a5d8b1e4c7f0a";
/// Key P: `grants` (the consent routes) on the demo app, as an app's public-facing backend holds.
const KEY_P: &str = "gw-test-key-p-1b4e7a0d3f6c9b2e5a8d1c4f7b0e3a6d";

fn scope() -> GrantScope {
    GrantScope::one_time(
        SandboxConfig::demo_appid(),
        SandboxConfig::demo_template(),
        Scene::new(1000).unwrap(),
    )
}

fn user(i: usize) -> OpenId {
    OpenId::new(format!("oGrantUser{i:04}")).unwrap()
}

/// A gateway on an in-memory ledger holding five grants of [`scope`]: users 0 and 1 pending,
/// users 2, 3 and 4 under review.
async fn gateway()
-> (String, Arc<InMemoryGrantLedger>, reqwest::Client, tokio::sync::oneshot::Sender<()>, TempDir) {
    let ledger = Arc::new(InMemoryGrantLedger::new());
    // The in-memory ledger keeps time by the clock passed in; the client's is the system's.
    let now = subscribe_client::Clock::now(&subscribe_client::SystemClock);
    for i in 0..5 {
        ledger.record(&scope().key(user(i)), now).await.unwrap();
    }
    for i in 2..5 {
        let r = ledger
            .reserve(&scope().key(user(i)), "test", Duration::from_secs(60), now)
            .await
            .unwrap()
            .unwrap();
        ledger.settle(&r, Settlement::Review(format!("unknown outcome {i}"))).await.unwrap();
    }
    let dir = TempDir::new().unwrap();
    let text = config_text(dir.path(), "http://127.0.0.1:1");
    let hash = KeyHash::of(KEY_G.as_bytes()).to_hex();
    let public = KeyHash::of(KEY_P.as_bytes()).to_hex();
    let text = format!(
        "{text}\n[[keys]]\nname = \"ops\"\nsha256 = \"{hash}\"\nscopes = {{ {DEMO_APPID} = [\"grants:review\"] }}\n\
         \n[[keys]]\nname = \"app-backend\"\nsha256 = \"{public}\"\nscopes = {{ {DEMO_APPID} = [\"grants\"] }}\n"
    );
    let config = Config::parse(&text, dir.path(), &|_| None).unwrap();
    let tokens: SharedTokenStore = Arc::new(subscribe_client::InMemoryTokenStore::new());
    let stores = Stores::new(
        tokens,
        Arc::new(MemoryIdempotencyStore::new()),
        Arc::clone(&ledger) as _,
        Arc::new(InMemoryUsedStates::new()),
        Arc::new(MemoryJobStore::new()),
    );
    let gateway = Gateway::from_stores(&config, stores).unwrap();
    let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
    let base = format!("http://{}/v1/apps/{DEMO_APPID}/grants", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, gateway.router(), ServeLimits::from(&config.server), async {
        let _ = rx.await;
    }));
    (base, ledger, reqwest::Client::new(), tx, dir)
}

async fn get(http: &reqwest::Client, url: &str, key: &str) -> (u16, Value) {
    let r = http.get(url).bearer_auth(key).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn counts_and_reviews_are_read_a_page_at_a_time() {
    let (base, _ledger, http, _stop, _dir) = gateway().await;
    let q = format!("template_id={}&scene=1000", SandboxConfig::demo_template().as_str());
    let (status, counts) = get(&http, &format!("{base}?{q}"), KEY_G).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts, json!({"pending": 2, "reserved": 0, "delivered": 0, "review": 3, "dropped": 0}));

    let (status, page) = get(&http, &format!("{base}/review?{q}&limit=2"), KEY_G).await;
    assert_eq!(status, 200, "{page}");
    let openids: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|i| i["openid"].as_str().unwrap()).collect();
    assert_eq!(openids, [user(2).as_str(), user(3).as_str()]);
    assert_eq!(page["items"][0]["reason"], "unknown outcome 2");
    assert_eq!(page["items"][0]["attempts"], 1);
    assert_eq!(page["next"], user(3).as_str());
    let (_, last) = get(&http, &format!("{base}/review?{q}&limit=2&after={}", user(3).as_str()), KEY_G).await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert!(last.get("next").is_none(), "{last}");
    // A last page that is exactly full has no `next` either (nothing follows it).
    let (_, full) = get(&http, &format!("{base}/review?{q}&limit=3"), KEY_G).await;
    assert_eq!(full["items"].as_array().unwrap().len(), 3);
    assert!(full.get("next").is_none(), "{full}");
    // A parameter's name percent-encoded is the same parameter.
    let encoded = format!("{base}?template%5Fid={}&scene=1000", SandboxConfig::demo_template().as_str());
    assert_eq!(get(&http, &encoded, KEY_G).await.0, 200);
}

#[tokio::test]
async fn a_review_is_decided_once_with_the_deciders_name() {
    let (base, ledger, http, _stop, _dir) = gateway().await;
    let decide = |openid: OpenId, resolution: &str| {
        let body = json!({"template_id": SandboxConfig::demo_template().as_str(), "scene": 1000,
            "openid": openid.as_str(), "resolution": resolution, "note": "checked the user's chat (ticket 812)"});
        let (http, url) = (http.clone(), format!("{base}/review/resolve"));
        async move {
            let r = http.post(url).bearer_auth(KEY_G).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(decide(user(2), "release").await, (200, json!({"resolved": true})));
    assert_eq!(decide(user(3), "delivered").await.0, 200);
    assert_eq!(decide(user(4), "drop").await.0, 200);
    let status = |i| {
        let ledger = Arc::clone(&ledger);
        async move { ledger.get(&scope().key(user(i))).await.unwrap().unwrap().status }
    };
    assert_eq!(status(2).await, GrantStatus::Pending);
    assert_eq!(status(3).await, GrantStatus::Delivered);
    assert!(
        matches!(status(4).await, GrantStatus::Dropped { reason } if reason == "ops: checked the user's chat (ticket 812)")
    );
    // Decided once: again, or on a grant that never was under review, changes nothing.
    for openid in [user(3), user(0), OpenId::new("oNobody").unwrap()] {
        let (code, body) = decide(openid, "release").await;
        assert_eq!((code, body["error"].as_str()), (409, Some("not_under_review")), "{body}");
    }
    assert_eq!(status(3).await, GrantStatus::Delivered);
}

#[tokio::test]
async fn every_parameter_is_checked_in_every_spelling() {
    let (base, _ledger, http, _stop, _dir) = gateway().await;
    let t = SandboxConfig::demo_template();
    let t = t.as_str();
    for (query, status, field) in [
        (String::new(), 400, "template_id"),
        (format!("template_id={t}"), 400, "scene"),
        (format!("template_id={t}&scene=1000&scene=1001"), 400, "scene"),
        (format!("template_id={t}&scene=1000&Scene=1"), 400, "Scene"),
        (format!("template_id={t}&scene=10001"), 422, "scene"),
        (format!("template_id={t}&scene=-1"), 422, "scene"),
        ("template_id=a%20b&scene=1".to_owned(), 422, "template_id"),
        (format!("template_id={t}&scene=1000&limit=1"), 400, "limit"),
    ] {
        let (got, body) = get(&http, &format!("{base}?{query}"), KEY_G).await;
        assert_eq!((got, body["field"].as_str()), (status, Some(field)), "{query}: {body}");
    }
    for (query, field) in
        [("limit=0", "limit"), ("limit=501", "limit"), ("after=", "after"), ("limit=x", "limit")]
    {
        let url = format!("{base}/review?template_id={t}&scene=1000&{query}");
        let (got, body) = get(&http, &url, KEY_G).await;
        assert_eq!((got, body["field"].as_str()), (422, Some(field)), "{query}: {body}");
    }
    // Keys: another app's, one without the scope, the consent routes' (`grants`), none.
    let decision = json!({"template_id": t, "scene": 1000, "openid": user(2).as_str(), "resolution": "drop", "note": "n"});
    for key in [KEY_A, KEY_B, KEY_P] {
        for path in ["", "/review"] {
            let (got, _) = get(&http, &format!("{base}{path}?template_id={t}&scene=1000"), key).await;
            assert_eq!(got, 403, "{path}");
        }
        let r = http
            .post(format!("{base}/review/resolve"))
            .bearer_auth(key)
            .json(&decision)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let r = http.get(format!("{base}?template_id={t}&scene=1000")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let url = format!("{base}/review/resolve");
    for (body, status, field) in [
        (
            json!({"template_id": t, "scene": 1000, "openid": "oX", "resolution": "maybe", "note": "n"}),
            422,
            Some("resolution"),
        ),
        (
            json!({"template_id": t, "scene": 1000, "openid": "oX", "resolution": "drop", "note": "  "}),
            422,
            Some("note"),
        ),
        (
            json!({"template_id": t, "scene": 1000, "openid": "oX", "resolution": "drop", "note": "x\nadmin: ok"}),
            422,
            Some("note"),
        ),
        (
            json!({"template_id": t, "scene": 1000, "openid": "", "resolution": "drop", "note": "n"}),
            422,
            Some("openid"),
        ),
        (json!({"template_id": t, "scene": 1000, "openid": "oX", "resolution": "drop"}), 400, None),
    ] {
        let r = http.post(&url).bearer_auth(KEY_G).json(&body).send().await.unwrap();
        let (got, answer) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
        assert_eq!((got, answer["field"].as_str()), (status, field), "{body}: {answer}");
    }
}
