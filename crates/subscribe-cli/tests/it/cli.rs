use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};
use subscribe_types::Scene;
use tokio::io::AsyncBufReadExt;

use crate::*;

fn assert_no_secret(run: &Run, token: Option<&str>) {
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(DEMO_SECRET), "secret printed: {run:?}");
        if let Some(t) = token {
            assert!(!text.contains(t), "token printed: {run:?}");
        }
    }
}

#[tokio::test]
async fn auth_url_prints_the_url_alone_with_a_random_reserved() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let args = [
        "auth-url",
        "--template-id",
        DEMO_TEMPLATE,
        "--scene",
        "1000",
        "--redirect-url",
        "https://a.example/cb",
    ];
    let a = wxsub(&s, &args, None).await;
    let b = wxsub(&s, &args, None).await;
    assert_eq!(a.code, 0, "{a:?}");
    assert_eq!(a.stdout.lines().count(), 1);
    let url = a.stdout.trim();
    assert!(url.starts_with(&format!(
        "{}/mp/subscribemsg?action=get_confirm&appid={DEMO_APPID}&scene=1000",
        s.base_url()
    )));
    assert!(url.ends_with("#wechat_redirect"));
    assert_ne!(a.stdout, b.stdout, "reserved is random");
    let req = subscribe_types::AuthorizeRequest::from_query(url).unwrap();
    assert!(req.reserved.as_str().len() >= 16);

    let given = wxsub(&s, &[&args[..], &["--reserved", "abc123"]].concat(), None).await;
    assert!(given.stdout.contains("&reserved=abc123#wechat_redirect"));

    let bad = wxsub(
        &s,
        &["auth-url", "--template-id", DEMO_TEMPLATE, "--scene", "10001", "--redirect-url", "https://a/"],
        None,
    )
    .await;
    assert_eq!(bad.code, 2);
    assert!(bad.stdout.is_empty());
    assert_eq!(bad.stderr.lines().count(), 1, "{bad:?}");
    assert!(bad.stderr.contains("scene"));
}

#[tokio::test]
async fn callback_prints_one_json_object_and_checks_expectations() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let cb = format!(
        "https://a.example/cb?openid={ALICE}&template_id={DEMO_TEMPLATE}&action=confirm&scene=1000&reserved=r1"
    );
    let run = wxsub(
        &s,
        &[
            "callback",
            &cb,
            "--expect-template-id",
            DEMO_TEMPLATE,
            "--expect-scene",
            "1000",
            "--expect-reserved",
            "r1",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.json(),
        serde_json::json!({"action":"confirm","openid":ALICE,"template_id":DEMO_TEMPLATE,"scene":1000,"reserved":"r1"})
    );
    let cancel =
        wxsub(&s, &["callback", &format!("template_id={DEMO_TEMPLATE}&action=cancel&scene=3")], None).await;
    assert_eq!(
        cancel.json(),
        serde_json::json!({"action":"cancel","template_id":DEMO_TEMPLATE,"scene":3,"reserved":""})
    );
    let forged = wxsub(&s, &["callback", &cb, "--expect-reserved", "r2"], None).await;
    assert_eq!(forged.code, 2);
    assert!(forged.stderr.contains("reserved"), "{forged:?}");
    let broken = wxsub(&s, &["callback", "action=confirm"], None).await;
    assert_eq!(broken.code, 2);
}

