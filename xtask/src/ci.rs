//! `cargo xtask ci`: every check in order, stopping at the first failure; and the small steps
//! (`fmt`, `lint`, `docs`, `tidy`) it runs.

use std::time::Instant;

use crate::ahead::ahead;
use crate::bench::bench;
use crate::deps::deps;
use crate::e2e::e2e;
use crate::faults::faults;
use crate::features::features;
use crate::fuzz::fuzz;
use crate::gateway;
use crate::run::{Result, Status, cargo, passed, require_all, root};
use crate::test::test;
use crate::tidy;

/// How long `ci` runs each fuzz target: a smoke test, not a campaign.
pub(crate) const CI_FUZZ_SECONDS: u64 = 10;

pub(crate) type Step = (&'static str, fn() -> Result<Status>);

pub(crate) fn ci() -> Result {
    let steps: [Step; 14] = [
        ("fmt --check", || passed(fmt(true))),
        ("lint", || passed(lint())),
        ("test", test),
        ("contracts 400 days ahead", ahead),
        ("docs", || passed(docs())),
        ("package", || passed(crate::package::package())),
        ("tidy", || passed(run_tidy())),
        ("deps", deps),
        ("features", features),
        ("e2e", e2e),
        // Short modes: they check that the measurements still run and that the fault table
        // keeps its expectations; the published figures come from the full runs.
        ("faults --quick", || passed(faults(true))),
        ("bench --quick", || bench(true)),
        // On the release binaries the two steps above built.
        ("gateway: schemathesis", gateway::schemathesis),
        ("fuzz --seconds 10", || passed(fuzz(CI_FUZZ_SECONDS, &[]))),
    ];
    let mut not_run = Vec::new();
    for (name, step) in steps {
        let started = Instant::now();
        eprintln!("==> xtask ci: {name}");
        match step()? {
            Status::Passed => eprintln!("==> xtask ci: {name} ok ({:.0?})", started.elapsed()),
            Status::NotRun(why) if require_all() => {
                return Err(format!("{name} could not run and XTASK_REQUIRE_ALL=1: {why}"));
            }
            Status::NotRun(why) => {
                eprintln!("==> xtask ci: {name} NOT RUN: {why}");
                not_run.push(format!("{name} ({why})"));
            }
        }
    }
    if not_run.is_empty() {
        eprintln!("==> xtask ci: all steps passed");
    } else {
        eprintln!("==> xtask ci: the steps that ran passed, but these did NOT run and are NOT passed:");
        for s in &not_run {
            eprintln!("      - {s}");
        }
    }
    Ok(())
}

pub(crate) fn fmt(check: bool) -> Result {
    let mut args = vec!["fmt", "--all"];
    if check {
        args.extend(["--", "--check"]);
    }
    cargo(&args, &[])
}

pub(crate) fn lint() -> Result {
    // `-D warnings` on the command line, not in RUSTFLAGS, so the build cache survives.
    cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"], &[])?;
    // `--all-targets` leaves out test targets marked `test = false` (the browser tests, run by
    // `e2e` only when a browser is installed): lint them too, so they never stop compiling.
    cargo(&["clippy", "-p", "web-app", "--test", "browser", "--", "-D", "warnings"], &[])?;
    cargo(&["clippy", "-p", "subscribe-gateway", "--test", "browser", "--", "-D", "warnings"], &[])
}

/// Rustdoc with warnings denied, twice: with every feature (what docs.rs shows, per the
/// crates' metadata) and with the default features (what a user building the docs of their
/// own dependency tree sees), so neither has a broken link.
pub(crate) fn docs() -> Result {
    cargo(&["doc", "--workspace", "--no-deps", "--all-features"], &[("RUSTDOCFLAGS", "-Dwarnings")])?;
    cargo(&["doc", "--workspace", "--no-deps"], &[("RUSTDOCFLAGS", "-Dwarnings")])
}

pub(crate) fn run_tidy() -> Result {
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
