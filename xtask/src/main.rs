//! `cargo xtask <task>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! | task | does |
//! |---|---|
//! | `ci` | `fmt` → `lint` → `test` → `docs` → `tidy` → `deps` → `features` → `e2e` → `faults --quick` → `bench --quick` → `fuzz --seconds 20`, stopping at the first failure |
//! | `fmt [--check]` | `cargo fmt --all` |
//! | `lint` | clippy on every target and feature, warnings denied |
//! | `test` | the workspace tests, doctests included |
//! | `docs` | rustdoc with warnings denied |
//! | `tidy` | repository checks (also a `#[test]` of this crate) |
//! | `deps` | `cargo audit` against the RustSec snapshot in `../shared/advisory-db` (offline) and `cargo deny check licenses bans sources` (`deny.toml`) |
//! | `features` | each crate's notable feature sets build on their own |
//! | `bench [--quick]` | whole-system benchmarks (throughput vs plain reqwest, sandbox, cold start, dispatch memory); table on stdout, JSON in `target/bench/` |
//! | `faults [--quick]` | the reliability table against the sandbox's fault injection, written to `docs/reliability.md`; then checks that a deliberately broken client fails it |
//! | `fuzz [--seconds N] [target…]` | each libFuzzer target in `fuzz/` for N seconds (default 60); a crash input is saved under `target/fuzz/artifacts/` |
//! | `e2e` | the browser test: sandbox + `examples/web-app` + headless Chromium; screenshots in `target/e2e/` |
//!
//! A step whose prerequisites are missing on this machine (Redis for `subscribe-redis`'s tests,
//! Chromium for `e2e`) is reported as
//! NOT RUN with the command that enables it, never as passed. With `XTASK_REQUIRE_ALL=1` (set
//! by `.ci/run`) a step that cannot run fails the run instead.

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
        "test" => test().and_then(|s| match s {
            Status::Passed => Ok(()),
            Status::NotRun(why) => Err(format!("part did not run: {why}")),
        }),
        "docs" => docs(),
        "tidy" => run_tidy(),
        "deps" => deps().and_then(|s| match s {
            Status::Passed => Ok(()),
            Status::NotRun(why) => Err(format!("did not run: {why}")),
        }),
        "features" => features().and_then(|s| match s {
            Status::Passed => Ok(()),
            Status::NotRun(why) => Err(format!("part did not run: {why}")),
        }),
        "faults" => faults(rest.iter().any(|a| a == "--quick")),
        "bench" => bench(rest.iter().any(|a| a == "--quick")),
        "fuzz" => fuzz_args(rest).and_then(|(secs, targets)| fuzz(secs, &targets)),
        "e2e" => e2e().and_then(|s| match s {
            Status::Passed => Ok(()),
            Status::NotRun(why) => Err(format!("did not run: {why}")),
        }),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|fmt [--check]|lint|test|docs|tidy|deps|features|e2e|bench [--quick]|faults [--quick]|fuzz [--seconds N] [target…]>"
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

type Result<T = ()> = std::result::Result<T, String>;

