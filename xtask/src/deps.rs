//! `cargo xtask deps`: the supply chain (`cargo audit`, `cargo deny`).

use std::process::Command;

use crate::run::{Result, Status, cargo, root};

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
    cargo(&["audit", "--db", &db, "--no-fetch", "--stale", "--deny", "warnings"], &[])?;
    cargo(&["deny", "check", "licenses", "bans", "sources"], &[])?;
    Ok(Status::Passed)
}
