//! `cargo run -p web-app`: the example service. Start the sandbox first
//! (`cargo run -p subscribe-cli -- sandbox`), then open <http://127.0.0.1:3000>.

// A server program reports a fatal start-up error on stderr.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web-app: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = web_app::Config::from_env()?;
    if config.dispatch_token.is_none() {
        tracing::info!("POST /dispatch is off: set WEBAPP_DISPATCH_TOKEN, or run `wxsub grants dispatch`");
    }
    let listen = config.listen;
    let state = web_app::AppState::open(config).await?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!("listening on http://{listen}");
    // Until Ctrl-C or SIGTERM, then the requests under way (a dispatch included) are finished.
    Ok(axum::serve(listener, web_app::router(state)).with_graceful_shutdown(shutdown()).await?)
}

/// Ctrl-C, or (on Unix) SIGTERM, as `docker stop` and systemd send.
async fn shutdown() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signals) => drop(signals.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, () = terminate => {} }
}