#[tokio::test]
async fn a_ca_file_that_cannot_be_read_or_holds_no_certificate_is_a_clear_error() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("wxsub-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let missing = dir.join("missing.pem");
    let huge = "/dev/zero";
    for transport in ["hyper", "reqwest"] {
        let run =
            wxsub(&s, &["--transport", transport, "--ca-file", missing.to_str().unwrap(), "token"], None)
                .await;
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("--ca-file") && run.stderr.contains("cannot read"), "{run:?}");
        let run = wxsub(&s, &["--transport", transport, "--ca-file", huge, "token"], None).await;
        assert!(run.code != 0 && run.stderr.contains("more than 4 MiB"), "{run:?}");
        let run =
            wxsub(&s, &["--transport", transport, "--ca-file", junk.to_str().unwrap(), "token"], None).await;
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains(transport) && run.stderr.contains("no PEM certificate"), "{run:?}");
    }
    // A real authority's file is taken, and the system's roots still reach the sandbox (plain
    // HTTP here; TLS is the latency benchmark's `tls` rows).
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, subscribe_client::transport::test_util::TestAuthority::new().ca_pem()).unwrap();
    let run = wxsub(&s, &["--ca-file", ca.to_str().unwrap(), "token"], None).await;
    assert_eq!(run.code, 0, "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTPS WeChat that answers every request with a token, its certificate from `ca`.
async fn tls_token_server(ca: &subscribe_client::transport::test_util::TestAuthority) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                // One request per connection: read its head and its small body, answer, close.
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = 0;
                loop {
                    let Ok(n) = tls.read(&mut buf[seen..]).await else { return };
                    seen += n;
                    let text = String::from_utf8_lossy(&buf[..seen]);
                    if let Some(head) = text.find("\r\n\r\n") {
                        let length = text[..head]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if seen >= head + 4 + length {
                            break;
                        }
                    }
                    if n == 0 || seen == buf.len() {
                        return;
                    }
                }
                let body = r#"{"access_token":"TLS_TOKEN_0123456789","expires_in":7200}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_adds_to_the_system_roots_on_both_transports() {
    use subscribe_client::transport::test_util::TestAuthority;
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let (system, extra) = (TestAuthority::new(), TestAuthority::for_names(&["127.0.0.1"]));
    let (by_system, by_extra) = (tls_token_server(&system).await, tls_token_server(&extra).await);
    let dir = std::env::temp_dir().join(format!("wxsub-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (system_pem, extra_pem) = (dir.join("system.pem"), dir.join("extra.pem"));
    std::fs::write(&system_pem, system.ca_pem()).unwrap();
    std::fs::write(&extra_pem, extra.ca_pem()).unwrap();
    // The "system" store is the file SSL_CERT_FILE names (read by rustls-native-certs, and by
    // OpenSSL for native-tls).
    let env = [("SSL_CERT_FILE", system_pem.to_str().unwrap())];
    for transport in ["hyper", "reqwest"] {
        for (base, what) in
            [(&by_system, "a server the system trusts"), (&by_extra, "a server the CA file trusts")]
        {
            let args = [
                "--transport",
                transport,
                "--ca-file",
                extra_pem.to_str().unwrap(),
                "--api-base",
                base,
                "token",
            ];
            let run = wxsub_env(&s, &args, None, &env).await;
            assert_eq!(run.code, 0, "{transport}, {what}: {run:?}");
        }
        // Without the file, the second server is refused: the file is what trusts it.
        let run =
            wxsub_env(&s, &["--transport", transport, "--api-base", &by_extra, "token"], None, &env).await;
        assert_ne!(run.code, 0, "{transport}: {run:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn token_prints_the_lifetime_and_the_token_only_with_show() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let run = wxsub(&s, &["token"], None).await;
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(v.as_object().unwrap().len(), 1);
    assert!(v["expires_in"].as_u64().unwrap() > 7000);
    assert_no_secret(&run, None);
    let shown = wxsub(&s, &["token", "--show"], None).await;
    assert!(shown.json()["access_token"].as_str().unwrap().starts_with("SBX_"));
    assert_no_secret(&shown, None);
    let classic = wxsub(&s, &["--token-source", "classic", "token"], None).await;
    assert_eq!(classic.code, 0);
    assert_eq!(s.state().stats().classic_token_requests, 1);
}

#[tokio::test]
async fn send_reports_delivered_failed_and_invalid_with_exit_codes() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &subscribe_types::OpenId::new(ALICE).unwrap(),
        &SandboxConfig::demo_template(),
        Scene::new(1000).unwrap(),
    );
    let args = [
        "send",
        "--to",
        ALICE,
        "--template-id",
        DEMO_TEMPLATE,
        "--scene",
        "1000",
        "--title",
        "到货提醒",
        "--content",
        "hi",
        "--color",
        "#FF0000",
    ];
    let ok = wxsub(&s, &args, None).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(ok.json()["status"], "delivered");
    let refused = wxsub(&s, &args, None).await;
    assert_eq!(refused.code, 1);
    let v = refused.json();
    assert_eq!(
        (v["status"].as_str(), v["kind"].as_str(), v["errcode"].as_i64()),
        (Some("failed"), Some("api"), Some(43101))
    );
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    // The kind's own name and the old one (`send`, kept for scripts) are the same command.
    let invalid = wxsub(
        &s,
        &[
            "send-one-time",
            "--to",
            ALICE,
            "--template-id",
            DEMO_TEMPLATE,
            "--scene",
            "1000",
            "--title",
            &"长".repeat(16),
            "--content",
            "x",
        ],
        None,
    )
    .await;
    assert_eq!(invalid.code, 2);
    assert!(invalid.stderr.contains("title"));
    assert_eq!(s.state().stats().send_requests, 2, "the invalid message was never sent");
    let half_mp = wxsub(&s, &[&args[..], &["--miniprogram-appid", "wx1"]].concat(), None).await;
    assert_eq!(half_mp.code, 2);
    let no_secret = {
        let mut r = wxsub(&s, &["token"], None).await;
        r.stdout.clear();
        r
    };
    assert_no_secret(&no_secret, None);
    for r in [&ok, &refused, &invalid] {
        assert_no_secret(r, None);
    }
}

#[tokio::test]
async fn send_unknown_outcome_is_reported_as_unknown() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    s.state().set_faults(subscribe_sandbox::Faults { http_502_every: Some(1), ..Default::default() });
    let run = wxsub(
        &s,
        &[
            "send",
            "--to",
            ALICE,
            "--template-id",
            DEMO_TEMPLATE,
            "--scene",
            "1",
            "--title",
            "t",
            "--content",
            "c",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.json()["status"], "unknown");
}

#[tokio::test]
async fn send_batch_reports_each_line_and_never_sends_invalid_ones() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let bob = "oSandbox_Bob_0000000000002";
    s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &subscribe_types::OpenId::new(ALICE).unwrap(),
        &SandboxConfig::demo_template(),
        Scene::new(1).unwrap(),
    );
    s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &subscribe_types::OpenId::new(bob).unwrap(),
        &SandboxConfig::demo_template(),
        Scene::new(2).unwrap(),
    );
    let input = [
        format!(r#"{{"touser":"{ALICE}","template_id":"{DEMO_TEMPLATE}","scene":1,"title":"t","content":"c"}}"#),
        format!(r##"{{"touser":"{bob}","template_id":"{DEMO_TEMPLATE}","scene":"2","title":"t","content":"c","color":"#00FF00","miniprogram":{{"appid":"wx1","pagepath":"p"}}}}"##),
        format!(r#"{{"touser":"{ALICE}","template_id":"{DEMO_TEMPLATE}","scene":1,"title":"t","content":"c"}}"#),
        format!(r#"{{"touser":"{ALICE}","template_id":"{DEMO_TEMPLATE}","scene":99999,"title":"t","content":"c"}}"#),
        "not json".to_owned(),
        String::new(),
        format!(r#"{{"touser":"{bob}","template_id":"{DEMO_TEMPLATE}","scene":2,"title":"t","content":"c","miniprogram":{{"appid":"wx1"}}}}"#),
    ]
    .join("\n");
    let run =
        wxsub(&s, &["send-batch", "--input", "-", "--concurrency", "1", "--rate", "1000"], Some(&input))
            .await;
    assert_eq!(run.code, 1, "{run:?}");
    let mut lines: Vec<serde_json::Value> =
        run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.sort_by_key(|v| v["line"].as_u64());
    let summary: Vec<(u64, &str)> =
        lines.iter().map(|v| (v["line"].as_u64().unwrap(), v["status"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        [(1, "delivered"), (2, "delivered"), (3, "failed"), (4, "invalid"), (5, "invalid"), (7, "invalid")]
    );
    assert_eq!(lines[2]["errcode"], 43101);
    assert_eq!(lines[0]["touser"], ALICE);
    assert_eq!(lines[3]["touser"], ALICE);
    assert!(lines[5]["error"].as_str().unwrap().contains("miniprogram.pagepath"), "{}", lines[5]);
    assert_eq!(s.state().stats().send_requests, 3, "invalid lines are never sent");
    assert!(run.stderr.contains("6 line(s): 2 delivered, 1 failed, 0 unknown, 3 invalid"), "{}", run.stderr);
    assert_no_secret(&run, None);

    // From a file, all delivered: exit 0. All invalid: exit 2.
    s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &subscribe_types::OpenId::new(ALICE).unwrap(),
        &SandboxConfig::demo_template(),
        Scene::new(9).unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("wxsub-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("in.jsonl");
    std::fs::write(
        &file,
        format!(
            r#"{{"touser":"{ALICE}","template_id":"{DEMO_TEMPLATE}","scene":9,"title":"t","content":"c"}}"#
        ),
    )
    .unwrap();
    let ok = wxsub(&s, &["send-batch", "--input", file.to_str().unwrap()], None).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    std::fs::write(&file, "nope\n").unwrap();
    let invalid = wxsub(&s, &["send-batch", "--input", file.to_str().unwrap()], None).await;
    assert_eq!(invalid.code, 2, "{invalid:?}");
    let missing = wxsub(&s, &["send-batch", "--input", "/nonexistent/file"], None).await;
    assert_eq!(missing.code, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn usage_errors_exit_2_and_wrong_secret_never_prints_it() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    assert_eq!(wxsub(&s, &["no-such-command"], None).await.code, 2);
    for rate in ["0", "-5", "nan", "inf", "fast"] {
        let out = wxsub(&s, &["send-batch", "--input", "-", &format!("--rate={rate}")], Some("")).await;
        assert_eq!(out.code, 2, "--rate {rate}: {}", out.stderr);
        assert!(out.stderr.contains("rate"), "--rate {rate}: {}", out.stderr);
    }
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxsub"));
    let out = cmd
        .args(["token"])
        .env("WXSUB_API_BASE", s.base_url())
        .env("WXSUB_APPID", DEMO_APPID)
        .env("WXSUB_SECRET", "wrong-secret-value-42")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("40125") && !stderr.contains("wrong-secret-value-42"), "{stderr}");
    let help = wxsub(&s, &["--help"], None).await;
    assert_eq!(help.code, 0);
    assert!(!help.stdout.contains(DEMO_SECRET), "--help must not show the secret from the environment");
}

/// A signed state is always bound to a session the user has: `--signed` without `--session`
/// (which once bound it to the empty session, one every request without a session has), an
/// empty `--session`, and a redirect URL whose every answer would be unreadable are refused
/// before anything is printed.
#[tokio::test]
async fn a_signed_state_needs_a_session_and_a_redirect_url_its_answer_can_come_back_to() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let auth_url = |extra: &[&str]| {
        let mut args = vec!["auth-url", "--template-id", DEMO_TEMPLATE, "--scene", "1000"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let cases: [(Vec<String>, &str); 6] = [
        (auth_url(&["--redirect-url", "https://a.example/cb", "--signed"]), "--session"),
        (auth_url(&["--redirect-url", "https://a.example/cb", "--signed", "--session", ""]), "session"),
        (
            auth_url(&["--redirect-url", "https://a.example/cb?openid=o1", "--signed", "--session", "s"]),
            "--redirect-url",
        ),
        (auth_url(&["--redirect-url", "https://a.example/cb#top"]), "--redirect-url"),
        (
            auth_url(&["--redirect-url", "https://a.example/cb?%72eserved=1", "--reserved", "x"]),
            "--redirect-url",
        ),
        (
            ["mobile-request", "--template-id", DEMO_TEMPLATE, "--scene", "1000"].map(str::to_owned).to_vec(),
            "--session",
        ),
    ];
    for (args, named) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = wxsub(&s, &args, None).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stdout.is_empty() && out.stderr.contains(named), "{args:?} names {named}: {out:?}");
    }
    let empty =
        wxsub(&s, &["mobile-request", "--template-id", DEMO_TEMPLATE, "--scene", "1", "--session", ""], None)
            .await;
    assert_eq!(empty.code, 2, "{empty:?}");
    assert!(empty.stderr.contains("--session") && empty.stderr.contains("empty"), "{empty:?}");
}

#[tokio::test]
async fn sandbox_command_prints_its_url_and_the_demo_credentials() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxsub"))
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        text.push_str(&l);
        text.push('\n');
        if l.starts_with("Try:") {
            break;
        }
    }
    assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
    for needle in [DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, ALICE] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }
    let http = reqwest::Client::new();
    let index = http.get(format!("http://127.0.0.1:{port}/sandbox")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn token_wait_bounds_how_long_a_send_waits_while_the_token_endpoint_fails() {
    use subscribe_sandbox::{Faults, TokenFault};
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    s.state().set_faults(Faults { token_fault: Some(TokenFault::Http502), ..Faults::default() });
    let started = std::time::Instant::now();
    let run = wxsub(&s, &["--token-wait", "1.5", "token"], None).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("HTTP 502"), "says what the endpoint answered: {run:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "waited {:?}", started.elapsed());
    // Attempts at 0 and after about 0.25–0.5 and 0.5–1 s more: a few, not one per second.
    let requests = s.state().stats().stable_token_requests;
    assert!((2..=4).contains(&requests), "{requests} token requests");
    assert_no_secret(&run, None);

    for bad in ["0", "-1", "soon"] {
        let run = wxsub(&s, &["--token-wait", bad, "token"], None).await;
        assert_eq!(run.code, 2, "--token-wait {bad}: {run:?}");
    }
}

/// A line arriving alone on a pipe is sent, and its result printed, while the input stays open:
/// nothing waits for a batch to fill or for the end of the input.
#[tokio::test]
async fn send_batch_answers_each_piped_line_as_it_comes() {
    use tokio::io::AsyncWriteExt;
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    for scene in [1, 2] {
        s.state().add_grant(
            &SandboxConfig::demo_appid(),
            &subscribe_types::OpenId::new(ALICE).unwrap(),
            &SandboxConfig::demo_template(),
            Scene::new(scene).unwrap(),
        );
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxsub"))
        .args(["send-batch", "--input", "-", "--concurrency", "4"])
        .env("WXSUB_API_BASE", s.base_url())
        .env("WXSUB_APPID", DEMO_APPID)
        .env("WXSUB_SECRET", DEMO_SECRET)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for scene in [1u32, 2] {
        let line = format!(
            "{{\"touser\":\"{ALICE}\",\"template_id\":\"{DEMO_TEMPLATE}\",\"scene\":{scene},\"title\":\"t\",\"content\":\"c\"}}\n"
        );
        input.write_all(line.as_bytes()).await.unwrap();
        input.flush().await.unwrap();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), output.next_line())
            .await
            .unwrap_or_else(|_| panic!("no result for scene {scene} while the input stays open"))
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!((v["status"].as_str(), v["line"].as_u64()), (Some("delivered"), Some(u64::from(scene))));
    }
    drop(input);
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn both_transports_deliver_and_refuse_alike() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    for transport in ["reqwest", "hyper"] {
        s.state().add_grant(
            &SandboxConfig::demo_appid(),
            &subscribe_types::OpenId::new(ALICE).unwrap(),
            &SandboxConfig::demo_template(),
            Scene::new(5).unwrap(),
        );
        let args = [
            "--transport",
            transport,
            "send",
            "--to",
            ALICE,
            "--template-id",
            DEMO_TEMPLATE,
            "--scene",
            "5",
            "--title",
            "t",
            "--content",
            "c",
        ];
        let first = wxsub(&s, &args, None).await;
        assert_eq!(
            (first.code, first.json()["status"].as_str()),
            (0, Some("delivered")),
            "{transport}: {first:?}"
        );
        let second = wxsub(&s, &args, None).await;
        assert_eq!(second.json()["errcode"], 43101, "{transport}: one grant, one message: {second:?}");
        assert_no_secret(&second, None);
    }
}

#[tokio::test]
async fn mobile_request_and_answer_round_trip_through_a_signed_session_state() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let req = wxsub(
        &s,
        &["mobile-request", "--template-id", DEMO_TEMPLATE, "--scene", "1000", "--session", "app-7"],
        None,
    )
    .await;
    assert_eq!(req.code, 0, "{req:?}");
    assert_eq!(req.stdout.lines().count(), 1);
    let request = req.json();
    assert_eq!(
        (request["scene"].as_u64(), request["templateId"].as_str()),
        (Some(1000), Some(DEMO_TEMPLATE))
    );
    let reserved = request["reserved"].as_str().unwrap().to_owned();
    assert!(reserved.len() <= 128 && reserved.bytes().all(|b| b.is_ascii_alphanumeric()), "{reserved}");
    assert_no_secret(&req, None);

    // The answer as the Android SDK hands it to the app.
    let answer = format!(
        r#"{{"openid":"{ALICE}","templateID":"{DEMO_TEMPLATE}","scene":1000,"action":"confirm","reserved":"{reserved}"}}"#
    );
    let ok =
        wxsub(&s, &["mobile-answer", &answer, "--session", "app-7", "--template-id", DEMO_TEMPLATE], None)
            .await;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(
        ok.json(),
        serde_json::json!({"action":"confirm","openid":ALICE,"template_id":DEMO_TEMPLATE,"scene":1000,"reserved":reserved})
    );
    // Another session, a wrong template, a tampered scene: exit 2 with the reason.
    for (args, reason) in [
        (vec!["--session", "app-8"], "not valid"),
        (vec!["--template-id", "AnotherTemplate"], "template_id"),
        (vec!["--scene", "1001"], "scene"),
    ] {
        let run = wxsub(&s, &[&["mobile-answer", answer.as_str()][..], &args].concat(), None).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty() && run.stderr.contains(reason), "{args:?}: {run:?}");
    }
    let no_openid = answer.replace(&format!(r#""openid":"{ALICE}","#), "");
    let run = wxsub(&s, &["mobile-answer", &no_openid], None).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("openid"), "{run:?}");
    let bad_scene = answer.replace("\"scene\":1000", "\"scene\":10001");
    let run = wxsub(&s, &["mobile-answer", &bad_scene], None).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("scene"), "{run:?}");
}

#[tokio::test]
async fn mobile_request_with_a_given_reserved_needs_no_secret_and_signing_does() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let run = wxsub(
        &s,
        &["mobile-request", "--template-id", DEMO_TEMPLATE, "--scene", "3", "--reserved", "abc123"],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json(), serde_json::json!({"scene":3,"templateId":DEMO_TEMPLATE,"reserved":"abc123"}));
    let bad = wxsub(
        &s,
        &["mobile-request", "--template-id", DEMO_TEMPLATE, "--scene", "3", "--reserved", "not-alnum!"],
        None,
    )
    .await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("reserved"), "{bad:?}");
}

