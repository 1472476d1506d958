//! `wxsub send`: one one-time message, checked before anything is sent.

use subscribe_types::{OpenId, Scene, SubscribeMessage, TemplateId};

use crate::options::{Cli, Usage, client, parse};
use crate::output::{Exit, Outcome};

/// The arguments of `wxsub send`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The recipient's OpenID.
    #[arg(long)]
    pub(crate) to: String,
    /// The one-time template.
    #[arg(long)]
    pub(crate) template_id: String,
    /// The confirmed scene.
    #[arg(long)]
    pub(crate) scene: String,
    /// The title (≤15 characters).
    #[arg(long)]
    pub(crate) title: String,
    /// The body (≤200 characters).
    #[arg(long)]
    pub(crate) content: String,
    /// The body colour, #RRGGBB.
    #[arg(long)]
    pub(crate) color: Option<String>,
    /// A link opened on tap.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// A mini program opened on tap (with --miniprogram-pagepath).
    #[arg(long)]
    pub(crate) miniprogram_appid: Option<String>,
    /// The mini program page (with --miniprogram-appid).
    #[arg(long)]
    pub(crate) miniprogram_pagepath: Option<String>,
}

/// `wxsub send`.
pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let Args { to, template_id, scene, title, content, color, url, miniprogram_appid, miniprogram_pagepath } =
        args;
    let mut b = SubscribeMessage::builder(
        parse("--to", OpenId::new(to.as_str()))?,
        parse("--template-id", TemplateId::new(template_id.as_str()))?,
        parse("--scene", scene.parse::<Scene>())?,
    )
    .title(title.as_str())
    .content(content.as_str());
    if let Some(c) = color {
        b = b.color(c.as_str());
    }
    if let Some(u) = url {
        b = b.url(u.as_str());
    }
    match (miniprogram_appid, miniprogram_pagepath) {
        (Some(a), Some(p)) => b = b.miniprogram(a.as_str(), p.as_str()),
        (None, None) => {}
        _ => return Err("--miniprogram-appid and --miniprogram-pagepath go together".into()),
    }
    let message = b.build().map_err(|e| format!("invalid message: {e}"))?;
    let client = client(cli)?;
    let outcome = Outcome::of(&client.send(&message).await);
    println!("{}", outcome.to_json());
    if let Some(line) = outcome.stderr_line() {
        eprintln!("wxsub: {line}");
    }
    Ok(outcome.exit())
}
