use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use subscribe_gateway::{Config, ConfigError, ConfigProblem, StoreConfig, hash_key};
use subscribe_sandbox::DEMO_APPID;
use tempfile::TempDir;

use crate::*;

fn parse(text: &str, dir: &Path) -> Result<Config, ConfigError> {
    Config::parse(text, dir, &|_| None)
}

/// The test configuration with `from` replaced by `to` (which must occur).
fn edited(dir: &Path, from: &str, to: &str) -> String {
    let text = config_text(dir, "http://127.0.0.1:9");
    assert!(text.contains(from), "{from}");
    text.replacen(from, to, 1)
}

#[test]
fn the_test_configuration_is_accepted_with_sqlite_beside_it() {
    let dir = TempDir::new().unwrap();
    let config = parse(&config_text(dir.path(), "http://127.0.0.1:9"), dir.path()).unwrap();
    assert_eq!(config.apps.len(), 2);
    assert_eq!(config.keys.len(), 2);
    assert_eq!(config.apps[0].secret.expose_secret(), DEMO_SECRET, "one trailing line break is dropped");
    assert!(matches!(&config.store, StoreConfig::Sqlite { path } if path == &dir.path().join("tokens.db")));
}

#[test]
fn an_inline_secret_is_refused_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let text = edited(dir.path(), "secret_file = \"secret-b\"", "secret = \"an-inline-secret\"");
    let e = parse(&text, dir.path()).unwrap_err();
    assert_eq!(e.key, "apps[1].secret");
    assert!(matches!(e.problem, ConfigProblem::InlineSecret { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("an-inline-secret"));

    let hash = subscribe_gateway::KeyHash::of(KEY_A.as_bytes()).to_hex();
    let text = edited(dir.path(), &format!("sha256 = \"{hash}\""), &format!("key = \"{KEY_A}\""));
    let e = parse(&text, dir.path()).unwrap_err();
    assert_eq!(e.key, "keys[0].key");
    assert!(!format!("{e} {e:?}").contains(KEY_A));
}

#[test]
fn a_short_key_is_refused_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let text = config_text(dir.path(), "http://127.0.0.1:9");
    std::fs::write(dir.path().join("key-b"), "short-key-123").unwrap();
    let e = parse(&text, dir.path()).unwrap_err();
    assert_eq!(e.key, "keys[1].key_file");
    assert_eq!(e.problem, ConfigProblem::KeyTooShort { chars: 13 });
    assert!(!e.to_string().contains("short-key-123"));
    assert!(hash_key("short-key-123").is_none(), "hash-key refuses it too");
}

#[test]
fn a_missing_environment_variable_is_named() {
    let dir = TempDir::new().unwrap();
    let text = edited(dir.path(), "secret_file = \"secret-a\"", "secret_env = \"WX_SECRET\"");
    let e = parse(&text, dir.path()).unwrap_err();
    assert_eq!(e.to_string(), "apps[0].secret_env: environment variable WX_SECRET is not set");
    // Set, it is read.
    let env = |name: &str| (name == "WX_SECRET").then(|| OsString::from(DEMO_SECRET));
    let config = Config::parse(&text, dir.path(), &env).unwrap();
    assert_eq!(config.apps[0].secret.expose_secret(), DEMO_SECRET);
}

#[test]
fn a_scope_for_an_unknown_app_is_refused() {
    let dir = TempDir::new().unwrap();
    let text = edited(dir.path(), &format!("{{ {APP_B} = "), "{ wxffffffffffffffff = ");
    let e = parse(&text, dir.path()).unwrap_err();
    assert_eq!(e.key, "keys[1].scopes.wxffffffffffffffff");
    assert_eq!(e.problem, ConfigProblem::UnknownApp);
}

#[test]
fn other_refusals_name_their_key() {
    let dir = TempDir::new().unwrap();
    let cases: [(&str, &str, &str); 8] = [
        ("kind = \"mini_program\"", "kind = \"game\"", "apps[1].kind"),
        ("header_read_timeout_ms = 300", "header_read_timeout_ms = 0", "server.header_read_timeout_ms"),
        ("listen = \"127.0.0.1:0\"", "listen = \"localhost\"", "server.listen"),
        ("name = \"orders\"", "name = \"orders\"\ncolour = 1", "keys[0].colour"),
        ("sha256 = \"", "sha256 = \"00", "keys[0].sha256"),
        ("secret_file = \"secret-a\"", "secret_file = \"missing\"", "apps[0].secret_file"),
        ("secret_file = \"secret-a\"", "", "apps[0]"),
        ("name = \"shop\"", "name = \"orders\"", "keys[1].name"),
    ];
    for (from, to, key) in cases {
        let e = parse(&edited(dir.path(), from, to), dir.path()).unwrap_err();
        assert_eq!(e.key, key, "{from} → {to}: {e}");
    }
    let e = parse(
        &edited(
            dir.path(),
            "path = \"tokens.db\"",
            "kind = \"postgres\"\nurl = \"postgres://gw:hunter2@db/gw\"",
        ),
        dir.path(),
    )
    .unwrap_err();
    assert_eq!(e.key, "store.url");
    assert!(!e.to_string().contains("hunter2"));
    // A syntax error says where, never the line's text.
    let e = parse("[server]\nlisten = \"127.0.0.1:0\nsecret = \"zzz-secret\"", dir.path()).unwrap_err();
    assert!(matches!(e.problem, ConfigProblem::Syntax { line: 2, .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("zzz-secret"));
}

#[test]
fn check_config_exits_zero_or_one_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text(dir.path(), "http://127.0.0.1:9")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_subscribe-gateway"))
        .args(["--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        edited(dir.path(), "secret_file = \"secret-a\"", "secret_env = \"WX_GATEWAY_TEST_UNSET\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_subscribe-gateway"))
        .args(["--check-config", "--config"])
        .arg(&bad)
        .env_remove("WX_GATEWAY_TEST_UNSET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apps[0].secret_env: environment variable WX_GATEWAY_TEST_UNSET is not set"),
        "{stderr}"
    );
}

