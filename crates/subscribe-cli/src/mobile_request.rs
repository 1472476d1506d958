//! `wxsub mobile-request`: the request a mobile app hands to the WeChat Open SDK.

use subscribe_client::Session;
use subscribe_types::{MobileSubscribeRequest, Reserved};

use crate::options::{Cli, TemplateScene, Usage, parse, signing_client};
use crate::output::Exit;

/// The arguments of `wxsub mobile-request`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) template: TemplateScene,
    /// The state echoed back (`[A-Za-z0-9]{0,128}`); when omitted, a signed single-use
    /// state (needs --secret) bound to --session.
    #[arg(long)]
    pub(crate) reserved: Option<String>,
    /// The app user's session id the signed state is bound to (not empty; required without
    /// --reserved).
    #[arg(long, conflicts_with = "reserved", required_unless_present = "reserved", value_parser = crate::secrets::session)]
    pub(crate) session: Option<Session>,
}

/// `wxsub mobile-request`: the Open SDK's request as one JSON line.
pub(crate) fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let (template_id, scene) = args.template.parts()?;
    let request = match (args.reserved.as_deref(), &args.session) {
        (Some(r), _) => {
            MobileSubscribeRequest { scene, template_id, reserved: parse("--reserved", Reserved::new(r))? }
        }
        (None, Some(session)) => signing_client(cli)?.mobile_request(&template_id, scene, session),
        (None, None) => return Err("--session (or --reserved) is required".into()), // clap requires it
    };
    println!("{}", serde_json::to_string(&request).map_err(|e| e.to_string())?);
    Ok(Exit::Ok)
}
