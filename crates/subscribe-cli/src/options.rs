//! The global options (`Cli`), the list of commands, and the client each command builds from
//! the options. Each command's own arguments and handler are in the file named after it.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use subscribe_client::{Client, TokenEndpoint};
use subscribe_types::{AppId, AppSecret};

use crate::{
    auth_url, batch, callback, event, grants, mini_program, mobile_answer, mobile_request, notification,
    sandbox, send, templates, token,
};

/// WeChat one-time subscription messages (一次性订阅消息) from the command line.
#[derive(Debug, Parser)]
#[command(name = "wxsub", version, about, long_about = None, after_help = SECRETS_HELP)]
pub(crate) struct Cli {
    /// The WeChat API host (use the sandbox's URL to try things locally).
    #[arg(long, env = "WXSUB_API_BASE", default_value = subscribe_client::DEFAULT_API_BASE, global = true)]
    pub(crate) api_base: String,
    /// The authorization page's host.
    #[arg(long, env = "WXSUB_MP_BASE", default_value = subscribe_types::DEFAULT_MP_BASE, global = true)]
    pub(crate) mp_base: String,
    /// The official account's AppID.
    #[arg(long, env = "WXSUB_APPID", global = true)]
    pub(crate) appid: Option<String>,
    /// The AppSecret (never printed). Set `WXSUB_SECRET` instead: an argument shows in `ps` and
    /// in shell history, and draws a warning.
    #[arg(long, env = "WXSUB_SECRET", hide_env_values = true, global = true, value_parser = app_secret)]
    pub(crate) secret: Option<AppSecret>,
    /// Which token endpoint to use.
    #[arg(long, env = "WXSUB_TOKEN_SOURCE", value_enum, default_value_t = TokenSource::Stable, global = true)]
    pub(crate) token_source: TokenSource,
    /// The HTTP stack: `hyper` (hyper-util's pooled client: measured faster, see
    /// docs/performance.md) or `reqwest` (the library's default).
    #[arg(long, env = "WXSUB_TRANSPORT", value_enum, default_value_t = Transport::Hyper, global = true)]
    pub(crate) transport: Transport,
    /// Also trust the certificate authorities in this PEM file: a company's TLS-inspecting
    /// proxy, or a test authority. The system's roots stay trusted and certificates are always
    /// checked.
    #[arg(long, env = "WXSUB_CA_FILE", global = true)]
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// How long a send that has no token waits for one while the token endpoint fails, in
    /// seconds (attempts back off from 0.5 s to 30 s meanwhile).
    #[arg(long, env = "WXSUB_TOKEN_WAIT", default_value_t = 10.0, value_parser = positive_secs, global = true)]
    pub(crate) token_wait: f64,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Transport {
    /// `ReqwestTransport`.
    Reqwest,
    /// `HyperTransport`.
    Hyper,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum TokenSource {
    /// `POST /cgi-bin/stable_token`.
    Stable,
    /// `GET /cgi-bin/token`.
    Classic,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the authorization page URL.
    AuthUrl(auth_url::Args),
    /// Parse and check WeChat's redirect (a URL, a path and query, or `?` and the query string).
    Callback(callback::Args),
    /// Print the request a mobile app hands to the WeChat Open SDK, as one JSON line.
    MobileRequest(mobile_request::Args),
    /// Parse and check the answer a mobile app forwards from the Open SDK (JSON).
    MobileAnswer(mobile_answer::Args),
    /// Fetch an access token; prints its lifetime (the token itself only with --show).
    Token(token::Args),
    /// Send one one-time message (一次性订阅消息).
    #[command(name = "send-one-time", visible_alias = "send")]
    SendOneTime(send::Args),
    /// Send one mini-program message (小程序订阅消息).
    #[command(name = "send-mini-program", visible_alias = "mp-send")]
    SendMiniProgram(mini_program::Args),
    /// Send one notification (订阅通知, a service account's; prints its msgid).
    #[command(name = "send-notification", visible_alias = "notify")]
    SendNotification(notification::Args),
    /// The template library: categories, public templates, keywords, and your templates.
    Templates {
        #[command(subcommand)]
        command: templates::TemplatesCommand,
    },
    /// Verify and read one captured event push (or the server URL's check): the typed event as
    /// one JSON line, or `echostr`.
    Event(event::Args),
    /// Send many messages from JSON lines.
    SendBatch(batch::Args),
    /// The grant ledger in a SQL database or Redis: record, list, count, dispatch, review.
    Grants(grants::Args),
    /// Run the local WeChat sandbox.
    Sandbox(sandbox::Args),
}

/// The end of `wxsub --help`.
pub(crate) const SECRETS_HELP: &str = "Secrets (--secret, event's --token, --aes-key and --previous-aes-key, a --database URL \
with a password) belong in their environment variables: given as arguments they show in `ps` and in \
shell history, and wxsub warns on stderr (naming the flag and the variable, never the value).";

/// An error that stops the command before anything is sent (exit 2). Never holds a secret.
pub(crate) type Usage = String;

pub(crate) fn appid(cli: &Cli) -> Result<AppId, Usage> {
    let raw = cli.appid.as_deref().ok_or("--appid (or WXSUB_APPID) is required")?;
    AppId::new(raw).map_err(|e| format!("invalid --appid: {e}"))
}

/// A client for signing and verifying states only (no request is sent): the app id and secret.
pub(crate) fn signing_client(cli: &Cli) -> Result<Client, Usage> {
    signing_client_on(cli, None)
}

/// [`signing_client`] whose used states are kept in `sql` (single use across runs), or in the
/// process's memory.
pub(crate) fn signing_client_on(cli: &Cli, sql: Option<&subscribe_sql::Sql>) -> Result<Client, Usage> {
    let used = sql.map(|sql| {
        std::sync::Arc::new(subscribe_sql::SqlUsedStates::new(sql.clone()))
            as subscribe_client::SharedUsedStates
    });
    signing_client_with(cli, used)
}

/// [`signing_client`] whose used states are kept in `used_states` (a database or Redis: single
/// use across runs), or in the process's memory.
pub(crate) fn signing_client_with(
    cli: &Cli,
    used_states: Option<subscribe_client::SharedUsedStates>,
) -> Result<Client, Usage> {
    let secret =
        cli.secret.clone().ok_or("--secret (or WXSUB_SECRET) is required to sign or verify a state")?;
    let mut builder = Client::builder(appid(cli)?, secret).mp_base(&cli.mp_base);
    if let Some(used_states) = used_states {
        builder = builder.used_states(used_states);
    }
    builder.build().map_err(|e| format!("client: {e}"))
}

pub(crate) fn client(cli: &Cli) -> Result<Client, Usage> {
    let appid = appid(cli)?;
    let secret = cli.secret.clone().ok_or("--secret (or WXSUB_SECRET) is required")?;
    let endpoint = match cli.token_source {
        TokenSource::Stable => TokenEndpoint::Stable,
        TokenSource::Classic => TokenEndpoint::Classic,
    };
    let builder = Client::builder(appid, secret)
        .api_base(&cli.api_base)
        .mp_base(&cli.mp_base)
        .token_endpoint(endpoint)
        .token_wait(Duration::from_secs_f64(cli.token_wait));
    let roots = match &cli.ca_file {
        Some(path) => Some(read_ca_file(path)?),
        None => None,
    };
    let built = |e: subscribe_client::transport::TransportError| {
        let name = match cli.transport {
            Transport::Reqwest => "reqwest",
            Transport::Hyper => "hyper",
        };
        let mut why = String::new();
        let mut next = std::error::Error::source(&e);
        while let Some(cause) = next {
            why.push_str(if why.is_empty() { "" } else { ": " });
            why.push_str(&cause.to_string());
            next = cause.source();
        }
        let file = cli.ca_file.as_ref().map(|p| format!(" (--ca-file {})", p.display())).unwrap_or_default();
        format!("the {name} transport could not be built{file}: {why}")
    };
    let builder = match (cli.transport, roots) {
        (Transport::Reqwest, None) => builder,
        (Transport::Reqwest, Some(pem)) => builder.transport(
            subscribe_client::transport::ReqwestTransport::builder()
                .add_root_certificates_pem(pem)
                .build()
                .map_err(built)?,
        ),
        (Transport::Hyper, roots) => {
            let mut t = subscribe_client::transport::HyperTransport::builder();
            if let Some(pem) = roots {
                t = t.add_root_certificates_pem(pem);
            }
            builder.transport(t.build().map_err(built)?)
        }
    };
    builder.build().map_err(|e| format!("invalid configuration: {e}"))
}

/// The largest `--ca-file` read: certificate bundles are tens of kilobytes (the system's whole
/// store is a few hundred).
const CA_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// Reads `--ca-file`, refusing more than [`CA_FILE_LIMIT`] (`/dev/zero`, a wrong file).
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, Usage> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| format!("--ca-file {}: cannot read it: {e}", path.display());
    let mut text = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(CA_FILE_LIMIT + 1)
        .read_to_end(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > CA_FILE_LIMIT {
        return Err(format!("--ca-file {}: more than 4 MiB, not a certificate bundle", path.display()));
    }
    Ok(text)
}

/// A number of seconds, more than zero and at most a day.
pub(crate) fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 (exclusive) and 86400 seconds"))
    }
}

pub(crate) fn parse<T>(flag: &str, r: Result<T, subscribe_types::ValidationError>) -> Result<T, Usage> {
    r.map_err(|e| format!("invalid {flag}: {e}"))
}

/// The secret, parsed where the arguments are: `Cli`'s `Debug` then shows `AppSecret([redacted])`.
pub(crate) fn app_secret(raw: &str) -> Result<AppSecret, String> {
    AppSecret::new(raw).map_err(|e| format!("invalid secret: {e}"))
}

/// The one-time template and the scene a state is signed for: the flags `auth-url` and
/// `mobile-request` share.
#[derive(Debug, clap::Args)]
pub(crate) struct TemplateScene {
    /// The one-time template.
    #[arg(long)]
    pub(crate) template_id: String,
    /// The scene, 0..=10000.
    #[arg(long)]
    pub(crate) scene: String,
}

impl TemplateScene {
    /// The template and the scene, each checked.
    pub(crate) fn parts(&self) -> Result<(subscribe_types::TemplateId, subscribe_types::Scene), Usage> {
        Ok((
            parse("--template-id", subscribe_types::TemplateId::new(self.template_id.as_str()))?,
            parse("--scene", self.scene.parse::<subscribe_types::Scene>())?,
        ))
    }
}
