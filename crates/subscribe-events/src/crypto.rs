//! Signatures and the safe mode's encryption, as WeChat's message-encryption documentation
//! describes them, with the `RustCrypto` crates (`sha1`, `aes`, `cbc`) and `base64`.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::PushError;

/// `sha1` of the parts sorted and joined, in lower-case hex: `signature` over `[token,
/// timestamp, nonce]`, `msg_signature` over `[token, timestamp, nonce, Encrypt]`.
///
/// ```
/// assert_eq!(
///     subscribe_events::signature(&["token", "1800000000", "nonce"]),
///     subscribe_events::signature(&["nonce", "token", "1800000000"]),
/// );
/// ```
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let mut h = Sha1::new();
    for p in sorted {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Whether `presented` is `expected`, compared in constant time (hex case ignored).
pub(crate) fn same_signature(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.to_ascii_lowercase().as_bytes()).into()
}

/// WeChat's keys are 43 base64 characters whose last one carries 2 bits past the 32 bytes;
/// WeChat's own code ignores them, so must we.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An `EncodingAESKey`: 43 characters of base64, 32 bytes of AES-256 key. Never printed.
#[derive(Clone)]
pub struct EncodingAesKey([u8; 32]);

impl std::fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodingAesKey([redacted])")
    }
}

impl EncodingAesKey {
    /// Reads the key as the account's console shows it.
    ///
    /// # Errors
    /// [`PushError::BadKey`] when it is not 43 base64 characters.
    pub fn new(key: &str) -> Result<Self, PushError> {
        if key.len() != 43 {
            return Err(PushError::BadKey);
        }
        let bytes = KEY_ENGINE.decode(key).map_err(|_| PushError::BadKey)?;
        Ok(Self(bytes.try_into().map_err(|_| PushError::BadKey)?))
    }

    /// Decrypts an `Encrypt` value: the message, if the plaintext's appid is `appid`.
    ///
    /// # Errors
    /// [`PushError::Undecryptable`] (not base64, not whole blocks, bad padding, a length past
    /// the end) or [`PushError::WrongAppId`].
    pub fn decrypt(&self, encrypt: &str, appid: &str) -> Result<String, PushError> {
        let mut data = base64::engine::general_purpose::STANDARD
            .decode(encrypt.trim())
            .map_err(|_| PushError::Undecryptable("not base64"))?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(PushError::Undecryptable("not whole AES blocks"));
        }
        let decryptor = cbc::Decryptor::<aes::Aes256>::new((&self.0).into(), self.0[..16].into());
        let plain = decryptor
            .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut data)
            .map_err(|_| PushError::Undecryptable("not whole AES blocks"))?;
        // PKCS#7 to 32-byte blocks: the last byte says how many, each that value.
        let pad = usize::from(*plain.last().ok_or(PushError::Undecryptable("empty"))?);
        if pad == 0
            || pad > 32
            || pad > plain.len()
            || !plain[plain.len() - pad..].iter().all(|b| usize::from(*b) == pad)
        {
            return Err(PushError::Undecryptable("bad padding"));
        }
        let plain = &plain[..plain.len() - pad];
        let rest = plain.get(16..).ok_or(PushError::Undecryptable("too short"))?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(PushError::Undecryptable("too short"))?;
        let len =
            usize::try_from(u32::from_be_bytes(*len)).map_err(|_| PushError::Undecryptable("bad length"))?;
        if len > rest.len() {
            return Err(PushError::Undecryptable("the length runs past the end"));
        }
        let (message, from_appid) = rest.split_at(len);
        if from_appid.ct_eq(appid.as_bytes()).unwrap_u8() == 0 {
            return Err(PushError::WrongAppId);
        }
        String::from_utf8(message.to_vec()).map_err(|_| PushError::Undecryptable("not UTF-8"))
    }

    /// Encrypts a reply for `appid` with the 16 `random` bytes WeChat's scheme prefixes.
    ///
    /// # Panics
    /// Never: the plaintext is padded to whole blocks first.
    pub fn encrypt(&self, message: &str, appid: &str, random: [u8; 16]) -> String {
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        let mut plain = Vec::with_capacity(message.len() + appid.len() + 52);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(message.as_bytes());
        plain.extend_from_slice(appid.as_bytes());
        let pad = 32 - plain.len() % 32;
        plain.extend(std::iter::repeat_n(u8::try_from(pad).unwrap_or(32), pad));
        let n = plain.len();
        let encryptor = cbc::Encryptor::<aes::Aes256>::new((&self.0).into(), self.0[..16].into());
        let sealed = encryptor
            .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut plain, n)
            .expect("whole blocks after padding");
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }
}
