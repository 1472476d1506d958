//! `wxsub send-mini-program` (also `mp-send`): one mini-program message, with the output
//! conventions and exit codes of `wxsub send-one-time`.

use subscribe_types::{Lang, MiniProgramMessage, MiniProgramState};

use crate::options::{Cli, Usage, parse};
use crate::output::{Exit, report};
use crate::send::Recipient;

/// The arguments of `wxsub send-mini-program`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) to: Recipient,
    /// The mini program page opened on tap, with its query.
    #[arg(long)]
    pub(crate) page: Option<String>,
    /// The version opened: developer, trial or formal.
    #[arg(long)]
    pub(crate) state: Option<String>,
    /// The language: `zh_CN`, `en_US`, `zh_HK` or `zh_TW`.
    #[arg(long)]
    pub(crate) lang: Option<String>,
}

impl Args {
    /// The message, every flag checked.
    pub(crate) fn message(&self) -> Result<MiniProgramMessage, Usage> {
        let (to, template_id, data) = self.to.parts()?;
        let mut b = MiniProgramMessage::builder(to, template_id, data);
        if let Some(p) = &self.page {
            b = b.page(p);
        }
        if let Some(s) = &self.state {
            b = b.state(parse("--state", s.parse::<MiniProgramState>())?);
        }
        if let Some(l) = &self.lang {
            b = b.lang(parse("--lang", l.parse::<Lang>())?);
        }
        b.build().map_err(|e| format!("invalid message: {e}"))
    }
}

/// `wxsub send-mini-program`: one mini-program message, checked before the client is built (invalid input
/// exits 2 with nothing sent).
pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let message = args.message()?;
    let client = crate::options::client(cli)?;
    Ok(report(client.send_mini_program(&message).await.map(|r| (r, None))))
}
