//! Signed `reserved` states: CSRF protection without server-side storage.
//!
//! Layout (59 characters of `[0-9a-f]`): `1` (version), the expiry as 10 decimal digits of Unix
//! seconds, a 16-hex-digit random nonce, and the first 16 bytes of an HMAC-SHA256 (32 hex
//! digits) over the version, app id, template id, scene, expiry, nonce and an optional session
//! id. A tampered, expired or foreign state fails; template and scene are bound too.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subscribe_types::{AppId, AppSecret, Reserved, Scene, TemplateId};

use crate::error::AuthorizationError;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "1";
const LEN: usize = 1 + 10 + 16 + 32;

/// The key that signs states. Debug is redacted.
#[derive(Clone)]
pub(crate) struct StateKey([u8; 32]);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey([redacted])")
    }
}

impl StateKey {
    /// A key from caller-provided bytes (at least 32), compressed to 32 through HMAC.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        Self::derive(bytes, b"wxsub state key v1 / explicit")
    }

    /// A key derived from the AppSecret: every instance with the same secret agrees on it.
    pub(crate) fn from_secret(secret: &AppSecret) -> Self {
        Self::derive(secret.expose_secret().as_bytes(), b"wxsub state key v1 / from app secret")
    }

    fn derive(ikm: &[u8], label: &[u8]) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(ikm).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(label);
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(
        &self,
        appid: &AppId,
        template: &TemplateId,
        scene: Scene,
        rest: &str,
        session: &str,
    ) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for part in [VERSION, appid.as_str(), template.as_str(), &scene.get().to_string(), rest, session] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac
    }

    pub(crate) fn sign(
        &self,
        appid: &AppId,
        template: &TemplateId,
        scene: Scene,
        expires: SystemTime,
        session: &str,
    ) -> Reserved {
        let mut nonce = [0u8; 8];
        // The nonce only makes two states differ; integrity comes from the MAC. Should the OS
        // RNG fail, a zero nonce keeps the state valid and unforgeable.
        let _ = getrandom::fill(&mut nonce);
        let secs = expires.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().min(9_999_999_999);
        let mut rest = format!("{secs:010}");
        hex(&mut rest, &nonce);
        let tag = self.mac(appid, template, scene, &rest, session).finalize().into_bytes();
        let mut out = String::with_capacity(LEN);
        out.push_str(VERSION);
        out.push_str(&rest);
        hex(&mut out, &tag[..16]);
        Reserved::new(out).unwrap_or_else(|_| unreachable!("hex digits only"))
    }

    pub(crate) fn verify(
        &self,
        appid: &AppId,
        template: &TemplateId,
        scene: Scene,
        state: &Reserved,
        session: &str,
        now: SystemTime,
    ) -> Result<(), AuthorizationError> {
        let s = state.as_str();
        if s.is_empty() {
            return Err(AuthorizationError::MissingState);
        }
        if s.len() != LEN || !s.starts_with(VERSION) {
            return Err(AuthorizationError::ForgedState);
        }
        let (rest, tag_hex) = s[1..].split_at(26);
        let tag = unhex(tag_hex).ok_or(AuthorizationError::ForgedState)?;
        // Constant-time comparison of the truncated tag.
        self.mac(appid, template, scene, rest, session)
            .verify_truncated_left(&tag)
            .map_err(|_| AuthorizationError::ForgedState)?;
        let secs: u64 = rest[..10].parse().map_err(|_| AuthorizationError::ForgedState)?;
        let expires = UNIX_EPOCH + Duration::from_secs(secs);
        match now.duration_since(expires) {
            Ok(ago) if !ago.is_zero() => Err(AuthorizationError::ExpiredState { ago }),
            _ => Ok(()),
        }
    }
}

fn hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (AppId, TemplateId, Scene) {
        (AppId::new("wx1").unwrap(), TemplateId::new("tpl").unwrap(), Scene::new(7).unwrap())
    }

    #[test]
    fn round_trip_and_every_binding() {
        let key = StateKey::from_bytes(&[7; 32]);
        let (app, tpl, scene) = ids();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let state = key.sign(&app, &tpl, scene, t0 + Duration::from_secs(600), "sess");
        assert_eq!(state.as_str().len(), LEN);
        key.verify(&app, &tpl, scene, &state, "sess", t0).unwrap();
        let other = |r: Result<(), AuthorizationError>| matches!(r, Err(AuthorizationError::ForgedState));
        assert!(other(key.verify(&AppId::new("wx2").unwrap(), &tpl, scene, &state, "sess", t0)));
        assert!(other(key.verify(&app, &TemplateId::new("tp2").unwrap(), scene, &state, "sess", t0)));
        assert!(other(key.verify(&app, &tpl, Scene::new(8).unwrap(), &state, "sess", t0)));
        assert!(other(key.verify(&app, &tpl, scene, &state, "other", t0)));
        assert!(other(StateKey::from_bytes(&[8; 32]).verify(&app, &tpl, scene, &state, "sess", t0)));
        assert!(matches!(
            key.verify(&app, &tpl, scene, &state, "sess", t0 + Duration::from_secs(601)),
            Err(AuthorizationError::ExpiredState { .. })
        ));
    }
}
