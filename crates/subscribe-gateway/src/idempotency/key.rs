//! The `Idempotency-Key` header, and the hashes a record is found and checked by: its id (the
//! app, the API key's name and the header's value) and the request's fingerprint (method, path
//! and body).

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The header's name.
pub(crate) const HEADER: &str = "idempotency-key";

/// The longest `Idempotency-Key` accepted, in characters.
pub(crate) const MAX_LEN: usize = 255;

/// A valid `Idempotency-Key`: 1 to [`MAX_LEN`] visible ASCII characters (`!` to `~`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IdempotencyKey(String);

/// Why an `Idempotency-Key` header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRefusal {
    /// The header is given more than once.
    Repeated,
    /// Empty, too long, or a character outside `!`..=`~`.
    Malformed,
}

impl KeyRefusal {
    /// The rule, for the 400 answer.
    pub(crate) fn rule(self) -> &'static str {
        match self {
            Self::Repeated => "Idempotency-Key is given more than once; give it once",
            Self::Malformed => {
                "Idempotency-Key must be 1 to 255 visible ASCII characters (`!` to `~`, no spaces)"
            }
        }
    }
}

impl IdempotencyKey {
    /// The key in `headers`: `None` without one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, KeyRefusal> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(KeyRefusal::Repeated);
        }
        Self::new(value.as_bytes()).map(Some)
    }

    fn new(bytes: &[u8]) -> Result<Self, KeyRefusal> {
        let visible = bytes.iter().all(|b| (b'!'..=b'~').contains(b));
        if bytes.is_empty() || bytes.len() > MAX_LEN || !visible {
            return Err(KeyRefusal::Malformed);
        }
        // Visible ASCII is UTF-8.
        String::from_utf8(bytes.to_vec()).map(Self).map_err(|_| KeyRefusal::Malformed)
    }
}

/// SHA-256 of `parts`, each preceded by its length, as 64 lowercase hexadecimal characters:
/// no two lists of parts hash alike by moving a boundary.
fn hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// The record of `key` sent by the API key named `key_name` for `appid`: two apps, or two API
/// keys, never share a record.
pub(crate) fn record_id(appid: &str, key_name: &str, key: &IdempotencyKey) -> String {
    hash(&[b"subscribe-gateway idempotency v1", appid.as_bytes(), key_name.as_bytes(), key.0.as_bytes()])
}

/// The fingerprint of a request: its method, path and body.
pub(crate) fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    hash(&[method.as_bytes(), path.as_bytes(), body])
}

/// A random claim owner: 128 bits, hexadecimal.
pub(crate) fn new_owner() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn a_key_is_one_to_255_visible_ascii_characters_given_once() {
        assert_eq!(IdempotencyKey::from_headers(&HeaderMap::new()), Ok(None));
        let longest = "k".repeat(MAX_LEN);
        for ok in [b"a".as_slice(), b"order-42/ship#1~!", longest.as_bytes()] {
            assert!(IdempotencyKey::from_headers(&headers(&[ok])).unwrap().is_some());
        }
        let too_long = "k".repeat(MAX_LEN + 1);
        for bad in [b"".as_slice(), b"has space", b"tab\there", too_long.as_bytes(), "caf\u{e9}".as_bytes()] {
            assert_eq!(IdempotencyKey::from_headers(&headers(&[bad])), Err(KeyRefusal::Malformed), "{bad:?}");
        }
        assert_eq!(IdempotencyKey::from_headers(&headers(&[b"a", b"a"])), Err(KeyRefusal::Repeated));
    }

    #[test]
    fn records_are_apart_per_app_per_key_and_per_value() {
        let k = |v: &str| IdempotencyKey(v.to_owned());
        let base = record_id("wxa", "orders", &k("1"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, record_id("wxa", "orders", &k("1")));
        assert_ne!(base, record_id("wxb", "orders", &k("1")));
        assert_ne!(base, record_id("wxa", "shop", &k("1")));
        assert_ne!(base, record_id("wxa", "orders", &k("2")));
        // A boundary moved between parts is another record.
        assert_ne!(record_id("wxa", "b", &k("c")), record_id("wxab", "", &k("c")));
        assert_ne!(fingerprint("POST", "/a", b"{}"), fingerprint("POST", "/a", b"{ }"));
        assert_ne!(new_owner().unwrap(), new_owner().unwrap());
    }
}
