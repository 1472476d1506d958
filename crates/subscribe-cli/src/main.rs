//! `wxsub`: WeChat one-time subscription messages from the command line.
//!
//! Every command prints JSON (or the bare URL for `auth-url`) on stdout, one clear line on
//! stderr for errors, and never the AppSecret or a token (except `token --show`). Exit codes:
//! 0 all delivered / done; 1 an API, transport or unknown outcome; 2 invalid input or usage
//! (nothing sent).
//!
//! The global options and the client built from them are in `options.rs`; each command's
//! arguments and handler in the file named after it.

// A command-line tool talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod auth_url;
mod batch;
mod callback;
mod event;
mod grants;
mod mini_program;
mod mobile_answer;
mod mobile_request;
mod notification;
mod options;
mod output;
mod sandbox;
mod secrets;
mod send;
mod templates;
mod token;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use subscribe_types::secrecy::ExposeSecret as _;

use crate::options::{Cli, Command, Usage};
use crate::output::Exit;

/// jemalloc: flat CPU per message however many sends are in flight (see the crate's manifest).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match parse_arguments(std::env::args_os()) {
        Ok((cli, warnings)) => {
            for warning in warnings {
                eprintln!("wxsub: {warning}");
            }
            cli
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli).await {
        Ok(exit) => exit.code(),
        Err(e) => {
            eprintln!("wxsub: {e}");
            ExitCode::from(2)
        }
    }
}

/// Parses the arguments (and the environment variables), with a warning for each secret given
/// as an argument (see [`secrets`]).
fn parse_arguments(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(Cli, Vec<String>), clap::Error> {
    let mut cmd = Cli::command();
    let mut matches =
        cmd.try_get_matches_from_mut(args).map_err(|e| secrets::redact_invalid_value(&mut cmd, e))?;
    let warnings = secrets::command_line_warnings(&cmd, &matches);
    let cli = Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))?;
    Ok((cli, warnings))
}

/// Runs the command `cli` names.
async fn run(cli: Cli) -> Result<Exit, Usage> {
    match &cli.command {
        Command::AuthUrl(args) => auth_url::run(&cli, args),
        Command::Callback(args) => callback::run(args),
        Command::MobileRequest(args) => mobile_request::run(&cli, args),
        Command::MobileAnswer(args) => mobile_answer::run(&cli, args).await,
        Command::Token(args) => token::run(&cli, args).await,
        Command::SendOneTime(args) => send::run(&cli, args).await,
        Command::SendMiniProgram(args) => mini_program::run(&cli, args).await,
        Command::SendNotification(args) => notification::run(&cli, args).await,
        Command::Templates { command } => templates::templates(options::client(&cli), command).await,
        Command::Event(args) => event::run(&cli, args),
        Command::SendBatch(args) => batch::command(&cli, args).await,
        Command::Grants(args) => grants::run(&cli, args, args.database.0.expose_secret()).await,
        Command::Sandbox(args) => sandbox::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// Does not compile if a secret argument goes back to a plain `String`.
    #[test]
    fn secret_arguments_are_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>(_: &T) {}
        let token: event::Hidden = "sandboxPushToken2026".parse().unwrap();
        zeroed_on_drop(&token.0);
        assert_eq!(token.0.expose_secret(), "sandboxPushToken2026");
        let url: secrets::DatabaseUrl = "postgres://u:pw@h/d".parse().unwrap();
        zeroed_on_drop(&url.0);
    }

    #[test]
    fn a_failing_random_source_is_an_error_not_a_constant_state() {
        let e = auth_url::random_reserved_from(|_| Err(getrandom::Error::UNSUPPORTED)).unwrap_err();
        assert!(e.contains("no random source"), "{e}");
        let (a, b) = (auth_url::random_reserved().unwrap(), auth_url::random_reserved().unwrap());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 24);
    }

    #[test]
    fn the_parsed_arguments_never_debug_print_the_secret() {
        let cli = Cli::try_parse_from([
            "wxsub",
            "--appid",
            "wx0123456789abcdef",
            "--secret",
            "hunter2-app-secret",
            "token",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        assert!(!shown.contains("hunter2-app-secret"), "{shown}");
        assert!(cli.secret.is_some());
        let cli = Cli::try_parse_from([
            "wxsub",
            "event",
            "--token",
            "push-token-never-shown",
            "--aes-key",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "--previous-aes-key",
            "GFEDCBA9876543210zyxwvutsrqponmlkjihgfedcba",
            "--query",
            "signature=x",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        assert!(
            !shown.contains("push-token-never-shown")
                && !shown.contains("0123456789ABCDEFG")
                && !shown.contains("GFEDCBA9876543210"),
            "{shown}"
        );
        let cli = Cli::try_parse_from([
            "wxsub",
            "grants",
            "--database",
            "postgres://u:db-pw-never-shown@h/d",
            "migrate",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        assert!(!shown.contains("db-pw-never-shown"), "{shown}");
    }
}
