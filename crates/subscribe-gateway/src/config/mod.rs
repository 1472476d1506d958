//! [`Config`]: the gateway's TOML configuration, read and checked key by key at start. Every
//! secret comes from the environment or a file, never from the file itself; every refusal is a
//! [`ConfigError`] naming the key.

mod error;
mod ops;
mod raw;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use subscribe_client::TokenEndpoint;
use subscribe_events::{EncodingAesKey, Mode, PushConfig};
use subscribe_types::{AppId, AppSecret, RedirectUrl};
use zeroize::Zeroizing;

pub use error::{ConfigError, ConfigProblem};
pub use ops::{DEFAULT_AUTH_FAILURE_RATE, DEFAULT_KEY_RATE, DEFAULT_MAX_CONNECTIONS_PER_PEER, Rate};
use raw::{Endpoint, RawApp, RawConfig, RawDispatch, RawIdempotency, RawKey, RawServer, RawStore, StoreKind};

use crate::keys::{KeyHash, MIN_KEY_CHARS};

/// The address the gateway listens on unless `server.listen` says otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

/// `apps[].report_interval_ms` unless set: five minutes, the time WeChat keeps a replaced
/// token valid.
pub const DEFAULT_REPORT_INTERVAL_MS: u64 = 300_000;

/// The whole configuration, checked. Its `Debug` shows no secret.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// `[server]`: where to listen and the limits of a request.
    pub server: ServerConfig,
    /// `[store]`: where the access tokens (and the idempotency records) are kept.
    pub store: StoreConfig,
    /// `[idempotency]`: how long the send API's idempotency records are kept.
    pub idempotency: IdempotencyConfig,
    /// `[dispatch]`: how the dispatch jobs hold their work.
    pub dispatch: DispatchConfig,
    /// `[[apps]]`, in the file's order.
    pub apps: Vec<AppConfig>,
    /// `[[keys]]`, in the file's order.
    pub keys: Vec<KeyConfig>,
}

/// `[server]`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `listen` (default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// `request_timeout_ms` (default 30 000): the longest a request may take, its body
    /// included; longer ones are answered 408.
    pub request_timeout: Duration,
    /// `header_read_timeout_ms` (default 5 000): a connection that has not sent a request's
    /// headers by then (one that sends nothing at all included) is closed.
    pub header_read_timeout: Duration,
    /// `max_body_bytes` (default 16 384): a larger request body is answered 413.
    pub max_body_bytes: usize,
    /// `max_connections` (default 1 024): connections served at once; more wait in the
    /// listen queue.
    pub max_connections: usize,
    /// `max_connections_per_peer` (default [`DEFAULT_MAX_CONNECTIONS_PER_PEER`], at most
    /// `max_connections`): connections one peer (an IPv4 address, an IPv6 /64) holds at once;
    /// more are closed as they arrive. `trusted_proxies` are held only to `max_connections`.
    pub max_connections_per_peer: usize,
    /// `metrics_listen` (default none): where `/metrics` is served, on a listener of its own
    /// and without a key; no metrics are served when it is absent.
    pub metrics_listen: Option<SocketAddr>,
    /// `trusted_proxies` (default none): the proxies whose `X-Forwarded-For` names the peer
    /// that the rate of failed authentications is counted for. From any other peer the header
    /// is ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// `auth_failures_per_second` and `auth_failure_burst` (default
    /// [`DEFAULT_AUTH_FAILURE_RATE`]): the failed authentications one peer may make; over
    /// them its requests are answered 429 before their key is looked at.
    pub auth_failure_rate: Rate,
    /// `public_url` (default none): the gateway's address as browsers reach it (such as
    /// `https://gateway.example.com`, with the path prefix it is mounted under, if any). WeChat
    /// sends a user's answer to `{public_url}/v1/apps/{appid}/consent/callback`; needed by an app
    /// with `consent_return_url`.
    pub public_url: Option<String>,
}

/// `[idempotency]`: the records the send API keeps for requests with an `Idempotency-Key`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// `retention_ms` (default 86 400 000: 24 hours): how long a record is kept after its
    /// request; a retry within that time gets the first answer. At least one minute, and at
    /// least four times `server.request_timeout_ms` (a record must outlive its claim, which
    /// lasts twice the request timeout, or the send's budget and the store's two calls around
    /// it when those take longer: 12.6 s at most with a 1 s request timeout on SQL).
    pub retention: Duration,
}

