//! `wxsub sandbox`: the local WeChat sandbox, with what to try printed.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::options::Usage;
use crate::output::Exit;

/// The arguments of `wxsub sandbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// A JSON configuration of apps, templates and users (default: the built-in demo).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

/// `wxsub sandbox`: serves until interrupted.
pub(crate) async fn run(args: &Args) -> Result<Exit, Usage> {
    let (listen, config) = (args.listen, args.config.as_ref());
    let cfg = match config {
        Some(path) => subscribe_sandbox::SandboxConfig::from_json_file(path).map_err(|e| e.to_string())?,
        None => subscribe_sandbox::SandboxConfig::demo(),
    };
    let sandbox = subscribe_sandbox::SandboxHandle::start_on(cfg.clone(), listen)
        .await
        .map_err(|e| format!("could not listen on {listen}: {e}"))?;
    let base = sandbox.base_url();
    println!("WeChat sandbox listening on {base}");
    println!("  API base and authorization base: {base}   (index: {base}/sandbox)");
    for app in &cfg.apps {
        println!("  app {} \"{}\"  secret {}", app.appid, app.name, app.secret);
        for t in &app.templates {
            println!("    template {}  ({})", t.id, t.title);
        }
        println!(
            "    library templates (send-mini-program, send-notification): {} (one-time: thing1 time2 amount3), {} (long-term: enum1 date2)",
            subscribe_sandbox::DEMO_MP_TEMPLATE,
            subscribe_sandbox::DEMO_LONG_TERM_TEMPLATE
        );
    }
    for u in &cfg.users {
        println!("  user {} \"{}\"  inbox {base}/sandbox/inbox/{}", u.openid, u.name, u.openid);
    }
    if let Some(app) = cfg.apps.first() {
        println!(
            "Try: WXSUB_API_BASE={base} WXSUB_MP_BASE={base} WXSUB_APPID={} WXSUB_SECRET=… wxsub token",
            app.appid
        );
    }
    tokio::select! {
        () = sandbox.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(Exit::Ok)
}
