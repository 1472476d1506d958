//! Message text and link types: [`Title`], [`Content`], [`Color`], [`HttpUrl`], [`MiniProgram`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ValidationError, check_chars};
use crate::ids::AppId;
use crate::newtype::validated_str;

macro_rules! text {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, max = $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(Box<str>);

        impl $name {
            /// Largest accepted length, in characters (Unicode scalar values).
            pub const MAX_CHARS: usize = $max;

            /// Validates and wraps `value`.
            ///
            /// # Errors
            /// [`ValidationError`] naming
            #[doc = concat!("`", $field, "`")]
            /// when `value` is empty or longer than
            #[doc = concat!(stringify!($max), " characters.")]
            pub fn new(value: impl AsRef<str> + Into<String>) -> Result<Self, ValidationError> {
                Self::checked(value)
            }
        }

        validated_str!($name, |v| check_chars($field, v, $max));
    };
}

text!(
    /// A message title: 1..=15 characters, counted as Unicode scalar values (a CJK
    /// character counts one, like an ASCII letter).
    ///
    /// ```
    /// use subscribe_types::Title;
    /// assert!(Title::new("到货提醒：您关注的商品已到货啦").is_ok()); // 15 characters
    /// assert!(Title::new("到货提醒：您关注的商品已到货啦！").is_err()); // 16
    /// ```
    Title, field = "title", max = 15
);
text!(
    /// The message body (`data.content.value`): 1..=200 characters, newlines allowed.
    ///
    /// ```
    /// use subscribe_types::Content;
    /// assert!(Content::new("x".repeat(200)).is_ok());
    /// assert!(Content::new("x".repeat(201)).is_err());
    /// ```
    Content, field = "data.content.value", max = 200
);

/// A font colour for the whole content, `#RRGGBB` (hex digits of either case).
///
/// ```
/// use subscribe_types::Color;
/// assert_eq!(Color::new("#FF0000")?.as_str(), "#FF0000");
/// assert!(Color::new("red").is_err());
/// assert!(Color::new("#FF00").is_err());
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Color([u8; 7]);

impl Color {
    /// Validates `value` as `#RRGGBB`.
    ///
    /// # Errors
    /// [`ValidationError::InvalidFormat`] naming `data.content.color`.
    pub fn new(value: impl AsRef<str>) -> Result<Self, ValidationError> {
        let v = value.as_ref().as_bytes();
        match v {
            [b'#', rest @ ..] if rest.len() == 6 && rest.iter().all(u8::is_ascii_hexdigit) => {
                let mut out = [0u8; 7];
                out.copy_from_slice(v);
                Ok(Self(out))
            }
            _ => Err(ValidationError::InvalidFormat { field: "data.content.color", expected: "#RRGGBB" }),
        }
    }

    /// The colour as written, `#RRGGBB`.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("#000000")
    }
}

impl fmt::Debug for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Color({})", self.as_str())
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Color {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Color {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An absolute `http://` or `https://` URL with a host, at most 2048 bytes, no spaces or
/// control characters.
///
/// Used for the message's `url` and the authorization's `redirect_url`. It is checked for
/// shape only; WeChat additionally wants an ICP-filed domain (`url`) or the registered
/// business domain (`redirect_url`).
///
/// ```
/// use subscribe_types::HttpUrl;
/// assert!(HttpUrl::new("https://example.com/orders?id=1").is_ok());
/// assert!(HttpUrl::new("/relative").is_err());
/// assert!(HttpUrl::new("ftp://example.com").is_err());
/// assert!(HttpUrl::new("https:///no-host").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl(Box<str>);

impl HttpUrl {
    /// Largest accepted length in bytes.
    pub const MAX_LEN: usize = 2048;
    const EXPECTED: &'static str = "an absolute http(s) URL with a host";

    /// Validates `value`; errors name the field `url`.
    ///
    /// # Errors
    /// [`ValidationError`] when `value` is empty, too long, has a space or control character,
    /// or is not an absolute http(s) URL with a host.
    pub fn new(value: impl AsRef<str> + Into<String>) -> Result<Self, ValidationError> {
        Self::checked("url", value)
    }

    pub(crate) fn checked(
        field: &'static str,
        value: impl AsRef<str> + Into<String>,
    ) -> Result<Self, ValidationError> {
        let v = value.as_ref();
        if v.is_empty() {
            return Err(ValidationError::Empty { field });
        }
        if v.len() > Self::MAX_LEN {
            return Err(ValidationError::TooLong {
                field,
                max: Self::MAX_LEN,
                actual: v.len(),
                unit: "bytes",
            });
        }
        if let Some(pos) = v.chars().position(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::InvalidCharacter {
                field,
                position: pos,
                allowed: "no spaces or control characters",
            });
        }
        let rest = strip_prefix_ignore_case(v, "https://")
            .or_else(|| strip_prefix_ignore_case(v, "http://"))
            .ok_or(ValidationError::InvalidFormat { field, expected: Self::EXPECTED })?;
        if host_of(rest).is_empty() {
            return Err(ValidationError::InvalidFormat { field, expected: Self::EXPECTED });
        }
        Ok(Self(value.into().into_boxed_str()))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL's host, as written (an IPv6 address without its brackets): what a business
    /// domain is checked against.
    ///
    /// ```
    /// use subscribe_types::HttpUrl;
    /// assert_eq!(HttpUrl::new("https://user@shop.example.com:8443/cb?x=1").unwrap().host(), "shop.example.com");
    /// assert_eq!(HttpUrl::new("http://[::1]:8080/cb").unwrap().host(), "::1");
    /// ```
    pub fn host(&self) -> &str {
        let rest = self.0.find("://").map_or(&*self.0, |i| &self.0[i + 3..]);
        host_of(rest)
    }
}

/// The host of a URL after its `scheme://`: the authority without user info and port.
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    }
}