/// `[dispatch]`: how a dispatch job (`POST /v1/apps/{appid}/dispatches`) holds its work, so
/// that a gateway that stops resumes nothing twice and another takes over what it left.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DispatchConfig {
    /// `job_lease_ms` (default 10 000, 2 000 to 600 000): how long a gateway holds a job
    /// without renewing it (it renews every second, with the job's progress). A job whose
    /// gateway stopped is resumed by a gateway on the same store this long after its last
    /// renewal.
    pub job_lease: Duration,
    /// `grant_lease_ms` (default 120 000, at least 20 000): how long a dispatch holds each grant
    /// it takes (the library's [`Dispatcher::lease`](subscribe_client::Dispatcher::lease)).
    /// More than a send can take (the transport gives up after 15 s), so that a slow send's
    /// grant is never taken by another; a stopped gateway's grants come back after it.
    pub grant_lease: Duration,
    /// `retention_ms` (default 2 592 000 000: 30 days; at least an hour and
    /// `idempotency.retention_ms`): how long an ended job is kept, readable through the API,
    /// before the gateways delete it.
    pub retention: Duration,
}

/// `dispatch.job_lease_ms` unless set: 10 s.
pub const DEFAULT_JOB_LEASE_MS: u64 = 10_000;
/// `dispatch.grant_lease_ms` unless set: 120 s, the library's default.
pub const DEFAULT_GRANT_LEASE_MS: u64 = 120_000;
/// `dispatch.retention_ms` unless set: 30 days.
pub const DEFAULT_JOB_RETENTION_MS: u64 = 30 * 24 * 3_600_000;

/// `[store]`: where the access tokens are kept (shared by every gateway on the same store).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreConfig {
    /// `kind = "sqlite"` (the default): one file, `path` (default `subscribe-gateway.db`, beside
    /// the configuration file).
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// `kind = "postgres"`: `url_env`, `url_file` or a `url` without a password; `schema`.
    Postgres {
        /// The connection URL.
        url: SecretUrl,
        /// The schema for the tables (default: the connection's `search_path`).
        schema: Option<String>,
    },
    /// `kind = "redis"`: `url_env`, `url_file` or a `url` without a password; `prefix`.
    Redis {
        /// The connection URL.
        url: SecretUrl,
        /// The key prefix (default: `subscribe-redis`'s).
        prefix: Option<String>,
    },
}

/// A database URL, which may carry a password: its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SecretUrl(Zeroizing<String>);

impl SecretUrl {
    /// The URL. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUrl([redacted])")
    }
}

/// What an app is; the token service treats both alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AppKind {
    /// `kind = "official_account"` (公众号).
    OfficialAccount,
    /// `kind = "mini_program"` (小程序).
    MiniProgram,
}

/// One `[[apps]]` entry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AppConfig {
    /// `appid`.
    pub appid: AppId,
    /// `kind`.
    pub kind: AppKind,
    /// `token_endpoint`: `"stable"` (the default) or `"classic"`.
    pub token_endpoint: TokenEndpoint,
    /// `api_base`: WeChat's API base, overridden (for the sandbox); default WeChat's own.
    pub api_base: Option<String>,
    /// The AppSecret, from `secret_env` or `secret_file`. Its `Debug` is redacted.
    pub secret: AppSecret,
    /// `report_interval_ms` (default 300 000: five minutes): the least time between two
    /// replacements of the token that reports (`POST …/access_token/invalidate`) start in one
    /// gateway. A report of the current token sooner than that is answered 429 and nothing is
    /// asked of WeChat, so a key with `token:read` cannot spend the app's token requests by
    /// reporting each new token. WeChat keeps a replaced token valid for five minutes, so a
    /// token replaced by someone else is not rejected sooner. `0` turns the floor off.
    pub report_interval: Duration,
    /// `consent_return_url` (default none: no web consent for the app): where the gateway sends
    /// the user's browser with WeChat's answer, on the caller's own site, whose handler then
    /// completes it (`POST /v1/apps/{appid}/consent/complete`) in the user's session.
    pub consent_return_url: Option<RedirectUrl>,
    /// `push_token_env` / `push_token_file`, `push_aes_key_env` / `push_aes_key_file`,
    /// `push_mode`, `webhook_url` and `webhook_secret_env` / `webhook_secret_file` (default none:
    /// no push endpoint for the app): the app's server URL (服务器配置), served by the gateway at
    /// `/v1/apps/{appid}/push`, and where each event it takes is posted.
    pub push: Option<AppPush>,
}

