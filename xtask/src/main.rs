//! `cargo xtask <task>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! | task | does |
//! |---|---|
//! | `ci` | `fmt` → `lint` → `test` → `docs` → `tidy` → `features`, stopping at the first failure |
//! | `fmt [--check]` | `cargo fmt --all` |
//! | `lint` | clippy on every target and feature, warnings denied |
//! | `test` | the workspace tests, doctests included |
//! | `docs` | rustdoc with warnings denied |
//! | `tidy` | repository checks (also a `#[test]` of this crate) |
//! | `features` | each crate's notable feature sets build on their own |

// A command-line tool talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map_or("help", String::as_str);
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "ci" => ci(),
        "fmt" => fmt(rest.iter().any(|a| a == "--check")),
        "lint" => lint(),
        "test" => test(),
        "docs" => docs(),
        "tidy" => run_tidy(),
        "features" => features(),
        _ => {
            eprintln!("usage: cargo xtask <ci|fmt [--check]|lint|test|docs|tidy|features>");
            return if task == "help" { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;
type Step = (&'static str, fn() -> Result);

fn ci() -> Result {
    let steps: [Step; 6] = [
        ("fmt --check", || fmt(true)),
        ("lint", lint),
        ("test", test),
        ("docs", docs),
        ("tidy", run_tidy),
        ("features", features),
    ];
    for (name, step) in steps {
        let started = Instant::now();
        eprintln!("==> xtask ci: {name}");
        step()?;
        eprintln!("==> xtask ci: {name} ok ({:.0?})", started.elapsed());
    }
    eprintln!("==> xtask ci: all steps passed");
    Ok(())
}

fn fmt(check: bool) -> Result {
    let mut args = vec!["fmt", "--all"];
    if check {
        args.extend(["--", "--check"]);
    }
    cargo(&args, &[])
}

fn lint() -> Result {
    // `-D warnings` on the command line, not in RUSTFLAGS, so the build cache survives.
    cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"], &[])
}

fn test() -> Result {
    cargo(&["test", "--workspace", "--all-features"], &[])
}

fn docs() -> Result {
    cargo(&["doc", "--workspace", "--no-deps", "--all-features"], &[("RUSTDOCFLAGS", "-Dwarnings")])
}

/// Crates whose `default-features = false` build must carry no HTTP client or TLS stack.
const LEAN_CRATES: &[&str] = &["subscribe-transport", "subscribe-client"];

fn features() -> Result {
    // An explicit list, not a powerset: the sets integrators actually use.
    let sets: &[&[&str]] = &[
        &["check", "-p", "subscribe-types", "--no-default-features"],
        &["test", "-p", "subscribe-transport", "--no-default-features"],
        &["test", "-p", "subscribe-transport", "--no-default-features", "--features", "mock"],
        &["check", "-p", "subscribe-client", "--no-default-features"],
        &["test", "-p", "subscribe-client", "--no-default-features", "--features", "test-util", "--lib"],
        &["test", "-p", "subscribe-client", "--no-default-features", "--features", "test-util", "--doc"],
    ];
    for args in sets {
        cargo(args, &[])?;
    }
    // `default-features = false` must leave no HTTP client and no TLS stack behind.
    for krate in LEAN_CRATES {
        let tree = cargo_output(&[
            "tree",
            "-p",
            krate,
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])?;
        if let Some(bad) = tree
            .lines()
            .find(|l| ["reqwest ", "rustls ", "native-tls ", "hyper "].iter().any(|d| l.starts_with(d)))
        {
            return Err(format!("{krate} without default features still depends on `{bad}`"));
        }
    }
    // native-tls needs the system's OpenSSL headers; build it where they are present.
    if Command::new("pkg-config").args(["--exists", "openssl"]).status().is_ok_and(|s| s.success()) {
        cargo(
            &["check", "-p", "subscribe-transport", "--no-default-features", "--features", "native-tls,mock"],
            &[],
        )?;
    } else {
        eprintln!(
            "xtask features: native-tls NOT checked: OpenSSL headers missing (apt-get install libssl-dev pkg-config)"
        );
    }
    Ok(())
}

fn cargo_output(args: &[&str]) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`cargo {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

fn run_tidy() -> Result {
    let problems = tidy::check(&root());
    if problems.is_empty() {
        eprintln!("tidy: repository checks passed");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        Err(format!("{} repository check(s) failed", problems.len()))
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`cargo {}` failed ({status})", args.join(" "))) }
}
