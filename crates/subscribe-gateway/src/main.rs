//! `subscribe-gateway`: the central token service.
//!
//! ```text
//! subscribe-gateway --config gateway.toml              # serve
//! subscribe-gateway --config gateway.toml --check-config   # check, exit 0 or 1
//! subscribe-gateway hash-key < key.txt                 # the sha256 = "…" of a key
//! ```
//!
//! Serving, it logs to stderr, one JSON object a line (`--log-format text` for a terminal),
//! filtered by `RUST_LOG` (default `info`); on SIGTERM or Ctrl-C it stops accepting
//! connections, lets the requests in flight finish, hands its dispatch jobs back (up to 20 s)
//! and exits 0.

// A server program reports start-up errors on stderr and `hash-key`'s answer on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use subscribe_gateway::{Config, Gateway, MIN_KEY_CHARS, ServeLimits, hash_key, serve};
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;
use zeroize::Zeroizing;

/// The central token service for WeChat apps: one refresh per rotation for every caller.
#[derive(Parser)]
#[command(name = "subscribe-gateway", version)]
struct Cli {
    /// The configuration file (see docs/gateway.md).
    #[arg(long, short, env = "SUBSCRIBE_GATEWAY_CONFIG", default_value = "subscribe-gateway.toml")]
    config: PathBuf,
    /// Check the configuration (secrets included, the store not opened) and exit: 0 if it
    /// is accepted, 1 with the key at fault if not.
    #[arg(long)]
    check_config: bool,
    /// How log lines are written to stderr: one JSON object a line (for a log pipeline), or
    /// text. `RUST_LOG` filters them (default `info`).
    #[arg(long, value_enum, env = "SUBSCRIBE_GATEWAY_LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// `{"timestamp":…,"level":"INFO","message":…,<fields>,"target":…}`, one a line.
    Json,
    /// Plain text lines.
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Read an API key from standard input and print its SHA-256, for `sha256 = "…"`.
    HashKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashKey) = cli.command {
        return hash_from_stdin();
    }
    if cli.check_config {
        return match Config::load(&cli.config) {
            Ok(config) => {
                println!(
                    "{}: accepted ({} apps, {} keys)",
                    cli.config.display(),
                    config.apps.len(),
                    config.keys.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("subscribe-gateway: {}: {e}", cli.config.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = init_logs(cli.log_format) {
        eprintln!("subscribe-gateway: RUST_LOG: {e}");
        return ExitCode::FAILURE;
    }
    // From here on every line on stderr is a log line.
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            let file = cli.config.display().to_string();
            error!(file, key = e.key, error = %e.problem, "configuration refused");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %chain(e.as_ref()), "cannot serve");
            ExitCode::FAILURE
        }
    }
}

/// Log lines to stderr in `format`, filtered by `RUST_LOG` (default `info`).
fn init_logs(format: LogFormat) -> Result<(), String> {
    let filter = if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        EnvFilter::try_from_default_env().map_err(|e| e.to_string())?
    } else {
        EnvFilter::new("info")
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.init(),
    }
    Ok(())
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Gateway::start(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let metrics = match config.server.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    info!(addr = %listener.local_addr()?, apps = config.apps.len(), "subscribe-gateway listening");
    if let Some(metrics) = &metrics {
        info!(addr = %metrics.local_addr()?, "metrics listening");
    }
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        stopped().await;
        info!("stopping: new connections are refused; requests in flight finish");
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopping: watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let limits = ServeLimits::from(&config.server);
    let api = serve(listener, gateway.router(), limits.clone(), until_stopped(stopping.clone()));
    // On the stop signal no job starts or is adopted here, and the jobs here are handed back.
    let jobs = gateway.run_background(until_stopped(stopping.clone()));
    match metrics {
        Some(metrics) => {
            let metrics = serve(metrics, gateway.metrics_router(), limits, until_stopped(stopping));
            tokio::join!(api, metrics, jobs);
        }
        None => {
            tokio::join!(api, jobs);
        }
    }
    info!("subscribe-gateway stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (what systemd and container runtimes send).
async fn stopped() {
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn hash_from_stdin() -> ExitCode {
    let mut key = Zeroizing::new(String::new());
    if let Err(e) = std::io::stdin().read_to_string(&mut key) {
        eprintln!("subscribe-gateway hash-key: cannot read standard input: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(hash) = hash_key(&key) {
        println!("{hash}");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "subscribe-gateway hash-key: the key is shorter than {MIN_KEY_CHARS} characters; use a random one \
         (`head -c 32 /dev/urandom | base64`)"
    );
    ExitCode::FAILURE
}
