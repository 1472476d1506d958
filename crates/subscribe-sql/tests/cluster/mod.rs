//! A throwaway PostgreSQL cluster that checks passwords, for the tests the machine's server
//! cannot give (it may trust every local connection).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A cluster made by `initdb -A scram-sha-256 --pwfile`: every connection, over TCP or the
/// socket, must give the SCRAM password of its one role, [`USER`](Self::USER). It lives in a
/// fresh directory under the system's temporary directory and listens on 127.0.0.1 at a free
/// port; dropping it (a failed test included) stops it and removes the directory.
///
/// It needs the PostgreSQL server's programs (`initdb`, `pg_ctl`): found in `PG_BIN`, in
/// Debian's `/usr/lib/postgresql/<version>/bin` or RHEL's `/usr/pgsql-<version>/bin` (the
/// newest), or on `PATH`. initdb and postgres refuse to run as root: as root they run as the
/// `postgres` user (which the server's package creates), through `runuser`.
pub struct PasswordCluster {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    started: bool,
}

impl PasswordCluster {
    /// The cluster's superuser, the role the password belongs to.
    pub const USER: &str = "wxsub_owner";

    /// Creates and starts a cluster whose superuser's password is `password`.
    pub fn start(password: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let bin = bindir();
        let as_postgres = stdout(Command::new("id").arg("-u")).trim() == "0";
        let dir = std::env::temp_dir().join(format!(
            "wxsub-pg-auth-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        sweep_stale();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let mut cluster = Self { dir, bin, as_postgres, port: 0, started: false };
        let pwfile = cluster.dir.join("pwfile");
        std::fs::write(&pwfile, password).unwrap();
        if as_postgres {
            let id = |flag: &str| -> u32 {
                let out = stdout(Command::new("id").args([flag, "postgres"]));
                out.trim().parse().unwrap_or_else(|_| {
                    panic!(
                        "running as root, initdb needs the unprivileged user `postgres` \
                         (the PostgreSQL server's package creates it): `id {flag} postgres` said {out:?}"
                    )
                })
            };
            let (uid, gid) = (id("-u"), id("-g"));
            for path in [&cluster.dir, &pwfile] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let (dir, data) = (cluster.dir.display().to_string(), cluster.data());
        let pwfile = pwfile.display().to_string();
        let initdb = ["-D", &data, "-U", Self::USER, "-A", "scram-sha-256", "--pwfile", &pwfile];
        cluster.run("initdb", &[&initdb[..], &["--no-sync", "-E", "UTF8", "--locale=C"]].concat());
        let _ = std::fs::remove_file(cluster.dir.join("pwfile"));
        // A free port, found by binding it and letting it go: another process may take it in
        // between, so a failed start is tried again on another.
        let mut last = String::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let options = options(port);
            let log = format!("{dir}/log-{port}");
            let args = ["-D", &data, "-l", &log, "-w", "-t", "120", "-o", &options, "start"];
            let out = cluster.command("pg_ctl", &args).output().unwrap();
            if out.status.success() {
                cluster.port = port;
                cluster.started = true;
                return cluster;
            }
            last = format!(
                "{}{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(cluster.dir.join(format!("log-{port}"))).unwrap_or_default()
            );
        }
        panic!("the throwaway PostgreSQL cluster did not start: {last}");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server as a minor upgrade or a failover would (`pg_ctl stop -m fast`: every
    /// session ended, a clean shutdown); [`start_again`](Self::start_again) brings it back.
    pub fn stop_fast(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "-t", "120", "stop"]);
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn start_again(&self) {
        let (port, dir) = (self.port, self.dir.display().to_string());
        let options = options(port);
        let log = format!("{dir}/log-{port}");
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "120", "-o", &options, "start"]);
    }

    /// `postgres://USER:password@127.0.0.1:port/postgres`.
    pub fn url(&self, password: &str) -> String {
        format!("postgres://{}:{password}@127.0.0.1:{}/postgres", Self::USER, self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// `program args…` from the server's directory, as the `postgres` user when we are root.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // A directory the `postgres` user may enter (it may not enter ours).
        cmd.args(args).current_dir(&self.dir);
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program, args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        // Whenever a server may be running: one that `pg_ctl start` gave up waiting for too.
        if self.started || Path::new(&self.data()).join("postmaster.pid").exists() {
            let _ = self.command("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server's options: TCP on `port` of 127.0.0.1 only (no socket path to outgrow its 107
/// bytes in a long temporary directory), no fsync.
fn options(port: u16) -> String {
    format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off")
}

/// Stops and removes the clusters of test processes that are gone (killed before their drop).
fn sweep_stale() {
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("wxsub-pg-auth-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let stale = PasswordCluster {
            dir: entry.path(),
            bin: bindir(),
            as_postgres: stdout(Command::new("id").arg("-u")).trim() == "0",
            port: 0,
            started: false,
        };
        drop(stale);
    }
}

/// The directory of `initdb` and `pg_ctl`.
fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    // The newest of the versioned directories the distributions use.
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix, suffix) in [("/usr/lib/postgresql", "", "bin"), ("/usr", "pgsql-", "bin")] {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name.strip_prefix(prefix).and_then(|v| v.split('.').next()?.parse().ok())
            else {
                continue;
            };
            let dir = entry.path().join(suffix);
            if has_initdb(&dir) {
                versioned.push((version, dir));
            }
        }
    }
    if let Some((_, dir)) = versioned.into_iter().max() {
        return dir;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .find(|dir| has_initdb(dir))
        .unwrap_or_else(|| {
            panic!(
                "initdb and pg_ctl (the PostgreSQL server's programs) are needed: install the \
                 PostgreSQL server (Debian: apt-get install postgresql) or set PG_BIN to the \
                 directory that holds them"
            )
        })
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
