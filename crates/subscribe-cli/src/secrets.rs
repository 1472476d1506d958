//! Secrets on the command line. Every secret `wxsub` takes has an environment variable; one
//! given as an argument instead shows in `ps` to every user of the machine and stays in the
//! shell's history, so it draws a one-line warning naming the flag and its variable, never the
//! value.
//!
//! What is a secret is a property of the argument's type, so a new flag of one of these types
//! is covered without a list to keep: [`Hidden`] (a push Token, an `EncodingAESKey`),
//! [`AppSecret`], and [`DatabaseUrl`] when the URL carries a password.

use std::any::TypeId;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use subscribe_types::AppSecret;
use subscribe_types::secrecy::{ExposeSecret as _, SecretString};

use crate::event::Hidden;

/// A database URL (`--database`, `DATABASE_URL`). `Debug` never shows it; it is a secret when
/// it carries a password, so it is zeroed when dropped (`secrecy`).
#[derive(Clone)]
pub(crate) struct DatabaseUrl(pub(crate) SecretString);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(SecretString::from(s)))
    }
}

impl DatabaseUrl {
    /// Whether the URL carries a password: `scheme://user:password@host/…`, or a `password`
    /// query parameter (which PostgreSQL's URLs take).
    pub(crate) fn has_password(&self) -> bool {
        let url = self.0.expose_secret().split('#').next().unwrap_or_default();
        let in_userinfo = url.split_once("://").is_some_and(|(_, rest)| {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
        });
        let in_query = url.split_once('?').is_some_and(|(_, query)| {
            query.split('&').any(|pair| pair.split('=').next() == Some("password"))
        });
        in_userinfo || in_query
    }
}

/// Whether values of `arg` may be secrets: it takes one of the secret types (a user's session
/// id is one: whoever holds it is the user).
pub(crate) fn may_take_secret(arg: &Arg) -> bool {
    let t = arg.get_value_parser().type_id();
    t == TypeId::of::<Hidden>()
        || t == TypeId::of::<AppSecret>()
        || t == TypeId::of::<DatabaseUrl>()
        || t == TypeId::of::<subscribe_client::Session>()
}

/// `--session`'s value: a user's session id, never empty, never printed (`Session`'s `Debug`
/// is redacted, and a refused value is not quoted).
pub(crate) fn session(raw: &str) -> Result<subscribe_client::Session, String> {
    subscribe_client::Session::new(raw).map_err(|e| e.to_string())
}

/// Whether the value `matches` holds for `arg` is a secret.
fn holds_secret(arg: &Arg, matches: &ArgMatches) -> bool {
    let t = arg.get_value_parser().type_id();
    if t == TypeId::of::<DatabaseUrl>() {
        return matches
            .try_get_one::<DatabaseUrl>(arg.get_id().as_str())
            .ok()
            .flatten()
            .is_some_and(DatabaseUrl::has_password);
    }
    may_take_secret(arg)
}

/// The flag as the user typed it: `--secret`.
pub(crate) fn flag(arg: &Arg) -> String {
    arg.get_long().map_or_else(|| arg.get_id().to_string(), |long| format!("--{long}"))
}

/// One warning for each secret the command line itself carries (not its environment
/// variable): `cmd` is the command `matches` came from, walked down the subcommands used.
pub(crate) fn command_line_warnings(cmd: &Command, matches: &ArgMatches) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut seen = Vec::new();
    let mut level = Some((cmd, matches));
    while let Some((cmd, matches)) = level {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            // A global argument is met again in the subcommand it propagates to.
            if !may_take_secret(arg) || seen.contains(&id) {
                continue;
            }
            if matches.value_source(id) == Some(ValueSource::CommandLine) && holds_secret(arg, matches) {
                seen.push(id);
                warnings.push(warning(arg));
            }
        }
        level = matches.subcommand().and_then(|(name, sub)| Some((cmd.find_subcommand(name)?, sub)));
    }
    warnings
}

/// `e` without the value when it refuses the value of a secret argument: clap quotes a value
/// it refuses (`invalid value 'Top Secret' for '--secret <SECRET>'`), and a real secret with
/// one stray character (a space, a newline from a `.env` file) would land in a terminal or a
/// CI log. The reason stays (ours never holds the value).
pub(crate) fn redact_invalid_value(cmd: &mut Command, e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::ValueValidation && e.kind() != ErrorKind::InvalidValue {
        return e;
    }
    let Some(ContextValue::String(invalid)) = e.get(ContextKind::InvalidArg) else { return e };
    let mut secret = None;
    let mut pending = vec![&*cmd];
    while let Some(c) = pending.pop() {
        secret = secret.or_else(|| {
            c.get_arguments().find(|a| may_take_secret(a) && invalid.split(' ').next() == Some(&flag(a)))
        });
        pending.extend(c.get_subcommands());
    }
    let Some(arg) = secret else { return e };
    let reason = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
    let name = flag(arg);
    let var = arg.get_env().map(|v| format!(" (or {})", v.to_string_lossy())).unwrap_or_default();
    cmd.error(e.kind(), format!("invalid value for {name}{var}, not shown as it is a secret: {reason}"))
}

