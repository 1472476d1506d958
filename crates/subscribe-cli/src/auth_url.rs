//! `wxsub auth-url`: the authorization page's URL, with a given, random or signed state.

use subscribe_client::Session;
use subscribe_types::{AuthorizeRequest, RedirectUrl, Reserved};

use crate::options::{Cli, TemplateScene, Usage, appid, parse, signing_client};
use crate::output::Exit;

/// The arguments of `wxsub auth-url`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) template: TemplateScene,
    /// Where WeChat sends the answer: an http(s) URL without a #fragment whose query has none
    /// of the answer's parameters (`action`, `openid`, `template_id`, `scene`, `reserved`).
    #[arg(long)]
    pub(crate) redirect_url: String,
    /// The state echoed back (`[A-Za-z0-9]{0,128}`); random when omitted.
    #[arg(long, conflicts_with = "signed")]
    pub(crate) reserved: Option<String>,
    /// Put a signed, single-use state in `reserved` (needs --secret and --session), which
    /// `grants record` verifies (with the same --session).
    #[arg(long, requires = "session")]
    pub(crate) signed: bool,
    /// The user's session id the signed state is bound to (not empty).
    #[arg(long, requires = "signed", value_parser = crate::secrets::session)]
    pub(crate) session: Option<Session>,
}

/// What `auth-url` puts in `reserved`.
#[derive(Clone, Copy)]
enum State<'a> {
    /// `--reserved`.
    Given(&'a str),
    /// Random letters and digits (the default).
    Random,
    /// `--signed`: a signed, single-use state bound to `--session`.
    Signed { session: &'a Session },
}

impl<'a> State<'a> {
    /// From `--reserved`, `--signed` and `--session` (clap keeps `--reserved` and `--signed`
    /// apart, and `--session` with `--signed`).
    fn of(reserved: Option<&'a str>, signed: bool, session: Option<&'a Session>) -> Self {
        match (reserved, signed, session) {
            (_, true, Some(session)) => Self::Signed { session },
            (Some(r), _, _) => Self::Given(r),
            // `--signed` without a session cannot pass clap (it requires --session).
            (None, _, _) => Self::Random,
        }
    }
}

/// `wxsub auth-url`: the authorization page's URL.
pub(crate) fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    let state = State::of(args.reserved.as_deref(), args.signed, args.session.as_ref());
    let redirect_url = &args.redirect_url;
    let (template_id, scene) = args.template.parts()?;
    let redirect_url = parse("--redirect-url", RedirectUrl::new(redirect_url))?;
    let reserved = match state {
        State::Given(r) => parse("--reserved", Reserved::new(r))?,
        State::Random => random_reserved()?,
        State::Signed { session } => {
            let link = signing_client(cli)?.authorize_url(&template_id, scene, &redirect_url, session);
            println!("{}", link.url);
            return Ok(Exit::Ok);
        }
    };
    let request =
        AuthorizeRequest::new(appid(cli)?, template_id, scene, redirect_url.into()).with_reserved(reserved);
    println!("{}", request.url_with_base(&cli.mp_base));
    Ok(Exit::Ok)
}

/// A random `reserved` (24 letters and digits). Without the OS's random source there is no
/// unguessable value to give, so that is an error, never a constant.
pub(crate) fn random_reserved() -> Result<Reserved, Usage> {
    random_reserved_from(getrandom::fill)
}

pub(crate) fn random_reserved_from(
    fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<Reserved, Usage> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 24];
    fill(&mut bytes).map_err(|e| format!("no random source for --reserved ({e}): pass --reserved"))?;
    let s: String = bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    Reserved::new(s).map_err(|e| format!("random --reserved: {e}"))
}
