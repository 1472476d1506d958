//! `cargo xtask deps`: the supply chain (the RustSec advisories, with the `rustsec` library
//! `cargo audit` is built on; `cargo deny`).

use std::process::Command;

use rustsec::advisory::Informational;
use rustsec::report::{Report, Settings};
use rustsec::{Database, Lockfile};

use crate::run::{Result, Status, cargo, cargo_has, cargo_output, root};

/// Locked-but-never-built crates with an advisory, and the advisory: `rsa` (RUSTSEC-2023-0071,
/// the Marvin timing attack, no fixed version) comes with `sqlx-mysql`, which sqlx 0.8 lists
/// as a weak optional dependency; we build sqlx for PostgreSQL and SQLite only.
const LOCKED_NOT_BUILT: &[(&str, &str)] = &[("rsa", "RUSTSEC-2023-0071")];

/// The supply chain: known vulnerabilities, and unmaintained, unsound or noticed crates, in
/// `Cargo.lock`, against the RustSec snapshot kept beside the repository in
/// `../shared/advisory-db` (offline; what `cargo audit --no-fetch --deny warnings` checks, with
/// its library, so no tool has to be built for it); then licenses, duplicate versions and
/// sources (`cargo deny`, with `deny.toml`).
pub(crate) fn deps() -> Result<Status> {
    if !cargo_has("deny") {
        return Ok(Status::NotRun(
            "cargo-deny not installed; install with `cargo install --locked cargo-deny`".into(),
        ));
    }
    let db = root().parent().map(|p| p.join("shared/advisory-db")).filter(|d| d.join("crates").is_dir());
    let Some(db) = db else {
        return Ok(Status::NotRun(
            "the RustSec snapshot ../shared/advisory-db is not beside the repository".into(),
        ));
    };
    eprintln!("xtask deps: {}", snapshot_age(&db));
    // Advisories on crates that are in Cargo.lock but never built: cargo locks the optional
    // dependencies sqlx names through weak features (sqlx-mysql and its rsa) although no
    // feature here turns them on. Each is ignored only while nothing in the build depends on it.
    let mut ignore = Vec::new();
    for (krate, advisory) in LOCKED_NOT_BUILT {
        let users =
            cargo_output(&["tree", "--workspace", "--all-features", "-e", "normal,build,dev", "-i", krate])?;
        if !users.trim().is_empty() {
            return Err(format!(
                "{krate} is now built (cargo tree -i {krate}); {advisory} can no longer be ignored"
            ));
        }
        ignore.push(advisory.parse().map_err(|e| format!("{advisory}: {e}"))?);
    }
    audit(&db, &root().join("Cargo.lock"), ignore)?;
    cargo(&["deny", "check", "licenses", "bans", "sources"], &[])?;
    Ok(Status::Passed)
}

/// The lock file `lock` against the advisories in `db`: an error listing every vulnerability and
/// every unmaintained, unsound or noticed crate not in `ignore`.
fn audit(db: &std::path::Path, lock: &std::path::Path, ignore: Vec<rustsec::advisory::Id>) -> Result {
    let database = Database::open(db).map_err(|e| format!("the RustSec snapshot {}: {e}", db.display()))?;
    let lockfile = Lockfile::load(lock).map_err(|e| format!("{}: {e}", lock.display()))?;
    let settings = Settings {
        ignore,
        informational_warnings: vec![
            Informational::Notice,
            Informational::Unmaintained,
            Informational::Unsound,
        ],
        ..Settings::default()
    };
    let report = Report::generate(&database, &lockfile, &settings);
    let mut found: Vec<String> = report
        .vulnerabilities
        .list
        .iter()
        .map(|v| {
            format!("{} {}: {} ({})", v.package.name, v.package.version, v.advisory.id, v.advisory.title)
        })
        .collect();
    for (kind, warnings) in &report.warnings {
        for w in warnings {
            let id = w.advisory.as_ref().map_or_else(|| "no advisory".to_owned(), |a| a.id.to_string());
            found.push(format!("{} {}: {kind} ({id})", w.package.name, w.package.version));
        }
    }
    eprintln!(
        "xtask deps: {} advisories read; {} locked crates checked",
        database.iter().count(),
        lockfile.packages.len()
    );
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("Cargo.lock has crates with RustSec advisories:\n  {}", found.join("\n  ")))
    }
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

    /// The audit finds what `cargo audit` finds: a lock file with `rsa` 0.9.6 (RUSTSEC-2023-0071)
    /// fails it unless that advisory is ignored. Needs the snapshot beside the repository, as CI
    /// has it.
    #[test]
    fn a_locked_crate_with_an_advisory_fails_the_audit_unless_ignored() {
        let db = root().parent().unwrap().join("shared/advisory-db");
        assert!(db.join("crates").is_dir(), "the RustSec snapshot is not at {}", db.display());
        let dir = std::env::temp_dir().join(format!("xtask-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("Cargo.lock");
        std::fs::write(
            &lock,
            "version = 4\n\n[[package]]\nname = \"rsa\"\nversion = \"0.9.6\"\n\
             source = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
        )
        .unwrap();
        let err = audit(&db, &lock, Vec::new()).unwrap_err();
        assert!(err.contains("rsa 0.9.6: RUSTSEC-2023-0071"), "{err}");
        audit(&db, &lock, vec!["RUSTSEC-2023-0071".parse().unwrap()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_snapshot_date_is_read_from_its_note() {
        assert_eq!(first_date("as of commit bf5c (2026-08-21), for").as_deref(), Some("2026-08-21"));
        assert_eq!(first_date("no date here 2026-8-21"), None);
        assert!(days_since("2000-01-01").is_some_and(|d| d > 9_000));
    }
}
