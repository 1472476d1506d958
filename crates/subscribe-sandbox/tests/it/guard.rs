//! What a web page in the developer's browser could do to a sandbox on 127.0.0.1: submit a
//! cross-site form to the control API or to the pages' own forms, or reach it through a DNS
//! name it controls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use subscribe_sandbox::{
    DEMO_APPID, DEMO_MP_TEMPLATE, DEMO_TEMPLATE, Faults, ManualClock, PushSettings, SandboxConfig,
    SandboxHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

#[tokio::test]
async fn the_control_api_takes_only_json_so_a_cross_site_form_changes_nothing() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    s.state().set_faults(Faults { busy_every: Some(3), ..Faults::default() });
    grant(&s, 1);
    // What an HTML form can send without a preflight: urlencoded, multipart, text/plain.
    for content_type in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"]
    {
        for (path, body) in [
            ("/sandbox/api/reset", ""),
            ("/sandbox/api/faults", r#"{"busy_every":1}"#),
            ("/sandbox/api/tokens/revoke", "{}"),
            ("/sandbox/api/tokens/expire", ""),
            ("/sandbox/api/grants", "{}"),
        ] {
            let r = http
                .post(format!("{base}{path}"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 415, "{content_type} {path}");
        }
    }
    let r = http.post(format!("{base}/sandbox/api/reset")).send().await.unwrap();
    assert_eq!(r.status(), 415, "no content type at all");
    assert_eq!(s.state().faults().busy_every, Some(3), "nothing was changed");
    assert_eq!(s.state().unused_grants(), 1, "nothing was reset");
    // A JSON request (which a cross-site page cannot send without CORS, which the sandbox
    // never grants) works.
    let r = http
        .post(format!("{base}/sandbox/api/reset"))
        .header("content-type", "application/json; charset=utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.state().unused_grants(), 0);
}

/// The three forms the sandbox's pages post (the authorization page's, the popup's, the
/// phone's), each deciding for Alice, as `(path, body)`; `n` makes each confirmation a grant
/// of its own (its scene).
fn forms(s: &SandboxHandle, n: u32) -> [(&'static str, String); 3] {
    let form =
        |pairs: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let authorize = subscribe_types::AuthorizeRequest::new(
        SandboxConfig::demo_appid(),
        SandboxConfig::demo_template(),
        Scene::new(100 + n).unwrap(),
        subscribe_types::HttpUrl::new("https://app.example.com/cb").unwrap(),
    )
    .url_with_base(&s.base_url());
    // The query a browser sends (and the page's form carries back): no `#wechat_redirect`.
    let q = authorize.split('#').next().unwrap().split_once('?').unwrap().1;
    let phone = serde_json::json!({"scene": 200 + n, "templateId": DEMO_TEMPLATE, "reserved": "appState42"});
    [
        ("/mp/subscribemsg/decide", form(&[("q", q), ("openid", ALICE), ("decision", "confirm")])),
        (
            "/sandbox/popup/decide",
            form(&[
                ("appid", DEMO_APPID),
                ("template_id", DEMO_MP_TEMPLATE),
                ("openid", ALICE),
                ("decision", "accept"),
            ]),
        ),
        (
            "/sandbox/phone/decide",
            form(&[
                ("appid", DEMO_APPID),
                ("request", &phone.to_string()),
                ("openid", ALICE),
                ("decision", "confirm"),
            ]),
        ),
    ]
}

/// Posts `body` as an HTML form to `path` with `headers` (what a browser adds).
async fn post_form(
    s: &SandboxHandle,
    http: &reqwest::Client,
    path: &str,
    body: String,
    headers: &[(&str, String)],
) -> reqwest::Response {
    let mut r = http
        .post(format!("{}{path}", s.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    for (name, value) in headers {
        r = r.header(*name, value);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_cross_site_post_to_a_pages_form_is_refused_and_records_no_grant_and_no_push() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let base = s.base_url();
    let port = s.addr().port();
    // An app with a server URL: an answer on the popup would be pushed to it.
    s.state()
        .configure_push(&PushSettings {
            appid: DEMO_APPID.into(),
            url: "http://127.0.0.1:9/wechat/push".into(),
            token: "sandboxPushToken2026".into(),
            aes_key: None,
            mode: "plain".into(),
            format: "xml".into(),
        })
        .unwrap();
    // What a browser sends with a form a page of another origin submits.
    let cross_site: [&[(&str, String)]; 7] = [
        &[("sec-fetch-site", "cross-site".into()), ("origin", "http://evil.example".into())],
        // Another port of the same host is the same site, but another origin.
        &[("sec-fetch-site", "same-site".into()), ("origin", format!("http://127.0.0.1:{}", port ^ 1))],
        // Fetch Metadata decides when present: an Origin naming the sandbox does not outvote it.
        &[("sec-fetch-site", "cross-site".into()), ("origin", base.clone())],
        // Without Fetch Metadata (plain http on a DNS name, older browsers): the Origin.
        &[("origin", "http://evil.example".into())],
        &[("origin", "null".into())],
        &[("origin", format!("http://localhost:{port}"))], // another site to the browser
        &[("origin", format!("http://127.0.0.1:{}", port ^ 1))],
    ];
    for headers in cross_site {
        for (path, form) in forms(&s, 0) {
            let r = post_form(&s, &http, path, form, headers).await;
            assert_eq!(r.status(), 403, "{path} {headers:?}");
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
            let page = r.text().await.unwrap();
            assert!(page.contains("cross-site request refused"), "{path}: {page}");
        }
    }
    assert_eq!(s.state().unused_grants(), 0, "no grant from the authorization page or the phone");
    assert_eq!(s.state().stats().grants_recorded, 0);
    assert_eq!(s.state().unused_acceptances(), 0, "no acceptance from the popup");
    assert!(s.state().pushes().is_empty(), "no push: {:?}", s.state().pushes());
    assert!(s.state().log().iter().all(|e| !e.uri.contains("decide")), "no decision reached a handler");

    // The sandbox's own pages post same-origin; curl and tests send neither header.
    let same_origin: [&[(&str, String)]; 3] = [
        &[("sec-fetch-site", "same-origin".into()), ("origin", base.clone())],
        &[("origin", base.clone())],
        &[],
    ];
    for (n, headers) in (0..).zip(same_origin) {
        let [(path, form), popup, phone] = forms(&s, n);
        let r = post_form(&s, &http, path, form, headers).await;
        assert_eq!(r.status(), 302, "{path} {headers:?}");
        assert!(r.headers()["location"].to_str().unwrap().contains("action=confirm"), "{path}");
        let r = post_form(&s, &http, popup.0, popup.1, headers).await;
        assert_eq!(r.status(), 200, "{} {headers:?}", popup.0);
        let r = post_form(&s, &http, phone.0, phone.1, headers).await;
        assert_eq!(r.status(), 200, "{} {headers:?}", phone.0);
        assert_eq!(body(r).await["openId"], ALICE);
    }
    assert_eq!(s.state().unused_grants(), 6, "three from the page, three from the phone");
    assert_eq!(s.state().unused_acceptances(), 3);
    assert_eq!(s.state().pushes().len(), 3, "each acceptance pushed");
}

#[tokio::test]
async fn a_cross_site_post_to_the_control_api_or_the_token_endpoint_is_refused_too() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let grant =
        serde_json::json!({"appid": DEMO_APPID, "openid": ALICE, "template_id": DEMO_TEMPLATE, "scene": 1});
    let token = serde_json::json!({"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET, "force_refresh": true});
    for (path, json) in [("/sandbox/api/grants", grant), ("/cgi-bin/stable_token", token)] {
        let r = http
            .post(format!("{}{path}", s.base_url()))
            .header("content-type", "application/json")
            .header("sec-fetch-site", "cross-site")
            .body(json.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains("cross-site request refused"), "{path}");
    }
    let stats = s.state().stats();
    assert_eq!((stats.grants_recorded, stats.tokens_issued, stats.stable_token_requests), (0, 0, 0));
}

/// A page's `<img src=…/cgi-bin/token?…>` is a cross-site GET: the APIs refuse it (it would issue
/// a token, ending the last after its grace and spending the day's quota), as they refuse a
/// cross-site POST; the pages themselves may still be opened from another site, and a GET
/// without a browser's headers (a tool) still works.
#[tokio::test]
async fn a_cross_site_get_to_an_api_is_refused_and_issues_nothing() {
    let (s, http) = start(SandboxConfig::demo()).await;
    let token =
        format!("/cgi-bin/token?grant_type=client_credential&appid={DEMO_APPID}&secret={DEMO_SECRET}");
    for (site, origin) in [("cross-site", None), ("same-site", None), ("", Some("http://evil.example"))] {
        let mut r = http.get(format!("{}{token}", s.base_url()));
        if !site.is_empty() {
            r = r.header("sec-fetch-site", site);
        }
        if let Some(origin) = origin {
            r = r.header("origin", origin);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 403, "{site} {origin:?}");
        let r = http.get(format!("{}/sandbox/api/state", s.base_url())).header("sec-fetch-site", site).send();
        if !site.is_empty() {
            assert_eq!(r.await.unwrap().status(), 403, "the control API: {site}");
        }
    }
    assert_eq!(s.state().stats().tokens_issued, 0, "nothing issued");
    // A page of the sandbox's, opened from another site, still opens.
    let page = http
        .get(format!("{}/sandbox", s.base_url()))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // A tool's GET (no browser headers) still gets its token.
    let r = http.get(format!("{}{token}", s.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.state().stats().tokens_issued, 1);
}

/// Sends one raw request with `host` as its Host header and returns the status code.
async fn status_with_host(addr: SocketAddr, host: &str) -> u16 {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /sandbox/api/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_foreign_host_header_is_refused_against_dns_rebinding() {
    let config = SandboxConfig { allowed_hosts: vec!["sandbox".into()], ..SandboxConfig::demo() };
    let (s, _) = start(config).await;
    let addr = s.addr();
    for foreign in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "sandbox.evil",
    ] {
        assert_eq!(status_with_host(addr, foreign).await, 421, "{foreign}");
    }
    for ok in [
        "127.0.0.1",
        &addr.to_string(),
        "localhost",
        "LOCALHOST:8080",
        "[::1]:1234",
        "sandbox",
        "sandbox:7000",
    ] {
        assert_eq!(status_with_host(addr, ok).await, 200, "{ok}");
    }
    // A refused request changes nothing and the server keeps serving.
    assert_eq!(s.state().stats().deliveries, 0);
    assert_eq!(status_with_host(addr, "127.0.0.1").await, 200);
}

#[tokio::test]
async fn dead_tokens_are_forgotten_a_lifetime_after_they_stop_working() {
    let clock = ManualClock::new();
    let s = SandboxHandle::start_with_clock(
        SandboxConfig::demo(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let old = classic_token(&s, &http).await;
    s.state().expire_tokens();
    grant(&s, 3);
    assert_eq!(send(&s, &http, &old, message(3)).await["errcode"], 42001, "just expired: 42001");
    clock.advance(Duration::from_secs(3600));
    let _ = classic_token(&s, &http).await;
    assert_eq!(send(&s, &http, &old, message(3)).await["errcode"], 42001, "within a lifetime: still known");
    clock.advance(Duration::from_secs(7200));
    let new = classic_token(&s, &http).await; // issuing prunes
    assert_eq!(send(&s, &http, &old, message(3)).await["errcode"], 40014, "forgotten: an unknown token");
    assert_eq!(send(&s, &http, &new, message(3)).await["errcode"], 0, "the live one works");
}
