//! [`SandboxConfig`]: the apps, templates and users the sandbox knows, and its token timing.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subscribe_types::{AppId, AppSecret, OpenId, TemplateId};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// One app (official account) the sandbox plays WeChat for. Its secret is zeroed when the
/// configuration is dropped (`zeroize`).
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct AppConfig {
    /// Its AppID.
    #[zeroize(skip)]
    pub appid: AppId,
    /// Its AppSecret (a sandbox secret: shown by `wxsub sandbox`, masked in the request log).
    pub secret: String,
    /// A display name for the authorization page.
    #[zeroize(skip)]
    pub name: String,
    /// Its one-time subscription templates.
    #[zeroize(skip)]
    pub templates: Vec<TemplateConfig>,
    /// Its business domains (业务域名): a `redirect_url` must be on one of them (the host
    /// itself or a subdomain), as WeChat enforces; the authorization page refuses others. Empty
    /// (the default in a configuration file that leaves it out) allows any.
    #[serde(default)]
    #[zeroize(skip)]
    pub redirect_domains: Vec<String>,
}

impl AppConfig {
    /// Whether `host` is one of the app's business domains or a subdomain of one.
    pub fn allows_redirect_host(&self, host: &str) -> bool {
        self.redirect_domains.is_empty()
            || self.redirect_domains.iter().any(|d| {
                // Compared as bytes: a host may hold non-ASCII, and slicing it as a string
                // at the domain's length could split a character.
                let (host, d) = (host.as_bytes(), d.as_bytes());
                host.eq_ignore_ascii_case(d)
                    || host.len() > d.len()
                        && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
                        && host[host.len() - d.len() - 1] == b'.'
            })
    }
}

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("appid", &self.appid)
            .field("secret", &"[redacted]")
            .field("name", &self.name)
            .field("templates", &self.templates)
            .field("redirect_domains", &self.redirect_domains)
            .finish()
    }
}

/// A one-time subscription template.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TemplateConfig {
    /// The template id.
    pub id: TemplateId,
    /// What the authorization page says the user subscribes to.
    pub title: String,
}

/// A simulated WeChat user. The sandbox uses one OpenID per user for every app.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserConfig {
    /// The user's OpenID.
    pub openid: OpenId,
    /// A display name.
    pub name: String,
}

/// Everything the sandbox knows. [`SandboxConfig::demo`] is the built-in configuration;
/// [`SandboxConfig::from_json_file`] reads your own.
///
/// ```json
/// {
///   "apps": [{"appid": "wx0123456789abcdef", "secret": "s3cr3t", "name": "My Shop",
///             "templates": [{"id": "my_template_id", "title": "Restock alert"}]}],
///   "users": [{"openid": "oUser1", "name": "Alice"}],
///   "token_lifetime_secs": 7200
/// }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// The apps.
    pub apps: Vec<AppConfig>,
    /// The users.
    pub users: Vec<UserConfig>,
    /// How long an issued token lives (WeChat: 7200 s).
    #[serde(rename = "token_lifetime_secs", with = "secs")]
    pub token_lifetime: Duration,
    /// How long a classic token keeps working after the next one is issued (WeChat: 5 min).
    #[serde(rename = "classic_grace_secs", with = "secs")]
    pub classic_grace: Duration,
    /// A stable token is replaced when a normal-mode request comes this close to its expiry
    /// (WeChat: 5 min, per its `getStableAccessToken` documentation); the old one stays valid until its own
    /// expiry, so the two overlap. WeChat's tokens live 7200 s, so it never says what happens
    /// when the window is longer than the lifetime: here every normal-mode request then gets a
    /// new token. Tests with short lifetimes set the window they mean
    /// ([`with_stable_rotation`](Self::with_stable_rotation)).
    #[serde(rename = "stable_rotation_secs", with = "secs")]
    pub stable_rotation: Duration,
    /// Classic token requests allowed per app and day (WeChat: 2000); more get 45009.
    pub classic_daily_quota: u32,
    /// Forced stable refreshes allowed per app and day (WeChat: 20).
    pub force_refresh_daily_quota: u32,
    /// Least time between forced stable refreshes (WeChat: 30 s); closer ones change nothing.
    #[serde(rename = "force_refresh_spacing_secs", with = "secs")]
    pub force_refresh_spacing: Duration,
    /// Request-log entries kept.
    pub log_capacity: usize,
    /// How long a connection may take to send a request's headers, and how long an idle
    /// keep-alive connection is kept (default 10 s): a client that trickles its headers
    /// (slowloris) is disconnected.
    #[serde(rename = "header_read_timeout_secs", with = "secs")]
    pub header_read_timeout: Duration,
    /// Connections served at once (default 512); further ones wait in the listen queue.
    pub max_connections: usize,
    /// Host names the sandbox answers besides IP addresses and `localhost` (a container's
    /// service name, say). A request whose `Host` is another name is refused with 421, so a
    /// web page cannot reach the sandbox through a name it controls (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// The apps' server URLs (服务器配置), where subscription events are pushed; also set at
    /// run time with `POST /sandbox/api/push`. Never written out: it holds Tokens and keys.
    #[serde(skip_serializing)]
    pub push: Vec<crate::PushSettings>,
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// The demo app's AppID.
pub const DEMO_APPID: &str = "wx5a1db0c0ffee0001";
/// The demo app's AppSecret (a sandbox secret, public on purpose).
pub const DEMO_SECRET: &str = "sandbox-demo-secret-0123456789ab";
/// The demo app's business domains: this machine, and the example domains of the docs.
pub const DEMO_REDIRECT_DOMAINS: &[&str] =
    &["localhost", "127.0.0.1", "::1", "app.example.com", "shop.example.com", "a.example"];
