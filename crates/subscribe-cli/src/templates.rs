//! `wxsub templates …`: the template library (模板库) the mini-program and notification
//! templates come from.

use clap::Subcommand;
use subscribe_client::{Client, LibraryError};
use subscribe_types::{AddTemplate, TemplateId, TitlesQuery};

use crate::options::{Usage, parse};
use crate::output::{Exit, Outcome};

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