/// An app's server URL (服务器配置) as the gateway serves it, and the caller's webhook. Its
/// `Debug` shows no secret.
#[derive(Clone)]
#[non_exhaustive]
pub struct AppPush {
    token: Zeroizing<String>,
    aes_key: Option<EncodingAesKey>,
    /// `push_mode`: `"safe"` (the default), `"compatible"` or `"plain"`, as in WeChat's console.
    pub mode: Mode,
    /// `webhook_url` and its secret: where each event is posted, signed. None: the events feed
    /// the grants only.
    pub webhook: Option<Webhook>,
}

impl AppPush {
    /// The push endpoint's configuration for `appid`.
    pub(crate) fn push_config(&self, appid: &AppId) -> PushConfig {
        let config = PushConfig::new(self.token.as_str(), appid.as_str(), self.mode);
        match &self.aes_key {
            Some(key) => config.aes_key(key.clone()),
            None => config,
        }
    }
}

impl fmt::Debug for AppPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppPush")
            .field("token", &"[redacted]")
            .field("aes_key", &self.aes_key.as_ref().map(|_| "[redacted]"))
            .field("mode", &self.mode)
            .field("webhook", &self.webhook)
            .finish()
    }
}

/// The caller's webhook: its URL and the secret its posts are signed with (HMAC-SHA256). Its
/// `Debug` shows no secret.
#[derive(Clone)]
#[non_exhaustive]
pub struct Webhook {
    /// `webhook_url`: an absolute http(s) URL.
    pub url: String,
    secret: Zeroizing<String>,
}

impl Webhook {
    /// The signing secret.
    pub(crate) fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The query may carry a token of the receiver's: the address without it.
        let shown = self.url.split(['?', '#']).next().unwrap_or_default();
        let shown = if shown.len() < self.url.len() { format!("{shown}?…") } else { shown.to_owned() };
        f.debug_struct("Webhook").field("url", &shown).field("secret", &"[redacted]").finish()
    }
}

/// What an API key may do for one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[non_exhaustive]
pub enum Scope {
    /// `"token:read"`: read the app's access token and report a rejected one.
    #[serde(rename = "token:read")]
    TokenRead,
    /// `"send"`: send messages as the app (`POST /v1/apps/{appid}/messages/…`).
    #[serde(rename = "send")]
    Send,
    /// `"grants"`: collect the app's users' consent and record their grants
    /// (`/v1/apps/{appid}/consent/…`).
    #[serde(rename = "grants")]
    Grants,
    /// `"grants:review"`: read the app's grants (counts, the openids under review) and decide
    /// the ones under review (`/v1/apps/{appid}/grants…`): an operator's scope, apart from the
    /// consent routes' `grants`, which an app's public-facing backend holds.
    #[serde(rename = "grants:review")]
    GrantsReview,
    /// `"dispatch"`: start, read and cancel the app's dispatch jobs
    /// (`/v1/apps/{appid}/dispatches…`), which send one message to every pending grant.
    #[serde(rename = "dispatch")]
    Dispatch,
    /// `"status"`: see the app on the read-only status page (`GET /status`): its token's
    /// lifetime, its push endpoint and webhook backlog, its dispatch jobs and their grants, and
    /// the gateway's recent refusals.
    #[serde(rename = "status")]
    Status,
}

/// One `[[keys]]` entry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyConfig {
    /// `name`: who holds the key, for logs.
    pub name: String,
    /// The key's SHA-256 (`sha256`, or computed from `key_env` / `key_file`).
    pub hash: KeyHash,
    /// `scopes`: per appid, what the key may do.
    pub scopes: BTreeMap<AppId, Vec<Scope>>,
    /// `rate_per_second` and `burst` (default [`DEFAULT_KEY_RATE`]): the requests the key may
    /// make; over them it is answered 429 with `Retry-After`, and other keys are not slowed.
    pub rate: Rate,
}

