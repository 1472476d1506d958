//! `wxsub grants review list|resolve` on every backend `--database` opens: SQLite, PostgreSQL
//! and Redis, the same commands and the same output.

use subscribe_sandbox::{DEMO_TEMPLATE, Faults, SandboxConfig, SandboxHandle};
use subscribe_types::{OpenId, Scene};

use crate::{Run, wxsub};

fn user(i: usize) -> String {
    format!("oUser{i:010}")
}

/// A scene no earlier run left grants in (a database outlives the test): the first, from a
/// start of this run's own, whose counts are all zero.
async fn fresh_scene(s: &SandboxHandle, head: &[&str]) -> String {
    let start = std::process::id() % 9_000;
    for scene in start..start + 50 {
        let scene = scene.to_string();
        let c = run(s, head, &["counts", "--template-id", DEMO_TEMPLATE, "--scene", &scene]).await;
        assert_eq!(c.code, 0, "{c:?}");
        if ["pending", "reserved", "delivered", "review", "dropped"].iter().all(|k| c.json()[k] == 0) {
            return scene;
        }
    }
    panic!("no empty scene");
}

async fn run(s: &SandboxHandle, head: &[&str], args: &[&str]) -> Run {
    wxsub(s, &[head, args].concat(), None).await
}

fn lines(r: &Run) -> Vec<serde_json::Value> {
    r.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {r:?}"))).collect()
}

/// Four grants whose sends arrive and whose answers are lost, set aside; listed and paged;
/// each decision applied; a second decision refused; the released grant sent by the next
/// dispatch.
async fn review_workflow(head: &[&str]) {
    let s = SandboxHandle::start(SandboxConfig::demo().with_generated_users(4)).await.unwrap();
    let scene = fresh_scene(&s, head).await;
    let which = ["--template-id", DEMO_TEMPLATE, "--scene", scene.as_str()];
    let grant = |i: usize| {
        s.state().add_grant(
            &SandboxConfig::demo_appid(),
            &OpenId::new(user(i)).unwrap(),
            &SandboxConfig::demo_template(),
            Scene::new(scene.parse().unwrap()).unwrap(),
        )
    };
    for i in 0..4 {
        assert!(grant(i));
        let cb = format!(
            "https://a.example/cb?openid={}&template_id={DEMO_TEMPLATE}&action=confirm&scene={scene}&reserved=r{i}",
            user(i)
        );
        let recorded = run(&s, head, &["record", "--unverified", &cb]).await;
        assert_eq!(recorded.json()["status"], "added", "{recorded:?}");
    }
    let message = ["--title", "到货提醒", "--content", "到货了"];

    // Every send arrives and its answer is lost: unknown outcomes, set aside for review.
    s.state().set_faults(Faults { delivered_drop_every: Some(1), ..Faults::default() });
    let sent = run(&s, head, &[&["dispatch"][..], &which, &message].concat()).await;
    assert_eq!(sent.code, 1, "{sent:?}");
    assert!(lines(&sent).iter().all(|l| l["status"] == "unknown"), "{sent:?}");
    s.state().set_faults(Faults::default());
    let counts = run(&s, head, &[&["counts"][..], &which].concat()).await;
    assert_eq!((counts.json()["review"].as_u64(), counts.json()["pending"].as_u64()), (Some(4), Some(0)));

    // Listed with reason, attempts and since when; paged.
    let page = run(&s, head, &[&["review", "list"][..], &which, &["--limit", "2"]].concat()).await;
    assert_eq!(page.code, 0, "{page:?}");
    let page = lines(&page);
    assert_eq!(page.iter().map(|l| l["openid"].clone()).collect::<Vec<_>>(), [user(0), user(1)]);
    for item in &page {
        assert_eq!(item["attempts"], 1, "{item}");
        assert!(item["reason"].as_str().is_some_and(|r| !r.is_empty()), "{item}");
        assert!(item["since_ms"].as_u64().is_some_and(|ms| ms > 1_700_000_000_000), "{item}");
    }
    let rest =
        run(&s, head, &[&["list", "--state", "review", "--after"][..], &[&user(1)], &which].concat()).await;
    assert_eq!(lines(&rest).iter().map(|l| l["openid"].clone()).collect::<Vec<_>>(), [user(2), user(3)]);

    // Each decision applied; a second one refused.
    let resolve = |i: usize, decision: &'static str| {
        let to = user(i);
        let args: Vec<String> = ["review", "resolve"]
            .iter()
            .chain(&which)
            .map(|a| (*a).to_owned())
            .chain([
                "--to".into(),
                to,
                "--decision".into(),
                decision.into(),
                "--note".into(),
                "ops: li".into(),
            ])
            .collect();
        let s = &s;
        async move { run(s, head, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    for (i, decision) in [(0, "delivered"), (1, "release"), (2, "drop")] {
        let r = resolve(i, decision).await;
        assert_eq!(
            (r.code, r.json()["status"].as_str(), r.json()["openid"].as_str()),
            (0, Some("resolved"), Some(user(i).as_str())),
            "{r:?}"
        );
    }
    let twice = resolve(0, "release").await;
    assert_eq!(twice.code, 2, "{twice:?}");
    assert!(twice.stderr.contains("has no grant under review"), "{twice:?}");
    let counts = run(&s, head, &[&["counts"][..], &which].concat()).await.json();
    assert_eq!(
        [&counts["pending"], &counts["delivered"], &counts["review"], &counts["dropped"]],
        [1, 1, 1, 1],
        "{counts}"
    );
    let left = run(&s, head, &[&["review", "list"][..], &which].concat()).await;
    assert_eq!(lines(&left).iter().map(|l| l["openid"].clone()).collect::<Vec<_>>(), [user(3)]);

    // The released grant is sent by the next dispatch; nothing else is.
    assert!(grant(1), "the user confirms again at WeChat (the first send used the old one)");
    let again = run(&s, head, &[&["dispatch"][..], &which, &message].concat()).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(lines(&again).iter().map(|l| l["touser"].clone()).collect::<Vec<_>>(), [user(1)]);
    assert_eq!(s.state().inbox(&user(1)).len(), 2, "sent again after the release");
    let counts = run(&s, head, &[&["counts"][..], &which].concat()).await.json();
    assert_eq!([&counts["pending"], &counts["delivered"]], [0, 2], "{counts}");
}

#[tokio::test]
async fn grants_review_on_sqlite() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-review-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}/grants.db", dir.display());
    review_workflow(&["grants", "--database", &db]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn grants_review_on_postgres() {
    let db =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    review_workflow(&["grants", "--database", &db]).await;
}

#[tokio::test]
async fn grants_review_on_redis() {
    let db = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Keys of this run's own.
    let prefix = format!("wxsub-cli-review-{}", std::process::id());
    review_workflow(&["grants", "--database", &db, "--redis-prefix", &prefix]).await;
    let migrate = wxsub(
        &SandboxHandle::start(SandboxConfig::demo()).await.unwrap(),
        &["grants", "--database", &db, "--redis-prefix", &prefix, "migrate"],
        None,
    )
    .await;
    assert_eq!(migrate.code, 2, "Redis has no schema: {migrate:?}");
}