#[test]
fn hash_key_reads_the_key_from_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_subscribe-gateway"))
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{KEY_A}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), subscribe_gateway::KeyHash::of(KEY_A.as_bytes()).to_hex());
    assert!(DEMO_APPID.starts_with("wx"));
}

#[test]
fn operational_keys_have_defaults_and_refusals_name_their_key() {
    let dir = TempDir::new().unwrap();
    let config = parse(&config_text(dir.path(), "http://127.0.0.1:9"), dir.path()).unwrap();
    assert_eq!(config.keys[0].rate, subscribe_gateway::DEFAULT_KEY_RATE);
    assert_eq!(config.server.auth_failure_rate, subscribe_gateway::DEFAULT_AUTH_FAILURE_RATE);
    assert_eq!(config.server.metrics_listen, None, "no metrics unless asked for");
    assert!(config.server.trusted_proxies.is_empty(), "X-Forwarded-For is believed from nobody");

    let text = edited(
        dir.path(),
        "header_read_timeout_ms = 300",
        "header_read_timeout_ms = 300\nmetrics_listen = \"127.0.0.1:9700\"\ntrusted_proxies = [\"10.0.0.2\", \"::1\"]\n\
         auth_failures_per_second = 2\nauth_failure_burst = 4",
    );
    let text = text.replacen("name = \"shop\"", "name = \"shop\"\nrate_per_second = 0.5", 1);
    let config = parse(&text, dir.path()).unwrap();
    assert_eq!(config.server.metrics_listen, Some("127.0.0.1:9700".parse().unwrap()));
    assert_eq!(
        config.server.trusted_proxies,
        ["10.0.0.2".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]
    );
    assert_eq!(
        (config.server.auth_failure_rate.period, config.server.auth_failure_rate.burst.get()),
        (std::time::Duration::from_millis(500), 4)
    );
    let shop = config.keys[1].rate;
    assert_eq!(
        (shop.period, shop.burst.get()),
        (std::time::Duration::from_secs(2), 100),
        "burst keeps its default"
    );

    let cases: [(&str, &str, &str); 9] = [
        ("name = \"orders\"", "name = \"orders\"\nrate_per_second = 0", "keys[0].rate_per_second"),
        ("name = \"orders\"", "name = \"orders\"\nrate_per_second = 0.0001", "keys[0].rate_per_second"),
        ("name = \"orders\"", "name = \"orders\"\nrate_per_second = nan", "keys[0].rate_per_second"),
        ("name = \"shop\"", "name = \"shop\"\nburst = 0", "keys[1].burst"),
        ("name = \"shop\"", "name = \"shop\"\nburst = -3", "keys[1].burst"),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nauth_failure_burst = 0",
            "server.auth_failure_burst",
        ),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.2\", \"10.0.0.0/8\"]",
            "server.trusted_proxies[1]",
        ),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:8700\"\nmetrics_listen = \"127.0.0.1:8700\"",
            "server.metrics_listen",
        ),
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"everywhere\"",
            "server.metrics_listen",
        ),
    ];
    for (from, to, key) in cases {
        let e = parse(&edited(dir.path(), from, to), dir.path()).unwrap_err();
        assert_eq!(e.key, key, "{from} → {to}: {e}");
    }
}

#[test]
fn the_idempotency_retention_defaults_to_a_day_and_must_outlive_a_claim() {
    let dir = TempDir::new().unwrap();
    let config = parse(&config_text(dir.path(), "http://127.0.0.1:9"), dir.path()).unwrap();
    assert_eq!(config.idempotency.retention, subscribe_gateway::idempotency::DEFAULT_RETENTION);
    assert_eq!(config.idempotency.retention, std::time::Duration::from_secs(86_400));
    let with =
        |table: &str| format!("{}\n[idempotency]\n{table}\n", config_text(dir.path(), "http://127.0.0.1:9"));
    let config = parse(&with("retention_ms = 3600000"), dir.path()).unwrap();
    assert_eq!(config.idempotency.retention, std::time::Duration::from_secs(3600));
    // Shorter than a minute, or than four request timeouts (30 s by default): refused.
    for short in ["retention_ms = 59999", "retention_ms = 60000"] {
        let e = parse(&with(short), dir.path()).unwrap_err();
        assert_eq!(e.key, "idempotency.retention_ms", "{short}");
        assert!(e.to_string().contains("at least 120000"), "{e}");
    }
    let e = parse(&with("retention = 1"), dir.path()).unwrap_err();
    assert!(e.key.starts_with("idempotency"), "{e}");
}
