//! The status page: behind a key with the scope `status` (Bearer, or Basic for a browser's own
//! prompt), read-only, for the apps the key may see: the token, the push endpoint, the dispatch
//! jobs with their grants, and the latest refusals; never cached, never framed, no script.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use subscribe_gateway::KeyHash;
use subscribe_sandbox::{DEMO_APPID, SandboxConfig};
use tempfile::TempDir;

use crate::dispatch::served;
use crate::*;

/// Key S: `status` and `dispatch` on the demo app.
const KEY_S: &str = "gw-test-key-s-4b7e0a3d6c9f2b5e8a1d4c7f0b3e6a9d";

fn basic(key: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("ops:{key}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_apps_a_key_may_see_and_nothing_to_others() {
    let sandbox = sandbox_of(SandboxConfig::demo()).await;
    let dir = TempDir::new().unwrap();
    let hash = KeyHash::of(KEY_S.as_bytes()).to_hex();
    let text = format!(
        "{}\n[[keys]]\nname = \"ops\"\nsha256 = \"{hash}\"\nscopes = {{ {DEMO_APPID} = [\"status\", \"dispatch\"] }}\n",
        config_text(dir.path(), &sandbox.base_url())
    );
    let config = subscribe_gateway::Config::parse(&text, dir.path(), &|_| None).unwrap();
    let gw = served(&config).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/status", gw.addr);

    // No key: 401, asking the browser for one; a wrong one, or garbage, the same.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"subscribe-gateway\", charset=\"UTF-8\"");
    for wrong in [basic("not-a-key-of-ours-0123456789abcdef"), "Basic !!!".to_owned(), "Basic".to_owned()] {
        assert_eq!(http.get(&url).header("authorization", wrong).send().await.unwrap().status(), 401);
    }
    // A key without the scope for any app: 403.
    assert_eq!(http.get(&url).bearer_auth(KEY_A).send().await.unwrap().status(), 403);

    // A dispatch job, to be shown.
    let start = json!({"kind": "one_time", "message": {"template_id": SandboxConfig::demo_template().as_str(),
        "scene": "1000", "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货"}}}});
    let r = http
        .post(format!("http://{}/v1/apps/{DEMO_APPID}/dispatches", gw.addr))
        .bearer_auth(KEY_S)
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;

    for auth in [basic(KEY_S), format!("Bearer {KEY_S}")] {
        let r = http.get(&url).header("authorization", auth).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
        let page = r.text().await.unwrap();
        assert!(page.contains(&format!("id=\"app-{DEMO_APPID}\"")), "{page}");
        assert!(!page.contains(APP_B), "only the apps the key may see");
        assert!(page.contains("data-state=\"finished\""), "{page}");
        assert!(page.contains("Recent refusals") && page.contains("401 no valid key"), "{page}");
        assert!(!page.contains("<script") && !page.contains("<form"), "{page}");
        for secret in [KEY_S, KEY_A, subscribe_sandbox::DEMO_SECRET] {
            assert!(!page.contains(secret));
        }
    }

    // Basic credentials open the page only: an API route refuses them, so a browser that holds
    // them cannot be made to call it from another site.
    let token = format!("http://{}/v1/apps/{DEMO_APPID}/dispatches", gw.addr);
    let r = http.get(&token).header("authorization", basic(KEY_S)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    drop(gw.stop);
}
