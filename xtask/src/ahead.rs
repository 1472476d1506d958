//! `cargo xtask ahead`: the store and ledger tests again, 400 days in the future.
//!
//! A test that builds an instant from a fixed date passes until the real clock reaches it, then
//! fails on every run (the token store contract once saved tokens expiring on 2027-01-15, which
//! Redis would have dropped on sight from that morning on). This step catches the next one: it
//! runs every test of the Redis and SQL stores (contracts, fleets, outages, clocks) and the
//! client's contract tests on its in-memory stores with the clocks they meet set
//! [`DAYS_AHEAD`] days ahead, by libfaketime (`LD_PRELOAD`):
//!
//! - the test processes (so SQLite, in-process, too) see the future;
//! - a PostgreSQL cluster started for the step, under the same fake clock, gives the future from
//!   `now()`;
//! - Redis keeps the real clock (libfaketime cannot run beside its jemalloc), which is why the
//!   Redis stores hand it lifetimes computed on the application's clock, never instants: with
//!   them, a fixed instant in a test is as stale to Redis as it is to the test.
//!
//! It cannot pass by running in the present: a process and PostgreSQL must read at least
//! `DAYS_AHEAD - 1` days ahead, a canary test holding a fixed date must fail, and each suite's
//! named contract tests must be among those that pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::run::{Result, Status, cargo_output, root};
use crate::test::redis_reachable;

/// How far ahead the clocks are set: more than a year, so a date anywhere in the coming year
/// is already in the past.
pub(crate) const DAYS_AHEAD: u64 = 400;

/// What runs ahead: a package's test binary, the filter it runs with (`None`: all of it) and
/// the tests that must be among those that pass (so a renamed or dropped suite cannot leave
/// only meta-tests to count).
struct Suite {
    package: &'static str,
    target: &'static str,
    filter: Option<&'static str>,
    required: &'static [&'static str],
}

const SUITES: &[Suite] = &[
    // The in-memory stores and the contracts' own instants.
    Suite {
        package: "subscribe-client",
        target: "it",
        filter: Some("contract"),
        required: &[
            "in_memory_store_passes_the_contract",
            "in_memory_ledger_passes_the_contract",
            "in_memory_used_states_pass_the_contract",
        ],
    },
    // Every Redis and SQL store test: contracts, fleets, outages, clocks.
    Suite {
        package: "subscribe-redis",
        target: "it",
        filter: None,
        required: &[
            "token_store_passes_the_client_contract",
            "grant_ledger_passes_the_client_contract",
            "used_states_pass_the_client_contract",
            "notification_results_pass_the_client_contract_and_expire",
        ],
    },
    Suite {
        package: "subscribe-sql",
        target: "sqlite",
        filter: None,
        required: &[
            "the_ledger_and_token_store_pass_the_client_contract_suites",
            "the_used_states_pass_the_client_contract",
        ],
    },
    Suite {
        package: "subscribe-sql",
        target: "postgres",
        filter: None,
        required: &[
            "the_ledger_and_token_store_pass_the_client_contract_suites",
            "the_used_states_pass_the_client_contract",
        ],
    },
];

/// The canary: a Redis test whose token expires at an instant it reads from [`CANARY_ENV`]
/// (now + 30 days when unset, so it passes in the present). This step sets it to the real
/// clock's now + 30 days, a fixed date as a test might hold one, and requires the test to FAIL
/// ahead: that shows the fake clock reaches the test processes and that a fixed date cannot
/// pass the step.
const CANARY: (&str, &str, &str) =
    ("subscribe-redis", "it", "clock::a_token_saved_until_an_instant_is_kept_until_then");
