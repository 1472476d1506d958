//! The callers of `examples/callers/` (curl, Python, Node), run as `docs/gateway.md` shows them
//! against a gateway and the sandbox: each reads the token and sends a one-time message with
//! an `Idempotency-Key`, and run again, gets the same answer replayed and sends nothing. The
//! manual quotes each file whole (checked here, so they cannot drift apart), and its
//! configuration reference names every key the configuration takes.
//!
//! A missing `curl`, `python3` or `node` fails these tests, saying so: CI has all three.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use subscribe_gateway::KeyHash;
use subscribe_sandbox::{DEMO_APPID, DEMO_TEMPLATE};
use tokio::process::Command;

use crate::send::{ALICE, grant};
use crate::*;

/// Key C: `token:read` and `send` on the demo app, as a caller that does both holds.
const KEY_C: &str = "gw-test-key-c-2a5d8f1b4e7c0a3d6f9b2e5c8a1d4f7b";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn caller(file: &str) -> PathBuf {
    manifest_dir().join("examples/callers").join(file)
}

pub(crate) fn manual() -> String {
    std::fs::read_to_string(manifest_dir().join("../../docs/gateway.md")).unwrap()
}

/// `program --version` answers, or the test fails naming what to install.
fn require(program: &str) -> String {
    match std::process::Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("`{program} --version` failed ({}): this test needs {program}", o.status),
        Err(e) => panic!(
            "this test runs a caller with `{program}`, which is not on PATH ({e}): install it (CI has it)"
        ),
    }
}

/// The test configuration with key C.
fn with_caller(text: &str) -> String {
    let hash = KeyHash::of(KEY_C.as_bytes()).to_hex();
    format!(
        "{text}\n[[keys]]\nname = \"caller\"\nsha256 = \"{hash}\"\n\
         scopes = {{ {DEMO_APPID} = [\"token:read\", \"send\"] }}\n"
    )
}

