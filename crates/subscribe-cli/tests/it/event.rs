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
