//! `cargo xtask fuzz`: each libFuzzer target for a while.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::run::{Result, cargo, root, target_dir};

/// `--seconds N` and target names.
pub(crate) fn fuzz_args(rest: &[String]) -> Result<(u64, Vec<String>)> {
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
pub(crate) fn fuzz_targets() -> Result<Vec<String>> {
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
pub(crate) fn fuzz(seconds: u64, only: &[String]) -> Result {
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
    // libFuzzer runs on one core: as many targets at once as there are cores, each one's
    // output in a file (a pipe left unread would stall it).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut rows = Vec::new();
    for batch in targets.chunks(cores) {
        let mut running = Vec::new();
        for t in batch {
            running.push((t, start_fuzzer(&dir, &host, t, seconds)?));
        }
        for (t, (mut child, log_file, artifacts, corpus)) in running {
            let status = child.wait().map_err(|e| format!("the {t} fuzzer: {e}"))?;
            let log =
                std::fs::read_to_string(&log_file).map_err(|e| format!("{}: {e}", log_file.display()))?;
            rows.push(fuzz_result(t, status.success(), &log, &artifacts, &corpus)?);
        }
    }
    println!("\n{:<14} {:>12} {:>10} {:>12} {:>8}", "target", "executions", "exec/s", "new inputs", "corpus");
    for r in &rows {
        println!("{r}");
    }
    println!("no failing input in {} target(s), {seconds} s each", rows.len());
    Ok(())
}

/// Starts target `t`'s fuzzer for `seconds`, its output in `target/fuzz/logs/<t>.log`; returns
/// the child, the log's path, and the target's artifact and corpus directories.
fn start_fuzzer(dir: &Path, host: &str, t: &str, seconds: u64) -> Result<(Child, PathBuf, PathBuf, PathBuf)> {
    let corpus = dir.join("corpus").join(t);
    let artifacts = dir.join("artifacts").join(t);
    let logs = dir.join("logs");
    for d in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let seeds = root().join("fuzz/seeds").join(t);
    let dict = root().join("fuzz/dicts").join(format!("{t}.dict"));
    let log_file = logs.join(format!("{t}.log"));
    let log = File::create(&log_file).map_err(|e| format!("{}: {e}", log_file.display()))?;
    eprintln!("xtask fuzz: {t} for {seconds} s");
    let child = Command::new(dir.join(host).join("release").join(t))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-max_len=9000")
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(dict.is_file().then(|| format!("-dict={}", dict.display())))
        .arg(&corpus)
        .arg(&seeds)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("could not start the {t} fuzzer: {e}"))?;
    Ok((child, log_file, artifacts, corpus))
}

/// The table row of target `t`'s run, from libFuzzer's final statistics in `log`; an error
/// when it failed or ran nothing.
fn fuzz_result(t: &str, succeeded: bool, log: &str, artifacts: &Path, corpus: &Path) -> Result<String> {
    let stat = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{key}:")).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| "?".into())
    };
    if !succeeded {
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
    let corpus_size = std::fs::read_dir(corpus).map_or(0, Iterator::count);
    eprintln!(
        "xtask fuzz: {t}: {} executions, {} new inputs, no failure",
        stat("number_of_executed_units"),
        stat("new_units_added")
    );
    Ok(format!(
        "{t:<14} {:>12} {:>10} {:>12} {:>8}",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        stat("new_units_added"),
        corpus_size
    ))
}
