//! The admin as an attacker meets it (no credential, a forged cookie, a cross-site form) and as
//! an operator relies on it (a dispatch that outlives its request, a health check that cannot
//! stall the ledger).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use subscribe_client::{
    GrantCounts, GrantKey, GrantRecord, GrantScope, InMemoryGrantLedger, LedgerError, Recorded, Reservation,
    Settlement,
};
use subscribe_sandbox::Faults;
use subscribe_types::{AppId, OpenId, Scene, TemplateId};

use super::*;

#[tokio::test]
async fn without_the_credential_the_admin_shows_a_login_and_changes_nothing() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);

    // No credential: the login form, no counts, no dispatch.
    let (status, page) = w.get(&w.url("/admin"), None).await;
    assert_eq!(status, 401);
    assert!(page.contains(r#"id="login""#) && !page.contains(r#"id="pending""#), "{page}");
    for cookies in [None, Some(alice.as_str())] {
        let mut r =
            w.http.post(w.url("/admin/dispatch")).form(&[("title", "到货提醒"), ("content", "到货了")]);
        if let Some(c) = cookies {
            r = r.header(COOKIE, c);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "{cookies:?}");
        assert!(set_cookie(&r, "sid").is_none(), "a refused post never hands out a session");
    }
    // A wrong credential, with a valid CSRF token.
    let r = w.http.get(w.url("/admin")).send().await.unwrap();
    let sid = set_cookie(&r, "sid").unwrap().split(';').next().unwrap().to_owned();
    let csrf = field(&r.text().await.unwrap(), "csrf");
    let r = w.login(Some(&sid), "test-admin-token-0123456789abcdef0124", &csrf).await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "wa_admin").is_none());
    // A forged admin cookie, and a genuine one replayed with another session.
    let (cookies, _) = w.admin_login().await;
    let genuine = cookies.split("; ").nth(1).unwrap().to_owned();
    let expiry = genuine.trim_start_matches("wa_admin=").split('.').next().unwrap().to_owned();
    for forged in [
        format!("{sid}; wa_admin=99999999999.{}", "ab".repeat(32)),
        format!("{sid}; wa_admin={expiry}.{}", "00".repeat(32)),
        format!("{sid}; {genuine}"), // Alice's session id with the admin's cookie
        format!("{sid}; wa_admin=garbage"),
    ] {
        assert_eq!(w.get(&w.url("/admin"), Some(&forged)).await.0, 401, "{forged}");
    }
    assert_eq!(w.sandbox.state().stats().send_requests, 0, "nothing was sent");
    assert_eq!(w.health().await["grants"]["pending"], 1, "nobody's grant was touched");
}

#[tokio::test]
async fn a_form_without_its_sessions_csrf_token_is_refused() {
    let w = start().await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    let (cookies, csrf) = w.admin_login().await;
    let (_, other_csrf) = w.admin_login().await; // another signed-in browser's token
    let form = |csrf: &'static str| [("title", "到货提醒"), ("content", "到货了"), ("csrf", csrf)];
    // A cross-site page can make the browser post with its cookies, but cannot read the token.
    for bad in ["", "00", "not-hex", Box::leak(other_csrf.into_boxed_str())] {
        let r = w.post_dispatch(&cookies, &form(bad)).await;
        assert_eq!(r.status(), 403, "csrf {bad:?}");
    }
    // Nor log in through a form it made up (login CSRF).
    let r = w.login(Some(cookies.split("; ").next().unwrap()), ADMIN_TOKEN, "").await;
    assert_eq!(r.status(), 403);
    assert_eq!(w.sandbox.state().stats().send_requests, 0);
    assert_eq!(w.health().await["grants"]["pending"], 1);
    // With its token the same form works; signing out ends the admin session.
    let r = w.post_dispatch(&cookies, &form(Box::leak(csrf.clone().into_boxed_str()))).await;
    assert_eq!(r.status(), 303);
    let r = w
        .http
        .post(w.url("/admin/logout"))
        .header(COOKIE, &cookies)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(set_cookie(&r, "wa_admin").unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn cookies_are_http_only_same_site_and_secure_behind_https() {
    let w = start().await;
    let r = w.http.get(w.url("/admin")).send().await.unwrap();
    let sid = set_cookie(&r, "sid").unwrap();
    assert!(sid.contains("HttpOnly") && sid.contains("SameSite=Lax") && !sid.contains("Secure"), "{sid}");
    let csrf = field(&r.text().await.unwrap(), "csrf");
    let r = w.login(Some(sid.split(';').next().unwrap()), ADMIN_TOKEN, &csrf).await;
    let admin = set_cookie(&r, "wa_admin").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(admin.contains(attribute), "{attribute}: {admin}");
    }

    let w = start_with(&[("WEBAPP_PUBLIC_URL", "https://shop.example.com")]).await;
    let r = w.http.get(w.url("/subscribe")).send().await.unwrap();
    assert!(set_cookie(&r, "sid").unwrap().contains("; Secure"));
    let r = w.http.get(w.url("/admin")).send().await.unwrap();
    let sid = set_cookie(&r, "sid").unwrap();
    assert!(sid.contains("; Secure"), "{sid}");
    let csrf = field(&r.text().await.unwrap(), "csrf");
    let r = w.login(Some(sid.split(';').next().unwrap()), ADMIN_TOKEN, &csrf).await;
    assert!(set_cookie(&r, "wa_admin").unwrap().contains("; Secure"));
}

#[tokio::test]
async fn without_an_admin_token_the_admin_is_off() {
    let w = start_with(&[("WEBAPP_ADMIN_TOKEN", "")]).await;
    let (status, page) = w.get(&w.url("/admin"), None).await;
    assert_eq!(status, 403);
    assert!(page.contains("WEBAPP_ADMIN_TOKEN"), "{page}");
    let r = w.login(None, ADMIN_TOKEN, "").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        w.http.post(w.url("/admin/dispatch")).form(&[("title", "t")]).send().await.unwrap().status(),
        403
    );
}

