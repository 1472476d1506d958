//! `wxsub mobile-answer`: the answer a mobile app forwards from the Open SDK, read and (with
//! `--session`) verified; with `--database`, each signed state confirms once across runs.

use subscribe_client::Answer;
use subscribe_types::MobileSubscribeResponse;

use crate::callback::check_and_print;
use crate::options::{Cli, Usage, signing_client_on};
use crate::output::Exit;

/// The arguments of `wxsub mobile-answer`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The SDK's answer as JSON (either SDK's spelling).
    pub(crate) json: String,
    /// Fail unless the answer is for this template.
    #[arg(long)]
    pub(crate) template_id: Option<String>,
    /// Fail unless the answer is for this scene.
    #[arg(long)]
    pub(crate) scene: Option<String>,
    /// Fail unless the answer carries this state.
    #[arg(long)]
    pub(crate) reserved: Option<String>,
    /// Verify the signed state made by `mobile-request --session ID` (needs --secret): its
    /// signature, app, template, scene, session and expiry. Without --database this is not
    /// single-use: each run starts with no record of the states used before, so the same
    /// answer verifies again.
    #[arg(long, conflicts_with = "reserved", value_parser = crate::secrets::session)]
    pub(crate) session: Option<subscribe_client::Session>,
    /// Keep the used states in this database (`sqlite:path/to/grants.db` or
    /// `postgres://user@host/db`, as `grants --database`), so each signed state confirms
    /// once across runs: a later run refuses the same answer, or another openid, with its
    /// state. The URL is never printed.
    #[arg(long, requires = "session")]
    pub(crate) database: Option<String>,
}

/// `wxsub mobile-answer`: reads (and with `--session` verifies) a forwarded SDK answer; with
/// `--database`, each signed state confirms once across runs.
pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let Args { json, template_id, scene, reserved, session, database } = args;
    let answer = match session {
        Some(session) => {
            let sql = match database {
                Some(url) => Some(
                    subscribe_sql::Sql::builder(url)
                        .connect()
                        .await
                        .map_err(|e| format!("database: {}", crate::output::one_line(&e)))?,
                ),
                None => None,
            };
            signing_client_on(cli, sql.as_ref())?
                .complete(Answer::Mobile(json), session)
                .await
                .map_err(|e| format!("answer rejected: {}", crate::output::one_line(&e)))?
                .accept()
                .await
        }
        None => MobileSubscribeResponse::parse(json)
            .and_then(MobileSubscribeResponse::into_answer)
            .map_err(|e| format!("invalid answer: {e}"))?,
    };
    check_and_print(&answer, template_id.as_deref(), scene.as_deref(), reserved.as_deref())
}
