//! Signed `reserved` states: CSRF protection without server-side storage.
//!
//! Layout (59 characters of `[0-9a-f]`): `1` (version), the expiry as 10 decimal digits of Unix
//! seconds, a 16-hex-digit random nonce, and the first 16 bytes of an HMAC-SHA256 (32 hex
//! digits) over the version, app id, template id, scene, expiry, nonce and the user's session id
//! (every state is bound to one). A tampered, expired or foreign state fails; template and scene are bound too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::digest::FixedOutput as _;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subscribe_types::secrecy::{ExposeSecret, SecretBox};
use subscribe_types::{AppId, AppSecret, Reserved, Scene, TemplateId, ValidationError};

use crate::error::AuthorizationError;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "1";
const LEN: usize = 1 + 10 + 16 + 32;

/// The user's session on your server, that each signed state is bound to
/// ([`Client::authorize_url`](crate::Client::authorize_url),
/// [`Client::mobile_request`](crate::Client::mobile_request)) and that its answer must be
/// completed in ([`Client::complete`](crate::Client::complete)): take it from the session your
/// login cookie (or a mobile app's session) names, never from the answer's own parameters or
/// body. Use a stable session id (a `sid` claim, say), not a bearer token that rotates: a token
/// that changed within the state's lifetime makes a genuine answer fail as
/// [`ForgedState`](crate::AuthorizationError::ForgedState).
///
/// A session id is a credential (whoever holds it is the user), so `Debug` never shows it and
/// there is no `Display`. It must not be empty: a state bound to the empty session verifies in
/// every request that has none, which is no binding at all.
///
/// ```
/// use subscribe_client::Session;
///
/// let session = Session::new("3f9c1e…the id your session layer issued")?;
/// assert_eq!(format!("{session:?}"), "Session([redacted])");
/// assert_eq!(Session::new("").unwrap_err().field(), "session");
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
///
/// The id is kept in a `SecretString`, zeroed when the value is dropped.
#[derive(Clone)]
pub struct Session(subscribe_types::secrecy::SecretString);

impl Session {
    /// Longest session id accepted, in bytes (a cookie's value cannot be longer).
    pub const MAX_LEN: usize = 4096;

    /// The session `id`.
    ///
    /// # Errors
    /// [`ValidationError`] (field `session`) when `id` is empty or longer than
    /// [`MAX_LEN`](Self::MAX_LEN) bytes.
    pub fn new(id: impl AsRef<str> + Into<String>) -> Result<Self, ValidationError> {
        let len = id.as_ref().len();
        if len == 0 {
            return Err(ValidationError::Empty { field: "session" });
        }
        if len > Self::MAX_LEN {
            return Err(ValidationError::TooLong {
                field: "session",
                max: Self::MAX_LEN,
                actual: len,
                unit: "bytes",
            });
        }
        Ok(Self(subscribe_types::secret_string(id.into())))
    }

    /// The id, for signing and verifying only.
    pub(crate) fn id(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session([redacted])")
    }
}

impl TryFrom<String> for Session {
    type Error = ValidationError;
    fn try_from(id: String) -> Result<Self, ValidationError> {
        Self::new(id)
    }
}

impl TryFrom<&str> for Session {
    type Error = ValidationError;
    fn try_from(id: &str) -> Result<Self, ValidationError> {
        Self::new(id)
    }
}