pub(crate) const CANARY_ENV: &str = "WXSUB_TEST_TOKEN_EXPIRES_MS";

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
    let find = |package: &str, target: &str| {
        binaries
            .iter()
            .find(|b| b.package == package && b.target == target)
            .ok_or_else(|| format!("cargo built no test binary `{target}` of {package}"))
    };
    check_process_clock(&fake)?;
    let pg = FakeCluster::start(&pg_bin, &fake)?;
    pg.check_clock()?;
    let run = |binary: &TestBinary, args: &[&str], extra: &[(&str, String)]| -> Result<(bool, String)> {
        let out = Command::new(&binary.executable)
            .args(args)
            .envs(fake.iter().chain(extra).map(|(k, v)| (*k, v.as_str())))
            .env("POSTGRES_URL", pg.url())
            .env("REDIS_URL", &redis)
            .current_dir(&binary.dir)
            .output()
            .map_err(|e| format!("could not start {}: {e}", binary.executable.display()))?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    };

    let (package, target, canary) = CANARY;
    let fixed = (real_now_secs() + 30 * 86_400) * 1000;
    eprintln!("xtask ahead: the canary ({canary}) with a fixed date, {DAYS_AHEAD} days ahead: it must fail");
    let (ok, text) = run(find(package, target)?, &["--exact", canary], &[(CANARY_ENV, fixed.to_string())])?;
    if ok || !text.contains("a token is kept until its expiry") {
        eprint!("{text}");
        return Err(format!(
            "the canary with a fixed date did not fail as expected {DAYS_AHEAD} days ahead: the fake clock              does not reach the tests, so this step cannot catch a fixed date"
        ));
    }
    eprintln!("xtask ahead: the canary failed as it must");

    for suite in SUITES {
        let binary = find(suite.package, suite.target)?;
        let filter = suite.filter.map_or_else(Vec::new, |f| vec![f]);
        eprintln!(
            "xtask ahead: {} --test {} {}, {DAYS_AHEAD} days ahead",
            suite.package,
            suite.target,
            suite.filter.unwrap_or("(every test)")
        );
        let (ok, text) = run(binary, &filter, &[])?;
        eprint!("{text}");
        if !ok {
            return Err(format!(
                "{}'s `{}` tests fail {DAYS_AHEAD} days ahead: an instant in a test (or a store) is fixed \
                 instead of relative to now",
                suite.package, suite.target
            ));
        }
        let missing: Vec<&str> = suite.required.iter().copied().filter(|name| !passed(&text, name)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}'s `{}` did not run and pass {} {DAYS_AHEAD} days ahead",
                suite.package,
                suite.target,
                missing.join(", ")
            ));
        }
    }
    Ok(Status::Passed)
}

/// Whether `name` (a test's last path segment) is among the tests the output reports `ok`.
fn passed(output: &str, name: &str) -> bool {
    output.lines().any(|l| {
        l.strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... ok"))
            .is_some_and(|path| path == name || path.ends_with(&format!("::{name}")))
    })
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

/// A throwaway PostgreSQL cluster under the fake clock, in a directory of its own under the
/// system's temporary directory (so the `postgres` user can reach it wherever the checkout
/// is), on a free port of 127.0.0.1 and no Unix socket; stopped and removed when dropped.
struct FakeCluster {
    pg_bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    /// `runuser -u postgres --` when this runs as root (initdb and postgres refuse root).
    as_postgres: bool,
}

/// The prefix of the clusters' directories: one left by a run that was killed is stopped and
/// removed by the next.
const CLUSTER_PREFIX: &str = "wxsub-ahead-";

impl FakeCluster {
    fn start(pg_bin: &Path, fake: &[(&str, String)]) -> Result<Self> {
        let as_postgres = is_root();
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(CLUSTER_PREFIX) {
                let stale = Self {
                    pg_bin: pg_bin.to_path_buf(),
                    data: entry.path().join("pg"),
                    dir: entry.path(),
                    port: 0,
                    as_postgres,
                };
                eprintln!("xtask ahead: removing a cluster an earlier run left in {}", stale.dir.display());
                drop(stale);
            }
        }
        let dir = tmp.join(format!("{CLUSTER_PREFIX}{}", std::process::id()));
        let data = dir.join("pg");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        if as_postgres {
            run(Command::new("chown").arg("-R").arg("postgres").arg(&dir), "chown postgres")?;
        }
        let mut cluster = Self { pg_bin: pg_bin.to_path_buf(), dir, data, port: 0, as_postgres };
        let data = cluster.data.to_string_lossy().into_owned();
        run(
            cluster
                .command("initdb")
                .args(["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"])
                .envs(fake.iter().map(|(k, v)| (*k, v.as_str()))),
            "initdb",
        )?;
        let log = format!("{data}/log");
        // A free port can be taken between our look and the server's bind: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port()?;
            let options = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
                cluster.port
            );
            match run(
                cluster
                    .command("pg_ctl")
                    .args(["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"])
                    .envs(fake.iter().map(|(k, v)| (*k, v.as_str()))),
                "pg_ctl start",
            ) {
                Ok(()) => return Ok(cluster),
                Err(e) => last = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
            }
        }
        Err(last)
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
        if self.data.join("postmaster.pid").exists() {
            match self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "xtask ahead: could not stop the cluster in {data}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("xtask ahead: could not stop the cluster in {data}: {e}"),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("xtask ahead: could not remove {}: {e}", self.dir.display());
        }
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
    fn a_required_test_counts_only_when_it_passed() {
        let out = "test contract::token_store_passes_the_client_contract ... ok\n\
                   test contract::grant_ledger_passes_the_client_contract ... FAILED\n\
                   test the_ledger_and_token_store_pass_the_client_contract_suites ... ok\n";
        assert!(passed(out, "token_store_passes_the_client_contract"));
        assert!(!passed(out, "grant_ledger_passes_the_client_contract"));
        assert!(passed(out, "the_ledger_and_token_store_pass_the_client_contract_suites"));
        assert!(!passed(out, "store_passes_the_client_contract"), "a name matches whole segments only");
    }
}