/// `grants dispatch` takes `send-one-time`'s message flags with its checks: a mini program without
/// its page exits 2 before any grant is touched.
#[tokio::test]
async fn grants_dispatch_checks_the_message_flags_as_send_does() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-dispatch-flags-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}/grants.db", dir.display());
    let scene = Scene::new(1000).unwrap();
    assert!(s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &ALICE.parse().unwrap(),
        &SandboxConfig::demo_template(),
        scene
    ));
    let cb = format!(
        "https://a.example/cb?openid={ALICE}&template_id={DEMO_TEMPLATE}&action=confirm&scene=1000&reserved=r1"
    );
    let head = ["grants", "--database", db.as_str()];
    let recorded = wxsub(&s, &[&head[..], &["record", "--unverified", &cb]].concat(), None).await;
    assert_eq!(recorded.code, 0, "{recorded:?}");
    let which = ["--template-id", DEMO_TEMPLATE, "--scene", "1000"];
    let message = ["--title", "到货提醒", "--content", "到货了"];
    for half in [["--miniprogram-appid", "wx0123456789abcdef"], ["--miniprogram-pagepath", "pages/index"]] {
        let out = wxsub(&s, &[&head[..], &["dispatch"], &which, &message, &half].concat(), None).await;
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("--miniprogram-appid and --miniprogram-pagepath go together"), "{out:?}");
    }
    assert_eq!(s.state().stats().send_requests, 0);
    // Checked before the database is opened: a dispatch with a bad title against a file that
    // does not exist exits 2 and leaves no file behind.
    let absent = dir.join("absent.db");
    let absent_db = format!("sqlite:{}", absent.display());
    let bad_title = ["--title", "一个超过十五个字符的标题会被拒绝的哦", "--content", "到货了"];
    let out = wxsub(
        &s,
        &[&["grants", "--database", absent_db.as_str(), "dispatch"][..], &which, &bad_title].concat(),
        None,
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("title"), "{out:?}");
    assert!(!absent.exists(), "the database was opened before the input was checked");
    let both = ["--miniprogram-appid", "wx0123456789abcdef", "--miniprogram-pagepath", "pages/index"];
    let sent = wxsub(&s, &[&head[..], &["dispatch"], &which, &message, &both].concat(), None).await;
    assert_eq!((sent.code, sent.json()["status"].as_str()), (0, Some("delivered")), "{sent:?}");
    assert_eq!(s.state().inbox(ALICE).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn grants_record_list_count_dispatch_and_review_on_a_sqlite_file() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-grants-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}/grants.db", dir.display());
    let head = ["grants", "--database", db.as_str()];
    let scene = Scene::new(1000).unwrap();
    assert!(s.state().add_grant(
        &SandboxConfig::demo_appid(),
        &ALICE.parse().unwrap(),
        &SandboxConfig::demo_template(),
        scene
    ));
    let cb = format!(
        "https://a.example/cb?openid={ALICE}&template_id={DEMO_TEMPLATE}&action=confirm&scene=1000&reserved=r1"
    );
    // A state this command cannot verify (no signed state): recorded only when asked to.
    let recorded = wxsub(&s, &[&head[..], &["record", "--unverified", &cb]].concat(), None).await;
    assert_eq!((recorded.code, recorded.json()["status"].as_str()), (0, Some("added")), "{recorded:?}");
    let again = wxsub(&s, &[&head[..], &["record", "--unverified", &cb]].concat(), None).await;
    assert_eq!(again.json()["status"], "already_pending");
    let cancel = wxsub(
        &s,
        &[&head[..], &["record", "--unverified", &cb.replace("action=confirm", "action=cancel")]].concat(),
        None,
    )
    .await;
    assert_eq!(cancel.code, 2, "{cancel:?}");
    assert!(cancel.stdout.is_empty() && cancel.stderr.contains("cancellation"), "{cancel:?}");

    let which = ["--template-id", DEMO_TEMPLATE, "--scene", "1000"];
    let list = wxsub(&s, &[&head[..], &[&["list"][..], &which].concat()].concat(), None).await;
    assert_eq!(list.json()["openid"], ALICE, "{list:?}");
    let counts = wxsub(&s, &[&head[..], &[&["counts"][..], &which].concat()].concat(), None).await;
    assert_eq!(counts.json()["pending"], 1, "{counts:?}");

    // A message that breaks a rule: exit 2, nothing sent, the grant untouched.
    let long = "这个标题一共有十六个字符长度超过限制";
    let bad = wxsub(
        &s,
        &[&head[..], &[&["dispatch"][..], &which, &["--title", long, "--content", "到货了"]].concat()]
            .concat(),
        None,
    )
    .await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("title") && bad.stdout.is_empty(), "{bad:?}");
    assert_eq!(s.state().stats().send_requests, 0);

    let sent = wxsub(
        &s,
        &[&head[..], &[&["dispatch"][..], &which, &["--title", "到货提醒", "--content", "到货了"]].concat()]
            .concat(),
        None,
    )
    .await;
    assert_eq!(sent.code, 0, "{sent:?}");
    assert_eq!(sent.json()["status"], "delivered");
    assert!(sent.stderr.contains("1 delivered"), "{sent:?}");
    assert_eq!(s.state().inbox(ALICE).len(), 1);
    let twice = wxsub(
        &s,
        &[&head[..], &[&["dispatch"][..], &which, &["--title", "到货提醒", "--content", "again"]].concat()]
            .concat(),
        None,
    )
    .await;
    assert_eq!((twice.code, twice.stdout.as_str()), (0, ""), "nothing pending: {twice:?}");
    let counts = wxsub(&s, &[&head[..], &[&["counts"][..], &which].concat()].concat(), None).await;
    assert_eq!((counts.json()["pending"].as_u64(), counts.json()["delivered"].as_u64()), (Some(0), Some(1)));

    let reviews = wxsub(&s, &[&head[..], &[&["review", "list"][..], &which].concat()].concat(), None).await;
    assert_eq!((reviews.code, reviews.stdout.as_str()), (0, ""));
    let resolve = wxsub(
        &s,
        &[
            &head[..],
            &[&["review", "resolve"][..], &which, &["--to", ALICE, "--decision", "release", "--note", "x"]]
                .concat(),
        ]
        .concat(),
        None,
    )
    .await;
    assert_eq!(resolve.code, 2, "not under review: {resolve:?}");
    assert_no_secret(&sent, None);
    let unreachable = wxsub(
        &s,
        &[
            "grants",
            "--database",
            "postgres://u:s3cr3t@127.0.0.1:1/x",
            "counts",
            "--template-id",
            DEMO_TEMPLATE,
            "--scene",
            "1",
        ],
        None,
    )
    .await;
    assert_eq!(unreachable.code, 2, "{unreachable:?}");
    assert!(!unreachable.stderr.contains("s3cr3t"), "{unreachable:?}");
}

