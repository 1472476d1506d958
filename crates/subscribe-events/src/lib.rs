//! WeChat's event push, sans-I/O: the server URL's check, the signatures (compared in
//! constant time), the safe mode's AES-256-CBC (with the previous `EncodingAESKey` during a
//! rotation), a freshness window on `timestamp` and a replay cache on (`nonce`, signature), and
//! the subscription events typed ([`Event`]). No HTTP, no runtime: hand it the query string,
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

use std::collections::HashMap;
use std::sync::Mutex;

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
    /// This (`nonce`, signature) was seen within the window: nothing is recorded again.
    #[error("this push was already received")]
    Replayed,
    /// The body is larger than [`MAX_BODY`].
    #[error("the body is over {MAX_BODY} bytes")]
    TooLarge,
    /// The body is not the push's XML or JSON.
    #[error("malformed push: {0}")]
    Malformed(&'static str),
    /// A safe-mode body that cannot be decrypted with the current or the previous key.
    #[error("cannot decrypt: {0}")]
    Undecryptable(&'static str),
    /// The decrypted message is for another app.
    #[error("the message is for another appid")]
    WrongAppId,
    /// The mode requires encryption and the push is plain.
    #[error("a plain push in safe mode")]
    NotEncrypted,
    /// An `EncodingAESKey` that is not 43 base64 characters.
    #[error("an EncodingAESKey must be 43 base64 characters")]
    BadKey,
}

impl PushError {
    /// The HTTP status to answer: 401 for a push that is not WeChat's (signature, time, appid),
    /// 400 for one that cannot be read, 413 for an oversized body; 200 for a replay, which
    /// WeChat itself sends when an answer was slow (it stops retrying; nothing is recorded).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Replayed => 200,
            Self::BadSignature(_) | Self::Stale { .. } | Self::WrongAppId | Self::NotEncrypted => 401,
            Self::TooLarge => 413,
            Self::Missing(_) | Self::Malformed(_) | Self::Undecryptable(_) | Self::BadKey => 400,
        }
    }
}

/// How the account's server configuration (消息加解密方式) encrypts pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 明文模式: plain bodies, `signature` only.
    Plain,
    /// 兼容模式: encrypted (`encrypt_type=aes`) or plain.
    Compatible,
    /// 安全模式: encrypted only.
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
/// print.
pub struct PushConfig {
    token: String,
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
        Self { token: token.into(), appid: appid.into(), mode, keys: Vec::new(), window: 300 }
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
}

/// Verifies, decrypts and reads pushes for one configuration; remembers what it has seen for
/// the freshness window (the replay cache, bounded by the window).
#[derive(Debug)]
pub struct Push {
    config: PushConfig,
    seen: Mutex<HashMap<(String, String), u64>>,
}

/// The query parameters of a push.
struct Query {
    params: HashMap<String, String>,
}

impl Query {
    fn parse(query: &str) -> Self {
        let query = query.strip_prefix('?').unwrap_or(query);
        let params = query
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = subscribe_types::encoding::decode_component(v).ok()?;
                Some((k.to_owned(), v.into_owned()))
            })
            .collect();
        Self { params }
    }

    fn get(&self, name: &'static str) -> Result<&str, PushError> {
        self.params.get(name).map(String::as_str).ok_or(PushError::Missing(name))
    }
}

impl Push {
    /// Verifies and reads pushes for `config`.
    pub fn new(config: PushConfig) -> Self {
        Self { config, seen: Mutex::new(HashMap::new()) }
    }

    /// The URL check WeChat makes when the server URL is saved: `GET
    /// ?signature&timestamp&nonce&echostr`. Returns `echostr`, the body to answer.
    ///
    /// # Errors
    /// [`PushError::Missing`], [`PushError::BadSignature`], [`PushError::Stale`].
    pub fn verify_url(&self, query: &str, now_unix: u64) -> Result<String, PushError> {
        let q = Query::parse(query);
        self.check_plain(&q, now_unix)?;
        Ok(q.get("echostr")?.to_owned())
    }