fn warning(arg: &Arg) -> String {
    let flag = flag(arg);
    match arg.get_env() {
        Some(var) => format!(
            "warning: {flag} on the command line shows in `ps` and in your shell's history; set {} instead",
            var.to_string_lossy()
        ),
        None => format!("warning: {flag} on the command line shows in `ps` and in your shell's history"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::options::Cli;

    /// Every argument of `cmd` and its subcommands, as `(path, arg)`.
    fn every_arg(cmd: &Command, path: &str, out: &mut Vec<(String, Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((format!("{path} {}", flag(arg)), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            every_arg(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    /// The secret flags, each with its environment variable. A user's session id has none: it
    /// is one user's, given per run (an environment variable would bind every run to one user).
    const SECRET_FLAGS: &[(&str, Option<&str>)] = &[
        ("wxsub --secret", Some("WXSUB_SECRET")),
        ("wxsub auth-url --session", None),
        ("wxsub mobile-request --session", None),
        ("wxsub mobile-answer --session", None),
        ("wxsub event --token", Some("WXSUB_PUSH_TOKEN")),
        ("wxsub event --aes-key", Some("WXSUB_AES_KEY")),
        ("wxsub event --previous-aes-key", Some("WXSUB_PREVIOUS_AES_KEY")),
        ("wxsub grants --database", Some("DATABASE_URL")),
        ("wxsub grants record --session", None),
    ];

    #[test]
    fn each_secret_flag_has_its_environment_variable_and_help_never_shows_the_value() {
        let mut all = Vec::new();
        every_arg(&Cli::command(), "wxsub", &mut all);
        let secret: Vec<_> = all.iter().filter(|(_, arg)| may_take_secret(arg)).collect();
        let found: Vec<&str> = secret.iter().map(|(path, _)| path.as_str()).collect();
        let expected: Vec<&str> = SECRET_FLAGS.iter().map(|(path, _)| *path).collect();
        assert_eq!(found, expected, "the flags taking a secret type");
        for ((path, arg), (_, var)) in secret.iter().zip(SECRET_FLAGS) {
            let env = arg.get_env().map(|v| v.to_string_lossy().into_owned());
            if let Some(var) = var {
                assert_eq!(env.as_deref(), Some(*var), "{path}");
            }
            if env.is_some() {
                assert!(arg.is_hide_env_values_set(), "{path}: --help would show the variable's value");
            }
        }
    }

    fn warnings_for(args: &[&str]) -> Vec<String> {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args).unwrap();
        command_line_warnings(&cmd, &matches)
    }

    #[test]
    fn a_secret_argument_is_warned_of_by_flag_and_variable_and_a_plain_one_is_not() {
        for args in [
            &["wxsub", "--secret", "hunter2-app-secret", "token"][..],
            &["wxsub", "token", "--secret=hunter2-app-secret"],
        ] {
            let w = warnings_for(args);
            assert_eq!(w.len(), 1, "{args:?}: {w:?}");
            assert!(w[0].contains("--secret") && w[0].contains("WXSUB_SECRET"), "{w:?}");
            assert!(!w[0].contains("hunter2"), "{w:?}");
        }
        let w = warnings_for(&["wxsub", "grants", "--database", "postgres://u:pw-42@db/x", "migrate"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("--database") && w[0].contains("DATABASE_URL") && !w[0].contains("pw-42"));
        assert!(warnings_for(&["wxsub", "grants", "--database", "sqlite:g.db", "migrate"]).is_empty());
        // A user's session id is a credential too.
        let w = warnings_for(&[
            "wxsub",
            "mobile-request",
            "--template-id",
            "t",
            "--scene",
            "1",
            "--session",
            "sid-77",
        ]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("--session") && !w[0].contains("sid-77"), "{w:?}");
        assert!(warnings_for(&["wxsub", "--appid", "wx0123456789abcdef", "token"]).is_empty());
    }

    #[test]
    fn a_database_url_has_a_password_in_its_userinfo_or_its_query() {
        for (url, has) in [
            ("postgres://user:pw@host:5432/db", true),
            ("postgresql://user:@host/db", true),
            ("postgres://user@host/db?password=pw&sslmode=require", true),
            ("postgres://user@host/db?sslmode=require&password=pw", true),
            ("postgres://user@host/db", false),
            ("postgres://host/db?passwordless=1", false),
            ("postgres://user@host/a:b@c", false),
            ("sqlite:grants.db", false),
            ("sqlite://dir/grants.db", false),
        ] {
            assert_eq!(DatabaseUrl(url.into()).has_password(), has, "{url}");
        }
        assert_eq!(format!("{:?}", DatabaseUrl("postgres://u:pw@h/d".into())), "[redacted]");
    }
}