/// The demo app's one-time template.
pub const DEMO_TEMPLATE: &str = "SandboxRestockAlert_0000000000000000000001";

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            users: Vec::new(),
            token_lifetime: Duration::from_secs(7200),
            classic_grace: Duration::from_secs(300),
            stable_rotation: Duration::from_secs(300),
            classic_daily_quota: 2000,
            force_refresh_daily_quota: 20,
            force_refresh_spacing: Duration::from_secs(30),
            log_capacity: 1000,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            allowed_hosts: Vec::new(),
            push: Vec::new(),
        }
    }
}

impl SandboxConfig {
    /// The built-in demo: one app ([`DEMO_APPID`], [`DEMO_SECRET`]) with one template
    /// ([`DEMO_TEMPLATE`]) and three users (Alice, Bob, Carol).
    ///
    /// # Panics
    /// Never: the demo values are valid.
    pub fn demo() -> Self {
        let user = |openid: &str, name: &str| UserConfig {
            openid: OpenId::new(openid).expect("demo openid"),
            name: name.into(),
        };
        Self {
            apps: vec![AppConfig {
                appid: AppId::new(DEMO_APPID).expect("demo appid"),
                secret: DEMO_SECRET.into(),
                name: "Sandbox Shop".into(),
                templates: vec![TemplateConfig {
                    id: TemplateId::new(DEMO_TEMPLATE).expect("demo template"),
                    title: "到货提醒 (restock alert)".into(),
                }],
                redirect_domains: DEMO_REDIRECT_DOMAINS.iter().map(|d| (*d).to_owned()).collect(),
            }],
            users: vec![
                user("oSandbox_Alice_00000000001", "Alice"),
                user("oSandbox_Bob_0000000000002", "Bob"),
                user("oSandbox_Carol_00000000003", "Carol"),
            ],
            ..Self::default()
        }
    }

    /// [`DEMO_APPID`], typed.
    ///
    /// # Panics
    /// Never: the demo value is valid.
    pub fn demo_appid() -> AppId {
        AppId::new(DEMO_APPID).expect("demo appid")
    }

    /// [`DEMO_TEMPLATE`], typed.
    ///
    /// # Panics
    /// Never: the demo value is valid.
    pub fn demo_template() -> TemplateId {
        TemplateId::new(DEMO_TEMPLATE).expect("demo template")
    }

    /// The same configuration with another token lifetime (short ones for tests).
    #[must_use]
    pub fn with_token_lifetime(mut self, d: Duration) -> Self {
        self.token_lifetime = d;
        self
    }

    /// The same configuration with another stable-token rotation window.
    #[must_use]
    pub fn with_stable_rotation(mut self, d: Duration) -> Self {
        self.stable_rotation = d;
        self
    }

    /// Adds `n` generated users `oUser000000…` (for load tests).
    ///
    /// # Panics
    /// Never: generated `OpenIds` are valid.
    #[must_use]
    pub fn with_generated_users(mut self, n: usize) -> Self {
        for i in 0..n {
            self.users.push(UserConfig {
                openid: OpenId::new(format!("oUser{i:010}")).expect("generated openid"),
                name: format!("User {i}"),
            });
        }
        self
    }

    /// Reads a JSON configuration file. Omitted timing fields keep WeChat's values.
    ///
    /// # Errors
    /// [`ConfigFileError`] when the file cannot be read or is not a valid configuration.
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(ConfigFileError::Read)?;
        let config: Self = serde_json::from_str(&text).map_err(|e| ConfigFileError::Parse(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks cross-field rules: at least one app, secrets valid, ids unique.
    ///
    /// # Errors
    /// [`ConfigFileError::Invalid`] naming the problem.
    pub fn check(&self) -> Result<(), ConfigFileError> {
        if self.apps.is_empty() {
            return Err(ConfigFileError::Invalid("at least one app is required".into()));
        }
        for app in &self.apps {
            AppSecret::new(app.secret.clone())
                .map_err(|e| ConfigFileError::Invalid(format!("app {}: {e}", app.appid)))?;
            if app.templates.is_empty() {
                return Err(ConfigFileError::Invalid(format!("app {} has no template", app.appid)));
            }
        }
        let mut ids: Vec<&str> = self.apps.iter().map(|a| a.appid.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigFileError::Invalid("duplicate appid".into()));
        }
        let mut users: Vec<&str> = self.users.iter().map(|u| u.openid.as_str()).collect();
        users.sort_unstable();
        if users.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigFileError::Invalid("duplicate openid".into()));
        }
        if self.token_lifetime.is_zero() {
            return Err(ConfigFileError::Invalid("token_lifetime_secs must be positive".into()));
        }
        Ok(())
    }

    /// Whether a request whose `Host` header names `host` (port removed) is answered: IP
    /// addresses, `localhost` and [`allowed_hosts`](Self::allowed_hosts).
    pub fn allows_host(&self, host: &str) -> bool {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        bare.parse::<std::net::IpAddr>().is_ok()
            || host.eq_ignore_ascii_case("localhost")
            || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    pub(crate) fn app(&self, appid: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.appid.as_str() == appid)
    }

    pub(crate) fn user(&self, openid: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.openid.as_str() == openid)
    }
}

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// Reading failed.
    #[error("could not read the configuration file")]
    Read(#[source] std::io::Error),
    /// Not JSON of the right shape.
    #[error("configuration file is not valid: {0}")]
    Parse(String),
    /// A rule across fields is broken.
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}
