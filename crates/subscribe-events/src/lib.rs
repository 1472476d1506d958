//! WeChat's event push, sans-I/O: the server URL's check, the signatures (compared in
//! constant time), the safe mode's AES-256-CBC (with the previous `EncodingAESKey` during a
//! rotation), a freshness window on `timestamp` and a replay cache on the signed (`timestamp`,
//! `nonce`) pair, and the subscription events typed ([`Event`]). Queries are read with the
//! workspace's one strict reader ([`subscribe_types::query::Query`]): a signed parameter that
//! appears twice is refused. No HTTP, no runtime: hand it the query string,
//! the body and the time; it answers with the event or a [`PushError`] carrying the HTTP
//! status to answer.
//!
//! ```
//! use subscribe_events::{Mode, Push, PushConfig, signature};
//!
//! let config = PushConfig::new("sandboxPushToken2026", "wx5a1db0c0ffee0001", Mode::Plain);
//! let push = Push::new(config);
//! let sig = signature(&["sandboxPushToken2026", "1800000000", "42"]);
//! // The URL check: answer `echostr`.
//! let query = format!("signature={sig}&timestamp=1800000000&nonce=42&echostr=hello");
//! assert_eq!(push.verify_url(&query, 1_800_000_010)?, "hello");
//! // A plain-mode push of an event this crate does not model is kept raw, by name.
//! let body = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser</FromUserName>\
//!             <CreateTime>1800000000</CreateTime><MsgType>event</MsgType><Event>VIEW</Event></xml>";
//! let event = push.open(&format!("signature={sig}&timestamp=1800000000&nonce=43"), body.as_bytes(), 1_800_000_010);
//! assert!(event.is_err(), "another nonce, another signature");
//! let sig = signature(&["sandboxPushToken2026", "1800000000", "43"]);
//! let event = push.open(&format!("signature={sig}&timestamp=1800000000&nonce=43"), body.as_bytes(), 1_800_000_010)?;
//! assert_eq!(event.name(), "VIEW");
//! # Ok::<(), subscribe_events::PushError>(())
//! ```

mod crypto;
mod event;
pub mod replay;

use std::sync::{Mutex, PoisonError};

use subscribe_types::QueryError;
use subscribe_types::query::Query;

use crate::replay::{Expiring, MemoryReplayCache, ReplayKey, canonical_number};

pub use crypto::{EncodingAesKey, signature};
pub use event::{ChangeItem, Event, EventKind, Format, PopupItem, SentItem};

#[cfg(feature = "axum")]
pub mod axum;

