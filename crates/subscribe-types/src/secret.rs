//! [`AppSecret`] and [`AccessToken`]: values that must never be printed.
//!
//! Both wrap [`secrecy::SecretString`]: their `Debug` prints `[redacted]`, they implement
//! neither `Display` nor `Serialize`, and the memory is zeroed when they are dropped. Reading the
//! value takes an explicit [`expose_secret`](AppSecret::expose_secret) call, which makes every
//! place that handles the secret easy to find with a search.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::ValidationError;

/// Compares two strings in time that depends only on their lengths.
pub(crate) fn ct_eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A [`SecretString`] from `value`, leaving no copy behind: `SecretString::from` shrinks a
/// `String` with spare capacity to fit, and a shrinking reallocation may move the text and
/// free the old buffer as it is. Such a `String` is copied into one of the exact size
/// instead, and the original is zeroed (all of its capacity) as it is dropped.
///
/// ```
/// use subscribe_types::secrecy::ExposeSecret;
/// let mut token = String::with_capacity(64);
/// token.push_str("sandboxPushToken2026");
/// assert_eq!(subscribe_types::secret_string(token).expose_secret(), "sandboxPushToken2026");
/// ```
pub fn secret_string(value: String) -> SecretString {
    if value.capacity() == value.len() {
        return SecretString::from(value);
    }
    let value = Zeroizing::new(value);
    let mut exact = String::with_capacity(value.len());
    exact.push_str(&value);
    SecretString::from(exact)
}

fn check_secret(field: &'static str, v: &str, max: usize) -> Result<(), ValidationError> {
    if v.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if v.len() > max {
        return Err(ValidationError::TooLong { field, max, actual: v.len(), unit: "bytes" });
    }
    // Secrets travel in URLs and JSON; printable ASCII keeps them intact in both.
    crate::error::check_charset(field, v, "printable ASCII without spaces", |b| b.is_ascii_graphic())
}

/// An official account's or app's AppSecret.
///
/// ```
/// use subscribe_types::AppSecret;
/// let secret = AppSecret::new("0123456789abcdef0123456789abcdef")?;
/// assert_eq!(format!("{secret:?}"), "AppSecret([redacted])");
/// assert_eq!(secret.expose_secret(), "0123456789abcdef0123456789abcdef");
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone)]
pub struct AppSecret(SecretString);

impl AppSecret {
    /// Largest accepted length in bytes.
    pub const MAX_LEN: usize = 256;

    /// Wraps a secret: 1..=256 bytes of printable ASCII. The error never contains the value.
    ///
    /// # Errors
    /// [`ValidationError`] naming `secret`.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = secret_string(value.into());
        check_secret("secret", value.expose_secret(), Self::MAX_LEN)?;
        Ok(Self(value))
    }

    /// The secret itself. Every call site is a place where the secret leaves its box:
    /// do not log, format or store what this returns.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret([redacted])")
    }
}

/// An access token for the WeChat server API.
///
/// Equality is compared in constant time; it is what token stores use to invalidate only
/// the token that was rejected.
///
/// ```
/// use subscribe_types::AccessToken;
/// let token = AccessToken::new("ACCESS_TOKEN_VALUE")?;
/// assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
/// assert_eq!(token, AccessToken::new("ACCESS_TOKEN_VALUE")?);
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
///
/// Cloning is a reference count (every send holds the current token); the text is zeroed when
/// the last clone is dropped.
#[derive(Clone)]
pub struct AccessToken(Arc<SecretString>);

impl AccessToken {
    /// Largest accepted length in bytes (WeChat asks for at least 512 bytes of storage).
    pub const MAX_LEN: usize = 2048;

    /// Wraps a token: 1..=2048 bytes of printable ASCII. The error never contains the value.
    ///
    /// # Errors
    /// [`ValidationError`] naming `access_token`.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = secret_string(value.into());
        check_secret("access_token", value.expose_secret(), Self::MAX_LEN)?;
        Ok(Self(Arc::new(value)))
    }

    /// The token itself. Do not log, format or store what this returns.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one token share their text: equal without reading it (the pointer
        // comparison says nothing about the text's content).
        Arc::ptr_eq(&self.0, &other.0) || ct_eq_str(self.expose_secret(), other.expose_secret())
    }
}
impl Eq for AccessToken {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Does not compile if either goes back to a plain `String`.
    #[test]
    fn secrets_are_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>(_: &T) {}
        let secret = AppSecret::new("0123456789abcdef0123456789abcdef").unwrap();
        zeroed_on_drop(&secret.0);
        let token = AccessToken::new("ACCESS_TOKEN_VALUE").unwrap();
        zeroed_on_drop(&*token.0);
    }

    #[test]
    fn secret_string_keeps_the_text_whatever_the_capacity() {
        let mut spare = String::with_capacity(64);
        spare.push_str("s3cr3t");
        assert_eq!(secret_string(spare).expose_secret(), "s3cr3t");
        assert_eq!(secret_string("exact".to_owned()).expose_secret(), "exact");
        assert_eq!(secret_string(String::new()).expose_secret(), "");
    }
}
