//! [`ValidationError`]: why a value could not be built.

/// A value was rejected when it was built.
///
/// Every variant names the field with its wire name (`title`, `data.content.value`,
/// `miniprogram.appid`, …) and the rule that failed, with sizes where a size is at fault. The
/// offending value itself is never stored, so formatting this error cannot leak a secret.
///
/// ```
/// use subscribe_types::{Title, ValidationError};
///
/// let err = Title::new("a title that is far too long").unwrap_err();
/// assert_eq!(err.field(), "title");
/// assert!(matches!(err, ValidationError::TooLong { max: 15, actual: 28, .. }));
/// assert_eq!(err.to_string(), "`title` is 28 characters long; at most 15 are allowed");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A required field is absent.
    #[error("`{field}` is required")]
    Missing {
        /// Wire name of the field.
        field: &'static str,
    },
    /// A field that must hold something is empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// Wire name of the field.
        field: &'static str,
    },
    /// A field is longer than its limit. Lengths are counted in the unit of the rule:
    /// characters (Unicode scalar values) for text, bytes for identifiers.
    #[error("`{field}` is {actual} {unit} long; at most {max} are allowed")]
    TooLong {
        /// Wire name of the field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// The length that was given.
        actual: usize,
        /// `characters` or `bytes`.
        unit: &'static str,
    },
    /// A field holds a character outside its allowed set.
    #[error("`{field}` has a character not allowed at position {position}; allowed: {allowed}")]
    InvalidCharacter {
        /// Wire name of the field.
        field: &'static str,
        /// Zero-based character position of the first offending character.
        position: usize,
        /// The allowed set, in words.
        allowed: &'static str,
    },
    /// A number is outside its range.
    #[error("`{field}` is {actual}; it must be between {min} and {max}")]
    OutOfRange {
        /// Wire name of the field.
        field: &'static str,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
        /// The value that was given.
        actual: i64,
    },
    /// A field that must be a number is not one.
    #[error("`{field}` must be a decimal integer ({len} bytes given)")]
    NotANumber {
        /// Wire name of the field.
        field: &'static str,
        /// Length of what was given, in bytes.
        len: usize,
    },
    /// A field does not have the required shape.
    #[error("`{field}` must be {expected}")]
    InvalidFormat {
        /// Wire name of the field.
        field: &'static str,
        /// The required shape, in words (`#RRGGBB`, `an absolute http(s) URL`, …).
        expected: &'static str,
    },
}

impl ValidationError {
    /// The wire name of the field that was rejected.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Missing { field }
            | Self::Empty { field }
            | Self::TooLong { field, .. }
            | Self::InvalidCharacter { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::NotANumber { field, .. }
            | Self::InvalidFormat { field, .. } => field,
        }
    }

    /// The same error reported under another field name, for values nested in a larger body
    /// (an [`OpenId`](crate::OpenId) used as `touser`, an [`AppId`](crate::AppId) used as
    /// `miniprogram.appid`).
    #[must_use]
    pub fn in_field(mut self, name: &'static str) -> Self {
        match &mut self {
            Self::Missing { field }
            | Self::Empty { field }
            | Self::TooLong { field, .. }
            | Self::InvalidCharacter { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::NotANumber { field, .. }
            | Self::InvalidFormat { field, .. } => *field = name,
        }
        self
    }
}

/// Checks that `value` is 1..=`max` bytes of `[A-Za-z0-9_-]`.
pub(crate) fn check_identifier(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > max {
        return Err(ValidationError::TooLong { field, max, actual: value.len(), unit: "bytes" });
    }
    check_charset(field, value, "A-Z a-z 0-9 _ -", |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks every byte of `value` against `ok`; `value` must be ASCII for positions to be exact.
pub(crate) fn check_charset(
    field: &'static str,
    value: &str,
    allowed: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), ValidationError> {
    match value.bytes().position(|b| !ok(b)) {
        None => Ok(()),
        Some(byte) => {
            Err(ValidationError::InvalidCharacter { field, position: value[..byte].chars().count(), allowed })
        }
    }
}

/// Checks a text length in Unicode scalar values: 1..=`max`.
pub(crate) fn check_chars(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    // Fast path: a string of at most `max` bytes has at most `max` characters.
    if value.len() > max {
        let actual = value.chars().count();
        if actual > max {
            return Err(ValidationError::TooLong { field, max, actual, unit: "characters" });
        }
    }
    Ok(())
}
