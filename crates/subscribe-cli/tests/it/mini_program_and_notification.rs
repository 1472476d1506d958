//! `wxsub send-mini-program` (also `mp-send`), `wxsub send-notification` (also `notify`), `wxsub templates` and `send-batch`'s other kinds, against
//! the sandbox.

use subscribe_sandbox::{
    DEMO_APPID, DEMO_LONG_TERM_TEMPLATE, DEMO_MP_TEMPLATE, SandboxConfig, SandboxHandle,
};

use crate::*;

const BOB: &str = "oSandbox_Bob_0000000000002";

fn accept(s: &SandboxHandle, openid: &str, template: &str) {
    s.state().subscribe(DEMO_APPID, openid, template, true).unwrap();
}

#[tokio::test]
async fn mp_send_delivers_once_per_acceptance_and_refuses_a_bad_value_before_sending() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    accept(&s, ALICE, DEMO_MP_TEMPLATE);
    let args = |thing: &'static str| {
        vec![
            "send-mini-program",
            "--to",
            ALICE,
            "--template-id",
            DEMO_MP_TEMPLATE,
            "--data",
            thing,
            "--data",
            "time2=2019-10-01 15:01",
            "--data",
            "amount3=¥199.00",
            "--page",
            "pages/item?id=7",
            "--state",
            "trial",
            "--lang",
            "zh_CN",
        ]
    };
    let ok = wxsub(&s, &args("thing1=亚麻衬衫"), None).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(ok.json()["status"], "delivered");
    // `mp-send`, the command's name before, is the same command.
    let mut again = args("thing1=亚麻衬衫");
    again[0] = "mp-send";
    let again = wxsub(&s, &again, None).await;
    assert_eq!((again.code, again.json()["errcode"].as_i64()), (1, Some(43101)), "{again:?}");

    let requests = s.state().stats().send_requests;
    let bad = wxsub(&s, &args("thing1=一个超过二十个字符的商品名称会被微信拒绝的哦"), None).await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stdout.is_empty());
    assert!(bad.stderr.contains("data.thing1.value") && bad.stderr.contains("at most 20"), "{}", bad.stderr);
    assert!(!bad.stderr.contains("二十个字符"), "the value is never echoed: {}", bad.stderr);
    for wrong in [
        &["--state", "release"][..],
        &["--lang", "fr_FR"][..],
        &["--data", "colour1=red"][..],
        &["--data", "novalue"][..],
    ] {
        let mut a = args("thing1=衬衫");
        a.extend_from_slice(wrong);
        let out = wxsub(&s, &a, None).await;
        assert_eq!(out.code, 2, "{wrong:?}: {out:?}");
    }
    assert_eq!(s.state().stats().send_requests, requests, "nothing invalid was sent");
}

#[tokio::test]
async fn notify_prints_the_msgid() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    accept(&s, ALICE, DEMO_LONG_TERM_TEMPLATE);
    let out = wxsub(
        &s,
        &[
            "send-notification",
            "--to",
            ALICE,
            "--template-id",
            DEMO_LONG_TERM_TEMPLATE,
            "--data",
            "enum1=黄金会员",
            "--data",
            "date2=2019-10-01",
            "--page",
            "https://shop.example.com/member",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let json = out.json();
    assert_eq!(json["status"], "delivered");
    assert_eq!(json["msgid"].as_u64(), s.state().inbox(ALICE)[0].msgid);
    let half = wxsub(
        &s,
        &[
            "notify",
            "--to",
            ALICE,
            "--template-id",
            DEMO_LONG_TERM_TEMPLATE,
            "--data",
            "enum1=黄金会员",
            "--mp-appid",
            "wx0123456789abcdef",
        ],
        None,
    )
    .await;
    assert_eq!(half.code, 2, "{half:?}");
}

#[tokio::test]
async fn templates_lists_adds_and_deletes() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let categories = wxsub(&s, &["templates", "categories"], None).await;
    assert_eq!(categories.code, 0, "{categories:?}");
    assert!(categories.json()["data"].as_array().unwrap().len() >= 3);
    let titles = wxsub(&s, &["templates", "titles", "--ids", "616,617"], None).await;
    assert_eq!(titles.json()["count"], 3);
    let keywords = wxsub(&s, &["templates", "keywords", "--tid", "1002"], None).await;
    assert_eq!(keywords.json()["data"][1]["rule"], "phrase");
    let added =
        wxsub(&s, &["templates", "add", "--tid", "1002", "--kids", "1,2,4", "--scene-desc", "发货"], None)
            .await;
    let id = added.json()["priTmplId"].as_str().unwrap().to_owned();
    let list = wxsub(&s, &["templates", "list"], None).await.json();
    assert!(list["data"].as_array().unwrap().iter().any(|t| t["priTmplId"] == id.as_str()));
    assert_eq!(wxsub(&s, &["templates", "del", "--template-id", &id], None).await.code, 0);
    let gone = wxsub(&s, &["templates", "del", "--template-id", &id], None).await;
    assert_eq!((gone.code, gone.json()["errcode"].as_i64()), (1, Some(40037)), "{gone:?}");
    // Checked before anything is sent.
    for bad in [
        &["templates", "add", "--tid", "1002", "--kids", "1"][..],
        &[
            "templates",
            "add",
            "--tid",
            "1002",
            "--kids",
            "1,2",
            "--scene-desc",
            "一个超过十五个字的场景描述会被拒绝的",
        ][..],
        &["templates", "titles", "--ids", "616", "--limit", "31"][..],
    ] {
        let out = wxsub(&s, bad, None).await;
        assert_eq!((out.code, out.stdout.as_str()), (2, ""), "{bad:?}: {out:?}");
    }
}

