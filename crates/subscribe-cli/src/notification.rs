//! `wxsub send-notification` (also `notify`): one service-account notification (订阅通知),
//! printing its `msgid`, with the output conventions and exit codes of `wxsub send-one-time`.

use subscribe_types::NotificationMessage;

use crate::options::{Cli, Usage};
use crate::output::{Exit, report};
use crate::send::Recipient;

/// The arguments of `wxsub send-notification`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) to: Recipient,
    /// A web page opened on tap.
    #[arg(long)]
    pub(crate) page: Option<String>,
    /// A mini program opened on tap (with --mp-pagepath).
    #[arg(long)]
    pub(crate) mp_appid: Option<String>,
    /// The mini program page (with --mp-appid).
    #[arg(long)]
    pub(crate) mp_pagepath: Option<String>,
}

impl Args {
    /// The message, every flag checked.
    pub(crate) fn message(&self) -> Result<NotificationMessage, Usage> {
        let (to, template_id, data) = self.to.parts()?;
        let mut b = NotificationMessage::builder(to, template_id, data);
        if let Some(p) = &self.page {
            b = b.page(p);
        }
        match (&self.mp_appid, &self.mp_pagepath) {
            (Some(a), Some(p)) => b = b.miniprogram(a, p),
            (None, None) => {}
            _ => return Err("--mp-appid and --mp-pagepath go together".into()),
        }
        b.build().map_err(|e| format!("invalid message: {e}"))
    }
}

/// `wxsub send-notification`: one notification, checked before the client is built.
pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let message = args.message()?;
    let client = crate::options::client(cli)?;
    let sent = client.send_notification(&message).await;
    Ok(report(sent.map(|a| (a.receipt, Some(a.response.msgid)))))
}
