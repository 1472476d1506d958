//! `wxsub event`: one captured event push (or the server URL's check), verified and read.

use std::time::SystemTime;

use subscribe_types::secrecy::{ExposeSecret as _, SecretString};

use crate::options::{Cli, Usage};
use crate::output::Exit;

/// The arguments of `wxsub event`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The Token of the server configuration. Never printed.
    #[arg(long, env = "WXSUB_PUSH_TOKEN", hide_env_values = true)]
    pub(crate) token: Hidden,
    /// The server configuration's mode (消息加解密方式): `safe`, `compatible` or `plain`.
    /// Plain mode is unauthenticated by design (WeChat does not sign the body: anyone who
    /// sees one push can post any body with its query), so it is never the default: name
    /// it to read a plain push, and get a warning.
    #[arg(long, env = "WXSUB_PUSH_MODE", default_value = "safe", value_parser = push_mode)]
    pub(crate) mode: subscribe_events::Mode,
    /// The `EncodingAESKey` (43 characters), for the safe and compatible modes. Never printed.
    #[arg(long, env = "WXSUB_AES_KEY", hide_env_values = true)]
    pub(crate) aes_key: Option<Hidden>,
    /// The previous `EncodingAESKey`, tried when the current one cannot decrypt. Never
    /// printed.
    #[arg(long, env = "WXSUB_PREVIOUS_AES_KEY", hide_env_values = true)]
    pub(crate) previous_aes_key: Option<Hidden>,
    /// The push's query string (`signature=…&timestamp=…&nonce=…[&encrypt_type=aes&msg_signature=…]`).
    #[arg(long)]
    pub(crate) query: String,
    /// The body: a file, or `-` for standard input. Without it, the URL check.
    #[arg(long)]
    pub(crate) body: Option<String>,
    /// The time to check `timestamp` against, Unix seconds (default: now).
    #[arg(long)]
    pub(crate) now: Option<u64>,
}

/// A secret argument (a push Token, an `EncodingAESKey`): `Debug` never shows it, and given on
/// the command line rather than through its environment variable it draws a warning
/// ([`secrets`](crate::secrets)).
#[derive(Clone)]
pub(crate) struct Hidden(pub(crate) SecretString);

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
pub(crate) fn run(cli: &Cli, args: &Args) -> Result<Exit, Usage> {
    use subscribe_events::{EncodingAesKey, Mode, Push, PushConfig, PushError};
    let Args { token, mode, aes_key, previous_aes_key, query, body, now } = args;
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
