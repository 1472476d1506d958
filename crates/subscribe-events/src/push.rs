//! [`Push`]: a push verified (signatures, freshness, the replay cache), decrypted and read;
//! the URL check; and a push sealed as WeChat sends it.

use std::sync::{Mutex, PoisonError};

use subscribe_types::QueryError;
use subscribe_types::query::Query;

use crate::replay::{self, Expiring, MemoryReplayCache, ReplayKey, canonical_number};
use crate::{ConfigWarning, Event, Mode, OpenFailure, PushConfig, PushError, crypto, signature};

/// Largest body read, in bytes (WeChat's pushes are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

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
    body_signed: bool,
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

    /// Whether the body was signed too (an encrypted push, whose `msg_signature` covers it):
    /// a plain push's signature covers its query only.
    pub fn body_signed(&self) -> bool {
        self.body_signed
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
        Ok(Verified { value: finish(plain, event)?, key, body_signed: encrypted })
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
