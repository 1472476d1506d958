//! `wxsub send-one-time` (also `send`): one one-time message, checked before anything is sent;
//! and the recipient and data flags the other kinds' commands share.

use subscribe_types::{MessageData, OneTimeMessage, OpenId, Scene, TemplateId, ValidationError};

use crate::options::{Cli, Usage, client, parse};
use crate::output::{Exit, Outcome};

/// The arguments of `wxsub send-one-time`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The recipient's OpenID.
    #[arg(long)]
    pub(crate) to: String,
    #[command(flatten)]
    pub(crate) message: MessageArgs,
}

/// The one-time message's flags, as `send-one-time` and `grants dispatch` take them.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct MessageArgs {
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

impl MessageArgs {
    /// The template and the scene, checked.
    pub(crate) fn template_and_scene(&self) -> Result<(TemplateId, Scene), Usage> {
        Ok((
            parse("--template-id", TemplateId::new(self.template_id.as_str()))?,
            parse("--scene", self.scene.parse::<Scene>())?,
        ))
    }

    /// The message to each recipient (for a dispatch), every flag checked once here, before
    /// any recipient is.
    pub(crate) fn per_recipient(
        &self,
    ) -> Result<impl Fn(&OpenId) -> Result<OneTimeMessage, ValidationError> + Send + Sync + 'static, Usage>
    {
        let (template_id, scene) = self.template_and_scene()?;
        self.miniprogram()?;
        let flags = self.clone();
        let build = move |to: &OpenId| flags.build(to.clone(), template_id.clone(), scene);
        let probe = OpenId::new("oCheck").map_err(|e| e.to_string())?;
        build(&probe).map_err(|e| format!("invalid message: {e}"))?;
        Ok(build)
    }

    /// `--miniprogram-appid` and `--miniprogram-pagepath`, which go together.
    fn miniprogram(&self) -> Result<Option<(&str, &str)>, Usage> {
        match (&self.miniprogram_appid, &self.miniprogram_pagepath) {
            (Some(a), Some(p)) => Ok(Some((a.as_str(), p.as_str()))),
            (None, None) => Ok(None),
            _ => Err("--miniprogram-appid and --miniprogram-pagepath go together".into()),
        }
    }

    fn build(
        &self,
        to: OpenId,
        template_id: TemplateId,
        scene: Scene,
    ) -> Result<OneTimeMessage, ValidationError> {
        let mut b = OneTimeMessage::builder(to, template_id, scene)
            .title(self.title.as_str())
            .content(self.content.as_str());
        if let Some(c) = &self.color {
            b = b.color(c.as_str());
        }
        if let Some(u) = &self.url {
            b = b.url(u.as_str());
        }
        if let Ok(Some((appid, page))) = self.miniprogram() {
            b = b.miniprogram(appid, page);
        }
        b.build()
    }
}

/// `wxsub send-one-time`: the message is checked before the client is built (invalid input exits 2
/// with nothing sent).
pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let to = parse("--to", OpenId::new(args.to.as_str()))?;
    let (template_id, scene) = args.message.template_and_scene()?;
    args.message.miniprogram()?;
    let message = args.message.build(to, template_id, scene).map_err(|e| format!("invalid message: {e}"))?;
    let client = client(cli)?;
    let outcome = Outcome::of(&client.send_one_time(&message).await);
    println!("{}", outcome.to_json());
    if let Some(line) = outcome.stderr_line() {
        eprintln!("wxsub: {line}");
    }
    Ok(outcome.exit())
}

/// `KEY=VALUE` pairs into checked data: every key a keyword type and an index, every value
/// keeping its type's rule.
pub(crate) fn data(pairs: &[String]) -> Result<MessageData, Usage> {
    if pairs.is_empty() {
        return Err("--data KEY=VALUE is required (at least one)".into());
    }
    let split: Vec<(&str, &str)> = pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .ok_or_else(|| format!("--data takes KEY=VALUE (got a pair without `=`: {} bytes)", p.len()))
        })
        .collect::<Result<_, _>>()?;
    MessageData::from_pairs(split).map_err(|e| format!("invalid --data: {e}"))
}

/// Who gets which template's message with which data: the arguments
/// `send-mini-program` and `send-notification` share.
#[derive(Debug, clap::Args)]
pub(crate) struct Recipient {
    /// The recipient's OpenID.
    #[arg(long)]
    pub(crate) to: String,
    /// The template (from the library).
    #[arg(long)]
    pub(crate) template_id: String,
    /// A key and its value, e.g. `thing1=亚麻衬衫`; repeat for each key.
    #[arg(long = "data", value_name = "KEY=VALUE")]
    pub(crate) data: Vec<String>,
}

impl Recipient {
    /// The recipient, the template and the checked data.
    pub(crate) fn parts(&self) -> Result<(OpenId, TemplateId, MessageData), Usage> {
        Ok((
            parse("--to", OpenId::new(self.to.as_str()))?,
            parse("--template-id", TemplateId::new(self.template_id.as_str()))?,
            data(&self.data)?,
        ))
    }
}