/// Largest body read, in bytes (WeChat's pushes are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// Why a push (or the URL check) was refused. Never holds the body, a key or the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A query parameter is missing.
    #[error("the query has no `{0}`")]
    Missing(&'static str),
    /// A query parameter appears more than once (whichever copy would verify): the push is
    /// not read, so no two readers of the query can see two different values.
    #[error("parameter `{0}` appears more than once")]
    Repeated(&'static str),
    /// The signature does not match.
    #[error("the `{0}` does not match")]
    BadSignature(&'static str),
    /// `timestamp` is outside the freshness window.
    #[error("the timestamp is {skew} s away from now; at most {window} s are allowed")]
    Stale {
        /// How far, in seconds.
        skew: u64,
        /// The window.
        window: u64,
    },
    /// This push (its signed `timestamp` and `nonce`, however spelt: swapped, in another case,
    /// in whichever mode, with whatever body) was read before and can still pass the freshness
    /// check: nothing is recorded again.
    #[error("this push was already received")]
    Replayed,
    /// The body is larger than [`MAX_BODY`].
    #[error("the body is over {MAX_BODY} bytes")]
    TooLarge,
    /// The body is not the push's XML or JSON.
    #[error("malformed push: {0}")]
    Malformed(&'static str),
    /// A push whose signatures verified but whose body did not open: it does not decrypt
    /// (with the current or the previous key), the message is another app's, or it is not an
    /// event. One text and one status for every one of those, since an answer that differed
    /// would be a padding oracle to anyone holding the Token: it would decrypt and forge
    /// safe-mode pushes without the `EncodingAESKey`. The [`OpenFailure`] is the detail, for
    /// the integrator's logs; never answer it.
    #[error("the push could not be opened")]
    Unopened(OpenFailure),
    /// The mode requires encryption and the push is plain.
    #[error("a plain push in safe mode")]
    NotEncrypted,
    /// An `EncodingAESKey` that is not 43 base64 characters.
    #[error("an EncodingAESKey must be 43 base64 characters")]
    BadKey,
    /// The replay cache could not say whether the push was read before (it failed, or it is
    /// full of pushes still fresh): the push is not read, and WeChat's retry may be.
    #[error("the push cannot be checked for a replay now")]
    Unavailable,
}

impl PushError {
    /// The HTTP status to answer: 401 for a push that is not WeChat's (signature, time, a plain
    /// push in safe mode), 400 for one that cannot be read (and for every push that verified
    /// but did not open, whatever the reason), 413 for an oversized body; 200 for a replay,
    /// which WeChat itself sends when an answer was slow (it stops retrying; nothing is
    /// recorded); 503 when the replay cache cannot answer.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Replayed => 200,
            Self::BadSignature(_) | Self::Stale { .. } | Self::NotEncrypted => 401,
            Self::TooLarge => 413,
            Self::Unavailable => 503,
            Self::Missing(_) | Self::Repeated(_) | Self::Malformed(_) | Self::Unopened(_) | Self::BadKey => {
                400
            }
        }
    }
}

/// Why a push whose signatures verified did not open: the detail behind
/// [`PushError::Unopened`], for the integrator's logs only (the endpoint logs it; the answer
/// is the same for every one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenFailure {
    /// The compatible or safe mode without an `EncodingAESKey`.
    NoKey,
    /// `Encrypt` is not base64.
    NotBase64,
    /// Not whole AES blocks.
    NotWholeBlocks,
    /// The PKCS#7 padding is not 1 to 32 bytes of its own length.
    BadPadding,
    /// Shorter than the 16 random bytes and the length.
    TooShort,
    /// The message's length runs past the end.
    LengthPastEnd,
    /// The message is for another AppID (or the key is another app's).
    WrongAppId,
    /// The message is not UTF-8.
    NotUtf8,
    /// The message is not a push's XML or JSON event.
    NotAnEvent,
    /// The event was created (`CreateTime`) more than [`NONCE_HORIZON`](replay::NONCE_HORIZON)
    /// before the push's `timestamp`: WeChat pushes an event within seconds, so this is an old
    /// push resent with its timestamp and nonce swapped (see [`replay`]).
    OutdatedEvent,
}

