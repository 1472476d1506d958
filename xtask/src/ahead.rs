//! `cargo xtask ahead`: the store and ledger contract suites again, 400 days in the future.
//!
//! A test that builds an instant from a fixed date passes until the real clock reaches it, then
//! fails on every run (the token store contract once saved tokens expiring on 2027-01-15, which
//! Redis would have dropped on sight from that morning on). This step catches the next one: it
//! runs every contract test (in-memory, Redis, SQLite, PostgreSQL) with the clocks they meet set
//! [`DAYS_AHEAD`] days ahead, by libfaketime (`LD_PRELOAD`):
//!
//! - the test processes (so SQLite, in-process, too) see the future;
//! - a PostgreSQL cluster started for the step, under the same fake clock, gives the future from
//!   `now()`;
//! - Redis keeps the real clock (libfaketime cannot run beside its jemalloc), which is why the
//!   Redis stores hand it lifetimes computed on the application's clock, never instants: with
//!   them, a fixed instant in a test is as stale to Redis as it is to the test.
//!
//! Before the tests, the step checks that the fake clock took (a process and PostgreSQL both
//! read at least `DAYS_AHEAD - 1` days ahead), so it cannot pass by running in the present.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::run::{Result, Status, cargo_output, root, target_dir};
use crate::test::redis_reachable;

/// How far ahead the clocks are set: more than a year, so a date anywhere in the coming year
/// is already in the past.
pub(crate) const DAYS_AHEAD: u64 = 400;

/// The contract tests, by package and test target: each binary runs with the filter `contract`.
const SUITES: &[(&str, &str)] = &[
    ("subscribe-client", "it"),
    ("subscribe-redis", "it"),
    ("subscribe-sql", "sqlite"),
    ("subscribe-sql", "postgres"),
];

pub(crate) fn ahead() -> Result<Status> {
    let Some(lib) = libfaketime() else {
        return Ok(Status::NotRun(
            "libfaketime not found (the contracts 400 days ahead need it): `sudo apt-get install faketime`"
                .into(),
        ));
    };
    let Some(pg_bin) = postgres_bin() else {
        return Ok(Status::NotRun(
            "PostgreSQL's server programs (initdb, pg_ctl) not found: `sudo apt-get install postgresql`"
                .into(),
        ));
    };
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if !redis_reachable(&redis) {
        return Ok(Status::NotRun(format!(
            "no Redis at {} for the Redis contracts 400 days ahead",
            crate::test::redacted_url(&redis)
        )));
    }
    let fake: Vec<(&str, String)> = vec![
        ("LD_PRELOAD", lib.to_string_lossy().into_owned()),
        ("FAKETIME", format!("+{DAYS_AHEAD}d")),
        // Monotonic clocks stay real: timers and timeouts measure durations, not dates.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ];
    let binaries = test_binaries()?;
    check_process_clock(&fake)?;
    let pg = FakeCluster::start(&pg_bin, &fake)?;
    pg.check_clock()?;
    for (package, target) in SUITES {
        let (exe, dir) = binaries
            .iter()
            .find(|b| b.package == *package && b.target == *target)
            .map(|b| (b.executable.clone(), b.dir.clone()))
            .ok_or_else(|| format!("cargo built no test binary `{target}` of {package}"))?;
        eprintln!("xtask ahead: {package} --test {target} contract, {DAYS_AHEAD} days ahead");
        let out = Command::new(&exe)
            .arg("contract")
            .envs(fake.iter().map(|(k, v)| (*k, v.as_str())))
            .env("POSTGRES_URL", pg.url())
            .env("REDIS_URL", &redis)
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("could not start {}: {e}", exe.display()))?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprint!("{text}");
        if !out.status.success() {
            return Err(format!(
                "{package}'s `{target}` contract tests fail {DAYS_AHEAD} days ahead: an instant in a test \
                 (or a store) is fixed instead of relative to now"
            ));
        }
        // A filter that matched nothing still exits 0.
        if passed_count(&text) == 0 {
            return Err(format!("{package}'s `{target}` ran no contract test (filter `contract`)"));
        }
    }
    Ok(Status::Passed)
}

/// `N` of the last `test result: ok. N passed` line.
fn passed_count(output: &str) -> u32 {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. ")?.split(' ').next()?.parse::<u32>().ok())
        .sum()
}

fn libfaketime() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIBFAKETIME") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let lib = Path::new("/usr/lib");
    let mut dirs = vec![lib.join("faketime")];
    if let Ok(entries) = std::fs::read_dir(lib) {
        dirs.extend(entries.filter_map(std::result::Result::ok).map(|e| e.path().join("faketime")));
    }
    dirs.into_iter().map(|d| d.join("libfaketime.so.1")).find(|p| p.is_file())
}

