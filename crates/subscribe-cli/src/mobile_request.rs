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
    #[arg(long, conflicts_with = "reserved", required_unless_present = "reserved")]
    pub(crate) session: Option<String>,
}

/// `wxsub mobile-request`: the Open SDK's request as one JSON line.
pub(crate) fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let (template_id, scene) = args.template.parts()?;
    let request = if let Some(r) = args.reserved.as_deref() {
        MobileSubscribeRequest { scene, template_id, reserved: parse("--reserved", Reserved::new(r))? }
    } else {
        // clap requires --session without --reserved.
        let session = parse("--session", Session::new(args.session.as_deref().unwrap_or_default()))?;
        signing_client(cli)?.mobile_request(&template_id, scene, &session)
    };
    println!("{}", serde_json::to_string(&request).map_err(|e| e.to_string())?);
    Ok(Exit::Ok)
}