/// The key that signs states: 32 bytes in a [`SecretBox`], zeroed when the last clone is
/// dropped (a clone is a reference count). Debug is redacted.
///
/// Each state keys a fresh HMAC (two SHA-256 blocks more than cloning a keyed one): a keyed
/// HMAC kept for the process's life would hold the key's pads, as good as the key for forging
/// a state, in memory `hmac` 0.12 never zeroes.
#[derive(Clone)]
pub(crate) struct StateKey(Arc<SecretBox<[u8; 32]>>);

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
        let key = SecretBox::init_with_mut(|key: &mut [u8; 32]| {
            mac.finalize_into(GenericArray::from_mut_slice(key));
        });
        Self(Arc::new(key))
    }

    fn mac(
        &self,
        appid: &AppId,
        template: &TemplateId,
        scene: Scene,
        rest: &[u8],
        session: &str,
    ) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        let scene = scene.get().to_string();
        for part in [
            VERSION.as_bytes(),
            appid.as_str().as_bytes(),
            template.as_str().as_bytes(),
            scene.as_bytes(),
            rest,
            session.as_bytes(),
        ] {
            mac.update(part);
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
        use std::fmt::Write as _;
        let secs = expires.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().min(9_999_999_999);
        // The version, the expiry as 10 decimal digits, the nonce as 16 hex digits, then the
        // tag over what precedes it (but the version) as 32 hex digits: one string, one
        // allocation.
        let mut text = String::with_capacity(LEN);
        text.push_str(VERSION);
        let _ = write!(text, "{secs:010}");
        let mut hex = [0u8; 32];
        push_hex(&mut text, &nonce(), &mut hex);
        let tag = self.mac(appid, template, scene, &text.as_bytes()[1..], session).finalize().into_bytes();
        push_hex(&mut text, &tag[..16], &mut hex);
        debug_assert_eq!(text.len(), LEN);
        Reserved::new(text).unwrap_or_else(|_| unreachable!("digits and hex only"))
    }

    pub(crate) fn verify(
        &self,
        appid: &AppId,
        template: &TemplateId,
        scene: Scene,
        state: &Reserved,
        session: &str,
        now: SystemTime,
    ) -> Result<SystemTime, AuthorizationError> {
        let s = state.as_str();
        if s.is_empty() {
            return Err(AuthorizationError::MissingState);
        }
        if s.len() != LEN || !s.starts_with(VERSION) {
            return Err(AuthorizationError::ForgedState);
        }
        let (rest, tag_hex) = s[1..].split_at(26);
        // Lower-case hex only: the one spelling `sign` writes.
        if !tag_hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(AuthorizationError::ForgedState);
        }
        let mut tag = [0u8; 16];
        hex::decode_to_slice(tag_hex, &mut tag).map_err(|_| AuthorizationError::ForgedState)?;
        // Constant-time comparison of the truncated tag.
        self.mac(appid, template, scene, rest.as_bytes(), session)
            .verify_truncated_left(&tag)
            .map_err(|_| AuthorizationError::ForgedState)?;
        let secs: u64 = rest[..10].parse().map_err(|_| AuthorizationError::ForgedState)?;
        let expires = UNIX_EPOCH + Duration::from_secs(secs);
        match now.duration_since(expires) {
            Ok(ago) if !ago.is_zero() => Err(AuthorizationError::ExpiredState { ago }),
            _ => Ok(expires),
        }
    }
}

/// The key ring: states are signed with the current key and verified against it and the
/// previous ones, so a key rotation (or a rolling deploy with two keys live) loses none of the
/// confirmations signed before it.
#[derive(Clone, Debug)]
pub(crate) struct StateKeys {
    pub(crate) current: StateKey,
    pub(crate) previous: Vec<StateKey>,
}

impl StateKeys {
    pub(crate) fn sign(
        &self,
        appid: &AppId,
        template: &TemplateId,
        scene: Scene,
        expires: SystemTime,
        session: &str,
    ) -> Reserved {
        self.current.sign(appid, template, scene, expires, session)
    }

    /// Verifies with the current key, then each previous one: a state is forged only when no key
    /// of the ring made it. Expiry and the rest are judged by the key that made it. Returns the
    /// state's expiry.
    pub(crate) fn verify(
        &self,
        appid: &AppId,
        template: &TemplateId,
        scene: Scene,
        state: &Reserved,
        session: &str,
        now: SystemTime,
    ) -> Result<SystemTime, AuthorizationError> {
        for key in std::iter::once(&self.current).chain(&self.previous) {
            match key.verify(appid, template, scene, state, session, now) {
                Err(AuthorizationError::ForgedState) => {}
                other => return other,
            }
        }
        Err(AuthorizationError::ForgedState)
    }
}

/// Eight bytes that differ for every state this process signs: `SplitMix64` from one random
/// seed per process (its state advances by an odd constant and its output function is a
/// bijection, so no two calls collide within 2^64). The nonce only makes states differ
/// (integrity comes from the MAC), so one call to the OS's RNG per process is enough; should it
/// fail, the sequence from a zero seed still keeps this process's states apart.
fn nonce() -> [u8; 8] {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        AtomicU64::new(u64::from_le_bytes(seed))
    });
    splitmix(state).to_be_bytes()
}

/// Appends `bytes` (at most 16) as lower-case hex, through `buf`.
fn push_hex(out: &mut String, bytes: &[u8], buf: &mut [u8; 32]) {
    let hex = &mut buf[..bytes.len() * 2];
    if hex::encode_to_slice(bytes, hex).is_ok() {
        out.push_str(std::str::from_utf8(hex).unwrap_or_else(|_| unreachable!("hex digits only")));
    }
}

