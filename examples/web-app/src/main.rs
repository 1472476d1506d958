//! `cargo run -p web-app`: the example service. Start the sandbox first
//! (`cargo run -p subscribe-cli -- sandbox`), then open <http://127.0.0.1:3000>.

// A server program reports a fatal start-up error on stderr.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    let config = match web_app::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("web-app: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = config.listen;
    if config.admin_token.is_none() {
        tracing::info!("the admin is off: set WEBAPP_ADMIN_TOKEN (at least 32 characters) to open /admin");
    }
    if config.app_session_key.is_none() {
        tracing::info!(
            "the app API is off: set WEBAPP_APP_SESSION_KEY (at least 32 bytes) to serve mobile apps"
        );
    }
    let state = match web_app::AppState::open(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("web-app: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("web-app: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("listening on http://{listen}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match web_app::serve(listener, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web-app: {e}");
            ExitCode::FAILURE
        }
    }
}
