//! `wxsub token`: fetches an access token and prints its lifetime (the token only with `--show`).

use std::time::{Duration, SystemTime};

use crate::options::{Cli, Usage, client};
use crate::output::Exit;

/// The arguments of `wxsub token`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also print the token.
    #[arg(long)]
    pub(crate) show: bool,
}

/// `wxsub token`.
pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let client = client(cli)?;
    match client.token().await {
        Ok(t) => {
            #[allow(clippy::disallowed_methods)] // a CLI reads the wall clock
            let now = SystemTime::now();
            let left = t.expires_at().duration_since(now).unwrap_or(Duration::ZERO).as_secs();
            let mut out = serde_json::json!({"expires_in": left});
            if args.show {
                out["access_token"] = t.token().expose_secret().into();
            }
            println!("{out}");
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("wxsub: {}", crate::output::one_line(&e));
            Ok(Exit::Failed)
        }
    }
}