/// The next `SplitMix64` output of `state` (shared by the nonces and the client's retry jitter).
pub(crate) fn splitmix(state: &AtomicU64) -> u64 {
    let mut z = state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (AppId, TemplateId, Scene) {
        (AppId::new("wx1").unwrap(), TemplateId::new("tpl").unwrap(), Scene::new(7).unwrap())
    }

    /// Does not compile if the key goes back to a keyed HMAC or a plain array.
    #[test]
    fn the_state_key_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let key = StateKey::from_bytes(&[7; 32]);
        let boxed: &SecretBox<[u8; 32]> = &key.0;
        zeroed_on_drop(boxed);
        assert_ne!(boxed.expose_secret(), &[7; 32], "derived, not the bytes given");
        assert_eq!(format!("{key:?}"), "StateKey([redacted])");
    }

    #[test]
    fn nonces_differ() {
        let nonces: std::collections::HashSet<[u8; 8]> = (0..10_000).map(|_| nonce()).collect();
        assert_eq!(nonces.len(), 10_000);
    }

    #[test]
    fn a_tag_in_upper_case_hex_is_not_ours() {
        let key = StateKey::from_bytes(&[7; 32]);
        let (app, tpl, scene) = ids();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let state = key.sign(&app, &tpl, scene, t0 + Duration::from_secs(600), "");
        let upper = format!("{}{}", &state.as_str()[..27], state.as_str()[27..].to_ascii_uppercase());
        assert_ne!(upper, state.as_str(), "the tag has letters");
        let upper = Reserved::new(upper).unwrap();
        assert!(matches!(
            key.verify(&app, &tpl, scene, &upper, "", t0),
            Err(AuthorizationError::ForgedState)
        ));
    }

    #[test]
    fn signature_is_stable_across_versions() {
        // A state signed before the keyed MAC was cached must still verify: the same bytes go
        // into the same HMAC. Recompute the tag by hand for a fixed state.
        let key = StateKey::from_bytes(&[7; 32]);
        let (app, tpl, scene) = ids();
        let rest = "1700000600".to_owned() + "0123456789abcdef";
        let mut raw = HmacSha256::new_from_slice(&[7; 32]).unwrap();
        raw.update(b"wxsub state key v1 / explicit");
        let k: [u8; 32] = raw.finalize().into_bytes().into();
        let mut mac = HmacSha256::new_from_slice(&k).unwrap();
        for part in ["1", "wx1", "tpl", "7", &rest, "sess"] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        let tag = mac.finalize().into_bytes();
        let state = Reserved::new(format!("1{rest}{}", hex::encode(&tag[..16]))).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        key.verify(&app, &tpl, scene, &state, "sess", t0).unwrap();
    }

    #[test]
    fn the_ring_verifies_states_of_its_previous_keys_and_nothing_else() {
        let (app, tpl, scene) = ids();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (old, new, other) =
            (StateKey::from_bytes(&[1; 32]), StateKey::from_bytes(&[2; 32]), StateKey::from_bytes(&[3; 32]));
        let ring = StateKeys { current: new.clone(), previous: vec![old.clone()] };
        let by_old = old.sign(&app, &tpl, scene, t0 + Duration::from_secs(600), "");
        let by_new = ring.sign(&app, &tpl, scene, t0 + Duration::from_secs(600), "");
        ring.verify(&app, &tpl, scene, &by_old, "", t0).unwrap();
        ring.verify(&app, &tpl, scene, &by_new, "", t0).unwrap();
        new.verify(&app, &tpl, scene, &by_new, "", t0).unwrap();
        let by_other = other.sign(&app, &tpl, scene, t0 + Duration::from_secs(600), "");
        assert!(matches!(
            ring.verify(&app, &tpl, scene, &by_other, "", t0),
            Err(AuthorizationError::ForgedState)
        ));
        assert!(
            matches!(
                ring.verify(&app, &tpl, scene, &by_old, "", t0 + Duration::from_secs(601)),
                Err(AuthorizationError::ExpiredState { .. })
            ),
            "an old key's state expires like any other"
        );
    }

    #[test]
    fn round_trip_and_every_binding() {
        let key = StateKey::from_bytes(&[7; 32]);
        let (app, tpl, scene) = ids();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let state = key.sign(&app, &tpl, scene, t0 + Duration::from_secs(600), "sess");
        assert_eq!(state.as_str().len(), LEN);
        key.verify(&app, &tpl, scene, &state, "sess", t0).unwrap();
        let other =
            |r: Result<SystemTime, AuthorizationError>| matches!(r, Err(AuthorizationError::ForgedState));
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
