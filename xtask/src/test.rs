//! `cargo xtask test`: the workspace tests, with Redis and PostgreSQL when they answer.

use crate::run::{Result, Status, cargo, cargo_has, cargo_output, root};

/// The command that starts the machine's PostgreSQL cluster.
pub(crate) const START_POSTGRES: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// The workspace tests (with cargo-nextest when installed, and the doctests): the whole
/// workspace with every feature, so every test and doctest runs; then each example built alone
/// with its default features, as its README runs it (`cargo run -p quickstart`: one example's
/// features are not unified with another's).
///
/// Each crate alone with its default features, as an integrator's dependency, is built by
/// `cargo xtask package` from its packaged sources (its library and binaries). The doctests
/// are not run a second time with each crate's default features: that pass built the
/// dependency graph once per crate with its dev-dependencies' features (a different graph for
/// each of nine crates, none shared with the packages' builds), about eight minutes of every
/// CI run on two cores, to find a doctest that uses a non-default feature without a `cfg`,
/// which no integrator runs (a doctest needing a feature says so with `#[cfg]`).
///
/// `subscribe-redis`'s tests need a real Redis at `REDIS_URL` (default
/// `redis://127.0.0.1:6379`); `subscribe-sql`'s PostgreSQL tests need a real PostgreSQL at
/// `POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`), as do `subscribe-cli`'s
/// dispatcher processes in `tests/postgres.rs`. Without a service, the tests that
/// need it are left out of both passes and reported as not run; the rest of their crates still
/// runs.
pub(crate) fn test() -> Result<Status> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let postgres =
        std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut not_run = Vec::new();
    let redis_up = redis_reachable(&redis);
    if redis_up {
        eprintln!("xtask test: Redis at {} answers; its tests run", redacted_url(&redis));
    } else {
        not_run.push(format!(
            "the Redis tests of subscribe-redis and subscribe-gateway: no Redis at {}; start one with \
             `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` \
             (Debian: apt-get install redis-server) or set REDIS_URL",
            redacted_url(&redis)
        ));
    }
    let postgres_up = reachable(&postgres, 5432);
    if postgres_up {
        eprintln!("xtask test: PostgreSQL at {} answers; its tests run", redacted_url(&postgres));
    } else {
        not_run.push(format!(
            "the PostgreSQL tests of subscribe-sql, subscribe-cli and subscribe-gateway: nothing answers at {}; \
             start it with `{START_POSTGRES}` (Debian: apt-get install postgresql) or set POSTGRES_URL",
            redacted_url(&postgres)
        ));
    }
    let up = |service: Service| match service {
        Service::Redis => redis_up,
        Service::Postgres => postgres_up,
    };
    // A crate with a test binary whose service is down is left out of the workspace run, then
    // run without those binaries.
    let gated: Vec<&Gated> =
        GATED.iter().filter(|g| g.needs.iter().any(|(_, service)| !up(*service))).collect();

    let started = std::time::Instant::now();
    eprintln!("xtask test: every member, every feature");
    let mut args = vec!["--workspace", "--all-features"];
    for g in &gated {
        args.extend(["--exclude", g.krate]);
    }
    run_tests(&args, true)?;
    for g in &gated {
        g.run_without_the_absent(&["--all-features"], up)?;
    }

    let every_feature = started.elapsed();

    let started = std::time::Instant::now();
    eprintln!("xtask test: each example alone, its default features, as its README runs it");
    for (member, manifest) in members()? {
        if manifest.starts_with("examples/") {
            cargo(&["build", "-p", &member], &[])?;
        }
    }
    eprintln!(
        "xtask test: every feature {every_feature:.0?}, then the examples alone {:.0?}",
        started.elapsed()
    );
    Ok(if not_run.is_empty() { Status::Passed } else { Status::NotRun(not_run.join("; ")) })
}

/// The tests `selection` names: with cargo-nextest when it is installed (each test in its own
/// process, every test binary at once, which takes a fraction of `cargo test`'s time, whose
/// binaries run one after another), then the doctests, which nextest does not run; with
/// `cargo test` otherwise. `doc`: whether the selection has a library, whose doctests run.
fn run_tests(selection: &[&str], doc: bool) -> Result {
    if !cargo_has("nextest") {
        return cargo(&[&["test"], selection].concat(), &[]);
    }
    cargo(&[&["nextest", "run", "--no-tests=pass"], selection].concat(), &[])?;
    if doc { cargo(&[&["test", "--doc"], selection].concat(), &[]) } else { Ok(()) }
}