    fn check_plain(&self, q: &Query, now_unix: u64) -> Result<(), PushError> {
        let (timestamp, nonce) = (q.get("timestamp")?, q.get("nonce")?);
        let expected = signature(&[&self.config.token, timestamp, nonce]);
        if !crypto::same_signature(&expected, q.get("signature")?) {
            return Err(PushError::BadSignature("signature"));
        }
        let ts: u64 = timestamp.parse().map_err(|_| PushError::BadSignature("signature"))?;
        let skew = now_unix.abs_diff(ts);
        if skew > self.config.window {
            return Err(PushError::Stale { skew, window: self.config.window });
        }
        Ok(())
    }

    /// Verifies, decrypts (in safe mode or for an `encrypt_type=aes` push) and reads one push.
    /// The format is the body's: XML or JSON.
    ///
    /// # Errors
    /// A [`PushError`]; [`PushError::http_status`] says what to answer.
    pub fn open(&self, query: &str, body: &[u8], now_unix: u64) -> Result<Event, PushError> {
        let plain = self.plaintext(query, body, now_unix)?;
        let event = if plain.trim_start().starts_with('<') {
            Event::from_xml(&plain)
        } else {
            Event::from_json(&plain)
        }?;
        Ok(event)
    }

    /// Verifies and decrypts one push: its plaintext (XML or JSON), remembered as seen.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn plaintext(&self, query: &str, body: &[u8], now_unix: u64) -> Result<String, PushError> {
        if body.len() > MAX_BODY {
            return Err(PushError::TooLarge);
        }
        let body = std::str::from_utf8(body).map_err(|_| PushError::Malformed("not UTF-8"))?;
        let q = Query::parse(query);
        self.check_plain(&q, now_unix)?;
        let encrypted = q.params.get("encrypt_type").is_some_and(|t| t == "aes");
        let (plain, signature) = match (self.config.mode, encrypted) {
            (Mode::Safe, false) => return Err(PushError::NotEncrypted),
            (Mode::Plain, _) | (Mode::Compatible, false) => (body.to_owned(), q.get("signature")?.to_owned()),
            (Mode::Safe | Mode::Compatible, true) => {
                let encrypt = encrypt_field(body)?;
                let msg_signature = q.get("msg_signature")?;
                let expected =
                    signature(&[&self.config.token, q.get("timestamp")?, q.get("nonce")?, &encrypt]);
                if !crypto::same_signature(&expected, msg_signature) {
                    return Err(PushError::BadSignature("msg_signature"));
                }
                (self.decrypt(&encrypt)?, msg_signature.to_owned())
            }
        };
        self.remember(q.get("nonce")?, &signature, now_unix)?;
        Ok(plain)
    }

    fn decrypt(&self, encrypt: &str) -> Result<String, PushError> {
        let mut last = PushError::Undecryptable("no EncodingAESKey configured");
        for key in &self.config.keys {
            match key.decrypt(encrypt, &self.config.appid) {
                Ok(plain) => return Ok(plain),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Records (`nonce`, signature) as seen; a second time within the window is a replay.
    fn remember(&self, nonce: &str, signature: &str, now_unix: u64) -> Result<(), PushError> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.config.window;
        seen.retain(|_, at| now_unix.abs_diff(*at) <= window);
        match seen.entry((nonce.to_owned(), signature.to_owned())) {
            std::collections::hash_map::Entry::Occupied(_) => Err(PushError::Replayed),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now_unix);
                Ok(())
            }
        }
    }

    /// Forgets a push [`open`](Self::open) accepted, so WeChat's retry of it is read again: for
    /// a handler whose work on the event failed.
    pub fn forget(&self, query: &str) {
        let q = Query::parse(query);
        let signature = q.get("msg_signature").or_else(|_| q.get("signature"));
        if let (Ok(nonce), Ok(signature)) = (q.get("nonce"), signature) {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.remove(&(nonce.to_owned(), signature.to_owned()));
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
        let sig = signature(&[&self.config.token, &ts, nonce]);
        let query = format!("signature={sig}&timestamp={ts}&nonce={nonce}");
        if self.config.mode == Mode::Plain {
            return Ok(Sealed { query, body: plaintext.to_owned() });
        }
        let key = self.config.keys.first().ok_or(PushError::BadKey)?;
        let encrypt = key.encrypt(plaintext, &self.config.appid, random);
        let msg_signature = signature(&[&self.config.token, &ts, nonce, &encrypt]);
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
        let sig = signature(&[&self.config.token, timestamp, nonce, &encrypt]);
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