impl OpenFailure {
    /// What went wrong, in a few words.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoKey => "no EncodingAESKey is configured",
            Self::NotBase64 => "not base64",
            Self::NotWholeBlocks => "not whole AES blocks",
            Self::BadPadding => "bad padding",
            Self::TooShort => "too short",
            Self::LengthPastEnd => "the length runs past the end",
            Self::WrongAppId => "the message is for another appid",
            Self::NotUtf8 => "the message is not UTF-8",
            Self::NotAnEvent => "the message is not a push's XML or JSON",
            Self::OutdatedEvent => "the event was created more than a day before the push",
        }
    }
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// day (see [`replay`]), with any body.
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
    appid: String,
    mode: Mode,
    keys: Vec<EncodingAesKey>,
    window: u64,
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
    fn token(&self) -> &str {
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

/// Verifies, decrypts and reads pushes for one configuration. [`open`](Self::open) remembers
/// the pushes it read in the process's own [`MemoryReplayCache`]; behind a load balancer,
/// [`verify`](Self::verify) and a shared [`ReplayCache`](replay::ReplayCache) (the axum
/// endpoint takes one) make a replay to any instance a replay.
#[derive(Debug)]
pub struct Push {
    config: PushConfig,
    seen: MemoryReplayCache,
    forgotten: Mutex<Expiring<u8>>,
}

/// How many times one push may be forgotten (its handler failed) and read again: WeChat
/// retries a push three times, so a fourth sight is not WeChat's.
pub const MAX_FORGETS: u8 = 3;

/// A push whose signatures verified and whose body opened, not yet checked against a replay
/// cache: hand its [`key`](Self::key) to the cache before acting on it.
#[derive(Debug)]
pub struct Verified<T> {
    value: T,
    key: ReplayKey,
}

impl<T> Verified<T> {
    /// What the push carries (its event, or its plaintext).
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The push's identity, for [`ReplayCache::first_sight`](replay::ReplayCache::first_sight).
    pub fn key(&self) -> &ReplayKey {
        &self.key
    }

    /// The value and the key.
    pub fn into_parts(self) -> (T, ReplayKey) {
        (self.value, self.key)
    }
}

/// A verified URL check: the `echostr` to answer, and the key to record when its query could
/// be posted again as a push (the plain and compatible modes; in the safe mode a push needs a
/// `msg_signature` the check does not carry, so nothing is recorded and a captured push's
/// query sent as a check cannot use up that push).
#[derive(Debug)]
pub struct UrlCheck {
    /// The body to answer.
    pub echostr: String,
    /// What to record in the replay cache, if anything.
    pub key: Option<ReplayKey>,
}

/// The query parameters of a push (or of the URL check), each read once: a repeated one is
/// [`PushError::Repeated`].
struct Params {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Result<Self, PushError> {
        let q = Query::parse_query(query).map_err(|e| query_error(&e))?;
        let [signature, timestamp, nonce, echostr, encrypt_type, msg_signature] = q
            .read(["signature", "timestamp", "nonce", "echostr", "encrypt_type", "msg_signature"])
            .map_err(|e| query_error(&e))?;
        Ok(Self { signature, timestamp, nonce, echostr, encrypt_type, msg_signature })
    }
}

fn required<'a>(value: Option<&'a String>, name: &'static str) -> Result<&'a str, PushError> {
    value.map(String::as_str).ok_or(PushError::Missing(name))
}

fn query_error(e: &QueryError) -> PushError {
    match e {
        QueryError::Repeated { param } => PushError::Repeated(param),
        QueryError::TooLarge { .. } => PushError::Malformed("the query is over 8 KiB"),
        _ => PushError::Malformed("the query is not percent-encoded UTF-8"),
    }
}

impl Push {
    /// Verifies and reads pushes for `config`.
    pub fn new(config: PushConfig) -> Self {
        Self {
            config,
            seen: MemoryReplayCache::default(),
            forgotten: Mutex::new(Expiring::new(replay::DEFAULT_CAPACITY)),
        }
    }

    /// The AppID the configuration reads pushes for.
    pub fn appid(&self) -> &str {
        &self.config.appid
    }

    /// The configuration's [`warnings`](PushConfig::warnings), to log at start-up.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        self.config.warnings()
    }

    /// The URL check WeChat makes when the server URL is saved: `GET
    /// ?signature&timestamp&nonce&echostr`. Returns `echostr`, the body to answer.
    ///
    /// In the plain and compatible modes the check's signature is remembered as a push's is:
    /// its query carries the very `signature` a push does, so once seen it cannot be posted as
    /// a push (with any body). In the safe mode nothing is remembered (see [`UrlCheck`]). The
    /// check itself may come again.
    ///
    /// # Errors
    /// [`PushError::Missing`], [`PushError::Repeated`], [`PushError::BadSignature`],
    /// [`PushError::Stale`], [`PushError::Malformed`] (a timestamp not in its one spelling, an
    /// empty nonce).
    pub fn verify_url(&self, query: &str, now_unix: u64) -> Result<String, PushError> {
        let check = self.check_url(query, now_unix)?;
        if let Some(key) = &check.key {
            // A full cache only means the check's query is not remembered: the check itself
            // reveals nothing and records nothing else.
            let _ = self.seen.first_sight_now(key, now_unix);
        }
        Ok(check.echostr)
    }

    /// Verifies the URL check without recording it: the `echostr`, and the key to record in a
    /// shared replay cache (none in the safe mode).
    ///
    /// # Errors
    /// As [`verify_url`](Self::verify_url).
    pub fn check_url(&self, query: &str, now_unix: u64) -> Result<UrlCheck, PushError> {
        let p = Params::parse(query)?;
        let key = self.check_plain(&p, now_unix)?;
        let echostr = required(p.echostr.as_ref(), "echostr")?.to_owned();
        let key = (self.config.mode != Mode::Safe).then_some(key);
        Ok(UrlCheck { echostr, key })
    }

    /// Checks `signature` and the freshness of `timestamp`: the push's identity once verified.
    fn check_plain(&self, p: &Params, now_unix: u64) -> Result<ReplayKey, PushError> {
        let (timestamp, nonce, expected) = self.signed(p)?;
        if !crypto::same_signature(&expected, required(p.signature.as_ref(), "signature")?) {
            return Err(PushError::BadSignature("signature"));
        }
        let skew = now_unix.abs_diff(timestamp);
        if skew > self.config.window {
            return Err(PushError::Stale { skew, window: self.config.window });
        }
        Ok(ReplayKey::new(&self.config.appid, &expected, timestamp, nonce, self.config.window, now_unix))
    }

    /// The timestamp (in its one spelling), the nonce (not empty) and the signature they and
    /// the Token make.
    fn signed<'p>(&self, p: &'p Params) -> Result<(u64, &'p str, String), PushError> {
        let timestamp = required(p.timestamp.as_ref(), "timestamp")?;
        let nonce = required(p.nonce.as_ref(), "nonce")?;
        let ts = canonical_number(timestamp)
            .ok_or(PushError::Malformed("the timestamp is not Unix seconds in decimal digits"))?;
        if nonce.is_empty() {
            return Err(PushError::Malformed("the nonce is empty"));
        }
        Ok((ts, nonce, signature(&[self.config.token(), timestamp, nonce])))
    }

    /// Verifies, decrypts (in safe mode or for an `encrypt_type=aes` push) and reads one push.
    /// The format is the body's: XML or JSON.
    ///
    /// # Errors
    /// A [`PushError`]; [`PushError::http_status`] says what to answer.
    pub fn open(&self, query: &str, body: &[u8], now_unix: u64) -> Result<Event, PushError> {
        self.remember(self.verify(query, body, now_unix)?, now_unix)
    }

    /// Verifies, decrypts and reads one push without the replay cache: the event and its
    /// [`ReplayKey`], to record in a shared [`ReplayCache`](replay::ReplayCache) before acting
    /// on it ([`open`](Self::open) does both with the process's own cache).
    ///
    /// # Errors
    /// As [`open`](Self::open), never [`PushError::Replayed`].
    pub fn verify(&self, query: &str, body: &[u8], now_unix: u64) -> Result<Verified<Event>, PushError> {
        self.read(query, body, now_unix, |_, event| event)
    }

    /// Verifies and decrypts one push: its plaintext (XML or JSON), remembered as seen.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn plaintext(&self, query: &str, body: &[u8], now_unix: u64) -> Result<String, PushError> {
        self.remember(self.read(query, body, now_unix, |plain, _| Ok(plain))?, now_unix)
    }

    /// Records a verified push in the process's cache: its value on first sight.
    fn remember<T>(&self, verified: Verified<T>, now_unix: u64) -> Result<T, PushError> {
        match self.seen.first_sight_now(&verified.key, now_unix) {
            Ok(true) => Ok(verified.value),
            Ok(false) => Err(PushError::Replayed),
            // Every entry is a push still fresh: reading this one unrecorded would let it be
            // replayed.
            Err(_) => Err(PushError::Unavailable),
        }
    }

    /// Verifies, decrypts and reads the event; hands the plaintext and the event (or why it
    /// is none) to `finish`: the value and the push's key. An event created more than
    /// [`NONCE_HORIZON`](replay::NONCE_HORIZON) before the push is refused whatever `finish`
    /// does. Nothing is recorded.
    fn read<T>(
        &self,
        query: &str,
        body: &[u8],
        now_unix: u64,
        finish: impl FnOnce(String, Result<Event, PushError>) -> Result<T, PushError>,
    ) -> Result<Verified<T>, PushError> {
        if body.len() > MAX_BODY {
            return Err(PushError::TooLarge);
        }
        let body = std::str::from_utf8(body).map_err(|_| PushError::Malformed("not UTF-8"))?;
        let p = Params::parse(query)?;
        let key = self.check_plain(&p, now_unix)?;
        let encrypted = p.encrypt_type.as_deref() == Some("aes");
        let sealed = match (self.config.mode, encrypted) {
            (Mode::Safe, false) => return Err(PushError::NotEncrypted),
            (Mode::Plain, _) | (Mode::Compatible, false) => None,
            (Mode::Safe | Mode::Compatible, true) => {
                let encrypt = encrypt_field(body)?;
                let msg_signature = required(p.msg_signature.as_ref(), "msg_signature")?;
                let (timestamp, nonce) =
                    (required(p.timestamp.as_ref(), "timestamp")?, required(p.nonce.as_ref(), "nonce")?);
                let expected = signature(&[self.config.token(), timestamp, nonce, &encrypt]);
                if !crypto::same_signature(&expected, msg_signature) {
                    return Err(PushError::BadSignature("msg_signature"));
                }
                Some(encrypt)
            }
        };
        // A push this process read before is a replay whatever its body (unsigned in plain
        // mode): no need to decrypt or parse it again. (Recorded only by `remember`, which
        // checks again: of two copies of one push read at once, one wins.)
        if self.seen.contains(&key, now_unix) {
            return Err(PushError::Replayed);
        }
        let plain = match sealed {
            Some(encrypt) => self.decrypt(&encrypt)?,
            None => body.to_owned(),
        };
        let event = if plain.trim_start().starts_with('<') {
            Event::from_xml(&plain)
        } else {
            Event::from_json(&plain)
        };
        // Whether the message parses says something about the plaintext: the same answer as
        // every other failure past the signature.
        let event = event.map_err(|_| PushError::Unopened(OpenFailure::NotAnEvent));
        let timestamp = canonical_number(required(p.timestamp.as_ref(), "timestamp")?).unwrap_or_default();
        if let Ok(event) = &event
            && timestamp > event.create_time.saturating_add(replay::NONCE_HORIZON)
        {
            return Err(PushError::Unopened(OpenFailure::OutdatedEvent));
        }
        Ok(Verified { value: finish(plain, event)?, key })
    }

    /// Decrypts with the current key, then the previous one; the current key's failure is
    /// the detail (the previous key's is expected once a rotation has settled).
    fn decrypt(&self, encrypt: &str) -> Result<String, PushError> {
        let mut first = None;
        for key in &self.config.keys {
            match key.decrypt(encrypt, &self.config.appid) {
                Ok(plain) => return Ok(plain),
                Err(e) => first = first.or(Some(e)),
            }
        }
        Err(first.unwrap_or(PushError::Unopened(OpenFailure::NoKey)))
    }

    /// Forgets a push [`open`](Self::open) accepted (by its signature), so WeChat's retry of
    /// it is read again: for a handler whose work on the event failed. At most
    /// [`MAX_FORGETS`] times per push (see [`may_forget`](Self::may_forget)); `false` once
    /// that is spent, or for a query that does not verify.
    pub fn forget(&self, query: &str, now_unix: u64) -> bool {
        let Ok(key) = Params::parse(query).and_then(|p| self.check_plain(&p, now_unix)) else {
            return false;
        };
        let allowed = self.may_forget(&key, now_unix);
        if allowed {
            self.seen.forget_now(&key);
        }
        allowed
    }

    /// Whether the push of `key` may be forgotten once more, counting this time: at most
    /// [`MAX_FORGETS`] times (WeChat's retries) while it is fresh, so a captured push whose
    /// handler keeps failing cannot be read without end. Counted in this process: behind a
    /// load balancer, at most that many times per instance.
    pub fn may_forget(&self, key: &ReplayKey, now_unix: u64) -> bool {
        let mut forgotten = self.forgotten.lock().unwrap_or_else(PoisonError::into_inner);
        forgotten.purge(now_unix);
        match forgotten.get_mut(key.as_str()) {
            Some(n) if *n >= MAX_FORGETS => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => forgotten.insert(key.as_str(), key.expires_at(), 1),
        }
    }

    /// A push as WeChat sends it for this configuration (what the sandbox and tests send):
    /// `plaintext` (an event's [`to_wire`](Event::to_wire)) signed, and in the compatible and
    /// safe modes encrypted with the current key (the compatible mode keeps the plain fields
    /// beside `Encrypt`, as WeChat does).
    ///
    /// ```
    /// use subscribe_events::{EncodingAesKey, Mode, Push, PushConfig};
    ///
    /// let key = EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")?;
    /// let push = Push::new(PushConfig::new("sandboxPushToken2026", "wx5a1db0c0ffee0001", Mode::Safe).aes_key(key));
    /// let body = r#"{"ToUserName":"gh_1","FromUserName":"oU","CreateTime":"1800000000","MsgType":"event","Event":"VIEW"}"#;
    /// let sealed = push.seal(body, 1_800_000_000, "n1", [7; 16])?;
    /// assert!(sealed.query.contains("encrypt_type=aes") && !sealed.body.contains("VIEW"));
    /// assert_eq!(push.open(&sealed.query, sealed.body.as_bytes(), 1_800_000_001)?.name(), "VIEW");
    /// # Ok::<(), subscribe_events::PushError>(())
    /// ```
    ///
    /// # Errors
    /// [`PushError::BadKey`] when an encrypting mode has no key; [`PushError::Malformed`] when
    /// `plaintext` is neither an XML element nor a JSON object.
    pub fn seal(
        &self,
        plaintext: &str,
        timestamp: u64,
        nonce: &str,
        random: [u8; 16],
    ) -> Result<Sealed, PushError> {
        let ts = timestamp.to_string();
        let sig = signature(&[self.config.token(), &ts, nonce]);
        let query = format!("signature={sig}&timestamp={ts}&nonce={nonce}");
        if self.config.mode == Mode::Plain {
            return Ok(Sealed { query, body: plaintext.to_owned() });
        }
        let key = self.config.keys.first().ok_or(PushError::BadKey)?;
        let encrypt = key.encrypt(plaintext, &self.config.appid, random);
        let msg_signature = signature(&[self.config.token(), &ts, nonce, &encrypt]);
        let query = format!("{query}&encrypt_type=aes&msg_signature={msg_signature}");
        let compatible = self.config.mode == Mode::Compatible;
        let body = if plaintext.trim_start().starts_with('<') {
            let inner = match (compatible, plaintext.trim_end().strip_suffix("</xml>")) {
                (true, Some(fields)) => {
                    fields.trim_start().strip_prefix("<xml>").unwrap_or(fields).to_owned()
                }
                (true, None) => return Err(PushError::Malformed("not the push's XML")),
                (false, _) => String::new(),
            };
            format!("<xml>{inner}<Encrypt>{}</Encrypt></xml>", quick_xml::escape::escape(encrypt.as_str()))
        } else {
            let mut object = match serde_json::from_str::<serde_json::Value>(plaintext) {
                Ok(serde_json::Value::Object(o)) if compatible => o,
                Ok(serde_json::Value::Object(_)) => serde_json::Map::new(),
                _ => return Err(PushError::Malformed("not a JSON object")),
            };
            object.insert("Encrypt".into(), encrypt.into());
            serde_json::Value::Object(object).to_string()
        };
        Ok(Sealed { query, body })
    }

    /// A safe-mode reply: `message` encrypted with the current key for the configured appid,
    /// and its `msg_signature`, as `(Encrypt, MsgSignature)`.
    ///
    /// # Errors
    /// [`PushError::BadKey`] when no key is configured.
    pub fn seal_reply(
        &self,
        message: &str,
        timestamp: &str,
        nonce: &str,
        random: [u8; 16],
    ) -> Result<(String, String), PushError> {
        let key = self.config.keys.first().ok_or(PushError::BadKey)?;
        let encrypt = key.encrypt(message, &self.config.appid, random);
        let sig = signature(&[self.config.token(), timestamp, nonce, &encrypt]);
        Ok((encrypt, sig))
    }
}

/// A push ready to send: `POST {server URL}?{query}` with `body`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The query string (no leading `?`).
    pub query: String,
    /// The body.
    pub body: String,
}

/// The `Encrypt` of a safe-mode body: an XML element or a JSON field.
fn encrypt_field(body: &str) -> Result<String, PushError> {
    #[derive(serde::Deserialize)]
    struct Sealed {
        #[serde(rename = "Encrypt")]
        encrypt: String,
    }
    let sealed: Sealed = if body.trim_start().starts_with('<') {
        quick_xml::de::from_str(body).map_err(|_| PushError::Malformed("no Encrypt in the XML"))?
    } else {
        serde_json::from_str(body).map_err(|_| PushError::Malformed("no Encrypt in the JSON"))?
    };
    Ok(sealed.encrypt)
}

/// `docs/events.md`'s examples run as doctests (one mounts the axum endpoint).
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../../docs/events.md")]
struct EventsDoctests;