impl Config {
    /// Reads and checks the file at `path`, taking secrets from this process's environment
    /// and from files (relative paths are taken from the configuration file's directory).
    ///
    /// # Errors
    /// The first [`ConfigError`] met, naming its key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                ConfigProblem::FileUnreadable { path: path.to_owned(), reason: e.kind().to_string() },
            )
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base, &|name| std::env::var_os(name))
    }

    /// Checks `text`, with relative paths taken from `base` and environment variables read
    /// through `env` (tests pass their own, since setting the process's environment is unsafe).
    ///
    /// # Errors
    /// The first [`ConfigError`] met, naming its key.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let raw = read_toml(text)?;
        let reader = Reader { base, env };
        let server = server(&raw.server)?;
        let idempotency = idempotency(&raw.idempotency, &server)?;
        let dispatch = dispatch(&raw.dispatch, &idempotency)?;
        let store = reader.store(raw.store)?;
        let mut apps: Vec<AppConfig> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, app) in raw.apps.into_iter().enumerate() {
            let app = reader.app(i, app)?;
            if let Some(first) = seen.insert(app.appid.as_str().to_owned(), i) {
                let first = format!("apps[{first}].appid");
                return Err(ConfigError::new(format!("apps[{i}].appid"), ConfigProblem::Duplicate { first }));
            }
            apps.push(app);
        }
        let mut keys: Vec<KeyConfig> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, key) in raw.keys.into_iter().enumerate() {
            let key = reader.key(i, key, &apps)?;
            if let Some(first) = names.insert(key.name.clone(), i) {
                let first = format!("keys[{first}].name");
                return Err(ConfigError::new(format!("keys[{i}].name"), ConfigProblem::Duplicate { first }));
            }
            if let Some(first) = keys.iter().position(|k| k.hash == key.hash) {
                let first = format!("keys[{first}]");
                return Err(ConfigError::new(format!("keys[{i}]"), ConfigProblem::Duplicate { first }));
            }
            keys.push(key);
        }
        for (i, app) in apps.iter().enumerate().filter(|(_, a)| a.consent_return_url.is_some()) {
            let Some(public) = &server.public_url else {
                return Err(invalid(
                    "server.public_url",
                    format!(
                        "required: apps[{i}] sets consent_return_url, and WeChat sends its answers to the gateway's public URL"
                    ),
                ));
            };
            if RedirectUrl::new(crate::consent::callback_url(public, &app.appid)).is_err() {
                return Err(invalid(
                    "server.public_url",
                    "an absolute http(s) URL without a query or #fragment",
                ));
            }
        }
        if apps.is_empty() {
            return Err(ConfigError::new(
                "apps",
                ConfigProblem::Missing { one_of: "at least one [[apps]] entry" },
            ));
        }
        Ok(Self { server, store, idempotency, dispatch, apps, keys })
    }
}

/// The TOML read into its shape. A syntax error is reported by line and column, never with
/// the line's text (it may hold a secret); a shape error by its key's path.
fn read_toml(text: &str) -> Result<RawConfig, ConfigError> {
    let located = |e: &toml::de::Error| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = located(&e);
        ConfigError::new("", ConfigProblem::Syntax { line, column, message: e.message().to_owned() })
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(key, ConfigProblem::Shape(e.into_inner().message().to_owned()))
    })
}

fn server(raw: &RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| invalid("server.listen", "an IP address and a port, such as \"127.0.0.1:8700\""))?;
    let positive = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(invalid(key, "more than 0")),
        v => Ok(Duration::from_millis(v.unwrap_or(default))),
    };
    let count = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(key, "more than 0")),
        v => Ok(v.unwrap_or(default)),
    };
    let max_connections = count("server.max_connections", raw.max_connections, 1024)?;
    let ops = ops::server_ops(raw, listen, max_connections)?;
    Ok(ServerConfig {
        listen,
        request_timeout: positive("server.request_timeout_ms", raw.request_timeout_ms, 30_000)?,
        header_read_timeout: positive("server.header_read_timeout_ms", raw.header_read_timeout_ms, 5_000)?,
        max_body_bytes: count("server.max_body_bytes", raw.max_body_bytes, 16 * 1024)?,
        max_connections,
        max_connections_per_peer: ops.max_connections_per_peer,
        metrics_listen: ops.metrics_listen,
        trusted_proxies: ops.trusted_proxies,
        auth_failure_rate: ops.auth_failure_rate,
        public_url: match &raw.public_url {
            None => None,
            Some(url) => {
                let url = url.trim_end_matches('/');
                if !url.is_ascii() || url.contains(['?', '#']) || RedirectUrl::new(url).is_err() {
                    return Err(invalid(
                        "server.public_url",
                        "an absolute http(s) URL without a query or #fragment, in ASCII (percent-encoded)",
                    ));
                }
                Some(url.to_owned())
            }
        },
    })
}

