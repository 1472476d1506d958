//! What every command shares: running cargo, the repository's paths, how a step ends.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// How a step ended when it did not fail.
pub(crate) enum Status {
    Passed,
    /// Its prerequisites are missing here; the text says which and how to install them.
    NotRun(String),
}

pub(crate) fn passed(r: Result) -> Result<Status> {
    r.map(|()| Status::Passed)
}

pub(crate) fn require_all() -> bool {
    std::env::var("XTASK_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// `cargo <args>` at the repository's root, with `env` added (`$CARGO` when set).
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).envs(env.iter().copied()).current_dir(root());
    cmd
}

/// Runs cargo with its output on the terminal.
pub(crate) fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result {
    eprintln!("$ cargo {}", args.join(" "));
    let status = command(args, env).status().map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`cargo {}` failed ({status})", args.join(" "))) }
}

/// Runs cargo quietly and returns its stdout (its stderr in the error).
pub(crate) fn cargo_output(args: &[&str]) -> Result<String> {
    let out = command(args, &[]).output().map_err(|e| format!("could not start cargo: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`cargo {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Builds, in one cargo invocation, `wxsub`, `subscribe-gateway` and the whole-system
/// benchmarks (`subscribe-bench`), which run the binaries they find beside their own, and
/// returns the benchmarks' binary: with the `release` profile, or with `quick` (less optimised,
/// a quarter less build time) for the short modes, whose figures are not published. One
/// invocation, so all are built with one set of features: a `cargo run -p subscribe-bench`
/// after it would resolve the features of that package alone and rebuild the crates whose
/// features differ (two dozen here, minutes on two cores).
pub(crate) fn build_bench(quick: bool) -> Result<PathBuf> {
    let profile = if quick { "quick" } else { "release" };
    cargo_output(&[
        "build",
        "--profile",
        profile,
        "-q",
        "-p",
        "subscribe-cli",
        "--bin",
        "wxsub",
        "-p",
        "subscribe-gateway",
        "--bin",
        "subscribe-gateway",
        "-p",
        "subscribe-bench",
        // `--bin` selects among every package named, so each binary is named.
        "--bin",
        "wxsub-bench",
    ])?;
    Ok(target_dir().join(profile).join(format!("wxsub-bench{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs the benchmarks' binary (from [`build_bench`]) at the repository's root and returns its
/// stdout (its stderr in the error).
pub(crate) fn run_bench(bench: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bench)
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("could not start {}: {e}", bench.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`wxsub-bench {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Runs cargo, echoing its output after it ends, and returns stdout and stderr together.
pub(crate) fn cargo_capture(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    eprintln!("$ cargo {}", args.join(" "));
    let out = command(args, env).output().map_err(|e| format!("could not start cargo: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprint!("{text}");
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("`cargo {}` failed ({})", args.join(" "), out.status))
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or `target/` at the root.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Whether the cargo subcommand `sub` (a `cargo-<sub>` tool: nextest, audit, deny) is installed.
pub(crate) fn cargo_has(sub: &str) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    std::process::Command::new(cargo).args([sub, "--version"]).output().is_ok_and(|o| o.status.success())
}
