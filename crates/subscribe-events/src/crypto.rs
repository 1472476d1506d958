//! Signatures and the safe mode's encryption, as WeChat's message-encryption documentation
//! describes them, with the `RustCrypto` crates (`sha1`, `aes`, `cbc`) and `base64`.

use std::sync::Arc;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secrecy::{ExposeSecret, SecretBox};
use sha1::{Digest, Sha1};
use subtle::{Choice, ConstantTimeEq, ConstantTimeGreater as _};
use zeroize::Zeroizing;

use crate::{OpenFailure, PushError};

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
///
/// The key lives in a [`SecretBox`] (its own allocation: moving or cloning the key copies only
/// a pointer, a clone is a reference count) and is zeroed when the last clone is dropped; the
/// ciphers built from it for each push zero their key schedules too (`aes` and `cbc` with
/// their `zeroize` feature).
#[derive(Clone)]
pub struct EncodingAesKey(Arc<SecretBox<[u8; 32]>>);

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
        // 43 characters decode to 32 bytes, but the decoder asks for room for 33: a buffer
        // on the stack, zeroed when it goes, rather than a `Vec` freed as it is.
        let mut bytes = Zeroizing::new([0u8; 33]);
        let len = KEY_ENGINE.decode_slice(key, &mut bytes[..]).map_err(|_| PushError::BadKey)?;
        if len != 32 {
            return Err(PushError::BadKey);
        }
        Ok(Self(Arc::new(SecretBox::init_with_mut(|k: &mut [u8; 32]| k.copy_from_slice(&bytes[..32])))))
    }

    /// The key, for the ciphers: the key and its first 16 bytes as the IV, as WeChat does.
    fn key_and_iv(&self) -> (&[u8; 32], &[u8]) {
        let key = self.0.expose_secret();
        (key, &key[..16])
    }

    /// Decrypts an `Encrypt` value: the message, if the plaintext's appid is `appid`.
    ///
    /// # Errors
    /// [`PushError::Unopened`], whatever went wrong (see [`OpenFailure`] for what each detail
    /// means); its text and status are the same for every one.
    pub fn decrypt(&self, encrypt: &str, appid: &str) -> Result<String, PushError> {
        self.open(encrypt, appid).map_err(PushError::Unopened)
    }

    fn open(&self, encrypt: &str, appid: &str) -> Result<String, OpenFailure> {
        let mut data = base64::engine::general_purpose::STANDARD
            .decode(encrypt.trim())
            .map_err(|_| OpenFailure::NotBase64)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(OpenFailure::NotWholeBlocks);
        }
        let (key, iv) = self.key_and_iv();
        let decryptor = cbc::Decryptor::<aes::Aes256>::new(key.into(), iv.into());
        let plain = decryptor
            .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut data)
            .map_err(|_| OpenFailure::NotWholeBlocks)?;
        let plain = &plain[..plain.len() - padding(plain).ok_or(OpenFailure::BadPadding)?];
        let rest = plain.get(16..).ok_or(OpenFailure::TooShort)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(OpenFailure::TooShort)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| OpenFailure::LengthPastEnd)?;
        if len > rest.len() {
            return Err(OpenFailure::LengthPastEnd);
        }
        let (message, from_appid) = rest.split_at(len);
        if from_appid.ct_eq(appid.as_bytes()).unwrap_u8() == 0 {
            return Err(OpenFailure::WrongAppId);
        }
        String::from_utf8(message.to_vec()).map_err(|_| OpenFailure::NotUtf8)
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
        let (key, iv) = self.key_and_iv();
        let encryptor = cbc::Encryptor::<aes::Aes256>::new(key.into(), iv.into());
        let sealed = encryptor
            .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut plain, n)
            .expect("whole blocks after padding");
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }
}

/// The length of the PKCS#7 padding (to 32-byte blocks) that ends `plain`: the last byte says
/// how many bytes, each of that value, 1 to 32. Each of the last 32 bytes is looked at whatever
/// the padding is, and no comparison returns early, so the time taken does not tell one bad
/// padding from another, nor from a good one.
fn padding(plain: &[u8]) -> Option<usize> {
    let pad = *plain.last()?;
    let mut good = !pad.ct_eq(&0)
        & !pad.ct_gt(&32)
        & !u64::from(pad).ct_gt(&u64::try_from(plain.len()).unwrap_or(u64::MAX));
    for (i, b) in plain.iter().rev().take(32).enumerate() {
        // Within the padding (i < pad), each byte must be `pad`.
        let inside = u8::try_from(i).map_or(Choice::from(0), |i| pad.ct_gt(&i));
        good &= !inside | b.ct_eq(&pad);
    }
    bool::from(good).then_some(usize::from(pad))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::{EncodingAesKey, padding};

    /// Does not compile if the key goes back to a plain array, or the ciphers lose their
    /// `zeroize` feature.
    #[test]
    fn the_key_and_the_ciphers_are_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        fn boxed(key: &EncodingAesKey) -> &secrecy::SecretBox<[u8; 32]> {
            &key.0
        }
        zeroed_on_drop::<secrecy::SecretBox<[u8; 32]>>();
        zeroed_on_drop::<cbc::Decryptor<aes::Aes256>>();
        zeroed_on_drop::<cbc::Encryptor<aes::Aes256>>();
        let key = EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        assert_eq!(boxed(&key).expose_secret().len(), 32);
        assert_eq!(format!("{key:?}"), "EncodingAesKey([redacted])");
        assert!(EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF").is_err(), "42 characters");
        assert!(EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!").is_err(), "not base64");
    }

    #[test]
    fn padding_is_one_to_thirty_two_bytes_of_its_own_length() {
        let mut block = vec![0xAA; 64];
        block[63] = 1;
        assert_eq!(padding(&block), Some(1));
        block[32..].fill(32);
        assert_eq!(padding(&block), Some(32));
        block[40] = 31;
        assert_eq!(padding(&block), None, "a byte inside the padding differs");
        block[32..].fill(33);
        assert_eq!(padding(&block), None, "over 32");
        block[63] = 0;
        assert_eq!(padding(&block), None, "zero");
        assert_eq!(padding(&[2]), None, "longer than the text");
        assert_eq!(padding(&[1]), Some(1));
        assert_eq!(padding(&[]), None);
    }
}
