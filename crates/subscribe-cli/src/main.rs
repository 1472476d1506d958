//! `wxsub`: WeChat one-time subscription messages from the command line.
//!
//! Every command prints JSON (or the bare URL for `auth-url`) on stdout, one clear line on
//! stderr for errors, and never the AppSecret or a token (except `token --show`). Exit codes:
//! 0 all delivered / done; 1 an API, transport or unknown outcome; 2 invalid input or usage
//! (nothing sent).

// A command-line tool talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod batch;
mod family;
mod grants;
mod output;
mod secrets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use subscribe_client::{Client, TokenEndpoint};
use subscribe_types::secrecy::{ExposeSecret as _, SecretString};
use subscribe_types::{
    AppId, AppSecret, AuthorizationAnswer, AuthorizeRequest, Expectation, HttpUrl, MobileSubscribeRequest,
    MobileSubscribeResponse, OpenId, Reserved, Scene, SubscribeMessage, TemplateId,
};

use crate::output::{Exit, Outcome};

/// WeChat one-time subscription messages (一次性订阅消息) from the command line.
#[derive(Debug, Parser)]
#[command(name = "wxsub", version, about, long_about = None, after_help = SECRETS_HELP)]
struct Cli {
    /// The WeChat API host (use the sandbox's URL to try things locally).
    #[arg(long, env = "WXSUB_API_BASE", default_value = subscribe_client::DEFAULT_API_BASE, global = true)]
    api_base: String,
    /// The authorization page's host.
    #[arg(long, env = "WXSUB_MP_BASE", default_value = subscribe_types::DEFAULT_MP_BASE, global = true)]
    mp_base: String,
    /// The official account's AppID.
    #[arg(long, env = "WXSUB_APPID", global = true)]
    appid: Option<String>,
    /// The AppSecret (never printed). Set `WXSUB_SECRET` instead: an argument shows in `ps` and
    /// in shell history, and draws a warning.
    #[arg(long, env = "WXSUB_SECRET", hide_env_values = true, global = true, value_parser = app_secret)]
    secret: Option<AppSecret>,
    /// Which token endpoint to use.
    #[arg(long, env = "WXSUB_TOKEN_SOURCE", value_enum, default_value_t = TokenSource::Stable, global = true)]
    token_source: TokenSource,
    /// The HTTP stack: `hyper` (hyper-util's pooled client: measured faster, see
    /// docs/performance.md) or `reqwest` (the library's default).
    #[arg(long, env = "WXSUB_TRANSPORT", value_enum, default_value_t = Transport::Hyper, global = true)]
    transport: Transport,
    /// Also trust the certificate authorities in this PEM file: a company's TLS-inspecting
    /// proxy, or a test authority. The system's roots stay trusted and certificates are always
    /// checked.
    #[arg(long, env = "WXSUB_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// How long a send that has no token waits for one while the token endpoint fails, in
    /// seconds (attempts back off from 0.5 s to 30 s meanwhile).
    #[arg(long, env = "WXSUB_TOKEN_WAIT", default_value_t = 10.0, value_parser = positive_secs, global = true)]
    token_wait: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    /// `ReqwestTransport`.
    Reqwest,
    /// `HyperTransport`.
    Hyper,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TokenSource {
    /// `POST /cgi-bin/stable_token`.
    Stable,
    /// `GET /cgi-bin/token`.
    Classic,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the authorization page URL.
    AuthUrl {
        /// The one-time template.
        #[arg(long)]
        template_id: String,
        /// The scene, 0..=10000.
        #[arg(long)]
        scene: String,
        /// Where WeChat sends the answer.
        #[arg(long)]
        redirect_url: String,
        /// The state echoed back (`[A-Za-z0-9]{0,128}`); random when omitted.
        #[arg(long, conflicts_with = "signed")]
        reserved: Option<String>,
        /// Put a signed, single-use state in `reserved` (needs --secret), which `grants record`
        /// verifies (with the same --session).
        #[arg(long)]
        signed: bool,
        /// The user's session the signed state is bound to.
        #[arg(long, requires = "signed")]
        session: Option<String>,
    },
    /// Parse and check WeChat's redirect (a URL, a path and query, or `?` and the query string).
    Callback {
        /// The callback URL or query.
        url_or_query: String,
        /// Fail unless the answer is for this template.
        #[arg(long)]
        expect_template_id: Option<String>,
        /// Fail unless the answer is for this scene.
        #[arg(long)]
        expect_scene: Option<String>,
        /// Fail unless the answer carries this state.
        #[arg(long)]
        expect_reserved: Option<String>,
    },
    /// Print the request a mobile app hands to the WeChat Open SDK, as one JSON line.
    MobileRequest {
        /// The one-time template.
        #[arg(long)]
        template_id: String,
        /// The scene, 0..=10000.
        #[arg(long)]
        scene: String,
        /// The state echoed back (`[A-Za-z0-9]{0,128}`); when omitted, a signed single-use
        /// state (needs --secret) bound to --session.
        #[arg(long)]
        reserved: Option<String>,
        /// The app user's session the signed state is bound to.
        #[arg(long, conflicts_with = "reserved")]
        session: Option<String>,
    },
    /// Parse and check the answer a mobile app forwards from the Open SDK (JSON).
    MobileAnswer {
        /// The SDK's answer as JSON (either SDK's spelling).
        json: String,
        /// Fail unless the answer is for this template.
        #[arg(long)]
        template_id: Option<String>,
        /// Fail unless the answer is for this scene.
        #[arg(long)]
        scene: Option<String>,
        /// Fail unless the answer carries this state.
        #[arg(long)]
        reserved: Option<String>,
        /// Verify the signed state made by `mobile-request --session ID` (needs --secret): its
        /// signature, app, template, scene, session and expiry. Without --database this is not
        /// single-use: each run starts with no record of the states used before, so the same
        /// answer verifies again.
        #[arg(long, conflicts_with = "reserved")]
        session: Option<String>,
        /// Keep the used states in this database (`sqlite:path/to/grants.db` or
        /// `postgres://user@host/db`, as `grants --database`), so each signed state confirms
        /// once across runs: a later run refuses the same answer, or another openid, with its
        /// state. The URL is never printed.
        #[arg(long, requires = "session")]
        database: Option<String>,
    },
    /// Fetch an access token; prints its lifetime (the token itself only with --show).
    Token {
        /// Also print the token.
        #[arg(long)]
        show: bool,
    },
    /// Send one message.
    Send {
        /// The recipient's OpenID.
        #[arg(long)]
        to: String,
        /// The one-time template.
        #[arg(long)]
        template_id: String,
        /// The confirmed scene.
        #[arg(long)]
        scene: String,
        /// The title (≤15 characters).
        #[arg(long)]
        title: String,
        /// The body (≤200 characters).
        #[arg(long)]
        content: String,
        /// The body colour, #RRGGBB.
        #[arg(long)]
        color: Option<String>,
        /// A link opened on tap.
        #[arg(long)]
        url: Option<String>,
        /// A mini program opened on tap (with --miniprogram-pagepath).
        #[arg(long)]
        miniprogram_appid: Option<String>,
        /// The mini program page (with --miniprogram-appid).
        #[arg(long)]
        miniprogram_pagepath: Option<String>,
    },
    /// Send one mini-program subscribe message.
    MpSend {
        #[command(flatten)]
        to: family::Recipient,
        /// The mini program page opened on tap, with its query.
        #[arg(long)]
        page: Option<String>,
        /// The version opened: developer, trial or formal.
        #[arg(long)]
        state: Option<String>,
        /// The language: `zh_CN`, `en_US`, `zh_HK` or `zh_TW`.
        #[arg(long)]
        lang: Option<String>,
    },
    /// Send one service-account subscribe notification (prints its msgid).
    Notify {
        #[command(flatten)]
        to: family::Recipient,
        /// A web page opened on tap.
        #[arg(long)]
        page: Option<String>,
        /// A mini program opened on tap (with --mp-pagepath).
        #[arg(long)]
        mp_appid: Option<String>,
        /// The mini program page (with --mp-appid).
        #[arg(long)]
        mp_pagepath: Option<String>,
    },
    /// The template library: categories, public templates, keywords, and your templates.
    Templates {
        #[command(subcommand)]
        command: family::TemplatesCommand,
    },
    /// Verify and read one captured event push (or the server URL's check): the typed event as
    /// one JSON line, or `echostr`.
    Event {
        /// The Token of the server configuration. Never printed.
        #[arg(long, env = "WXSUB_PUSH_TOKEN", hide_env_values = true)]
        token: Hidden,
        /// The server configuration's mode (消息加解密方式): `safe`, `compatible` or `plain`.
        /// Plain mode is unauthenticated by design (WeChat does not sign the body: anyone who
        /// sees one push can post any body with its query), so it is never the default: name
        /// it to read a plain push, and get a warning.
        #[arg(long, env = "WXSUB_PUSH_MODE", default_value = "safe", value_parser = push_mode)]
        mode: subscribe_events::Mode,
        /// The `EncodingAESKey` (43 characters), for the safe and compatible modes. Never printed.
        #[arg(long, env = "WXSUB_AES_KEY", hide_env_values = true)]
        aes_key: Option<Hidden>,
        /// The previous `EncodingAESKey`, tried when the current one cannot decrypt. Never
        /// printed.
        #[arg(long, env = "WXSUB_PREVIOUS_AES_KEY", hide_env_values = true)]
        previous_aes_key: Option<Hidden>,
        /// The push's query string (`signature=…&timestamp=…&nonce=…[&encrypt_type=aes&msg_signature=…]`).
        #[arg(long)]
        query: String,
        /// The body: a file, or `-` for standard input. Without it, the URL check.
        #[arg(long)]
        body: Option<String>,
        /// The time to check `timestamp` against, Unix seconds (default: now).
        #[arg(long)]
        now: Option<u64>,
    },
    /// Send many messages from JSON lines.
    SendBatch {
        /// The input file, or `-` for standard input.
        #[arg(long)]
        input: String,
        /// Sends in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// At most this many sends started per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// The grant ledger in a SQL database: record, list, count, dispatch, review.
    Grants {
        /// The database: `sqlite:path/to/grants.db` (created if missing) or
        /// `postgres://user@host/db`. The URL is never printed. A URL with a password belongs
        /// in `DATABASE_URL` (or the password in `PGPASSWORD`): as an argument it shows in `ps` and
        /// in shell history, and draws a warning.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "sqlite:grants.db")]
        database: secrets::DatabaseUrl,
        #[command(subcommand)]
        command: grants::GrantsCommand,
    },
    /// Run the local WeChat sandbox.
    Sandbox {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// A JSON configuration of apps, templates and users (default: the built-in demo).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The end of `wxsub --help`.
const SECRETS_HELP: &str = "Secrets (--secret, event's --token, --aes-key and --previous-aes-key, a --database URL \
with a password) belong in their environment variables: given as arguments they show in `ps` and in \
shell history, and wxsub warns on stderr (naming the flag and the variable, never the value).";

/// jemalloc: flat CPU per message however many sends are in flight (see the crate's manifest).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match parse_arguments(std::env::args_os()) {
        Ok((cli, warnings)) => {
            for warning in warnings {
                eprintln!("wxsub: {warning}");
            }
            cli
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli).await {
        Ok(exit) => exit.code(),
        Err(e) => {
            eprintln!("wxsub: {e}");
            ExitCode::from(2)
        }
    }
}

/// Parses the arguments (and the environment variables), with a warning for each secret given
/// as an argument (see [`secrets`]).
fn parse_arguments(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(Cli, Vec<String>), clap::Error> {
    let mut cmd = Cli::command();
    let mut matches =
        cmd.try_get_matches_from_mut(args).map_err(|e| secrets::redact_invalid_value(&mut cmd, e))?;
    let warnings = secrets::command_line_warnings(&cmd, &matches);
    let cli = Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))?;
    Ok((cli, warnings))
}

/// An error that stops the command before anything is sent (exit 2). Never holds a secret.
type Usage = String;

fn appid(cli: &Cli) -> Result<AppId, Usage> {
    let raw = cli.appid.as_deref().ok_or("--appid (or WXSUB_APPID) is required")?;
    AppId::new(raw).map_err(|e| format!("invalid --appid: {e}"))
}

/// A client for signing and verifying states only (no request is sent): the app id and secret.
fn signing_client(cli: &Cli) -> Result<Client, Usage> {
    signing_client_on(cli, None)
}

/// [`signing_client`] whose used states are kept in `sql` (single use across runs), or in the
/// process's memory.
fn signing_client_on(cli: &Cli, sql: Option<&subscribe_sql::Sql>) -> Result<Client, Usage> {
    let secret =
        cli.secret.clone().ok_or("--secret (or WXSUB_SECRET) is required to sign or verify a state")?;
    let mut builder = Client::builder(appid(cli)?, secret).mp_base(&cli.mp_base);
    if let Some(sql) = sql {
        builder = builder.used_states(subscribe_sql::SqlUsedStates::new(sql.clone()));
    }
    builder.build().map_err(|e| format!("client: {e}"))
}

fn client(cli: &Cli) -> Result<Client, Usage> {
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
fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, Usage> {
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
fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 (exclusive) and 86400 seconds"))
    }
}

fn parse<T>(flag: &str, r: Result<T, subscribe_types::ValidationError>) -> Result<T, Usage> {
    r.map_err(|e| format!("invalid {flag}: {e}"))
}

/// The secret, parsed where the arguments are: `Cli`'s `Debug` then shows `AppSecret([redacted])`.
fn app_secret(raw: &str) -> Result<AppSecret, String> {
    AppSecret::new(raw).map_err(|e| format!("invalid secret: {e}"))
}

/// A random `reserved` (24 letters and digits). Without the OS's random source there is no
/// unguessable value to give, so that is an error, never a constant.
fn random_reserved() -> Result<Reserved, Usage> {
    random_reserved_from(getrandom::fill)
}

fn random_reserved_from(
    fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<Reserved, Usage> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 24];
    fill(&mut bytes).map_err(|e| format!("no random source for --reserved ({e}): pass --reserved"))?;
    let s: String = bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    Reserved::new(s).map_err(|e| format!("random --reserved: {e}"))
}

async fn run(cli: Cli) -> Result<Exit, Usage> {
    match &cli.command {
        Command::AuthUrl { template_id, scene, redirect_url, reserved, signed, session } => {
            let state = State::of(reserved.as_deref(), *signed, session.as_deref());
            auth_url(&cli, template_id, scene, redirect_url, state)
        }
        Command::MobileRequest { template_id, scene, reserved, session } => {
            mobile_request(&cli, template_id, scene, reserved.as_deref(), session.as_deref())
        }
        Command::MobileAnswer { .. } => mobile_answer(&cli).await,
        Command::Callback { url_or_query, expect_template_id, expect_scene, expect_reserved } => callback(
            url_or_query,
            expect_template_id.as_deref(),
            expect_scene.as_deref(),
            expect_reserved.as_deref(),
        ),
        Command::Token { show } => {
            let client = client(&cli)?;
            match client.token().await {
                Ok(t) => {
                    #[allow(clippy::disallowed_methods)] // a CLI reads the wall clock
                    let now = SystemTime::now();
                    let left = t.expires_at().duration_since(now).unwrap_or(Duration::ZERO).as_secs();
                    let mut out = serde_json::json!({"expires_in": left});
                    if *show {
                        out["access_token"] = t.token().expose_secret().into();
                    }
                    println!("{out}");
                    Ok(Exit::Ok)
                }
                Err(e) => {
                    eprintln!("wxsub: {}", output::one_line(&e));
                    Ok(Exit::Failed)
                }
            }
        }
        Command::Send {
            to,
            template_id,
            scene,
            title,
            content,
            color,
            url,
            miniprogram_appid,
            miniprogram_pagepath,
        } => {
            let mut b = SubscribeMessage::builder(
                parse("--to", OpenId::new(to.as_str()))?,
                parse("--template-id", TemplateId::new(template_id.as_str()))?,
                parse("--scene", scene.parse::<Scene>())?,
            )
            .title(title.as_str())
            .content(content.as_str());
            if let Some(c) = color {
                b = b.color(c.as_str());
            }
            if let Some(u) = url {
                b = b.url(u.as_str());
            }
            match (miniprogram_appid, miniprogram_pagepath) {
                (Some(a), Some(p)) => b = b.miniprogram(a.as_str(), p.as_str()),
                (None, None) => {}
                _ => return Err("--miniprogram-appid and --miniprogram-pagepath go together".into()),
            }
            let message = b.build().map_err(|e| format!("invalid message: {e}"))?;
            let client = client(&cli)?;
            let outcome = Outcome::of(&client.send(&message).await);
            println!("{}", outcome.to_json());
            if let Some(line) = outcome.stderr_line() {
                eprintln!("wxsub: {line}");
            }
            Ok(outcome.exit())
        }
        Command::SendBatch { input, concurrency, rate } => {
            if *concurrency == 0 {
                return Err("--concurrency must be at least 1".into());
            }
            if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err("--rate must be a positive number".into());
            }
            let client = client(&cli)?;
            batch::run(client, input, *concurrency, *rate).await
        }
        Command::MpSend { .. } | Command::Notify { .. } => send_family(&cli).await,
        Command::Templates { command } => family::templates(client(&cli), command).await,
        Command::Event { .. } => event(&cli),
        Command::Sandbox { listen, config } => sandbox(*listen, config.as_ref()).await,
        Command::Grants { database, command } => grants::run(&cli, database.0.expose_secret(), command).await,
    }
}

