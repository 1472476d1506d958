//! `cargo xtask test`: the workspace tests, with Redis when one answers.

use crate::run::{Result, Status, cargo};

/// The workspace tests. `subscribe-redis`'s tests need a real Redis at `REDIS_URL` (default
/// `redis://127.0.0.1:6379`); without one they are excluded and reported as not run.
pub(crate) fn test() -> Result<Status> {
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
pub(crate) fn redacted_url(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| rest.split_once('@').map(|(_, h)| (scheme, h))) {
        Some((scheme, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

/// Whether something answers `PING` with `+PONG` at the URL's host and port.
pub(crate) fn redis_reachable(url: &str) -> bool {
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
