//! `cargo xtask deps`: the supply chain (`cargo audit`, `cargo deny`).

use std::process::Command;

use crate::run::{Result, Status, cargo, cargo_output, root};

/// Locked-but-never-built crates with an advisory, and the advisory: `rsa` (RUSTSEC-2023-0071,
/// the Marvin timing attack, no fixed version) comes with `sqlx-mysql`, which sqlx 0.8 lists
/// as a weak optional dependency; we build sqlx for PostgreSQL and SQLite only.
const LOCKED_NOT_BUILT: &[(&str, &str)] = &[("rsa", "RUSTSEC-2023-0071")];

/// The supply chain: known vulnerabilities in `Cargo.lock` (`cargo audit`, offline, against the
/// RustSec snapshot kept beside the repository in `../shared/advisory-db`), then licenses,
/// duplicate versions and sources (`cargo deny`, with `deny.toml`).
pub(crate) fn deps() -> Result<Status> {
    let installed = |sub: &str| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        Command::new(cargo).args([sub, "--version"]).output().is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["audit", "deny"].into_iter().filter(|t| !installed(t)).collect();
    if !missing.is_empty() {
        let tools: Vec<String> = missing.iter().map(|t| format!("cargo-{t}")).collect();
        return Ok(Status::NotRun(format!(
            "{} not installed; install with `cargo install --locked {}`",
            tools.join(" and "),
            tools.join(" ")
        )));
    }
    let db = root().parent().map(|p| p.join("shared/advisory-db")).filter(|d| d.join("crates").is_dir());
    let Some(db) = db else {
        return Ok(Status::NotRun(
            "the RustSec snapshot ../shared/advisory-db is not beside the repository".into(),
        ));
    };
    let db = db.to_string_lossy().into_owned();
    // Advisories on crates that are in Cargo.lock but never built: cargo locks the optional
    // dependencies sqlx names through weak features (sqlx-mysql and its rsa) although no
    // feature here turns them on. Each is ignored only while nothing in the build depends on it.
    let mut args = vec!["audit", "--db", &db, "--no-fetch", "--stale", "--deny", "warnings"];
    for (krate, advisory) in LOCKED_NOT_BUILT {
        let users =
            cargo_output(&["tree", "--workspace", "--all-features", "-e", "normal,build,dev", "-i", krate])?;
        if !users.trim().is_empty() {
            return Err(format!(
                "{krate} is now built (cargo tree -i {krate}); {advisory} can no longer be ignored"
            ));
        }
        args.extend(["--ignore", advisory]);
    }
    cargo(&args, &[])?;
    cargo(&["deny", "check", "licenses", "bans", "sources"], &[])?;
    Ok(Status::Passed)
}