/// `wxsub mp-send` and `wxsub notify`: one message of the successors, checked before the client
/// is built (invalid input exits 2 with nothing sent).
async fn send_family(cli: &Cli) -> Result<Exit, Usage> {
    match &cli.command {
        Command::MpSend { to, page, state, lang } => {
            let message =
                family::MpSend { to, page: page.as_deref(), state: state.as_deref(), lang: lang.as_deref() }
                    .message()?;
            let client = client(cli)?;
            Ok(family::report(client.send_mini_program(&message).await.map(|r| (r, None))))
        }
        Command::Notify { to, page, mp_appid, mp_pagepath } => {
            let message = family::Notify {
                to,
                page: page.as_deref(),
                mp_appid: mp_appid.as_deref(),
                mp_pagepath: mp_pagepath.as_deref(),
            }
            .message()?;
            let client = client(cli)?;
            let sent = client.send_notification(&message).await;
            Ok(family::report(sent.map(|a| (a.receipt, Some(a.response.msgid)))))
        }
        _ => unreachable!("send_family runs mp-send and notify only"),
    }
}

/// A secret argument (a push Token, an `EncodingAESKey`): `Debug` never shows it, and given on
/// the command line rather than through its environment variable it draws a warning
/// ([`secrets`]).
#[derive(Clone)]
struct Hidden(SecretString);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Hidden {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(SecretString::from(s)))
    }
}

