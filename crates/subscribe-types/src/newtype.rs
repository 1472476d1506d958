//! What every validated string type has in common, written once: the `identifier!` types in
//! `ids.rs` and the `text!` types in `text.rs` differ only in their rule and their docs.

/// Implements, for a `struct $name(Box<str>)` whose values pass `$check`: a checked
/// constructor (`Self::checked`), `as_str`, `Debug`, `Display`, `AsRef<str>`, `FromStr`,
/// `TryFrom<String>`, `TryFrom<&str>`, and serde as a plain JSON string that is checked when
/// read.
macro_rules! validated_str {
    ($name:ident, $check:expr) => {
        impl $name {
            fn checked(value: impl AsRef<str> + Into<String>) -> Result<Self, ValidationError> {
                let check: fn(&str) -> Result<(), ValidationError> = $check;
                check(value.as_ref())?;
                Ok(Self(value.into().into_boxed_str()))
            }

            /// The value as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&&*self.0).finish()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::checked(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::checked(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::checked(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::checked(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use validated_str;
