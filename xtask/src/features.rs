//! `cargo xtask features`: the feature sets integrators use build on their own.

use std::process::Command;

use crate::run::{Result, Status, cargo, cargo_output};

/// Crates whose `default-features = false` build must carry no HTTP client or TLS stack.
pub(crate) const LEAN_CRATES: &[&str] = &["subscribe-transport", "subscribe-client"];

pub(crate) fn features() -> Result<Status> {
    // An explicit list, not a powerset: the sets integrators actually use.
    let sets: &[&[&str]] = &[
        &["check", "-p", "subscribe-types", "--no-default-features"],
        &["test", "-p", "subscribe-transport", "--no-default-features"],
        &["test", "-p", "subscribe-transport", "--no-default-features", "--features", "mock"],
        // hyper without reqwest: the second production transport on its own, with its contract.
        &["test", "-p", "subscribe-transport", "--no-default-features", "--features", "hyper,test-util"],
        &["check", "-p", "subscribe-client", "--no-default-features"],
        &["test", "-p", "subscribe-client", "--no-default-features", "--features", "test-util", "--lib"],
        &["test", "-p", "subscribe-client", "--no-default-features", "--features", "test-util", "--doc"],
        // The SQL crate with one database each: SQLite alone (with its tests, which need no
        // server) and PostgreSQL alone.
        &["test", "-p", "subscribe-sql", "--no-default-features", "--features", "sqlite", "--test", "sqlite"],
        &["check", "-p", "subscribe-sql", "--no-default-features", "--features", "postgres"],
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
    // native-tls needs the system's OpenSSL headers: without them this part cannot run, and
    // says so (never "passed").
    if !Command::new("pkg-config").args(["--exists", "openssl"]).status().is_ok_and(|s| s.success()) {
        return Ok(Status::NotRun(
            "the native-tls build: OpenSSL headers missing; install them with \
             `sudo apt-get install libssl-dev pkg-config`"
                .into(),
        ));
    }
    cargo(
        &["check", "-p", "subscribe-transport", "--no-default-features", "--features", "native-tls,mock"],
        &[],
    )?;
    Ok(Status::Passed)
}