/// Reads `--mode`: `safe`, `compatible` or `plain`.
fn push_mode(s: &str) -> Result<subscribe_events::Mode, String> {
    s.parse()
}

/// `wxsub event`: verifies and reads one captured push (or the URL check). The AppID is
/// `--appid`; a refused push exits 2 with the reason on stderr and nothing on stdout.
fn event(cli: &Cli) -> Result<Exit, Usage> {
    use subscribe_events::{EncodingAesKey, Mode, Push, PushConfig, PushError};
    let Command::Event { token, mode, aes_key, previous_aes_key, query, body, now } = &cli.command else {
        unreachable!("event runs `wxsub event` only")
    };
    if body.is_some() && *mode != Mode::Plain && aes_key.is_none() {
        return Err(format!(
            "--aes-key (or WXSUB_AES_KEY) is required in the {} mode; a push of an account in plain \
             mode (unauthenticated: its body is not signed) is read only with --mode plain",
            mode.as_str()
        ));
    }
    let appid = cli.appid.clone().unwrap_or_default();
    let mut config = PushConfig::new(token.0.expose_secret(), appid, *mode);
    if let Some(k) = aes_key {
        config = config.aes_key(
            EncodingAesKey::new(k.0.expose_secret()).map_err(|e| format!("invalid --aes-key: {e}"))?,
        );
        if cli.appid.is_none() {
            return Err("--appid (or WXSUB_APPID) is required to decrypt: the message names its app".into());
        }
    }
    if let Some(k) = previous_aes_key {
        config = config.previous_aes_key(
            EncodingAesKey::new(k.0.expose_secret())
                .map_err(|e| format!("invalid --previous-aes-key: {e}"))?,
        );
    }
    #[allow(clippy::disallowed_methods)] // a CLI reads the wall clock
    let now = now.unwrap_or_else(|| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    let push = Push::new(config);
    for warning in push.warnings() {
        eprintln!("wxsub: warning: {warning}");
    }
    // The operator's own tool: the detail of a push that did not open is shown here, never in
    // an answer to WeChat (or to whoever posted it).
    let refused = |e: PushError| match e {
        PushError::Unopened(why) => format!("push refused (HTTP {}): {e} ({why})", e.http_status()),
        e => format!("push refused (HTTP {}): {e}", e.http_status()),
    };
    let Some(body) = body else {
        let echo = push.verify_url(query, now).map_err(refused)?;
        println!("{echo}");
        return Ok(Exit::Ok);
    };
    let bytes = if body == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::io::stdin(), subscribe_events::MAX_BODY as u64 + 1),
            &mut buf,
        )
        .map_err(|e| format!("cannot read standard input: {e}"))?;
        buf
    } else {
        std::fs::read(body).map_err(|e| format!("cannot read --body: {e}"))?
    };
    let event = push.open(query, &bytes, now).map_err(refused)?;
    println!("{}", event.to_json());
    Ok(Exit::Ok)
}

