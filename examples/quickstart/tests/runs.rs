//! The README's first command, `cargo run -p quickstart`, works: every flow (web page, mobile
//! app, mini program) ends with one delivered message and a refused second send.

#![allow(clippy::unwrap_used)]

#[test]
fn the_quickstart_walks_every_flow_to_one_message_each() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quickstart")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for step in [
        "delivered after 1 attempt(s)",
        "refused as it should be: WeChat error 43101",
        "the SDK hands the app: {\"openId\"",
        "second send refused as it should be: WeChat error 43101",
        "refused before sending: `data.thing1.value` breaks the thing rule",
        "mini-program message delivered after 1 attempt(s)",
        "second mini-program send refused as it should be: WeChat error 43101",
        "Done: in every flow, one confirmation, one message.",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    assert!(!stdout.contains(subscribe_sandbox::DEMO_SECRET), "the secret was printed");
}