/// How long `ci` runs each fuzz target: a smoke test, not a campaign.
const CI_FUZZ_SECONDS: u64 = 20;
type Step = (&'static str, fn() -> Result<Status>);

/// How a step ended when it did not fail.
enum Status {
    Passed,
    /// Its prerequisites are missing here; the text says which and how to install them.
    NotRun(String),
}

fn passed(r: Result) -> Result<Status> {
    r.map(|()| Status::Passed)
}

fn require_all() -> bool {
    std::env::var("XTASK_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

fn ci() -> Result {
    let steps: [Step; 11] = [
        ("fmt --check", || passed(fmt(true))),
        ("lint", || passed(lint())),
        ("test", test),
        ("docs", || passed(docs())),
        ("tidy", || passed(run_tidy())),
        ("deps", deps),
        ("features", features),
        ("e2e", e2e),
        // Short modes: they check that the measurements still run and that the fault table
        // keeps its expectations; the published figures come from the full runs.
        ("faults --quick", || passed(faults(true))),
        ("bench --quick", || passed(bench(true))),
        ("fuzz --seconds 20", || passed(fuzz(CI_FUZZ_SECONDS, &[]))),
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

/// The workspace tests. `subscribe-redis`'s tests need a real Redis at `REDIS_URL` (default
/// `redis://127.0.0.1:6379`); without one they are excluded and reported as not run.
fn test() -> Result<Status> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if redis_reachable(&url) {
        eprintln!("xtask test: Redis at {} answers; its tests run", redacted_url(&url));
        cargo(&["test", "--workspace", "--all-features"], &[])?;
        return Ok(Status::Passed);
    }
    cargo(&["test", "--workspace", "--all-features", "--exclude", "subscribe-redis"], &[])?;
    Ok(Status::NotRun(format!(
        "the subscribe-redis tests: no Redis at {}; start one with \
         `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` \
         (Debian: apt-get install redis-server) or set REDIS_URL",
        redacted_url(&url)
    )))
}

/// `redis://host:port/…` without any password.
fn redacted_url(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| rest.split_once('@').map(|(_, h)| (scheme, h))) {
        Some((scheme, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

/// Whether something answers `PING` with `+PONG` at the URL's host and port.
fn redis_reachable(url: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = rest.split('/').next().unwrap_or("127.0.0.1:6379");
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:6379") };
    let Some(addr) = host_port.to_socket_addrs().ok().and_then(|mut a| a.next()) else { return false };
    let timeout = std::time::Duration::from_secs(2);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else { return false };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 64];
    // An answer of any kind (`+PONG`, or `-NOAUTH` on a server with a password) means Redis.
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read(&mut buf).is_ok_and(|n| n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}

fn docs() -> Result {
    cargo(&["doc", "--workspace", "--no-deps", "--all-features"], &[("RUSTDOCFLAGS", "-Dwarnings")])
}

/// The supply chain: known vulnerabilities in `Cargo.lock` (`cargo audit`, offline, against the
/// RustSec snapshot kept beside the repository in `../shared/advisory-db`), then licenses,
/// duplicate versions and sources (`cargo deny`, with `deny.toml`).
fn deps() -> Result<Status> {
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

/// Crates whose `default-features = false` build must carry no HTTP client or TLS stack.
const LEAN_CRATES: &[&str] = &["subscribe-transport", "subscribe-client"];

fn features() -> Result<Status> {
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

/// The whole-system benchmarks, each scenario in its own process (so peak memory is its own).
/// `quick` runs small sizes: it checks the benchmarks work, its figures mean little.
fn bench(quick: bool) -> Result {
    let scenarios: &[&[&str]] = if quick {
        &[
            &["throughput", "2000", "16"],
            &["sandbox", "1000", "16"],
            &["cold-start", "1000"],
            &["dispatch", "5000"],
        ]
    } else {
        &[
            &["throughput", "50000", "64"],
            &["sandbox", "20000", "64"],
            &["cold-start", "10000"],
            &["dispatch", "10000"],
            &["dispatch", "100000"],
        ]
    };
    let mut results = Vec::new();
    for args in scenarios {
        eprintln!("xtask bench: {}", args.join(" "));
        let mut full = vec!["bench", "-q", "-p", "subscribe-cli", "--bench", "macro", "--"];
        full.extend_from_slice(args);
        let out = cargo_output(&full)?;
        let line = out.lines().rev().find(|l| l.starts_with('{')).ok_or("a scenario printed no result")?;
        results.push(line.to_owned());
    }
    // Micro-benchmarks (criterion keeps the previous run in target/criterion and calls out a
    // change beyond its noise threshold as "Performance has regressed").
    let mut micro = vec!["bench", "-q", "-p", "subscribe-client", "--all-features", "--bench", "micro", "--"];
    if quick {
        micro.push("--quick");
    }
    let micro_out = cargo_output(&micro)?;
    let lines: Vec<&str> = micro_out.lines().collect();
    let mut micro_lines = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("time:") && l.starts_with(' ') && i > 0 {
            micro_lines.push(format!("{:<40} {}", lines[i - 1].trim(), l.trim()));
        } else if l.contains("time:") || l.contains("regressed") || l.contains("improved") {
            micro_lines.push(l.trim().to_owned());
        }
    }
    println!("\nmicro (criterion, per operation)\n{}", micro_lines.join("\n"));
    // Criterion runs with a 20% noise threshold: "regressed" means slower by more than that
    // against the previous run on this machine.
    let mut current = "";
    let mut regressed = Vec::new();
    for l in &lines {
        if !l.starts_with(' ') && !l.trim().is_empty() && !l.contains(':') {
            current = l.trim();
        } else if l.contains("time:") && !l.starts_with(' ') {
            current = l.split("time:").next().unwrap_or("").trim();
        }
        if l.contains("Performance has regressed") {
            regressed.push(current.to_owned());
        }
    }
    if !regressed.is_empty() {
        println!("\nREGRESSED by more than 20% against the previous run: {}", regressed.join("; "));
    }
    println!("\n{:<12} result", "scenario");
    for r in &results {
        let name = json_field(r, "scenario").unwrap_or_default();
        println!("{name:<12} {}", r.trim_matches(|c| c == '{' || c == '}').replace(",\"", "  \""));
    }
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(if quick { "macro-quick.json" } else { "macro.json" });
    std::fs::write(&file, format!("[\n{}\n]\n", results.join(",\n"))).map_err(|e| e.to_string())?;
    eprintln!("xtask bench: results in {}", file.display());
    Ok(())
}

/// The reliability table: 2,000 messages per fault scenario at concurrency 32 against the
/// sandbox, written to `docs/reliability.md` (`--quick`: 400 messages, printed only).
fn faults(quick: bool) -> Result {
    let (sends, conc) = if quick { ("400", "16") } else { ("2000", "32") };
    eprintln!("xtask faults: {sends} sends per scenario at concurrency {conc} (takes about a minute)");
    let out = cargo_output(&[
        "bench",
        "-q",
        "-p",
        "subscribe-cli",
        "--bench",
        "macro",
        "--",
        "faults",
        sends,
        conc,
        "markdown",
    ])?;
    let table: String = out.lines().filter(|l| l.starts_with('|')).flat_map(|l| [l, "\n"]).collect();
    if table.lines().count() < 3 {
        return Err(format!("the fault benchmark printed no table:\n{out}"));
    }
    println!("{table}");
    broken_clients_fail()?;
    if quick {
        return Ok(());
    }
    let doc = root().join("docs/reliability.md");
    let text = std::fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    let (start, end) = ("<!-- faults:start -->", "<!-- faults:end -->");
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
        return Err(format!("{} lacks the {start} … {end} markers", doc.display()));
    };
    let updated = format!("{}{start}\n{table}{}", &text[..a], &text[b..]);
    std::fs::write(&doc, updated).map_err(|e| e.to_string())?;
    eprintln!("xtask faults: table written to {}", doc.display());
    Ok(())
}

/// The table's expectations must be able to fail: a client that reports every send failed,
/// and one that re-sends a message whose outcome is unknown, must each break them.
fn broken_clients_fail() -> Result {
    let cases: [(&[&str], &str); 2] = [
        (&["faults", "100", "8", "only=no_fault", "broken=fail-all"], "0 of 100 delivered"),
        (
            &["faults", "400", "8", "only=delivered,_then_HTTP_502", "broken=resend-unknown"],
            "the sandbox delivered 400; the client reports 398 delivered and 0 unknown",
        ),
    ];
    for (args, must_say) in cases {
        let mut full = vec!["bench", "-q", "-p", "subscribe-cli", "--bench", "macro", "--"];
        full.extend_from_slice(args);
        match cargo_output(&full) {
            Ok(_) => return Err(format!("a broken client passed the fault table: {}", args.join(" "))),
            Err(e) if e.contains(must_say) => {
                eprintln!("xtask faults: the broken client ({}) was caught: {must_say}", args[4]);
            }
            Err(e) => return Err(format!("a broken client ({}) failed, but not as expected: {e}", args[4])),
        }
    }
    Ok(())
}

/// `--seconds N` and target names.
fn fuzz_args(rest: &[String]) -> Result<(u64, Vec<String>)> {
    let mut seconds = 60;
    let mut targets = Vec::new();
    let mut args = rest.iter();
    while let Some(a) = args.next() {
        if a == "--seconds" {
            let n = args.next().ok_or("--seconds needs a number")?;
            seconds = n.parse().map_err(|_| format!("--seconds {n}: not a whole number of seconds"))?;
        } else if a.starts_with('-') {
            return Err(format!("unknown option {a}"));
        } else {
            targets.push(a.clone());
        }
    }
    Ok((seconds, targets))
}

/// The fuzz targets, as `fuzz/Cargo.toml` lists them.
fn fuzz_targets() -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).map_err(|e| e.to_string())?;
    let names: Vec<String> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| {
            b.lines().find_map(|l| l.trim().strip_prefix("name = ")).map(|n| n.trim_matches('"').to_owned())
        })
        .collect();
    if names.is_empty() { Err("fuzz/Cargo.toml lists no [[bin]] targets".into()) } else { Ok(names) }
}

/// Builds the fuzz targets with libFuzzer's coverage instrumentation (the flags cargo-fuzz
/// passes, without a sanitizer, so the stable toolchain builds them) and runs each for
/// `seconds`, starting from `fuzz/seeds/<target>` and the corpus kept in `target/fuzz/corpus`,
/// with `fuzz/dicts/<target>.dict` as libFuzzer's dictionary.
/// A crash stops the run; its input is in `target/fuzz/artifacts/<target>/` and belongs in
/// `fuzz/regressions/<target>/` once fixed, where `cargo test -p subscribe-fuzz` replays it.
fn fuzz(seconds: u64, only: &[String]) -> Result {
    let all = fuzz_targets()?;
    if let Some(unknown) = only.iter().find(|t| !all.contains(t)) {
        return Err(format!("no fuzz target {unknown}; there are {}", all.join(", ")));
    }
    let targets: Vec<&String> = all.iter().filter(|t| only.is_empty() || only.contains(t)).collect();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .map_err(|e| format!("could not start rustc: {e}"))?;
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("rustc -vV printed no host")?;
    let dir = target_dir().join("fuzz");
    let dir_text = dir.to_string_lossy().into_owned();
    // `--target` keeps these flags off build scripts and proc macros.
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
        "-Cdebuginfo=1",
    ]
    .join(" ");
    let mut build = vec!["build", "--release", "-p", "subscribe-fuzz", "--target", &host];
    for t in &targets {
        build.extend(["--bin", t.as_str()]);
    }
    cargo(&build, &[("CARGO_TARGET_DIR", &dir_text), ("RUSTFLAGS", &flags)])?;
    let mut rows = Vec::new();
    for t in &targets {
        let corpus = dir.join("corpus").join(t);
        let artifacts = dir.join("artifacts").join(t);
        for d in [&corpus, &artifacts] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let seeds = root().join("fuzz/seeds").join(t);
        let dict = root().join("fuzz/dicts").join(format!("{t}.dict"));
        eprintln!("xtask fuzz: {t} for {seconds} s");
        let out = Command::new(dir.join(&host).join("release").join(t))
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .arg("-max_len=9000")
            .arg("-timeout=10")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(dict.is_file().then(|| format!("-dict={}", dict.display())))
            .arg(&corpus)
            .arg(&seeds)
            .output()
            .map_err(|e| format!("could not start the {t} fuzzer: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |key: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{key}:")).map(|v| v.trim().to_owned()))
                .unwrap_or_else(|| "?".into())
        };
        if !out.status.success() {
            eprintln!("xtask fuzz: {t}: FAILED after {} executions", stat("number_of_executed_units"));
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "fuzz target {t} found a failing input (saved under {}):\n{}\n\
                 Fix it, then copy the input into fuzz/regressions/{t}/ so `cargo test -p subscribe-fuzz` replays it.",
                artifacts.display(),
                tail.join("\n")
            ));
        }
        let executions: u64 = stat("number_of_executed_units").parse().unwrap_or(0);
        if executions == 0 {
            return Err(format!("fuzz target {t} ran no input (libFuzzer reported no executions)"));
        }
        let corpus_size = std::fs::read_dir(&corpus).map_or(0, Iterator::count);
        eprintln!(
            "xtask fuzz: {t}: {} executions, {} new inputs, no failure",
            stat("number_of_executed_units"),
            stat("new_units_added")
        );
        rows.push(format!(
            "{t:<14} {:>12} {:>10} {:>12} {:>8}",
            stat("number_of_executed_units"),
            stat("average_exec_per_sec"),
            stat("new_units_added"),
            corpus_size
        ));
    }
    println!("\n{:<14} {:>12} {:>10} {:>12} {:>8}", "target", "executions", "exec/s", "new inputs", "corpus");
    for r in &rows {
        println!("{r}");
    }
    println!("no failing input in {} target(s), {seconds} s each", rows.len());
    Ok(())
}

