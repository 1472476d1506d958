//! Integration tests of `wxsub` (run as a process) and end-to-end tests of the client with the
//! reqwest transport against the sandbox, over real HTTP.

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod cli;
mod dispatch;
mod e2e;
mod event;
mod mini_program_and_notification;
mod review;
mod secrets;

use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, SandboxHandle};

/// Alice, a demo user.
pub const ALICE: &str = "oSandbox_Alice_00000000001";

/// The output of one `wxsub` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Stdout as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Runs `wxsub args…` against `sandbox` with the demo credentials in the environment (and no
/// `DATABASE_URL` from the test's own).
pub async fn wxsub(sandbox: &SandboxHandle, args: &[&str], stdin: Option<&str>) -> Run {
    wxsub_with(sandbox, args, stdin, &[], &[]).await
}

/// As [`wxsub`], with more variables in the environment.
pub async fn wxsub_env(
    sandbox: &SandboxHandle,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    wxsub_with(sandbox, args, stdin, env, &[]).await
}

/// [`wxsub`] with the variables `unset` left out of its environment.
pub async fn wxsub_without(
    sandbox: &SandboxHandle,
    args: &[&str],
    stdin: Option<&str>,
    unset: &[&str],
) -> Run {
    wxsub_with(sandbox, args, stdin, &[], unset).await
}

/// [`wxsub`] with `env` added to its environment and `unset` left out.
pub async fn wxsub_with(
    sandbox: &SandboxHandle,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
    unset: &[&str],
) -> Run {
    use tokio::io::AsyncWriteExt;
    let base = sandbox.base_url();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxsub"));
    cmd.args(args)
        .env("WXSUB_API_BASE", &base)
        .env("WXSUB_MP_BASE", &base)
        .env("WXSUB_APPID", DEMO_APPID)
        .env("WXSUB_SECRET", DEMO_SECRET)
        .env_remove("WXSUB_TOKEN_SOURCE")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for name in unset {
        cmd.env_remove(name);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[path = "../common/dispatchers.rs"]
mod dispatchers;

#[allow(clippy::disallowed_methods)] // real processes, real time
fn common_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_run_on_sqlite_and_restarted_sends_each_grant_once_or_sets_it_aside() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}/grants.db", dir.display());
    let ledger =
        subscribe_sql::SqlGrantLedger::new(subscribe_sql::Sql::builder(url.clone()).connect().await.unwrap());
    dispatchers::killed_and_restarted(&url, &ledger, 10_000).await;
}
