//! `cargo xtask <task>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! | task | does |
//! |---|---|
//! | `ci` | `fmt` → `lint` → `test` → `ahead` → `docs` → `package` → `tidy` → `deps` → `features` → `e2e` → `faults --quick` → `bench --quick` → `schemathesis` → `fuzz --seconds 10`, stopping at the first failure |
//! | `fmt [--check]` | `cargo fmt --all` |
//! | `lint` | clippy on every target and feature, warnings denied |
//! | `test` | the workspace tests, doctests included, with every feature; then each example built alone, as its README runs it |
//! | `ahead` | the store and ledger contract tests again with the clocks they meet (the test processes, a PostgreSQL started for it) 400 days ahead, by libfaketime, so no test holds a fixed date that will pass |
//! | `docs` | rustdoc with warnings denied |
//! | `package` | `cargo package` for every crate under `crates/`, each verified by building what it contains |
//! | `tidy` | repository checks (also a `#[test]` of this crate) |
//! | `deps` | the RustSec advisories (`rustsec`, the library of `cargo audit`) against the snapshot in `../shared/advisory-db` (offline), and `cargo deny check licenses bans sources` (`deny.toml`) |
//! | `features` | each crate's notable feature sets build on their own |
//! | `bench [--quick]` | whole-system and per-operation benchmarks (throughput vs plain reqwest, sandbox, send-batch, cold start, dispatch memory, dispatch on SQL); JSON in `target/bench/`; a full run writes `docs/figures/bench.json` and `docs/performance.md`'s table from it |
//! | `figures` | renders `docs/performance.md`'s and `docs/reliability.md`'s tables again from the JSON committed beside them (after a change to how they are rendered) |
//! | `faults [--quick]` | the reliability table against the sandbox's fault injection (JSON in `target/faults/`; a full run writes `docs/figures/faults.json` and `docs/reliability.md`'s table from it); then checks that deliberately broken clients fail it |
//! | `fuzz [--seconds N] [target…]` | each libFuzzer target in `fuzz/` for N seconds (default 60); a crash input is saved under `target/fuzz/artifacts/` |
//! | `e2e` | the browser tests, headless Chromium on the sandbox: `examples/web-app`'s, and the gateway's (the web flow through it, a dispatch job, the status page); screenshots in `target/e2e/` |
//! | `schemathesis` | Schemathesis (in a venv under `target/`) against a live gateway on the sandbox, from the gateway's `/openapi.json`: no 5xx, and every status, content type and body as documented |
//!
//! A step whose prerequisites are missing on this machine (Redis for `subscribe-redis`'s tests,
//! Chromium for `e2e`) is reported as
//! NOT RUN with the command that enables it, never as passed. With `XTASK_REQUIRE_ALL=1` (set
//! by `.ci/run`) a step that cannot run fails the run instead.

// A command-line tool talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod ahead;
mod bench;
mod ci;
mod deps;
mod e2e;
mod faults;
mod features;
mod figures;
mod fuzz;
mod gateway;
mod package;
mod run;
mod test;
mod tidy;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map_or("help", String::as_str);
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "ci" => ci::ci(),
        "fmt" => ci::fmt(rest.iter().any(|a| a == "--check")),
        "lint" => ci::lint(),
        "test" => test::test().and_then(|s| match s {
            run::Status::Passed => Ok(()),
            run::Status::NotRun(why) => Err(format!("part did not run: {why}")),
        }),
        "ahead" => ahead::ahead().and_then(|s| match s {
            run::Status::Passed => Ok(()),
            run::Status::NotRun(why) => Err(format!("did not run: {why}")),
        }),
        "figures" => figures::rerender(),
        "docs" => ci::docs(),
        "package" => package::package(),
        "tidy" => ci::run_tidy(),
        "deps" => deps::deps().and_then(|s| match s {
            run::Status::Passed => Ok(()),
            run::Status::NotRun(why) => Err(format!("did not run: {why}")),
        }),
        "features" => features::features().and_then(|s| match s {
            run::Status::Passed => Ok(()),
            run::Status::NotRun(why) => Err(format!("part did not run: {why}")),
        }),
        "faults" => faults::faults(rest.iter().any(|a| a == "--quick")),
        "bench" => bench::bench(rest.iter().any(|a| a == "--quick")).and_then(|s| match s {
            run::Status::Passed => Ok(()),
            run::Status::NotRun(why) => Err(format!("part did not run: {why}")),
        }),
        "fuzz" => fuzz::fuzz_args(rest).and_then(|(secs, targets)| fuzz::fuzz(secs, &targets)),
        "e2e" => e2e::e2e().and_then(|s| match s {
            run::Status::Passed => Ok(()),
            run::Status::NotRun(why) => Err(format!("did not run: {why}")),
        }),
        "schemathesis" => gateway::schemathesis().and_then(|s| match s {
            run::Status::Passed => Ok(()),
            run::Status::NotRun(why) => Err(format!("did not run: {why}")),
        }),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|fmt [--check]|lint|test|ahead|docs|package|tidy|deps|features|e2e|schemathesis|bench [--quick]|faults [--quick]|figures|fuzz [--seconds N] [target…]>"
            );
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
