//! Secrets on the command line: each one `wxsub` takes has an environment variable, and one
//! given as an argument (visible in `ps`, kept in shell history) draws a warning on stderr
//! naming the flag and its variable, never the value.

use subscribe_sandbox::{DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};

use crate::*;

const PUSH_TOKEN: &str = "pushTokenOnTheCommandLine4242424"; // 32: no short-Token warning
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const PREVIOUS_AES_KEY: &str = "GFEDCBA9876543210zyxwvutsrqponmlkjihgfedcbA";
const DB_PASSWORD: &str = "db-password-on-the-line-42";

/// `wxsub args…` against `sandbox` with the demo credentials and `env` in the environment, and
/// none of the push secrets of the test's own.
async fn wxsub_with_env(sandbox: &SandboxHandle, args: &[&str], env: &[(&str, &str)]) -> Run {
    let unset = ["WXSUB_PUSH_TOKEN", "WXSUB_AES_KEY", "WXSUB_PREVIOUS_AES_KEY"];
    wxsub_with(sandbox, args, None, env, &unset).await
}

/// The flags a run must warn of, each with the variable its warning names (if any).
type Flags<'a> = &'a [(&'a str, Option<&'a str>)];

fn warnings(run: &Run) -> Vec<&str> {
    run.stderr.lines().filter(|l| l.starts_with("wxsub: warning:")).collect()
}

fn assert_no_secret_value(run: &Run) {
    for value in [DEMO_SECRET, PUSH_TOKEN, AES_KEY, PREVIOUS_AES_KEY, DB_PASSWORD] {
        assert!(!run.stdout.contains(value) && !run.stderr.contains(value), "{value} printed: {run:?}");
    }
}

#[tokio::test]
async fn a_secret_given_as_an_argument_draws_a_warning_naming_its_variable_and_never_its_value() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let secret_eq = format!("--secret={DEMO_SECRET}");
    let url_check = "signature=0&timestamp=1800000000&nonce=n&echostr=e";
    // A port that is no number: the URL is refused at once, after the warning, and unprinted.
    let in_userinfo = format!("postgres://u:{DB_PASSWORD}@127.0.0.1:port/x");
    let in_query = format!("postgres://u@127.0.0.1:port/x?password={DB_PASSWORD}");
    let counts = ["counts", "--template-id", DEMO_TEMPLATE, "--scene", "1"];
    let cases: [(Vec<&str>, Flags<'_>); 5] = [
        (vec!["--secret", DEMO_SECRET, "token"], &[("--secret", Some("WXSUB_SECRET"))]),
        (vec!["token", &secret_eq], &[("--secret", Some("WXSUB_SECRET"))]),
        (
            vec![
                "event",
                "--token",
                PUSH_TOKEN,
                "--aes-key",
                AES_KEY,
                "--previous-aes-key",
                PREVIOUS_AES_KEY,
                "--query",
                url_check,
            ],
            &[
                ("--token", Some("WXSUB_PUSH_TOKEN")),
                ("--aes-key", Some("WXSUB_AES_KEY")),
                ("--previous-aes-key", Some("WXSUB_PREVIOUS_AES_KEY")),
            ],
        ),
        (
            [&["grants", "--database", &in_userinfo][..], &counts].concat(),
            &[("--database", Some("DATABASE_URL"))],
        ),
        (
            [&["grants", "--database", &in_query][..], &counts].concat(),
            &[("--database", Some("DATABASE_URL"))],
        ),
    ];
    for (args, flags) in cases {
        let run = wxsub_with_env(&s, &args, &[]).await;
        let warned = warnings(&run);
        assert_eq!(warned.len(), flags.len(), "{args:?}: {run:?}");
        for (flag, var) in flags {
            let line = warned
                .iter()
                .find(|l| l.contains(&format!("{flag} ")))
                .unwrap_or_else(|| panic!("no warning names {flag}: {run:?}"));
            assert!(line.contains("`ps`") && line.contains("history"), "{line}");
            if let Some(var) = var {
                assert!(line.contains(var), "{line}");
            }
        }
        assert_no_secret_value(&run);
    }
    // The warning is all that changes: the command runs as before.
    let run = wxsub_with_env(&s, &["--secret", DEMO_SECRET, "token"], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json()["expires_in"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn secrets_from_the_environment_and_a_database_url_without_a_password_draw_no_warning() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wxsub-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite:{}/grants.db", dir.display());
    let postgres = format!("postgres://u:{DB_PASSWORD}@127.0.0.1:port/x");
    let url_check = "signature=0&timestamp=1800000000&nonce=n&echostr=e";
    for (args, env) in [
        (vec!["token"], vec![]),
        (
            vec!["event", "--query", url_check],
            vec![("WXSUB_PUSH_TOKEN", PUSH_TOKEN), ("WXSUB_AES_KEY", AES_KEY)],
        ),
        (vec!["grants", "migrate"], vec![("DATABASE_URL", postgres.as_str())]),
        (vec!["grants", "--database", &sqlite, "migrate"], vec![]),
    ] {
        let run = wxsub_with_env(&s, &args, &env).await;
        assert!(warnings(&run).is_empty(), "{args:?}: {run:?}");
        assert_no_secret_value(&run);
    }
    let migrated = wxsub_with_env(&s, &["grants", "--database", &sqlite, "migrate"], &[]).await;
    assert_eq!(migrated.code, 0, "{migrated:?}");
}

/// A secret refused as invalid (a stray space or newline from a `.env` file) is not quoted in
/// the error, from the command line or from its variable: clap quotes a value it refuses.
#[tokio::test]
async fn an_invalid_secret_is_refused_without_being_shown() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    let invalid = "TopSecretValue 123";
    for (args, env) in [
        (vec!["--secret", invalid, "token"], vec![]),
        (vec!["token"], vec![("WXSUB_SECRET", invalid)]),
        (vec!["token"], vec![("WXSUB_SECRET", "TopSecretValue123\n")]),
    ] {
        let run = wxsub_with_env(&s, &args, &env).await;
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains("invalid value for --secret (or WXSUB_SECRET)"), "{run:?}");
        assert!(!run.stderr.contains("TopSecretValue"), "the secret is shown: {run:?}");
    }
}