/// A fresh SQLite URL in a directory of the test's own.
fn fresh_database(label: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    format!("sqlite:{}/grants.db", dir.display())
}

#[tokio::test]
async fn grants_record_verifies_the_state_and_records_each_answer_once() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let db = fresh_database("record-verified");
    let head = ["grants", "--database", db.as_str()];
    let which = ["--template-id", DEMO_TEMPLATE, "--scene", "1000"];
    let pending = || async {
        let counts = wxsub(&s, &[&head[..], &[&["counts"][..], &which].concat()].concat(), None).await;
        counts.json()["pending"].as_u64().unwrap()
    };
    let callback = |openid: &str, reserved: &str| {
        format!(
            "https://a.example/cb?openid={openid}&template_id={DEMO_TEMPLATE}&action=confirm&scene=1000&reserved={reserved}"
        )
    };
    // A callback whose state no key of ours signed (made up, or from `auth-url` without
    // --signed) records nothing.
    let unsigned =
        wxsub(&s, &[&head[..], &["record", "--session", "shop-42", &callback(ALICE, "r1")]].concat(), None)
            .await;
    assert_eq!(unsigned.code, 2, "{unsigned:?}");
    assert!(unsigned.stdout.is_empty() && unsigned.stderr.contains("not valid"), "{unsigned:?}");
    // Verifying needs the session the state was bound to: none, or an empty one, is refused.
    let cb = callback(ALICE, "r1");
    for session in [&[][..], &["--session", ""][..]] {
        let args = [&head[..], &["record"][..], session, &[cb.as_str()][..]].concat();
        let run = wxsub(&s, &args, None).await;
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stdout.is_empty() && run.stderr.contains("--session"), "{run:?}");
    }
    assert_eq!(pending().await, 0);
    // Without the secret nothing can be verified: the command says what to pass.
    let blind = wxsub_without(
        &s,
        &[&head[..], &["record", "--session", "shop-42", &callback(ALICE, "r1")]].concat(),
        None,
        &["WXSUB_SECRET"],
    )
    .await;
    assert_eq!(blind.code, 2, "{blind:?}");
    assert!(blind.stderr.contains("--secret") && blind.stderr.contains("--unverified"), "{blind:?}");
    assert_eq!(pending().await, 0);

    // A signed state from `auth-url --signed`, bound to a session.
    let url = wxsub(
        &s,
        &[
            "auth-url",
            "--template-id",
            DEMO_TEMPLATE,
            "--scene",
            "1000",
            "--redirect-url",
            "https://a.example/cb",
            "--signed",
            "--session",
            "shop-42",
        ],
        None,
    )
    .await;
    assert_eq!(url.code, 0, "{url:?}");
    let reserved = subscribe_types::AuthorizeRequest::from_query(url.stdout.trim()).unwrap().reserved;
    let record = |openid: &str, session: &str| {
        let cb = callback(openid, reserved.as_str());
        let session = session.to_owned();
        let head = head.map(str::to_owned);
        let s = &s;
        async move {
            let args: Vec<&str> =
                head.iter().map(String::as_str).chain(["record", "--session", &session, &cb]).collect();
            wxsub(s, &args, None).await
        }
    };
    let other_session = record(ALICE, "shop-43").await;
    assert_eq!(other_session.code, 2, "bound to its session: {other_session:?}");
    let added = record(ALICE, "shop-42").await;
    assert_eq!((added.code, added.json()["status"].as_str()), (0, Some("added")), "{added:?}");
    // Every later process finds the state used: the same answer (accepted already), another
    // openid, another case (a replay).
    let again = record(ALICE, "shop-42").await;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stdout.is_empty() && again.stderr.contains("already accepted"), "{again:?}");
    for openid in ["oSandbox_Mallory_000000001", &ALICE.to_lowercase()] {
        let replay = record(openid, "shop-42").await;
        assert_eq!(replay.code, 2, "{openid}: {replay:?}");
        assert!(replay.stdout.is_empty() && replay.stderr.contains("already used"), "{openid}: {replay:?}");
    }
    assert_eq!(pending().await, 1, "Alice's grant, once");
}

