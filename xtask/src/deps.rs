//! `cargo xtask deps`: the supply chain (`cargo audit`, `cargo deny`).

use std::process::Command;

use crate::run::{Result, Status, cargo, cargo_has, cargo_output, root};

/// Locked-but-never-built crates with an advisory, and the advisory: `rsa` (RUSTSEC-2023-0071,
/// the Marvin timing attack, no fixed version) comes with `sqlx-mysql`, which sqlx 0.8 lists
/// as a weak optional dependency; we build sqlx for PostgreSQL and SQLite only.
const LOCKED_NOT_BUILT: &[(&str, &str)] = &[("rsa", "RUSTSEC-2023-0071")];

/// The supply chain: known vulnerabilities in `Cargo.lock` (`cargo audit`, offline, against the
/// RustSec snapshot kept beside the repository in `../shared/advisory-db`), then licenses,
/// duplicate versions and sources (`cargo deny`, with `deny.toml`).
pub(crate) fn deps() -> Result<Status> {
    let missing: Vec<&str> = ["audit", "deny"].into_iter().filter(|t| !cargo_has(t)).collect();
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
    eprintln!("xtask deps: {}", snapshot_age(&db));
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

/// The snapshot's date (from its `SNAPSHOT.md`, or its newest advisory's) and age, with the
/// newest advisory's date beside it, so a stale snapshot shows in every run's output: an
/// advisory published after it is not checked.
fn snapshot_age(db: &std::path::Path) -> String {
    let stated = std::fs::read_to_string(db.join("SNAPSHOT.md")).ok().and_then(|t| first_date(&t));
    let newest = newest_advisory(db);
    let date = stated.clone().or_else(|| newest.clone());
    let Some(date) = date else {
        return format!(
            "RustSec snapshot at {} has no date (no SNAPSHOT.md date, no advisory)",
            db.display()
        );
    };
    let age = days_since(&date).map_or_else(|| "age unknown".to_owned(), |d| format!("{d} days old"));
    format!(
        "RustSec snapshot of {date} ({age}; newest advisory {}); advisories published since are NOT checked",
        newest.as_deref().unwrap_or("none")
    )
}

/// The first `YYYY-MM-DD` in `text`.
fn first_date(text: &str) -> Option<String> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(9)).find_map(|i| {
        let s = &b[i..i + 10];
        let digits = |r: std::ops::Range<usize>| s[r].iter().all(u8::is_ascii_digit);
        (digits(0..4) && s[4] == b'-' && digits(5..7) && s[7] == b'-' && digits(8..10))
            .then(|| text[i..i + 10].to_owned())
    })
}

/// The latest `date = "YYYY-MM-DD"` of the advisories under `crates/`.
fn newest_advisory(db: &std::path::Path) -> Option<String> {
    let mut newest: Option<String> = None;
    for krate in std::fs::read_dir(db.join("crates")).ok()?.filter_map(std::result::Result::ok) {
        for file in std::fs::read_dir(krate.path()).into_iter().flatten().filter_map(std::result::Result::ok)
        {
            let Ok(text) = std::fs::read_to_string(file.path()) else { continue };
            let date = text.lines().find_map(|l| l.strip_prefix("date = ")).and_then(first_date);
            if date > newest {
                newest = date;
            }
        }
    }
    newest
}

/// Whole days from `date` (`YYYY-MM-DD`, UTC) to now, by `date(1)`.
fn days_since(date: &str) -> Option<u64> {
    let secs = |args: &[&str]| -> Option<u64> {
        let out = Command::new("date").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let then = secs(&["-u", "-d", date, "+%s"])?;
    let now = secs(&["-u", "+%s"])?;
    Some(now.saturating_sub(then) / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_date_is_read_from_its_note() {
        assert_eq!(first_date("as of commit bf5c (2026-08-21), for").as_deref(), Some("2026-08-21"));
        assert_eq!(first_date("no date here 2026-8-21"), None);
        assert!(days_since("2000-01-01").is_some_and(|d| d > 9_000));
    }
}
