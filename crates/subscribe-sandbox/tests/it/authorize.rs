use subscribe_sandbox::{DEMO_APPID, DEMO_TEMPLATE, SandboxConfig};
use subscribe_types::{AppId, AuthorizationAnswer, AuthorizeRequest, HttpUrl, Reserved, Scene, TemplateId};

use crate::*;

fn request(redirect: &str) -> AuthorizeRequest {
    AuthorizeRequest::new(
        AppId::new(DEMO_APPID).unwrap(),
        TemplateId::new(DEMO_TEMPLATE).unwrap(),
        Scene::new(77).unwrap(),
        HttpUrl::new(redirect).unwrap(),
    )
    .with_reserved(Reserved::new("state123").unwrap())
}

fn query(url: &str) -> String {
    url.split_once('?').unwrap().1.split('#').next().unwrap().to_owned()
}

async fn decide(
    s: &subscribe_sandbox::SandboxHandle,
    http: &reqwest::Client,
    q: &str,
    decision: &str,
) -> reqwest::Response {
    let form = format!(
        "q={}&openid={ALICE}&decision={decision}",
        q.replace('%', "%25").replace('&', "%26").replace('=', "%3D")
    );
    http.post(format!("{}/mp/subscribemsg/decide", s.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_page_shows_app_template_scene_and_users() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let url = request("https://app.example.com/cb").url_with_base(&s.base_url());
    let r = http.get(url.split('#').next().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    for needle in
        ["Sandbox Shop", "到货提醒", DEMO_TEMPLATE, ">77<", "Alice", "Bob", "id=\"confirm\"", "id=\"cancel\""]
    {
        assert!(html.contains(needle), "page lacks {needle}");
    }
}

/// The page reads the request's query as every other reader of it does: a `?` inside it is a
/// character of a value, not the start of another request.
#[tokio::test]
async fn a_question_mark_in_the_query_starts_no_other_request() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let url = request("https://app.example.com/cb").url_with_base(&s.base_url());
    let smuggled = format!("{}&x=?scene=78", url.split('#').next().unwrap());
    let r = http.get(smuggled).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(">77<") && !html.contains(">78<"), "{html}");
}

#[tokio::test]
async fn invalid_parameters_give_an_error_page_not_a_redirect() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let good = request("https://app.example.com/cb").url_with_base(&s.base_url());
    for bad in [
        good.replace("scene=77", "scene=10001"),
        good.replace("action=get_confirm", "action=other"),
        good.replace(DEMO_APPID, "wxunknownapp"),
        good.replace(DEMO_TEMPLATE, "NotThisAppsTemplate"),
        good.replace("redirect_url=https%3A%2F%2Fapp.example.com%2Fcb", "redirect_url=javascript%3Aalert(1)"),
        good.replace("reserved=state123", "reserved=bad-state"),
    ] {
        let r = http.get(bad.split('#').next().unwrap()).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.headers().get("location").is_none());
        assert!(r.text().await.unwrap().contains("id=\"error\""));
    }
}

#[tokio::test]
async fn confirm_redirects_with_the_answer_and_records_one_grant() {
    let (s, http) = start(SandboxConfig::demo()).await;
    for (redirect, expected_prefix) in [
        ("https://app.example.com/cb", "https://app.example.com/cb?openid="),
        ("https://app.example.com/cb?x=1", "https://app.example.com/cb?x=1&openid="),
        ("https://app.example.com/cb?x=1#top", "https://app.example.com/cb?x=1&openid="),
    ] {
        let q = query(&request(redirect).url_with_base(&s.base_url()));
        let r = decide(&s, &http, &q, "confirm").await;
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(loc.starts_with(expected_prefix), "{loc}");
        if redirect.contains('#') {
            assert!(loc.ends_with("#top"), "the fragment stays last: {loc}");
        }
        let answer = AuthorizationAnswer::parse(&loc).unwrap();
        assert_eq!(answer.openid().unwrap().as_str(), ALICE);
        assert_eq!(answer.scene().get(), 77);
        assert_eq!(answer.reserved().as_str(), "state123");
    }
    assert_eq!(s.state().stats().grants_recorded, 1, "three confirmations of one key make one grant");
    assert_eq!(s.state().unused_grants(), 1);
}

#[tokio::test]
async fn cancel_redirects_without_openid_and_records_nothing() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let q = query(&request("https://app.example.com/cb").url_with_base(&s.base_url()));
    let r = decide(&s, &http, &q, "cancel").await;
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(!loc.contains("openid="), "{loc}");
    let answer = AuthorizationAnswer::parse(&loc).unwrap();
    assert_eq!(answer.action(), subscribe_types::Action::Cancel);
    assert_eq!(s.state().unused_grants(), 0);
}

#[tokio::test]
async fn a_redirect_url_off_the_apps_business_domains_gets_an_error_page_and_no_grant() {
    let (s, http) = start(SandboxConfig::demo()).await;
    for foreign in [
        "https://evil.example/cb",
        "https://evilapp.example.com/cb", // ends like app.example.com, but is not a subdomain of it
        "https://app.example.com.evil.example/cb",
        "https://attacker@evil.example/cb",
    ] {
        let url = request(foreign).url_with_base(&s.base_url());
        let r = http.get(url.split('#').next().unwrap()).send().await.unwrap();
        assert_eq!(r.status(), 400, "{foreign}");
        let page = r.text().await.unwrap();
        assert!(page.contains("id=\"error\"") && page.contains("business domain"), "{foreign}: {page}");
        let r = decide(&s, &http, &query(&url), "confirm").await;
        assert_eq!(r.status(), 400, "{foreign}: the decision is refused too");
        assert!(r.headers().get("location").is_none(), "{foreign}: never a redirect");
    }
    assert_eq!(s.state().stats().grants_recorded, 0);
    // The domain itself and its subdomains are fine.
    for ok in ["https://app.example.com/cb", "https://m.app.example.com/cb", "http://127.0.0.1:8080/cb"] {
        let r = decide(&s, &http, &query(&request(ok).url_with_base(&s.base_url())), "confirm").await;
        assert_eq!(r.status(), 302, "{ok}");
    }
}

#[tokio::test]
async fn an_app_without_business_domains_allows_any_redirect() {
    let mut config = SandboxConfig::demo();
    config.apps[0].redirect_domains.clear();
    let (s, http) = start(config).await;
    let r = decide(
        &s,
        &http,
        &query(&request("https://anywhere.example/cb").url_with_base(&s.base_url())),
        "confirm",
    )
    .await;
    assert_eq!(r.status(), 302);
}

#[test]
fn business_domains_match_the_domain_and_its_subdomains_only() {
    let app = &SandboxConfig::demo().apps[0];
    for ok in ["app.example.com", "APP.example.COM", "m.app.example.com", "127.0.0.1", "::1", "localhost"] {
        assert!(app.allows_redirect_host(ok), "{ok}");
    }
    for bad in
        ["evilapp.example.com", "example.com", "app.example.com.evil", "", "ä.évil", "éapp.example.com"]
    {
        assert!(!app.allows_redirect_host(bad), "{bad}");
    }
}