fn idempotency(raw: &RawIdempotency, server: &ServerConfig) -> Result<IdempotencyConfig, ConfigError> {
    let retention = raw.retention_ms.map_or(crate::idempotency::DEFAULT_RETENTION, Duration::from_millis);
    let least = (server.request_timeout * 4).max(Duration::from_secs(60));
    if retention < least {
        return Err(invalid(
            "idempotency.retention_ms",
            format!(
                "at least {} (one minute, and four times server.request_timeout_ms: a record must outlive its claim)",
                least.as_millis()
            ),
        ));
    }
    Ok(IdempotencyConfig { retention })
}

fn dispatch(raw: &RawDispatch, idempotency: &IdempotencyConfig) -> Result<DispatchConfig, ConfigError> {
    let job_lease = raw.job_lease_ms.unwrap_or(DEFAULT_JOB_LEASE_MS);
    if !(2_000..=600_000).contains(&job_lease) {
        return Err(invalid(
            "dispatch.job_lease_ms",
            "2000 to 600000: a job is renewed every second, and resumed this long after its gateway stopped",
        ));
    }
    let grant_lease = raw.grant_lease_ms.unwrap_or(DEFAULT_GRANT_LEASE_MS);
    if grant_lease < 20_000 {
        return Err(invalid(
            "dispatch.grant_lease_ms",
            "at least 20000: more than a send can take (15 s), or a slow send's grant could be taken and sent again",
        ));
    }
    let retention = raw.retention_ms.unwrap_or(DEFAULT_JOB_RETENTION_MS);
    let least = u64::try_from(idempotency.retention.as_millis()).unwrap_or(u64::MAX).max(3_600_000);
    if retention < least {
        return Err(invalid(
            "dispatch.retention_ms",
            format!(
                "at least {least} (an hour, and idempotency.retention_ms: a start's stored answer must not name a job already deleted)"
            ),
        ));
    }
    Ok(DispatchConfig {
        job_lease: Duration::from_millis(job_lease),
        grant_lease: Duration::from_millis(grant_lease),
        retention: Duration::from_millis(retention),
    })
}

fn invalid(key: impl Into<String>, rule: impl Into<String>) -> ConfigError {
    ConfigError::new(key, ConfigProblem::Invalid { rule: rule.into() })
}

/// Reads secrets from the environment and from files.
struct Reader<'a> {
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<OsString>,
}

