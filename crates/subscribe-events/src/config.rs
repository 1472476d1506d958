//! A server URL's configuration ([`PushConfig`]): the Token, the keys, the [`Mode`], the
//! freshness window, and what about them deserves a warning.

use crate::EncodingAesKey;

/// How the account's server configuration (消息加解密方式) encrypts pushes. Choose
/// [`Safe`](Self::Safe): there is no default, and the two others take pushes whose bodies are
/// not signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 明文模式: plain bodies, `signature` only. **Unauthenticated by design**: WeChat's
    /// `signature` covers the Token, `timestamp` and `nonce`, never the body, so anyone who
    /// sees one push (its query, in a log or on the wire) can post any body with it while the
    /// timestamp is fresh; the replay cache stops that only once the genuine push was read. A
    /// query whose nonce reads as a time more than a day ahead is fresh again, swapped, on that
    /// day (see [`replay`](crate::replay)), with any body.
    Plain,
    /// 兼容模式: encrypted (`encrypt_type=aes`) or plain. Takes plain pushes, so it is no
    /// safer than [`Plain`](Self::Plain): use it only while moving to [`Safe`](Self::Safe).
    Compatible,
    /// 安全模式: encrypted only; `msg_signature` covers the encrypted body too. The one to use.
    Safe,
}

impl Mode {
    /// The mode's name in settings: `plain`, `compatible` or `safe`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Compatible => "compatible",
            Self::Safe => "safe",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// Reads `plain`, `compatible` or `safe`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Plain, Self::Compatible, Self::Safe]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| "mode must be plain, compatible or safe".to_owned())
    }
}

/// The Token length recommended: the longest the console accepts, drawn at random.
pub const RECOMMENDED_TOKEN_LEN: usize = 32;

/// A configuration that works but deserves a warning at start-up (the axum endpoint logs each
/// one when it is built; see [`PushConfig::warnings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// The Token is shorter than [`RECOMMENDED_TOKEN_LEN`]. One captured push (its
    /// `signature`, `timestamp` and `nonce`) is enough to search for the Token offline, one
    /// sha1 per guess: 3 characters fall at once, and a word with digits soon after. Whoever
    /// has it signs pushes (with any body in the plain and compatible modes).
    ShortToken {
        /// Its length.
        len: usize,
    },
    /// The plain or compatible mode: bodies are not signed (see [`Mode::Plain`]).
    UnsignedBodies {
        /// The mode.
        mode: Mode,
    },
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShortToken { len } => write!(
                f,
                "the push Token has {len} characters: one captured push is enough to find a short Token \
                 offline and sign pushes with it; use {RECOMMENDED_TOKEN_LEN} random letters and digits"
            ),
            Self::UnsignedBodies { mode } => write!(
                f,
                "the {} mode takes plain pushes, whose bodies WeChat has not signed: anyone who sees \
                 one push can post another body with its query; choose the safe mode",
                mode.as_str()
            ),
        }
    }
}

/// Whether `token` is a Token the console accepts: 3 to 32 letters and digits.
///
/// ```
/// assert!(subscribe_events::is_valid_token("sandboxPushToken2026"));
/// assert!(!subscribe_events::is_valid_token("a!"));
/// ```
pub fn is_valid_token(token: &str) -> bool {
    (3..=32).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A server URL's configuration: the Token, the `EncodingAESKey` (and the previous one while a
/// rotation settles), the AppID, the mode, the freshness window. The Token and the keys never
/// print, and are zeroed when dropped (`secrecy`).
pub struct PushConfig {
    token: secrecy::SecretString,
    pub(crate) appid: String,
    pub(crate) mode: Mode,
    pub(crate) keys: Vec<EncodingAesKey>,
    pub(crate) window: u64,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("token", &"[redacted]")
            .field("appid", &self.appid)
            .field("mode", &self.mode)
            .field("keys", &self.keys.len())
            .field("window", &self.window)
            .finish()
    }
}

impl PushConfig {
    /// A configuration with no key (add one with [`aes_key`](Self::aes_key) for the compatible
    /// and safe modes) and a 300 s freshness window.
    pub fn new(token: impl Into<String>, appid: impl Into<String>, mode: Mode) -> Self {
        let token = subscribe_types::secret_string(token.into());
        Self { token, appid: appid.into(), mode, keys: Vec::new(), window: 300 }
    }

    /// The Token itself, for the signatures only.
    pub(crate) fn token(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.token)
    }

    /// The current `EncodingAESKey`.
    #[must_use]
    pub fn aes_key(mut self, key: EncodingAesKey) -> Self {
        self.keys.insert(0, key);
        self
    }

    /// The previous `EncodingAESKey`, tried when the current one cannot decrypt.
    #[must_use]
    pub fn previous_aes_key(mut self, key: EncodingAesKey) -> Self {
        self.keys.push(key);
        self
    }

    /// How far `timestamp` may be from now, in seconds (default 300).
    #[must_use]
    pub fn window(mut self, seconds: u64) -> Self {
        self.window = seconds;
        self
    }

    /// What to warn about at start-up: a Token shorter than [`RECOMMENDED_TOKEN_LEN`], a mode
    /// that takes unsigned bodies. Empty for 32 characters in the safe mode.
    ///
    /// ```
    /// use subscribe_events::{ConfigWarning, Mode, PushConfig};
    /// let config = PushConfig::new("abc", "wx5a1db0c0ffee0001", Mode::Plain);
    /// assert_eq!(
    ///     config.warnings(),
    ///     [ConfigWarning::ShortToken { len: 3 }, ConfigWarning::UnsignedBodies { mode: Mode::Plain }]
    /// );
    /// ```
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        let len = self.token().chars().count();
        if len < RECOMMENDED_TOKEN_LEN {
            warnings.push(ConfigWarning::ShortToken { len });
        }
        if self.mode != Mode::Safe {
            warnings.push(ConfigWarning::UnsignedBodies { mode: self.mode });
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    /// `PushConfig`'s Token: does not compile if it goes back to a plain `String`.
    #[test]
    fn the_push_token_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let config = crate::PushConfig::new("sandboxPushToken2026", "wx5a1db0c0ffee0001", crate::Mode::Safe);
        let token: &secrecy::SecretString = &config.token;
        zeroed_on_drop(token);
        assert_eq!(config.token(), "sandboxPushToken2026");
        assert!(!format!("{config:?}").contains("sandboxPushToken2026"));
    }
}
