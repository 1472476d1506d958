//! `subscribe-gateway`: the central token service.
//!
//! ```text
//! subscribe-gateway --config gateway.toml              # serve
//! subscribe-gateway --config gateway.toml --check-config   # check, exit 0 or 1
//! subscribe-gateway hash-key < key.txt                 # the sha256 = "…" of a key
//! ```

// A server program reports start-up errors on stderr and `hash-key`'s answer on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use subscribe_gateway::{Config, Gateway, MIN_KEY_CHARS, ServeLimits, hash_key, serve};
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
    #[command(subcommand)]
    command: Option<Command>,
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
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("subscribe-gateway: {}: {e}", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        println!(
            "{}: accepted ({} apps, {} keys)",
            cli.config.display(),
            config.apps.len(),
            config.keys.len()
        );
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("subscribe-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("subscribe-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Gateway::start(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, apps = config.apps.len(), "subscribe-gateway listening");
    serve(listener, gateway.router(), ServeLimits::from(&config.server), stopped()).await;
    tracing::info!("subscribe-gateway stopped");
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