impl Reader<'_> {
    /// The value of exactly one of `{prefix}_env` and `{prefix}_file` (the file's content less
    /// one trailing line break).
    fn secret(
        &self,
        at: &str,
        (env_key, env): (&'static str, Option<String>),
        (file_key, file): (&'static str, Option<String>),
        one_of: &'static str,
    ) -> Result<(String, Zeroizing<String>), ConfigError> {
        match (env, file) {
            (Some(_), Some(_)) => {
                Err(ConfigError::new(format!("{at}.{env_key}"), ConfigProblem::Exclusive { other: file_key }))
            }
            (None, None) => Err(ConfigError::new(at, ConfigProblem::Missing { one_of })),
            (Some(name), None) => {
                let key = format!("{at}.{env_key}");
                let value = (self.env)(&name)
                    .ok_or_else(|| ConfigError::new(&key, ConfigProblem::EnvNotSet { name: name.clone() }))?;
                let value = Zeroizing::new(
                    value
                        .into_string()
                        .map_err(|_| ConfigError::new(&key, ConfigProblem::EnvNotUnicode { name }))?,
                );
                Ok((key, value))
            }
            (None, Some(path)) => {
                let key = format!("{at}.{file_key}");
                let path = self.base.join(path);
                let mut value = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(
                        &key,
                        ConfigProblem::SecretFileUnreadable {
                            path: path.clone(),
                            reason: e.kind().to_string(),
                        },
                    )
                })?);
                let kept = value.trim_end_matches(['\n', '\r']).len();
                value.truncate(kept);
                Ok((key, value))
            }
        }
    }

    fn store(&self, raw: RawStore) -> Result<StoreConfig, ConfigError> {
        let url_keys = [("store.url", raw.url.is_some()), ("store.url_env", raw.url_env.is_some())];
        let url_keys = url_keys.into_iter().chain([("store.url_file", raw.url_file.is_some())]);
        if raw.kind == StoreKind::Sqlite {
            if let Some((key, _)) = url_keys.into_iter().find(|(_, given)| *given) {
                return Err(invalid(key, "a SQLite store takes `path`, not a URL"));
            }
            let path = self.base.join(raw.path.as_deref().unwrap_or("subscribe-gateway.db"));
            return Ok(StoreConfig::Sqlite { path });
        }
        if raw.path.is_some() {
            return Err(invalid(
                "store.path",
                "only a SQLite store takes `path`; PostgreSQL and Redis take a URL",
            ));
        }
        let url = match raw.url {
            Some(url) if raw.url_env.is_some() || raw.url_file.is_some() => {
                drop(Zeroizing::new(url));
                return Err(ConfigError::new(
                    "store.url",
                    ConfigProblem::Exclusive { other: "url_env or url_file" },
                ));
            }
            Some(url) => {
                let url = Zeroizing::new(url);
                if has_password(&url) {
                    return Err(ConfigError::new(
                        "store.url",
                        ConfigProblem::InlineSecret {
                            instead: "`url_env` or `url_file` for a URL with a password",
                        },
                    ));
                }
                url
            }
            None => {
                let one_of = "`url`, `url_env` or `url_file`";
                self.secret("store", ("url_env", raw.url_env), ("url_file", raw.url_file), one_of)?.1
            }
        };
        let url = SecretUrl(url);
        if raw.kind == StoreKind::Postgres {
            if raw.prefix.is_some() {
                return Err(invalid("store.prefix", "only a Redis store takes `prefix`"));
            }
            return Ok(StoreConfig::Postgres { url, schema: raw.schema });
        }
        if raw.schema.is_some() {
            return Err(invalid("store.schema", "only a PostgreSQL store takes `schema`"));
        }
        Ok(StoreConfig::Redis { url, prefix: raw.prefix })
    }

    fn app(&self, i: usize, mut raw: RawApp) -> Result<AppConfig, ConfigError> {
        let at = format!("apps[{i}]");
        if raw.secret.is_some() {
            return Err(ConfigError::new(
                format!("{at}.secret"),
                ConfigProblem::InlineSecret { instead: "`secret_env` or `secret_file`" },
            ));
        }
        let appid = AppId::new(&raw.appid).map_err(|e| invalid(format!("{at}.appid"), e.to_string()))?;
        if let Some(base) = &raw.api_base
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(invalid(format!("{at}.api_base"), "an absolute http(s) URL"));
        }
        let one_of = "`secret_env` or `secret_file`";
        let (key, value) = self.secret(
            &at,
            ("secret_env", raw.secret_env.take()),
            ("secret_file", raw.secret_file.take()),
            one_of,
        )?;
        let push = self.push(&at, &mut raw)?;
        // `AppSecret::new` takes a `String`: the copy it keeps is its own (zeroed on drop);
        // `value` is zeroed here.
        let secret = AppSecret::new(value.as_str()).map_err(|e| invalid(key, e.to_string()))?;
        let token_endpoint = match raw.token_endpoint {
            Endpoint::Stable => TokenEndpoint::Stable,
            Endpoint::Classic => TokenEndpoint::Classic,
        };
        Ok(AppConfig {
            appid,
            kind: raw.kind,
            token_endpoint,
            api_base: raw.api_base.map(|b| b.trim_end_matches('/').to_owned()),
            secret,
            report_interval: Duration::from_millis(
                raw.report_interval_ms.unwrap_or(DEFAULT_REPORT_INTERVAL_MS),
            ),
            push,
            consent_return_url: match raw.consent_return_url {
                None => None,
                // Non-ASCII would reach the `Location` header raw: percent-encoded only.
                Some(url) if !url.is_ascii() => {
                    return Err(invalid(
                        format!("{at}.consent_return_url"),
                        "ASCII only: percent-encode other characters",
                    ));
                }
                Some(url) => Some(
                    RedirectUrl::new(url)
                        .map_err(|e| invalid(format!("{at}.consent_return_url"), e.to_string()))?,
                ),
            },
        })
    }

    /// The app's push keys, taken out of `raw`.
    fn push(&self, at: &str, raw: &mut RawApp) -> Result<Option<AppPush>, ConfigError> {
        let (token_env, token_file) = (raw.push_token_env.take(), raw.push_token_file.take());
        let (key_env, key_file) = (raw.push_aes_key_env.take(), raw.push_aes_key_file.take());
        let (mode, url) = (raw.push_mode.take(), raw.webhook_url.take());
        let (secret_env, secret_file) = (raw.webhook_secret_env.take(), raw.webhook_secret_file.take());
        let any_key =
            [&key_env, &key_file, &mode, &url, &secret_env, &secret_file].iter().any(|v| v.is_some());
        if token_env.is_none() && token_file.is_none() {
            if any_key {
                let one_of =
                    "`push_token_env` or `push_token_file` (the push keys need the server URL's Token)";
                return Err(ConfigError::new(at, ConfigProblem::Missing { one_of }));
            }
            return Ok(None);
        }
        let one_of = "`push_token_env` or `push_token_file`";
        let (key, token) =
            self.secret(at, ("push_token_env", token_env), ("push_token_file", token_file), one_of)?;
        if !subscribe_events::is_valid_token(&token) {
            return Err(invalid(
                key,
                "3 to 32 letters and digits, the Token of WeChat's server URL settings",
            ));
        }
        let mode = match mode.as_deref().unwrap_or("safe") {
            "safe" => Mode::Safe,
            "compatible" => Mode::Compatible,
            "plain" => Mode::Plain,
            _ => return Err(invalid(format!("{at}.push_mode"), "\"safe\", \"compatible\" or \"plain\"")),
        };
        let aes_key = match (mode, key_env.is_some() || key_file.is_some()) {
            (Mode::Plain, true) => {
                let key = if key_env.is_some() { "push_aes_key_env" } else { "push_aes_key_file" };
                return Err(invalid(format!("{at}.{key}"), "only for push_mode \"safe\" or \"compatible\""));
            }
            (Mode::Plain, false) => None,
            _ => {
                let one_of =
                    "`push_aes_key_env` or `push_aes_key_file` (the safe and compatible modes decrypt)";
                let (key, value) =
                    self.secret(at, ("push_aes_key_env", key_env), ("push_aes_key_file", key_file), one_of)?;
                Some(EncodingAesKey::new(value.as_str()).map_err(|e| invalid(key, e.to_string()))?)
            }
        };
        let webhook = match url {
            None if secret_env.is_some() || secret_file.is_some() => {
                return Err(invalid(format!("{at}.webhook_url"), "required with a webhook secret"));
            }
            None => None,
            Some(url) => {
                let parsed = reqwest::Url::parse(&url).ok().filter(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some_and(|h| !h.is_empty())
                        && u.fragment().is_none()
                        && url.is_ascii()
                });
                let Some(parsed) = parsed else {
                    return Err(invalid(
                        format!("{at}.webhook_url"),
                        "an absolute http(s) URL with a host, in ASCII (percent-encoded), without a #fragment",
                    ));
                };
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(ConfigError::new(
                        format!("{at}.webhook_url"),
                        ConfigProblem::InlineSecret {
                            instead: "a URL without user:password@ (the posts are signed with the webhook secret)",
                        },
                    ));
                }
                let one_of = "`webhook_secret_env` or `webhook_secret_file` (the webhook's posts are signed)";
                let (key, secret) = self.secret(
                    at,
                    ("webhook_secret_env", secret_env),
                    ("webhook_secret_file", secret_file),
                    one_of,
                )?;
                let chars = secret.chars().count();
                if chars < MIN_KEY_CHARS {
                    return Err(ConfigError::new(key, ConfigProblem::KeyTooShort { chars }));
                }
                Some(Webhook { url, secret })
            }
        };
        Ok(Some(AppPush { token, aes_key, mode, webhook }))
    }

    fn key(&self, i: usize, raw: RawKey, apps: &[AppConfig]) -> Result<KeyConfig, ConfigError> {
        let at = format!("keys[{i}]");
        if raw.key.is_some() {
            return Err(ConfigError::new(
                format!("{at}.key"),
                ConfigProblem::InlineSecret {
                    instead: "`sha256` (from `subscribe-gateway hash-key`), `key_env` or `key_file`",
                },
            ));
        }
        if raw.name.trim().is_empty() {
            return Err(invalid(format!("{at}.name"), "not empty"));
        }
        let hash = match raw.sha256 {
            Some(_) if raw.key_env.is_some() || raw.key_file.is_some() => {
                return Err(ConfigError::new(
                    format!("{at}.sha256"),
                    ConfigProblem::Exclusive { other: "key_env or key_file" },
                ));
            }
            Some(hex) => KeyHash::from_hex(&hex).ok_or_else(|| {
                invalid(format!("{at}.sha256"), "64 hexadecimal characters: the SHA-256 of the key")
            })?,
            None => {
                let one_of = "`sha256`, `key_env` or `key_file`";
                let (key, value) =
                    self.secret(&at, ("key_env", raw.key_env), ("key_file", raw.key_file), one_of)?;
                let chars = value.chars().count();
                if chars < MIN_KEY_CHARS {
                    return Err(ConfigError::new(key, ConfigProblem::KeyTooShort { chars }));
                }
                KeyHash::of(value.as_bytes())
            }
        };
        let mut scopes = BTreeMap::new();
        for (app, list) in raw.scopes {
            let key = format!("{at}.scopes.{app}");
            let Some(appid) = apps.iter().map(|a| &a.appid).find(|a| a.as_str() == app) else {
                return Err(ConfigError::new(key, ConfigProblem::UnknownApp));
            };
            if list.is_empty() {
                return Err(invalid(key, "at least one scope: \"token:read\", \"send\" or \"grants\""));
            }
            scopes.insert(appid.clone(), list);
        }
        let rate =
            ops::rate(&at, ("rate_per_second", raw.rate_per_second), ("burst", raw.burst), DEFAULT_KEY_RATE)?;
        Ok(KeyConfig { name: raw.name, hash, scopes, rate })
    }
}