#[tokio::test]
async fn send_batch_takes_every_kind_and_reports_invalid_lines_without_sending_them() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    accept(&s, ALICE, DEMO_MP_TEMPLATE);
    accept(&s, BOB, DEMO_MP_TEMPLATE);
    accept(&s, BOB, DEMO_LONG_TERM_TEMPLATE);
    let mp = |to: &str, thing: &str| {
        serde_json::json!({"kind": "mini_program", "touser": to, "template_id": DEMO_MP_TEMPLATE,
            "data": {"thing1": thing, "time2": "15:01", "amount3": "¥1"}})
        .to_string()
    };
    let notify =
        serde_json::json!({"kind": "notification", "touser": BOB, "template_id": DEMO_LONG_TERM_TEMPLATE,
        "data": {"enum1": "钻石会员", "date2": "2019-10-01"}, "page": "https://shop.example.com/m"})
        .to_string();
    let input = [
        mp(ALICE, "衬衫"),
        mp(BOB, "一个超过二十个字符的商品名称会被微信拒绝的哦"),
        notify,
        serde_json::json!({"kind": "telegram", "touser": ALICE}).to_string(),
        mp(BOB, "衬衫"),
    ]
    .join("\n");
    let out = wxsub(&s, &["send-batch", "--input", "-", "--concurrency", "2"], Some(&input)).await;
    let mut lines: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.sort_by_key(|l| l["line"].as_u64());
    let statuses: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["delivered", "invalid", "delivered", "invalid", "delivered"], "{out:?}");
    assert!(lines[1]["error"].as_str().unwrap().contains("data.thing1.value"));
    assert!(lines[2]["msgid"].is_u64());
    assert_eq!(out.code, 1, "invalid lines make the batch fail");
    assert_eq!(s.state().stats().send_requests, 3, "invalid lines are never sent");
    assert_eq!((s.state().inbox(ALICE).len(), s.state().inbox(BOB).len()), (1, 2));
}

/// A WeChat behind a failing gateway: token requests get a token, every template-library call
/// a 502 whose page echoes the request (token included). Plain HTTP, one request per
/// connection.
async fn gateway_losing_library_answers(token: &'static str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = 0;
                let head = loop {
                    let Ok(n) = socket.read(&mut buf[seen..]).await else { return };
                    seen += n;
                    let text = String::from_utf8_lossy(&buf[..seen]).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if seen >= end + 4 + length {
                            break text[..end].to_owned();
                        }
                    }
                    if n == 0 || seen == buf.len() {
                        return;
                    }
                };
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                let (status, body) = if request_line.contains("token") && !request_line.contains("newtmpl") {
                    ("200 OK", format!(r#"{{"access_token":"{token}","expires_in":7200}}"#))
                } else {
                    ("502 Bad Gateway", format!("<h1>502</h1>{request_line}"))
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn templates_report_unknown_only_for_a_change_whose_answer_was_lost() {
    const TOKEN: &str = "GATEWAY_TOKEN_never_printed_42";
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let base = gateway_losing_library_answers(TOKEN).await;
    let env = [("WXSUB_API_BASE", base.as_str())];
    let run = |args: &'static [&'static str]| wxsub_env(&s, args, None, &env);
    // A change whose answer was lost may have happened.
    for args in [
        &["templates", "add", "--tid", "1002", "--kids", "1,2"][..],
        &["templates", "del", "--template-id", "bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY"][..],
    ] {
        let out = run(args).await;
        assert_eq!(out.code, 1, "{out:?}");
        let line = out.json();
        assert_eq!(
            (line["status"].as_str(), line["http_status"].as_u64()),
            (Some("unknown"), Some(502)),
            "{out:?}"
        );
        assert!(line["reason"].as_str().unwrap().contains("template library call"), "{out:?}");
        assert!(out.stderr.contains("wxsub: unknown: "), "{out:?}");
        assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN), "{out:?}");
    }
    // A read whose answer was lost changed nothing: it failed.
    for args in [
        &["templates", "list"][..],
        &["templates", "categories"][..],
        &["templates", "keywords", "--tid", "1"][..],
    ] {
        let out = run(args).await;
        assert_eq!(out.code, 1, "{out:?}");
        let line = out.json();
        assert_eq!(
            (line["status"].as_str(), line["kind"].as_str()),
            (Some("failed"), Some("no_answer")),
            "{out:?}"
        );
        assert!(out.stderr.contains("wxsub: failed: template library call `"), "{out:?}");
        assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN), "{out:?}");
    }
}