/// The directory of `initdb` and `pg_ctl`: `PG_BIN`, or the newest `/usr/lib/postgresql/*/bin`.
fn postgres_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.join("initdb").is_file());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(std::result::Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

struct TestBinary {
    package: String,
    target: String,
    executable: PathBuf,
    /// The package's directory (test binaries run there under cargo).
    dir: PathBuf,
}

/// The workspace's test binaries, built as the `test` step builds them (so from its cache).
fn test_binaries() -> Result<Vec<TestBinary>> {
    let out = cargo_output(&["test", "--workspace", "--all-features", "--no-run", "--message-format=json"])?;
    let mut found = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(exe), Some(target)) = (msg["executable"].as_str(), msg["target"]["name"].as_str()) else {
            continue;
        };
        let Some(manifest) = msg["manifest_path"].as_str().map(Path::new) else { continue };
        let Some(dir) = manifest.parent() else { continue };
        let package = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        found.push(TestBinary {
            package,
            target: target.to_owned(),
            executable: exe.into(),
            dir: dir.into(),
        });
    }
    Ok(found)
}

/// The real clock's seconds since the epoch (this is what the fake clock is compared with).
#[allow(clippy::disallowed_methods)] // the point is the machine's own clock
fn real_now_secs() -> u64 {
    secs_since_epoch(SystemTime::now())
}

fn secs_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether `secs` (read under the fake clock) is at least `DAYS_AHEAD - 1` days past now.
fn is_ahead(secs: u64) -> bool {
    let real = real_now_secs();
    secs >= real + (DAYS_AHEAD - 1) * 86_400
}

/// A process under the fake clock reads the future (`date +%s`).
fn check_process_clock(fake: &[(&str, String)]) -> Result {
    let out = Command::new("date")
        .arg("+%s")
        .envs(fake.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .map_err(|e| format!("could not run date: {e}"))?;
    let secs: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    if is_ahead(secs) {
        eprintln!("xtask ahead: a process under libfaketime reads {secs} (real + {DAYS_AHEAD} days)");
        Ok(())
    } else {
        Err(format!("libfaketime did not move a process's clock ahead (it read {secs})"))
    }
}

/// A throwaway PostgreSQL cluster under the fake clock, on a free port of 127.0.0.1, stopped
/// (immediately) when dropped.
struct FakeCluster {
    pg_bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// `runuser -u postgres --` when this runs as root (initdb and postgres refuse root).
    as_postgres: bool,
}

impl FakeCluster {
    fn start(pg_bin: &Path, fake: &[(&str, String)]) -> Result<Self> {
        let dir = target_dir().join("ahead");
        let data = dir.join("pg");
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_postgres = is_root();
        if as_postgres {
            std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
            run(Command::new("chown").arg("postgres").arg(&data), "chown postgres")?;
        }
        let port = free_port()?;
        let cluster = Self { pg_bin: pg_bin.to_path_buf(), data, port, as_postgres };
        let data = cluster.data.to_string_lossy().into_owned();
        run(
            cluster
                .command("initdb")
                .args(["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"])
                .envs(fake.iter().map(|(k, v)| (*k, v.as_str()))),
            "initdb",
        )?;
        let options = format!("-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off");
        let log = format!("{data}/log");
        run(
            cluster
                .command("pg_ctl")
                .args(["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"])
                .envs(fake.iter().map(|(k, v)| (*k, v.as_str()))),
            "pg_ctl start",
        )?;
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let program = self.pg_bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(root());
        cmd
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The cluster's `now()` is in the future.
    fn check_clock(&self) -> Result {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
            ])
            .arg("SELECT extract(epoch FROM now())::bigint")
            .output()
            .map_err(|e| format!("could not run psql (apt-get install postgresql-client): {e}"))?;
        let secs: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        if is_ahead(secs) {
            eprintln!("xtask ahead: PostgreSQL on port {} reads now() = {secs}", self.port);
            Ok(())
        } else {
            Err(format!(
                "PostgreSQL under libfaketime did not read the future (now() = {secs}; {})",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("no free port: {e}"))
}

fn run(cmd: &mut Command, what: &str) -> Result {
    let out = cmd.output().map_err(|e| format!("could not start {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_read_less_than_a_year_ahead_is_not_ahead() {
        let now = real_now_secs();
        assert!(is_ahead(now + DAYS_AHEAD * 86_400));
        assert!(!is_ahead(now));
        assert!(!is_ahead(now + 300 * 86_400));
    }

    #[test]
    fn passed_counts_add_up_and_a_filtered_run_counts_zero() {
        let out =
            "running 2 tests\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out\n";
        assert_eq!(passed_count(out), 2);
        assert_eq!(
            passed_count("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 11 filtered out"),
            0
        );
    }
}