async fn sandbox(listen: SocketAddr, config: Option<&PathBuf>) -> Result<Exit, Usage> {
    let cfg = match config {
        Some(path) => subscribe_sandbox::SandboxConfig::from_json_file(path).map_err(|e| e.to_string())?,
        None => subscribe_sandbox::SandboxConfig::demo(),
    };
    let sandbox = subscribe_sandbox::SandboxHandle::start_on(cfg.clone(), listen)
        .await
        .map_err(|e| format!("could not listen on {listen}: {e}"))?;
    let base = sandbox.base_url();
    println!("WeChat sandbox listening on {base}");
    println!("  API base and authorization base: {base}   (index: {base}/sandbox)");
    for app in &cfg.apps {
        println!("  app {} \"{}\"  secret {}", app.appid, app.name, app.secret);
        for t in &app.templates {
            println!("    template {}  ({})", t.id, t.title);
        }
        println!(
            "    library templates (mp-send, notify): {} (one-time: thing1 time2 amount3), {} (long-term: enum1 date2)",
            subscribe_sandbox::DEMO_MP_TEMPLATE,
            subscribe_sandbox::DEMO_LONG_TERM_TEMPLATE
        );
    }
    for u in &cfg.users {
        println!("  user {} \"{}\"  inbox {base}/sandbox/inbox/{}", u.openid, u.name, u.openid);
    }
    if let Some(app) = cfg.apps.first() {
        println!(
            "Try: WXSUB_API_BASE={base} WXSUB_MP_BASE={base} WXSUB_APPID={} WXSUB_SECRET=… wxsub token",
            app.appid
        );
    }
    tokio::select! {
        () = sandbox.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(Exit::Ok)
}

fn callback(
    url_or_query: &str,
    expect_template_id: Option<&str>,
    expect_scene: Option<&str>,
    expect_reserved: Option<&str>,
) -> Result<Exit, Usage> {
    let answer = AuthorizationAnswer::parse(url_or_query).map_err(|e| format!("invalid callback: {e}"))?;
    check_and_print(&answer, expect_template_id, expect_scene, expect_reserved)
}

/// What `auth-url` puts in `reserved`.
#[derive(Clone, Copy)]
enum State<'a> {
    /// `--reserved`.
    Given(&'a str),
    /// Random letters and digits (the default).
    Random,
    /// `--signed`: a signed, single-use state bound to `--session`.
    Signed { session: &'a str },
}

impl<'a> State<'a> {
    /// From `--reserved`, `--signed` and `--session` (clap keeps `--reserved` and `--signed`
    /// apart, and `--session` with `--signed`).
    fn of(reserved: Option<&'a str>, signed: bool, session: Option<&'a str>) -> Self {
        match (reserved, signed) {
            (_, true) => Self::Signed { session: session.unwrap_or("") },
            (Some(r), false) => Self::Given(r),
            (None, false) => Self::Random,
        }
    }
}

/// `wxsub auth-url`: the authorization page's URL.
fn auth_url(
    cli: &Cli,
    template_id: &str,
    scene: &str,
    redirect_url: &str,
    state: State<'_>,
) -> Result<Exit, Usage> {
    let template_id = parse("--template-id", TemplateId::new(template_id))?;
    let scene = parse("--scene", scene.parse::<Scene>())?;
    let redirect_url = parse("--redirect-url", HttpUrl::new(redirect_url))?;
    let reserved = match state {
        State::Given(r) => parse("--reserved", Reserved::new(r))?,
        State::Random => random_reserved()?,
        State::Signed { session } => {
            let link =
                signing_client(cli)?.authorize_url_for_session(&template_id, scene, &redirect_url, session);
            println!("{}", link.url);
            return Ok(Exit::Ok);
        }
    };
    let request =
        AuthorizeRequest::new(appid(cli)?, template_id, scene, redirect_url).with_reserved(reserved);
    println!("{}", request.url_with_base(&cli.mp_base));
    Ok(Exit::Ok)
}

/// `wxsub mobile-request`: the Open SDK's request as one JSON line.
fn mobile_request(
    cli: &Cli,
    template_id: &str,
    scene: &str,
    reserved: Option<&str>,
    session: Option<&str>,
) -> Result<Exit, Usage> {
    let template_id = parse("--template-id", TemplateId::new(template_id))?;
    let scene = parse("--scene", scene.parse::<Scene>())?;
    let request = match reserved {
        Some(r) => {
            MobileSubscribeRequest { scene, template_id, reserved: parse("--reserved", Reserved::new(r))? }
        }
        None => signing_client(cli)?.mobile_request(&template_id, scene, session.unwrap_or("")),
    };
    println!("{}", serde_json::to_string(&request).map_err(|e| e.to_string())?);
    Ok(Exit::Ok)
}

/// `wxsub mobile-answer`: reads (and with `--session` verifies) a forwarded SDK answer; with
/// `--database`, each signed state confirms once across runs.
async fn mobile_answer(cli: &Cli) -> Result<Exit, Usage> {
    let Command::MobileAnswer { json, template_id, scene, reserved, session, database } = &cli.command else {
        unreachable!("mobile_answer runs `wxsub mobile-answer` only")
    };
    let answer = match session {
        Some(session) => {
            let sql = match database {
                Some(url) => Some(
                    subscribe_sql::Sql::builder(url)
                        .connect()
                        .await
                        .map_err(|e| format!("database: {}", output::one_line(&e)))?,
                ),
                None => None,
            };
            signing_client_on(cli, sql.as_ref())?
                .complete_mobile(json, session)
                .await
                .map_err(|e| format!("answer rejected: {}", output::one_line(&e)))?
        }
        None => MobileSubscribeResponse::parse(json)
            .and_then(MobileSubscribeResponse::into_answer)
            .map_err(|e| format!("invalid answer: {e}"))?,
    };
    check_and_print(&answer, template_id.as_deref(), scene.as_deref(), reserved.as_deref())
}

/// Checks an answer (web or mobile) against what was asked and prints it as one JSON line.
fn check_and_print(
    answer: &AuthorizationAnswer,
    expect_template_id: Option<&str>,
    expect_scene: Option<&str>,
    expect_reserved: Option<&str>,
) -> Result<Exit, Usage> {
    let mut expect = Expectation::new();
    if let Some(t) = expect_template_id {
        expect = expect.template_id(parse("--expect-template-id", TemplateId::new(t))?);
    }
    if let Some(s) = expect_scene {
        expect = expect.scene(parse("--expect-scene", s.parse::<Scene>())?);
    }
    if let Some(r) = expect_reserved {
        expect = expect.reserved(parse("--expect-reserved", Reserved::new(r))?);
    }
    answer.verify(&expect).map_err(|e| format!("callback rejected: {e}"))?;
    let mut out = serde_json::json!({
        "action": answer.action().as_str(),
        "template_id": answer.template_id().as_str(),
        "scene": answer.scene().get(),
        "reserved": answer.reserved().as_str(),
    });
    if let Some(o) = answer.openid() {
        out["openid"] = o.as_str().into();
    }
    println!("{out}");
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// Does not compile if a secret argument goes back to a plain `String`.
    #[test]
    fn secret_arguments_are_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>(_: &T) {}
        let token: Hidden = "sandboxPushToken2026".parse().unwrap();
        zeroed_on_drop(&token.0);
        assert_eq!(token.0.expose_secret(), "sandboxPushToken2026");
        let url: secrets::DatabaseUrl = "postgres://u:pw@h/d".parse().unwrap();
        zeroed_on_drop(&url.0);
    }

    #[test]
    fn a_failing_random_source_is_an_error_not_a_constant_state() {
        let e = random_reserved_from(|_| Err(getrandom::Error::UNSUPPORTED)).unwrap_err();
        assert!(e.contains("no random source"), "{e}");
        let (a, b) = (random_reserved().unwrap(), random_reserved().unwrap());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 24);
    }

    #[test]
    fn the_parsed_arguments_never_debug_print_the_secret() {
        let cli = Cli::try_parse_from([
            "wxsub",
            "--appid",
            "wx0123456789abcdef",
            "--secret",
            "hunter2-app-secret",
            "token",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        assert!(!shown.contains("hunter2-app-secret"), "{shown}");
        assert!(cli.secret.is_some());
        let cli = Cli::try_parse_from([
            "wxsub",
            "event",
            "--token",
            "push-token-never-shown",
            "--aes-key",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "--previous-aes-key",
            "GFEDCBA9876543210zyxwvutsrqponmlkjihgfedcba",
            "--query",
            "signature=x",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        assert!(
            !shown.contains("push-token-never-shown")
                && !shown.contains("0123456789ABCDEFG")
                && !shown.contains("GFEDCBA9876543210"),
            "{shown}"
        );
        let cli = Cli::try_parse_from([
            "wxsub",
            "grants",
            "--database",
            "postgres://u:db-pw-never-shown@h/d",
            "migrate",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        assert!(!shown.contains("db-pw-never-shown"), "{shown}");
    }
}