/// The workspace's members, by package name, each with its manifest's path relative to the
/// root (`/`-separated), from `cargo metadata`.
fn members() -> Result<Vec<(String, String)>> {
    let metadata = cargo_output(&["metadata", "--no-deps", "--format-version", "1"])?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).map_err(|e| format!("cargo metadata: {e}"))?;
    let packages = metadata["packages"].as_array().ok_or("cargo metadata: no packages")?;
    packages
        .iter()
        .map(|p| {
            let name = p["name"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "cargo metadata: a package without a name".to_owned())?;
            let manifest = p["manifest_path"].as_str().unwrap_or_default();
            let root = root();
            let relative =
                std::path::Path::new(manifest).strip_prefix(&root).unwrap_or(std::path::Path::new(manifest));
            let relative =
                relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            Ok((name, relative))
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Service {
    Redis,
    Postgres,
}

/// A crate some of whose tests need a service.
struct Gated {
    krate: &'static str,
    /// Its test binaries that need a service (`""`: every test of the crate).
    needs: &'static [(&'static str, Service)],
    /// The cargo target options of the rest of its tests.
    always: &'static [&'static str],
    /// Whether it has doctests.
    doc: bool,
}

impl Gated {
    /// Its tests with `features`, less the binaries whose service is down.
    fn run_without_the_absent(&self, features: &[&str], up: impl Fn(Service) -> bool) -> Result {
        let mut targets: Vec<&str> = self.always.to_vec();
        for (target, _) in self.needs {
            // A binary that needs several services runs only when all of them answer.
            let all_up = self.needs.iter().filter(|(t, _)| t == target).all(|(_, s)| up(*s));
            if all_up && !target.is_empty() && !targets.contains(target) {
                targets.extend(["--test", target]);
            }
        }
        if !targets.is_empty() {
            // Its doctests run below, with every target or none.
            run_tests(&[&["-p", self.krate], features, &targets[..]].concat(), false)?;
        }
        if self.doc {
            cargo(&[&["test", "-p", self.krate, "--doc"], features].concat(), &[])?;
        }
        Ok(())
    }
}

const GATED: &[Gated] = &[
    Gated { krate: "subscribe-redis", needs: &[("", Service::Redis)], always: &[], doc: false },
    Gated {
        krate: "subscribe-sql",
        needs: &[("postgres", Service::Postgres)],
        always: &["--lib", "--test", "sqlite"],
        doc: true,
    },
    // The gateway's idempotency records and fleets on both stores: one test binary.
    Gated {
        krate: "subscribe-gateway",
        needs: &[("it", Service::Redis), ("it", Service::Postgres)],
        always: &["--lib", "--bins"],
        doc: true,
    },
    Gated {
        krate: "subscribe-cli",
        needs: &[("postgres", Service::Postgres)],
        always: &["--bins", "--test", "it"],
        doc: false,
    },
];

/// The `host:port` of a `scheme://[user[:password]@]host[:port][/…]` URL, with a default port.
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = rest.split(['/', '?']).next().unwrap_or_default();
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:{default_port}") }
}

/// Whether something accepts a TCP connection at the URL's host and port.
pub(crate) fn reachable(url: &str, default_port: u16) -> bool {
    use std::net::ToSocketAddrs;
    let Some(addr) = host_port(url, default_port).to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
}

/// `redis://host:port/…` without any password.
/// Without its query either (`?password=…` is a password too).
pub(crate) fn redacted_url(url: &str) -> String {
    let (url, query) = url.split_once('?').map_or((url, false), |(u, _)| (u, true));
    let url = match url.rsplit_once('@').and_then(|(before, host)| Some((before.split_once("://")?.0, host)))
    {
        Some((scheme, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    };
    if query { format!("{url}?***") } else { url }
}

/// Whether something answers `PING` with `+PONG` at the URL's host and port.
pub(crate) fn redis_reachable(url: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let Some(addr) = host_port(url, 6379).to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let timeout = std::time::Duration::from_secs(2);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else { return false };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 64];
    // An answer of any kind (`+PONG`, or `-NOAUTH` on a server with a password) means Redis.
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read(&mut buf).is_ok_and(|n| n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_url_shows_no_password_in_its_user_or_its_query() {
        assert_eq!(redacted_url("redis://:pw@127.0.0.1:6379/0"), "redis://***@127.0.0.1:6379/0");
        assert_eq!(
            redacted_url("postgres://u@127.0.0.1/test?password=s3cr3t&sslmode=disable"),
            "postgres://***@127.0.0.1/test?***"
        );
        assert_eq!(redacted_url("postgres://127.0.0.1:5432/test"), "postgres://127.0.0.1:5432/test");
    }
}