fn strip_prefix_ignore_case<'a>(v: &'a str, prefix: &str) -> Option<&'a str> {
    let head = v.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &v[prefix.len()..])
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HttpUrl").field(&&*self.0).finish()
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A mini program to open when the message is tapped: `{"appid", "pagepath"}`, both required.
///
/// The mini program must be published and bound to the sending official account. When a
/// message has both a `url` and a mini program, the mini program wins on clients that can
/// open it.
///
/// ```
/// use subscribe_types::MiniProgram;
/// let mp = MiniProgram::new("wx0123456789abcdef", "pages/index?foo=bar")?;
/// assert_eq!(
///     serde_json::to_string(&mp).unwrap(),
///     r#"{"appid":"wx0123456789abcdef","pagepath":"pages/index?foo=bar"}"#
/// );
/// assert_eq!(MiniProgram::new("wx0123456789abcdef", "").unwrap_err().field(), "miniprogram.pagepath");
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct MiniProgram {
    appid: AppId,
    pagepath: Box<str>,
}

impl MiniProgram {
    /// Largest accepted `pagepath`, in bytes.
    pub const MAX_PAGEPATH_LEN: usize = 1024;

    /// Validates both parts. Errors name `miniprogram.appid` or `miniprogram.pagepath`.
    ///
    /// # Errors
    /// [`ValidationError`] when the app id is not a valid [`AppId`], or the page path is empty,
    /// too long or has a space or control character.
    pub fn new(appid: impl AsRef<str>, pagepath: impl AsRef<str>) -> Result<Self, ValidationError> {
        let appid = AppId::new(appid.as_ref()).map_err(|e| e.in_field("miniprogram.appid"))?;
        let p = pagepath.as_ref();
        check_page("miniprogram.pagepath", p)?;
        Ok(Self { appid, pagepath: p.into() })
    }

    /// The mini program's AppID.
    pub fn appid(&self) -> &AppId {
        &self.appid
    }

    /// The page path, query included.
    pub fn pagepath(&self) -> &str {
        &self.pagepath
    }
}

/// A mini program page path with its query (`index?foo=bar`): 1 to
/// [`MiniProgram::MAX_PAGEPATH_LEN`] bytes, no spaces or control characters. Errors name `field`.
pub(crate) fn check_page(field: &'static str, page: &str) -> Result<(), ValidationError> {
    if page.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if page.len() > MiniProgram::MAX_PAGEPATH_LEN {
        return Err(ValidationError::TooLong {
            field,
            max: MiniProgram::MAX_PAGEPATH_LEN,
            actual: page.len(),
            unit: "bytes",
        });
    }
    match page.chars().position(|c| c.is_whitespace() || c.is_control()) {
        Some(position) => Err(ValidationError::InvalidCharacter {
            field,
            position,
            allowed: "no spaces or control characters",
        }),
        None => Ok(()),
    }
}

impl<'de> Deserialize<'de> for MiniProgram {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            appid: Option<String>,
            pagepath: Option<String>,
        }
        let raw = Raw::deserialize(d)?;
        let appid = raw.appid.ok_or_else(|| {
            serde::de::Error::custom(ValidationError::Missing { field: "miniprogram.appid" })
        })?;
        let pagepath = raw.pagepath.ok_or_else(|| {
            serde::de::Error::custom(ValidationError::Missing { field: "miniprogram.pagepath" })
        })?;
        Self::new(appid, pagepath).map_err(serde::de::Error::custom)
    }
}