/// The text of a top-level string field of a one-line JSON object (enough for our own output).
fn json_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    Some(json[start..].split('"').next()?.to_owned())
}

/// The first of `candidates` that is an existing file, or found on `PATH`.
fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|c| {
        let c = Path::new(c);
        if c.is_absolute() {
            return c.is_file().then(|| c.to_path_buf());
        }
        std::env::split_paths(&path).map(|d| d.join(c)).find(|p| p.is_file())
    })
}

/// The browser test: the sandbox and the web app in-process, headless Chromium through
/// chromedriver, screenshots under `target/e2e/`.
fn e2e() -> Result<Status> {
    let chrome = find_program("CHROME_BIN", &["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program("CHROMEDRIVER", &["chromedriver"]);
    let (Some(chrome), Some(driver)) = (chrome, driver) else {
        return Ok(Status::NotRun(
            "Chromium or chromedriver not found; install them with `sudo apt-get install chromium chromium-driver` \
             (or set CHROME_BIN and CHROMEDRIVER)"
                .into(),
        ));
    };
    let (chrome, driver) = (chrome.to_string_lossy().into_owned(), driver.to_string_lossy().into_owned());
    // Screenshots of an earlier run must not pass for this one's.
    let dir = target_dir().join("e2e");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let out = cargo_capture(
        &["test", "-p", "web-app", "--test", "browser", "--", "--nocapture"],
        &[("CHROME_BIN", &chrome), ("CHROMEDRIVER", &driver)],
    )?;
    // A test binary that filtered or skipped its test still exits 0: require it ran.
    let ran = out.lines().find_map(|l| {
        let rest = l.strip_prefix("test result: ok. ")?;
        rest.split(' ').next()?.parse::<u32>().ok()
    });
    if ran.unwrap_or(0) == 0 {
        return Err("the browser test did not run (no `test result: ok. N passed` with N > 0)".into());
    }
    let shots = std::fs::read_dir(&dir)
        .map_err(|e| format!("no screenshots in {}: {e}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    if shots == 0 {
        return Err(format!("the browser test saved no screenshot in {}", dir.display()));
    }
    eprintln!("xtask e2e: {shots} screenshots in {}", dir.display());
    Ok(Status::Passed)
}

/// Runs cargo, echoing its output after it ends, and returns stdout and stderr together.
fn cargo_capture(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let out = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprint!("{text}");
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("`cargo {}` failed ({})", args.join(" "), out.status))
    }
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

/// Cargo's target directory: `CARGO_TARGET_DIR` or `target/` at the root.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
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