/// Whether a URL carries a password (`scheme://user:password@host`, `redis://:password@host`).
/// Or in its query (`?password=…`, which sqlx reads too), in any encoding of the name.
fn has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let query = rest.split('#').next().unwrap_or_default().split_once('?').map_or("", |(_, q)| q);
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
        || form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name.eq_ignore_ascii_case("password"))
}

impl From<&ServerConfig> for crate::ServeLimits {
    /// The header-read timeout and the bound on connections of `[server]`; a stop waits for
    /// the requests in flight up to the request timeout and 5 s more (a send within its budget,
    /// four fifths of the request timeout, and the storing of its answer), so a deploy never
    /// cuts a send short.
    fn from(c: &ServerConfig) -> Self {
        Self::new(c.header_read_timeout, c.max_connections)
            .per_peer(c.max_connections_per_peer, c.trusted_proxies.iter().copied())
            .drain(c.request_timeout + std::time::Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::has_password;

    #[test]
    fn a_password_in_a_url_is_found() {
        assert!(has_password("postgres://shop:hunter2@db/shop"));
        assert!(has_password("redis://:hunter2@127.0.0.1:6379/0"));
        assert!(!has_password("postgres://shop@db/shop"));
        assert!(!has_password("redis://127.0.0.1:6379/0"));
        assert!(!has_password("postgres://db/shop?user=a:b@c"));
        assert!(has_password("postgres://shop@db/shop?password=hunter2"));
        assert!(has_password("postgres://shop@db/shop?sslmode=require&%50assword=hunter2"));
        assert!(!has_password("postgres://shop@db/shop?sslmode=require#password=x"));
    }
}
