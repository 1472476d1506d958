//! Validated identifiers: [`AppId`], [`OpenId`], [`TemplateId`], [`Scene`], [`Reserved`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ValidationError, check_charset, check_identifier};
use crate::newtype::validated_str;

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, max = $max:literal, example = $ex:literal) => {
        $(#[$doc])*
        ///
        #[doc = concat!("Rule: 1..=", stringify!($max), " bytes of `[A-Za-z0-9_-]`. Serializes as a JSON string.")]
        ///
        /// ```
        #[doc = concat!("use subscribe_types::", stringify!($name), ";")]
        #[doc = concat!("let id = ", stringify!($name), "::new(\"", $ex, "\")?;")]
        #[doc = concat!("assert_eq!(id.as_str(), \"", $ex, "\");")]
        #[doc = concat!("assert!(", stringify!($name), "::new(\"\").is_err());")]
        #[doc = concat!("assert!(", stringify!($name), "::new(\"has space\").is_err());")]
        /// # Ok::<(), subscribe_types::ValidationError>(())
        /// ```
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// Largest accepted length in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps `value`.
            ///
            /// # Errors
            /// [`ValidationError`] naming
            #[doc = concat!("`", $field, "`")]
            /// when `value` is empty, too long or has a character outside `[A-Za-z0-9_-]`.
            pub fn new(value: impl AsRef<str> + Into<String>) -> Result<Self, ValidationError> {
                Self::checked(value)
            }
        }

        validated_str!($name, |v| check_identifier($field, v, $max));
    };
}

identifier!(
    /// An official account's or app's AppID (`wx` followed by 16 hex digits in practice).
    AppId, field = "appid", max = 64, example = "wxaba38c7f163da69b"
);
identifier!(
    /// A user's OpenID under one AppID: the recipient (`touser`) of a message.
    OpenId, field = "openid", max = 128, example = "oyAaTjt-xXvP87pubE4eUOF-ttD4"
);
identifier!(
    /// The account's one-time subscription template ID (from 接口权限 in the MP console).
    TemplateId, field = "template_id", max = 128, example = "7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM"
);

/// A subscription scene: an integer in `0..=10000` chosen by the developer.
///
/// One authorization allows one message per scene; repeated authorizations under the same
/// scene do not add up. Serializes as a JSON number; [`OneTimeMessage`](crate::OneTimeMessage)
/// writes it as a string, as the send API requires. Deserializes from a number or a numeric
/// string.
///
/// ```
/// use subscribe_types::Scene;
/// assert_eq!(Scene::new(10_000)?.get(), 10_000);
/// assert!(Scene::new(10_001).is_err());
/// assert_eq!("1000".parse::<Scene>()?, Scene::new(1000)?);
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scene(u16);

impl Scene {
    /// Largest scene WeChat accepts.
    pub const MAX: u16 = 10_000;
    /// Scene 0.
    pub const ZERO: Self = Self(0);

    /// Validates `value` against `0..=10000`.
    ///
    /// # Errors
    /// [`ValidationError::OutOfRange`] for `scene` when `value > 10000`.
    pub fn new(value: u32) -> Result<Self, ValidationError> {
        Self::from_i64(i64::from(value))
    }

    fn from_i64(value: i64) -> Result<Self, ValidationError> {
        match u16::try_from(value) {
            Ok(v) if v <= Self::MAX => Ok(Self(v)),
            _ => Err(ValidationError::OutOfRange {
                field: "scene",
                min: 0,
                max: i64::from(Self::MAX),
                actual: value,
            }),
        }
    }

    /// The scene value.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Serializes a scene as a JSON string (`"1000"`), the send API's form.
    ///
    /// # Errors
    /// Only those of the serializer.
    pub fn serialize_as_string<S: Serializer>(scene: &Scene, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&scene.0)
    }
}

impl fmt::Display for Scene {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for Scene {
    type Err = ValidationError;

    /// Parses plain ASCII decimal digits (no sign, no spaces, at most 10 of them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let not_a_number = ValidationError::NotANumber { field: "scene", len: s.len() };
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_number);
        }
        // Leading zeros are harmless; a huge run of digits is reported as out of range.
        let digits = s.trim_start_matches('0');
        if digits.len() > 10 {
            return Err(ValidationError::OutOfRange {
                field: "scene",
                min: 0,
                max: i64::from(Self::MAX),
                actual: i64::MAX,
            });
        }
        let value: i64 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| not_a_number)? };
        Self::from_i64(value)
    }
}

impl TryFrom<u32> for Scene {
    type Error = ValidationError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Scene> for u16 {
    fn from(s: Scene) -> u16 {
        s.0
    }
}

impl Serialize for Scene {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Scene {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scene;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scene: an integer 0..=10000 or a string of one")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scene, E> {
                Scene::from_i64(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scene, E> {
                Scene::from_i64(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scene, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `reserved` state value echoed back by WeChat: `[A-Za-z0-9]{0,128}`.
///
/// Use it as an anti-CSRF token (the client crate generates and verifies signed ones). Its
/// `Debug` shows only its length, as it may be a session-bound secret. Comparison with
/// [`Reserved::ct_eq`] takes the same time whatever the content.
///
/// ```
/// use subscribe_types::Reserved;
/// assert!(Reserved::new("a".repeat(128)).is_ok());
/// assert!(Reserved::new("a".repeat(129)).is_err());
/// assert!(Reserved::new("no-dashes").is_err());
/// assert!(Reserved::new("").is_ok());
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Default)]
pub struct Reserved(Box<str>);

impl Reserved {
    /// Largest accepted length in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `value` against `^[A-Za-z0-9]{0,128}$`.
    ///
    /// # Errors
    /// [`ValidationError`] naming `reserved` when too long or not alphanumeric ASCII.
    pub fn new(value: impl AsRef<str> + Into<String>) -> Result<Self, ValidationError> {
        let v = value.as_ref();
        if v.len() > Self::MAX_LEN {
            return Err(ValidationError::TooLong {
                field: "reserved",
                max: Self::MAX_LEN,
                actual: v.len(),
                unit: "bytes",
            });
        }
        check_charset("reserved", v, "A-Z a-z 0-9", |b| b.is_ascii_alphanumeric())?;
        Ok(Self(value.into().into_boxed_str()))
    }

    /// The value as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (no state was sent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in time that depends only on the lengths, never on where the values differ.
    pub fn ct_eq(&self, other: &Reserved) -> bool {
        crate::secret::ct_eq_str(&self.0, &other.0)
    }
}

impl fmt::Debug for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reserved({} bytes)", self.0.len())
    }
}

impl PartialEq for Reserved {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}
impl Eq for Reserved {}

impl std::str::FromStr for Reserved {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Reserved {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Reserved {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Self::new(s).map_err(serde::de::Error::custom)
    }
}
