//! `wxsub mp-send`, `wxsub notify` and `wxsub templates`: the successors of the one-time
//! message, with the output conventions and exit codes of `wxsub send`.

use clap::Subcommand;
use subscribe_client::{Client, LibraryError, SendError};
use subscribe_types::{
    AddTemplate, Lang, MessageData, MiniProgramMessage, MiniProgramState, OpenId, SubscribeNotification,
    TemplateId, TitlesQuery,
};

use crate::options::{Cli, Usage, parse};
use crate::output::{Exit, Outcome};

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

/// Who gets which template's message with which data: the arguments `mp-send` and `notify`
/// share.
#[derive(Debug, clap::Args)]
pub(crate) struct Recipient {
    /// The recipient's OpenID.
    #[arg(long)]
    to: String,
    /// The template (from the library).
    #[arg(long)]
    template_id: String,
    /// A key and its value, e.g. `thing1=亚麻衬衫`; repeat for each key.
    #[arg(long = "data", value_name = "KEY=VALUE")]
    data: Vec<String>,
}

impl Recipient {
    /// The recipient, the template and the checked data.
    fn parts(&self) -> Result<(OpenId, TemplateId, MessageData), Usage> {
        Ok((
            parse("--to", OpenId::new(self.to.as_str()))?,
            parse("--template-id", TemplateId::new(self.template_id.as_str()))?,
            data(&self.data)?,
        ))
    }
}

/// `wxsub mp-send`.
pub(crate) struct MpSend<'a> {
    pub(crate) to: &'a Recipient,
    pub(crate) page: Option<&'a str>,
    pub(crate) state: Option<&'a str>,
    pub(crate) lang: Option<&'a str>,
}

impl MpSend<'_> {
    pub(crate) fn message(&self) -> Result<MiniProgramMessage, Usage> {
        let (to, template_id, data) = self.to.parts()?;
        let mut b = MiniProgramMessage::builder(to, template_id, data);
        if let Some(p) = self.page {
            b = b.page(p);
        }
        if let Some(s) = self.state {
            b = b.state(parse("--state", s.parse::<MiniProgramState>())?);
        }
        if let Some(l) = self.lang {
            b = b.lang(parse("--lang", l.parse::<Lang>())?);
        }
        b.build().map_err(|e| format!("invalid message: {e}"))
    }
}

/// `wxsub notify`.
pub(crate) struct Notify<'a> {
    pub(crate) to: &'a Recipient,
    pub(crate) page: Option<&'a str>,
    pub(crate) mp_appid: Option<&'a str>,
    pub(crate) mp_pagepath: Option<&'a str>,
}

impl Notify<'_> {
    pub(crate) fn message(&self) -> Result<SubscribeNotification, Usage> {
        let (to, template_id, data) = self.to.parts()?;
        let mut b = SubscribeNotification::builder(to, template_id, data);
        if let Some(p) = self.page {
            b = b.page(p);
        }
        match (self.mp_appid, self.mp_pagepath) {
            (Some(a), Some(p)) => b = b.miniprogram(a, p),
            (None, None) => {}
            _ => return Err("--mp-appid and --mp-pagepath go together".into()),
        }
        b.build().map_err(|e| format!("invalid message: {e}"))
    }
}

/// Prints a send's outcome line (with `msgid` for a notification) and its stderr line.
pub(crate) fn report(result: Result<(subscribe_client::SendReceipt, Option<u64>), SendError>) -> Exit {
    let msgid = result.as_ref().ok().and_then(|(_, m)| *m);
    let receipt = result.map(|(r, _)| r);
    let outcome = Outcome { msgid, ..Outcome::of(&receipt) };
    println!("{}", outcome.to_json());
    if let Some(line) = outcome.stderr_line() {
        eprintln!("wxsub: {line}");
    }
    outcome.exit()
}

/// `wxsub templates …`: the template library.
#[derive(Debug, Subcommand)]
pub(crate) enum TemplatesCommand {
    /// The categories of the account (`getcategory`).
    Categories,
    /// Public templates of some categories (`getpubtemplatetitles`).
    Titles {
        /// Category ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u64>,
        /// The first to list.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// How many, 1..=30.
        #[arg(long, default_value_t = 30)]
        limit: u32,
    },
    /// A public template's keywords (`getpubtemplatekeywords`).
    Keywords {
        /// The public template.
        #[arg(long)]
        tid: u64,
    },
    /// Add a private template from a public one (`addtemplate`).
    Add {
        /// The public template.
        #[arg(long)]
        tid: u64,
        /// 2 to 5 keyword ids, comma-separated, in the order the message shows them.
        #[arg(long, value_delimiter = ',', required = true)]
        kids: Vec<u64>,
        /// What the template is for (≤15 characters).
        #[arg(long)]
        scene_desc: Option<String>,
    },
    /// Delete a private template (`deltemplate`).
    Del {
        /// The private template.
        #[arg(long)]
        template_id: String,
    },
    /// The account's private templates, with their keys (`gettemplate`).
    List,
}