#[tokio::test]
async fn mobile_answer_with_a_database_is_single_use_across_processes() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let db = fresh_database("mobile-answer");
    let req = wxsub(
        &s,
        &["mobile-request", "--template-id", DEMO_TEMPLATE, "--scene", "1000", "--session", "app-7"],
        None,
    )
    .await;
    let reserved = req.json()["reserved"].as_str().unwrap().to_owned();
    let answer = |openid: &str| {
        format!(
            r#"{{"openid":"{openid}","templateID":"{DEMO_TEMPLATE}","scene":1000,"action":"confirm","reserved":"{reserved}"}}"#
        )
    };
    let run = |openid: &str| {
        let (json, db, s) = (answer(openid), db.clone(), &s);
        async move { wxsub(s, &["mobile-answer", &json, "--session", "app-7", "--database", &db], None).await }
    };
    let first = run(ALICE).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.json()["openid"], ALICE);
    let again = run(ALICE).await;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stdout.is_empty() && again.stderr.contains("already accepted"), "{again:?}");
    for openid in ["oSandbox_Mallory_000000001", &ALICE.to_uppercase()] {
        let replay = run(openid).await;
        assert_eq!(replay.code, 2, "{openid}: {replay:?}");
        assert!(replay.stdout.is_empty() && replay.stderr.contains("already used"), "{openid}: {replay:?}");
    }
    // Without a database each process starts empty, and the help says so.
    let help = wxsub(&s, &["mobile-answer", "--help"], None).await;
    assert!(help.stdout.contains("--database") && help.stdout.contains("not single-use"), "{help:?}");
}
