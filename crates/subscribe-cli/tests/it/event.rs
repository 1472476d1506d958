//! `wxsub event`: one captured push verified and read, against the known answers of
//! `crates/subscribe-events/tests/fixtures/` (computed with Python's hashlib and cryptography).

use serde_json::Value;
use subscribe_sandbox::{SandboxConfig, SandboxHandle};

use crate::*;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../../subscribe-events/tests/fixtures/vectors.json")).unwrap()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_captured_push_is_verified_decrypted_and_printed_and_a_bad_one_exits_2() {
    let sandbox = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let v = vectors();
    let popup = &v["messages"][0];
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-event-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = dir.join("push.xml");
    std::fs::write(&body, format!("<xml><Encrypt><![CDATA[{}]]></Encrypt></xml>", s(&popup["encrypt"])))
        .unwrap();
    let query = format!(
        "signature={}&timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
        s(&popup["signature"]),
        s(&v["timestamp"]),
        s(&v["nonce"]),
        s(&popup["msg_signature"])
    );
    let (token, key, body) = (s(&v["token"]), s(&v["aes_key"]), body.to_str().unwrap().to_owned());
    let base = ["event", "--token", &token, "--aes-key", &key];
    let run = |extra: Vec<String>| {
        let mut args: Vec<String> = base.iter().map(|a| (*a).to_owned()).collect();
        args.extend(extra);
        args
    };
    let ok = run(vec![
        "--query".into(),
        query.clone(),
        "--body".into(),
        body.clone(),
        "--now".into(),
        "1800000010".into(),
    ]);
    let out = wxsub(&sandbox, &ok.iter().map(String::as_str).collect::<Vec<_>>(), None).await;
    assert_eq!(out.code, 0, "{out:?}");
    let event = out.json();
    assert_eq!(event["event"], "subscribe_msg_popup_event");
    assert_eq!(event["items"][0]["status"], "accept");
    assert_eq!(event["from_user"], "oSandbox_Alice_00000000001");

    let url_check = format!(
        "signature={}&timestamp={}&nonce={}&echostr=ECHO42",
        s(&v["url_signature"]),
        s(&v["timestamp"]),
        s(&v["nonce"])
    );
    let args = run(vec!["--query".into(), url_check, "--now".into(), "1800000010".into()]);
    let out = wxsub(&sandbox, &args.iter().map(String::as_str).collect::<Vec<_>>(), None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "ECHO42"), "{out:?}");

    for (query, now, reason) in [
        (query.replace("msg_signature=", "msg_signature=0"), "1800000010", "msg_signature"),
        (query.clone(), "1900000000", "timestamp"),
    ] {
        let args =
            run(vec!["--query".into(), query, "--body".into(), body.clone(), "--now".into(), now.into()]);
        let out = wxsub(&sandbox, &args.iter().map(String::as_str).collect::<Vec<_>>(), None).await;
        assert_eq!((out.code, out.stdout.as_str()), (2, ""), "{out:?}");
        assert!(out.stderr.contains(reason) && out.stderr.contains("HTTP 401"), "{}", out.stderr);
        assert!(!out.stderr.contains(&token) && !out.stderr.contains(&key), "{}", out.stderr);
    }
    // The same push checked as another app's (the vectors' appid is the demo app's, which the
    // environment sets): it does not open.
    let mut args =
        run(vec!["--query".into(), query, "--body".into(), body, "--now".into(), "1800000010".into()]);
    args.extend(["--appid".to_owned(), "wxOtherApp000000001".to_owned()]);
    let out = wxsub(&sandbox, &args.iter().map(String::as_str).collect::<Vec<_>>(), None).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("another appid"), "{}", out.stderr);
}

/// Writes `body` to a file of its own and gives its path.
fn body_file(name: &str, body: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-event-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_plain_push_is_read_only_with_mode_plain_said_and_a_warning() {
    use subscribe_events::{Format, Mode, Push, PushConfig};
    let sandbox = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let v = vectors();
    let token = s(&v["token"]);
    let event = subscribe_events::Event::new(
        "gh_1",
        "oSandbox_Alice_00000000001",
        1_800_000_000,
        subscribe_events::EventKind::Change(vec![subscribe_events::ChangeItem {
            template_id: "T1".into(),
            status: "reject".into(),
        }]),
    );
    let plain = Push::new(PushConfig::new(token.as_str(), s(&v["appid"]), Mode::Plain))
        .seal(&event.to_wire(Format::Xml), 1_800_000_000, "31", [0; 16])
        .unwrap();
    let body = body_file("plain.xml", &plain.body);
    let args = |extra: &[&str]| {
        let mut a: Vec<String> =
            ["event", "--token", &token, "--query", &plain.query, "--body", &body, "--now", "1800000010"]
                .iter()
                .map(|a| (*a).to_owned())
                .collect();
        a.extend(extra.iter().map(|e| (*e).to_owned()));
        a
    };
    let run = |extra: &'static [&'static str]| {
        let (sandbox, args) = (&sandbox, args(extra));
        async move { wxsub(sandbox, &args.iter().map(String::as_str).collect::<Vec<_>>(), None).await }
    };
    // Without a mode the push is not taken as plain: the safe mode needs its key.
    let out = run(&[]).await;
    assert_eq!((out.code, out.stdout.as_str()), (2, ""), "{out:?}");
    assert!(out.stderr.contains("--aes-key") && out.stderr.contains("--mode plain"), "{}", out.stderr);
    // In the safe mode, with its key, a plain push is refused.
    let out = run(&["--aes-key", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    // Said in so many words: read, with a warning that the body is not signed.
    let out = run(&["--mode", "plain"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["event"], "subscribe_msg_change_event");
    assert!(out.stderr.contains("warning") && out.stderr.contains("not signed"), "{}", out.stderr);
    assert!(!out.stderr.contains(&token), "{}", out.stderr);
}

#[tokio::test]
async fn the_previous_aes_key_comes_from_its_environment_variable_like_the_other_secrets() {
    let sandbox = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let v = vectors();
    // Sealed with the key before the rotation.
    let rotated = &v["messages"][2];
    let body = body_file(
        "rotated.xml",
        &format!("<xml><Encrypt><![CDATA[{}]]></Encrypt></xml>", s(&rotated["encrypt"])),
    );
    let query = format!(
        "signature={}&timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
        s(&rotated["signature"]),
        s(&v["timestamp"]),
        s(&v["nonce"]),
        s(&rotated["msg_signature"])
    );
    let (token, key, previous) = (s(&v["token"]), s(&v["aes_key"]), s(&v["previous_aes_key"]));
    let args = ["event", "--query", &query, "--body", &body, "--now", "1800000010"];
    let env = [("WXSUB_PUSH_TOKEN", token.as_str()), ("WXSUB_AES_KEY", key.as_str())];
    let out = wxsub_env(&sandbox, &args, None, &env).await;
    assert_eq!(out.code, 2, "without the previous key it does not open: {out:?}");
    let env = [env[0], env[1], ("WXSUB_PREVIOUS_AES_KEY", previous.as_str())];
    let out = wxsub_env(&sandbox, &args, None, &env).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["event"], "subscribe_msg_popup_event");
    // Never printed, not even in the usage of the command.
    let help = wxsub_env(&sandbox, &["event", "--help"], None, &env).await;
    assert!(help.stdout.contains("WXSUB_PREVIOUS_AES_KEY") && !help.stdout.contains(&previous), "{help:?}");
}