/// Records a grant for each of the first `n` generated users, in the app's ledger and at the
/// sandbox.
async fn grants(w: &World, n: usize) {
    let (appid, template) =
        (AppId::new(web_app::SANDBOX_APPID).unwrap(), TemplateId::new(web_app::SANDBOX_TEMPLATE).unwrap());
    for i in 0..n {
        let openid = OpenId::new(format!("oUser{i:010}")).unwrap();
        let scene = Scene::new(1).unwrap();
        w.sandbox.state().add_grant(&appid, &openid, &template, scene);
        let key = GrantKey { appid: appid.clone(), openid, template_id: template.clone(), scene };
        assert_eq!(
            w.state.ledger().record(&key, w.state.client().clock().now()).await.unwrap(),
            Recorded::Added
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_is_a_job_that_outlives_its_request_and_a_closed_tab() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = start_full(
        SandboxConfig::demo().with_generated_users(20),
        &[("WEBAPP_DISPATCH_CONCURRENCY", "2")],
        None,
    )
    .await;
    grants(&w, 20).await;
    w.sandbox.state().set_faults(Faults { latency_ms: Some(100), ..Faults::default() });
    let (cookies, csrf) = w.admin_login().await;

    // The tab posts the form, gets the answer at once (twenty sends at 100 ms, two at a
    // time, take a second at least), and is closed before the dispatch could finish.
    let body = format!("title=%E5%88%B0%E8%B4%A7&content=back&csrf={csrf}");
    let mut tab = tokio::net::TcpStream::connect(w.app).await.unwrap();
    let request = format!(
        "POST /admin/dispatch HTTP/1.1\r\nHost: {}\r\nCookie: {cookies}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        w.app,
        body.len()
    );
    tab.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(500), tab.read(&mut head))
        .await
        .expect("the dispatch form is answered before the dispatch ends")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..read]).into_owned();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    drop(tab);
    assert!(w.sandbox.state().stats().deliveries < 20, "the dispatch was still running when the tab closed");

    // Another admin tab finds the job running; a second dispatch meanwhile is refused.
    let (cookies, csrf) = w.admin_login().await;
    let (_, admin) = w.get(&w.url("/admin"), Some(&cookies)).await;
    let job = admin.split("href=\"/admin/jobs/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = [("title", "到货"), ("content", "back"), ("csrf", csrf.as_str())];
    let r = w.post_dispatch(&cookies, &form).await;
    assert_eq!(r.status(), 409, "one dispatch at a time: {}", r.text().await.unwrap());
    let (_, running) = w.get(&w.url(&format!("/admin/jobs/{job}")), Some(&cookies)).await;
    assert!(running.contains(r#"data-state="running""#), "{running}");
    assert!(running.contains(r#"http-equiv="refresh""#), "the page follows the job");

    let (status, report) = w.finished(&w.url(&format!("/admin/jobs/{job}")), &cookies).await;
    assert_eq!(status, 200);
    assert_eq!((cell(&report, "sent"), cell(&report, "delivered"), cell(&report, "unknown")), (20, 20, 0));
    assert_eq!(w.sandbox.state().stats().deliveries, 20);
    let health = w.health().await;
    assert_eq!(
        (health["grants"]["delivered"].as_u64(), health["grants"]["reserved"].as_u64()),
        (Some(20), Some(0))
    );
    // Finished: the next one may start (and finds nobody waiting).
    let (_, report) = w.dispatch("到货", "again").await;
    assert_eq!(cell(&report, "sent"), 0);
}

#[tokio::test]
async fn a_job_page_needs_the_admin_and_an_unknown_job_is_404() {
    let w = start().await;
    let (cookies, _) = w.admin_login().await;
    assert_eq!(w.get(&w.url("/admin/jobs/1"), None).await.0, 401);
    assert_eq!(w.get(&w.url("/admin/jobs/1"), Some(&cookies)).await.0, 404);
}

/// A ledger that counts how often it is asked for counts, and can hang them.
#[derive(Debug, Default)]
struct CountingLedger {
    inner: InMemoryGrantLedger,
    counts: AtomicUsize,
    hang: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl GrantLedger for CountingLedger {
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError> {
        self.inner.record(key, now).await
    }
    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        self.inner.pending_page(scope, after, limit, now).await
    }
    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        self.inner.reserve(key, holder, lease, now).await
    }
    async fn settle(&self, reservation: &Reservation, settlement: Settlement) -> Result<(), LedgerError> {
        self.inner.settle(reservation, settlement).await
    }
    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        self.inner.get(key).await
    }
    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError> {
        self.counts.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        // A count that takes a while, as a scan of a big scope does.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inner.counts(scope, now).await
    }
    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<subscribe_client::ReviewItem>, LedgerError> {
        self.inner.reviews(scope, after, limit).await
    }
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: subscribe_client::Resolution,
        note: &str,
        now: SystemTime,
    ) -> Result<bool, LedgerError> {
        self.inner.resolve(key, resolution, note, now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammering_health_counts_the_ledger_once_a_second_and_a_hanging_ledger_is_503() {
    let ledger = Arc::new(CountingLedger::default());
    let w = start_full(SandboxConfig::demo(), &[], Some(Arc::clone(&ledger) as Arc<dyn GrantLedger>)).await;
    let (alice, callback) = w.authorize(None, ALICE, "confirm").await;
    assert_eq!(w.get(&callback, Some(&alice)).await.0, 200);
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..300)
        .map(|_| {
            let (http, url) = (w.http.clone(), w.url("/health"));
            tokio::spawn(async move {
                serde_json::from_str::<serde_json::Value>(
                    &http.get(url).send().await.unwrap().text().await.unwrap(),
                )
                .unwrap()
            })
        })
        .collect();
    for r in requests {
        let health = r.await.unwrap();
        assert_eq!(health["grants"]["pending"], 1, "{health}");
    }
    let seconds = usize::try_from(started.elapsed().as_secs()).unwrap();
    let counted = ledger.counts.load(Ordering::SeqCst);
    assert!(counted <= seconds + 1, "300 health checks in {seconds} s counted the ledger {counted} times");

    // A ledger that never answers: health says so within its timeout instead of hanging.
    ledger.hang.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await; // the cached counts expire
    let started = std::time::Instant::now();
    let r = w.http.get(w.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_a_running_dispatch_cleanly() {
    let sandbox = SandboxHandle::start(SandboxConfig::demo().with_generated_users(20)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        ("WEBAPP_LISTEN", app.to_string()),
        ("WEBAPP_PUBLIC_URL", format!("http://{app}")),
        ("WECHAT_API_BASE", sandbox.base_url()),
        ("WEBAPP_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("WEBAPP_DISPATCH_CONCURRENCY", "2".to_owned()),
    ]);
    let state = AppState::new(Config::from_lookup(|k| env.get(k).cloned()).unwrap()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(web_app::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let w = World { sandbox, app, http, state };
    grants(&w, 20).await;
    w.sandbox.state().set_faults(Faults { latency_ms: Some(100), ..Faults::default() });
    let (cookies, csrf) = w.admin_login().await;
    let r =
        w.post_dispatch(&cookies, &[("title", "到货"), ("content", "back"), ("csrf", csrf.as_str())]).await;
    assert_eq!(r.status(), 303);
    // Some sends are done, most are not, when the service is told to stop.
    while w.sandbox.state().stats().deliveries < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server).await.expect("the service stops").unwrap().unwrap();

    // Every grant is delivered (and settled so) or waiting again; none is left reserved or in
    // review, and the sandbox agrees with the ledger.
    let scope = GrantScope {
        appid: AppId::new(web_app::SANDBOX_APPID).unwrap(),
        template_id: TemplateId::new(web_app::SANDBOX_TEMPLATE).unwrap(),
        scene: Scene::new(1).unwrap(),
    };
    let c = w.state.ledger().counts(&scope, w.state.client().clock().now()).await.unwrap();
    assert_eq!((c.reserved, c.review), (0, 0), "{c:?}");
    assert_eq!(c.delivered + c.pending, 20, "{c:?}");
    assert!(c.pending > 0, "the dispatch was stopped early: {c:?}");
    assert_eq!(c.delivered, w.sandbox.state().stats().deliveries, "{c:?}");
}
