//! `cargo xtask schemathesis`: Schemathesis against a live gateway, from its own OpenAPI
//! document: every route with generated requests (valid and invalid), failing on a 5xx, a
//! status the document does not list, a content type it does not list, or a body that breaks
//! the documented schema.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{Result, Status, build_bench, root, target_dir};

/// The Schemathesis release the step installs (a new release may add checks: bump on purpose).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Examples per operation and phase: enough to reach every documented status, and the whole
/// step within about 90 s on two cores.
const MAX_EXAMPLES: &str = "100";

/// The sandbox's demo app and its secret (public: `wxsub sandbox` prints them).
const DEMO_APPID: &str = "wx5a1db0c0ffee0001";
const DEMO_SECRET: &str = "sandbox-demo-secret-0123456789ab";

/// Children killed when the step ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Builds the gateway and `wxsub`, installs Schemathesis in a venv under the target directory
/// (kept for the next run), starts the sandbox and a gateway on it with a key that has every
/// scope on the demo app, and runs Schemathesis against `/openapi.json`.
pub(crate) fn schemathesis() -> Result<Status> {
    let started = Instant::now();
    let python = match Command::new("python3").args(["-m", "venv", "--help"]).output() {
        Ok(out) if out.status.success() => "python3",
        _ => {
            return Ok(Status::NotRun(
                "python3 with its venv module is needed; install it with `sudo apt-get install python3-venv`"
                    .into(),
            ));
        }
    };
    // The binaries the short measurements run (built once for the quick faults, the quick
    // benchmarks and this step; a debug build of its own cost CI minutes).
    let bins = build_bench(true)?.parent().map(Path::to_path_buf).ok_or("no binaries' directory")?;
    let venv = target_dir().join("schemathesis-venv");
    let st = venv.join("bin").join("schemathesis");
    if !st.is_file() {
        run(Command::new(python).arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin").join("pip")).args(["install", "-q", SCHEMATHESIS]))?;
    }
    let dir = target_dir().join("schemathesis");
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut children = Children(Vec::new());

    let sandbox_out = dir.join("sandbox.log");
    children.0.push(spawn(
        Command::new(bins.join("wxsub")).args(["sandbox", "--listen", "127.0.0.1:0"]),
        &sandbox_out,
    )?);
    let sandbox = wait_for(&sandbox_out, |line| {
        line.strip_prefix("WeChat sandbox listening on ").map(|u| u.trim().to_owned())
    })?;

    let key = random_key()?;
    let key_file = dir.join("key.txt");
    fs::write(&key_file, &key).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let config = dir.join("gateway.toml");
    let text = config_text(&sandbox);
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let gateway_log = dir.join("gateway.log");
    let mut gateway = Command::new(bins.join("subscribe-gateway"));
    gateway
        .arg("--config")
        .arg(&config)
        .env("WX_SECRET", DEMO_SECRET)
        .env("WX_PUSH_TOKEN", "schemathesisPushToken2026")
        .env("WX_PUSH_AES", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        .env("RUST_LOG", "warn,subscribe_gateway=info");
    children.0.push(spawn(&mut gateway, &gateway_log)?);
    let addr = wait_for(&gateway_log, |line| {
        if !line.contains("subscribe-gateway listening") {
            return None;
        }
        let rest = &line[line.find("\"addr\":\"")? + 8..];
        Some(rest[..rest.find('"')?].to_owned())
    })?;
    let base = format!("http://{addr}");

    eprintln!("$ schemathesis run {base}/openapi.json (sandbox {sandbox})");
    let status = Command::new(&st)
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", MAX_EXAMPLES, "--request-timeout", "15", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("could not start {}: {e}", st.display()))?;
    drop(children);
    eprintln!("xtask schemathesis: {:.0?} in all; logs in {}", started.elapsed(), dir.display());
    if status.success() {
        Ok(Status::Passed)
    } else {
        Err(format!("Schemathesis found failures ({status}); the gateway's log is {}", gateway_log.display()))
    }
}

/// The gateway's configuration for the run: the demo app on the sandbox at `sandbox`, with web
/// consent and a push endpoint, and one key with every scope, beyond any rate.
fn config_text(sandbox: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
# The consent callback's address in the links (Schemathesis calls the callback directly).
public_url = "https://gateway.example.com"
# Schemathesis sends requests without a key on purpose: the peer's limit of failed
# authentications would answer the rest 429 and leave their logic untested.
auth_failures_per_second = 1000000
auth_failure_burst = 100000

[store]
kind = "sqlite"
path = "gateway.db"

[[apps]]
appid = "{DEMO_APPID}"
kind = "official_account"
api_base = "{sandbox}"
secret_env = "WX_SECRET"
# Where the consent callback sends the browser (Schemathesis does not follow the redirect).
consent_return_url = "{sandbox}/consent-return"
# The app's server URL: Schemathesis' pushes are refused as unsigned, as documented.
push_token_env = "WX_PUSH_TOKEN"
push_aes_key_env = "WX_PUSH_AES"

[[keys]]
name = "schemathesis"
key_file = "key.txt"
scopes = {{ {DEMO_APPID} = ["token:read", "send", "grants", "grants:review", "dispatch", "status"] }}
# Schemathesis sends as fast as the gateway answers: its rate is not what is tested here.
rate_per_second = 1000000
burst = 100000
"#
    )
}

/// Runs a command at the repository's root, its output on the terminal.
fn run(cmd: &mut Command) -> Result {
    let status = cmd.current_dir(root()).status().map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed ({status})")) }
}

/// Starts `cmd` with its stdout and stderr in `log`.
fn spawn(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .current_dir(log.parent().map_or_else(root, PathBuf::from))
        .spawn()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))
}

/// Waits up to 30 s for a line of `log` that `find` reads a value from.
fn wait_for(log: &Path, find: impl Fn(&str) -> Option<String>) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(v) = text.lines().find_map(&find) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not say where it listens within 30 s:\n{text}", log.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh API key: 32 random bytes as 64 hexadecimal characters.
fn random_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}
