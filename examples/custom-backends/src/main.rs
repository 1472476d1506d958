//! `cargo run -p custom-backends`: dispatches one message to each of 100 sandbox users through
//! the crate's own transport wrapper, token store and grant ledger, and checks the result.

// An example program talks to its user on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("custom-backends-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("custom-backends: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let result = custom_backends::dispatch_to_sandbox(&dir, 100).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(r) => {
            println!(
                "delivered {} (sandbox inboxes: {}, ledger: {})",
                r.delivered, r.received, r.ledger_delivered
            );
            println!(
                "{} requests through the wrapper, {} seen with its header",
                r.requests, r.requests_with_header
            );
            if r.delivered == 100 && r.received == 100 && r.ledger_delivered == 100 {
                ExitCode::SUCCESS
            } else {
                eprintln!("custom-backends: not every grant was delivered exactly once");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("custom-backends failed: {e}");
            ExitCode::FAILURE
        }
    }
}