/// Runs a `templates` command: its answer as one JSON line (exit 0), or the failure line
/// (exit 1); invalid input exits 2 before anything is sent.
pub(crate) async fn templates(
    client: Result<Client, Usage>,
    command: &TemplatesCommand,
) -> Result<Exit, Usage> {
    // Checked before the client: a bad request never needs credentials to be refused.
    let titles = match command {
        TemplatesCommand::Titles { ids, start, limit } => {
            Some(parse("--limit/--ids", TitlesQuery::new(ids.iter().copied(), *start, *limit))?)
        }
        _ => None,
    };
    let add = match command {
        TemplatesCommand::Add { tid, kids, scene_desc } => Some(parse(
            "--kids/--scene-desc",
            AddTemplate::new(*tid, kids.iter().copied(), scene_desc.as_deref()),
        )?),
        _ => None,
    };
    let del = match command {
        TemplatesCommand::Del { template_id } => {
            Some(parse("--template-id", TemplateId::new(template_id.as_str()))?)
        }
        _ => None,
    };
    let client = client?;
    let answer: Result<serde_json::Value, LibraryError> = match command {
        TemplatesCommand::Categories => client.template_categories().await.map(|v| to_json(&v)),
        TemplatesCommand::Titles { .. } => {
            client.public_templates(titles.as_ref().expect("parsed above")).await.map(|v| to_json(&v))
        }
        TemplatesCommand::Keywords { tid } => client.template_keywords(*tid).await.map(|v| to_json(&v)),
        TemplatesCommand::Add { .. } => client
            .add_template(add.as_ref().expect("parsed above"))
            .await
            .map(|id| serde_json::json!({"priTmplId": id.as_str()})),
        TemplatesCommand::Del { .. } => client
            .delete_template(del.as_ref().expect("parsed above"))
            .await
            .map(|()| serde_json::json!({"deleted": del.as_ref().map(TemplateId::as_str)})),
        TemplatesCommand::List => client.templates().await.map(|v| to_json(&v)),
    };
    match answer {
        Ok(v) => {
            println!("{v}");
            Ok(Exit::Ok)
        }
        Err(e) => {
            let outcome = Outcome::of_library(&e);
            println!("{}", outcome.to_json());
            if let Some(line) = outcome.stderr_line() {
                eprintln!("wxsub: {line}");
            }
            Ok(outcome.exit())
        }
    }
}

fn to_json(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The arguments of `wxsub mp-send`.
#[derive(Debug, clap::Args)]
pub(crate) struct MpSendArgs {
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

/// The arguments of `wxsub notify`.
#[derive(Debug, clap::Args)]
pub(crate) struct NotifyArgs {
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

/// `wxsub mp-send`: one mini-program message, checked before the client is built (invalid input
/// exits 2 with nothing sent).
pub(crate) async fn mp_send(cli: &Cli, args: &MpSendArgs) -> Result<Exit, Usage> {
    let MpSendArgs { to, page, state, lang } = args;
    let message =
        MpSend { to, page: page.as_deref(), state: state.as_deref(), lang: lang.as_deref() }.message()?;
    let client = crate::options::client(cli)?;
    Ok(report(client.send_mini_program(&message).await.map(|r| (r, None))))
}

/// `wxsub notify`: one subscribe notification, checked before the client is built.
pub(crate) async fn notify(cli: &Cli, args: &NotifyArgs) -> Result<Exit, Usage> {
    let NotifyArgs { to, page, mp_appid, mp_pagepath } = args;
    let message = Notify {
        to,
        page: page.as_deref(),
        mp_appid: mp_appid.as_deref(),
        mp_pagepath: mp_pagepath.as_deref(),
    }
    .message()?;
    let client = crate::options::client(cli)?;
    let sent = client.send_notification(&message).await;
    Ok(report(sent.map(|a| (a.receipt, Some(a.response.msgid)))))
}