/// Runs `file` of `examples/callers` with `program` against `g` for order 42: whether it
/// succeeded, and its stdout and stderr.
async fn run(g: &Running, program: &str, file: &str) -> (bool, String, String) {
    let mut command = Command::new(program);
    command
        .arg(caller(file))
        .env("GATEWAY_URL", format!("http://{}", g.addr))
        .env("GATEWAY_KEY", KEY_C)
        .env("APPID", DEMO_APPID)
        .env("OPENID", ALICE)
        .env("TEMPLATE_ID", DEMO_TEMPLATE)
        .env("ORDER_ID", "42")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {file} still runs after 2 minutes"))
        .unwrap();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// The caller in `file`, run twice with `program`: delivered once, then replayed.
async fn the_caller_sends_once(program: &str, file: &str) {
    let g = Running::start_with(|text| with_caller(&text), None).await;
    grant(&g);
    let (ok, out, err) = run(&g, program, file).await;
    assert!(ok, "{program} {file} failed:\n{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}\n{err}");
    let lifetime = lines[0].strip_prefix("token: valid for ").and_then(|l| l.strip_suffix('s'));
    assert!(lifetime.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)), "{out}");
    assert_eq!(lines[1], r#"order-42/restock: {"outcome":"delivered"}"#, "{out}\n{err}");
    let inbox = g.sandbox.state().inbox(ALICE);
    assert_eq!(inbox.len(), 1);
    assert_eq!((inbox[0].title.as_str(), inbox[0].content.as_str()), ("到货提醒", "您关注的商品已到货"));

    // Run again, as after a crash: the answer is replayed and nothing is sent.
    let (ok, again, err_again) = run(&g, program, file).await;
    assert!(ok, "{program} {file} failed the second time:\n{again}\n{err_again}");
    assert_eq!(
        again.lines().nth(1),
        Some(r#"order-42/restock: {"outcome":"delivered"} (replayed)"#),
        "{again}"
    );
    let stats = g.sandbox.state().stats();
    assert_eq!((stats.send_requests, stats.deliveries, g.sandbox.state().inbox(ALICE).len()), (1, 1, 1));

    // The caller read the token and printed none of it, nor its key.
    let (_, token) = g.get_token(DEMO_APPID, KEY_A).await;
    let token = token["access_token"].as_str().unwrap();
    let all = format!("{out}{err}{again}{err_again}");
    assert!(!all.contains(token) && !all.contains(KEY_C), "the caller printed a secret:\n{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curl_caller_sends_once_and_is_replayed() {
    require("curl");
    the_caller_sends_once("sh", "token_and_send.sh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_caller_sends_once_and_is_replayed() {
    require("python3");
    the_caller_sends_once("python3", "token_and_send.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_caller_sends_once_and_is_replayed() {
    let version = require("node");
    let major = version.trim().trim_start_matches('v').split('.').next().and_then(|m| m.parse::<u32>().ok());
    assert!(
        major.is_some_and(|m| m >= 20),
        "the Node caller needs Node 20 or later (built-in fetch); this is {version}"
    );
    the_caller_sends_once("node", "token_and_send.mjs").await;
}

#[test]
fn the_manual_quotes_each_caller_whole() {
    let manual = manual();
    for (language, file) in
        [("sh", "token_and_send.sh"), ("python", "token_and_send.py"), ("js", "token_and_send.mjs")]
    {
        let text = std::fs::read_to_string(caller(file)).unwrap();
        let block = format!("```{language}\n{text}```\n");
        assert!(
            manual.contains(&block),
            "docs/gateway.md must quote examples/callers/{file} whole, in a ```{language} block"
        );
    }
}

/// The fields of `struct {name}` in the configuration's shape (`src/config/raw.rs`).
fn fields(raw: &str, name: &str) -> Vec<String> {
    let body = raw.split(&format!("struct {name} {{")).nth(1).unwrap().split("\n}").next().unwrap();
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub(super) "))
        .map(|l| l.split(':').next().unwrap().to_owned())
        .collect()
}

/// The text of the manual from `heading` to the next heading of its level or above.
fn section<'a>(manual: &'a str, heading: &str) -> &'a str {
    let level = heading.split(' ').next().unwrap();
    let after = manual.split(&format!("\n{heading}\n")).nth(1).unwrap_or_else(|| panic!("no `{heading}`"));
    let ends = (1..=level.len()).map(|n| format!("\n{} ", "#".repeat(n)));
    let end = ends.filter_map(|e| after.find(&e)).min().unwrap_or(after.len());
    &after[..end]
}

#[test]
fn the_configuration_reference_names_every_key() {
    let raw = std::fs::read_to_string(manifest_dir().join("src/config/raw.rs")).unwrap();
    let manual = manual();
    let reference = section(&manual, "## Configuration reference");
    let tables = [
        ("RawServer", "### `[server]` (optional)"),
        (
            "RawStore",
            "### `[store]` (optional): where the tokens, the idempotency records, the grants and the dispatch jobs are kept",
        ),
        ("RawIdempotency", "### `[idempotency]` (optional)"),
        ("RawDispatch", "### `[dispatch]` (optional)"),
        ("RawApp", "### `[[apps]]`: one per app"),
        ("RawKey", "### `[[keys]]`: one per caller"),
    ];
    for table in fields(&raw, "RawConfig") {
        assert!(tables.iter().any(|(_, h)| h.contains(&format!("[{table}]"))), "no section for `{table}`");
    }
    for (shape, heading) in tables {
        let text = section(&manual, heading);
        let keys = fields(&raw, shape);
        assert!(!keys.is_empty(), "{shape} read no field");
        for key in keys {
            // A key that would hold a secret inline is documented as refused.
            let documented =
                text.contains(&format!("`{key}`")) || reference.contains(&format!("`{key} = …`"));
            assert!(documented, "docs/gateway.md: `{key}` is not in `{heading}`");
        }
    }
}

/// Key M: `grants` on the demo app, as the mobile consent caller holds.
const KEY_M: &str = "gw-test-key-m-7f0c3e6a9d2b5f8e1c4a7d0b3f6e9c2a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_mobile_consent_caller_records_one_grant() {
    require("python3");
    let g = Running::start_with(
        |text| {
            let hash = KeyHash::of(KEY_M.as_bytes()).to_hex();
            format!("{text}\n[[keys]]\nname = \"app-server\"\nsha256 = \"{hash}\"\nscopes = {{ {DEMO_APPID} = [\"grants\", \"grants:review\"] }}\n")
        },
        None,
    )
    .await;
    let mut command = Command::new("python3");
    command
        .arg(caller("consent_mobile.py"))
        .env("GATEWAY_URL", format!("http://{}", g.addr))
        .env("GATEWAY_KEY", KEY_M)
        .env("APPID", DEMO_APPID)
        .env("TEMPLATE_ID", DEMO_TEMPLATE)
        .env("SESSION", "digest-of-session-7")
        .env("SANDBOX_URL", g.sandbox.base_url())
        .env("OPENID", ALICE)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output()).await.unwrap().unwrap();
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("request: scene 1000, template {DEMO_TEMPLATE}").as_str(),
            "answer: confirm, recorded added",
            "again: already recorded"
        ],
        "{err}"
    );
    // One grant, pending, in the gateway's ledger; the key was printed nowhere.
    let url = g.url(&format!("/v1/apps/{DEMO_APPID}/grants?template_id={DEMO_TEMPLATE}&scene=1000"));
    let counts: serde_json::Value =
        g.http.get(url).bearer_auth(KEY_M).send().await.unwrap().json().await.unwrap();
    assert_eq!((counts["pending"].as_u64(), counts["delivered"].as_u64()), (Some(1), Some(0)), "{counts}");
    assert!(!out.contains(KEY_M) && !err.contains(KEY_M));
}

#[test]
fn the_manual_quotes_the_mobile_consent_caller_whole() {
    let text = std::fs::read_to_string(caller("consent_mobile.py")).unwrap();
    assert!(
        manual().contains(&format!("```python\n{text}```\n")),
        "docs/gateway.md must quote consent_mobile.py whole"
    );
}
