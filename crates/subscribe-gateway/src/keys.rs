//! API keys: kept as their SHA-256, presented as `Authorization: Bearer <key>`, compared in
//! constant time, each with its scopes per app.
//!
//! A plain SHA-256 (no salt, no slow hash) is the right hash here because the keys are random
//! strings of at least [`MIN_KEY_CHARS`] characters: a slow hash protects guessable passwords,
//! and nobody can guess a 32-character random key from its hash, salted or not. A fast hash
//! also keeps every request's check cheap.

use std::collections::HashMap;
use std::fmt;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{KeyConfig, Scope};
use crate::ratelimit::KeyLimiter;

/// The fewest characters an API key may have (keys given with `key_env` or `key_file` are
/// checked at start; `subscribe-gateway hash-key` refuses to hash a shorter one).
pub const MIN_KEY_CHARS: usize = 32;

/// The SHA-256 of an API key. Its `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The hash of `key`.
    pub fn of(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// A hash written as 64 hexadecimal characters (either case); `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex.trim(), &mut out).ok()?;
        Some(Self(out))
    }

    /// The hash as 64 lowercase hexadecimal characters: what `sha256 = "…"` takes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash([redacted])")
    }
}

/// The hash to write into `sha256 = "…"` for `key`, which must have at least
/// [`MIN_KEY_CHARS`] characters (one trailing line break, as `echo` adds, is not part of it).
///
/// ```
/// use subscribe_gateway::hash_key;
/// let hash = hash_key("k7Hq2Zp9Lw4Xc8Vb1Nm6Rt3Yd5Gf0Sa2\n").unwrap();
/// assert_eq!(hash.len(), 64);
/// assert!(hash_key("too short").is_none());
/// ```
pub fn hash_key(key: &str) -> Option<String> {
    let key = key.strip_suffix('\n').map_or(key, |k| k.strip_suffix('\r').unwrap_or(k));
    (key.chars().count() >= MIN_KEY_CHARS).then(|| KeyHash::of(key.as_bytes()).to_hex())
}

/// One configured key: its name (for logs), its hash and what it may do per appid.
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) name: String,
    hash: KeyHash,
    scopes: HashMap<String, Vec<Scope>>,
    /// The key's own rate (`rate_per_second`, `burst`).
    pub(crate) limiter: KeyLimiter,
}

impl Key {
    /// Whether the key may do `scope` for the app named `appid` (any string from a path: one
    /// that names no app is refused like one the key has no scope for).
    pub(crate) fn allows(&self, appid: &str, scope: Scope) -> bool {
        self.scopes.get(appid).is_some_and(|s| s.contains(&scope))
    }
}

/// Every configured key.
#[derive(Debug)]
pub(crate) struct Keys(Vec<Key>);

impl Keys {
    pub(crate) fn new(config: &[KeyConfig]) -> Self {
        Self(
            config
                .iter()
                .map(|k| Key {
                    name: k.name.clone(),
                    hash: k.hash,
                    scopes: k.scopes.iter().map(|(a, s)| (a.as_str().to_owned(), s.clone())).collect(),
                    limiter: KeyLimiter::new(k.rate),
                })
                .collect(),
        )
    }

    /// The key presented in `headers` (`Authorization: Bearer <key>`), if it is one of ours.
    /// The presented key is hashed and compared with every configured hash in constant time,
    /// all of them, whichever matches; a missing, malformed or unknown key is `None` alike.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<&Key> {
        let presented = headers.get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, key) = presented.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.find(key.trim())
    }

    /// As [`authenticate`](Self::authenticate), and `Authorization: Basic` too, the key as its
    /// password (whatever the user name): a browser's own login prompt. For read-only pages
    /// only: a browser sends Basic credentials by itself with every request to the origin,
    /// which a cross-site form could ride on, so no route that changes anything takes them.
    pub(crate) fn authenticate_page(&self, headers: &HeaderMap) -> Option<&Key> {
        use base64::Engine;
        let presented = headers.get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, value) = presented.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return self.authenticate(headers);
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
        let decoded = zeroize::Zeroizing::new(String::from_utf8(decoded).ok()?);
        let (_, key) = decoded.split_once(':')?;
        self.find(key)
    }

    /// The configured key whose hash is `key`'s, compared with every hash in constant time.
    fn find(&self, key: &str) -> Option<&Key> {
        let hash = KeyHash::of(key.as_bytes());
        let mut found = None;
        for k in &self.0 {
            if bool::from(k.hash.0.ct_eq(&hash.0)) {
                found = Some(k);
            }
        }
        found
    }
}
