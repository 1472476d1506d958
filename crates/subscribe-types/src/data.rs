//! The `data` of the mini-program and notification messages (mini-program subscribe messages and
//! service-account subscribe notifications): keys like `thing3`, each value checked against
//! its keyword type's rule before anything is sent.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::keyword::{KeywordType, ValueFault};

/// A key of `data`: a keyword type and an index (`thing3`).
///
/// ```
/// use subscribe_types::{DataKey, KeywordType};
/// let key: DataKey = "character_string12".parse()?;
/// assert_eq!((key.keyword_type(), key.index()), (KeywordType::CharacterString, 12));
/// assert!("thing".parse::<DataKey>().is_err());
/// assert!("colour1".parse::<DataKey>().is_err());
/// # Ok::<(), subscribe_types::DataError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataKey {
    key: Box<str>,
    kind: KeywordType,
    index: u16,
}

impl DataKey {
    /// Longest key accepted, in bytes (`character_string` and three digits).
    pub const MAX_LEN: usize = 19;

    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// Its keyword type.
    pub fn keyword_type(&self) -> KeywordType {
        self.kind
    }

    /// Its index (1 or more).
    pub fn index(&self) -> u16 {
        self.index
    }
}

impl std::str::FromStr for DataKey {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        let bad = |reason: &'static str| DataError::BadKey { key: shown_key(s), reason };
        if s.len() > Self::MAX_LEN {
            return Err(bad("too long"));
        }
        let split = s.find(|c: char| c.is_ascii_digit()).ok_or_else(|| bad("no index"))?;
        let (name, digits) = s.split_at(split);
        let kind = KeywordType::from_name(name).ok_or_else(|| bad("not a keyword type"))?;
        if digits.len() > 3 || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the index must be 1 to 999"));
        }
        let index = digits.parse().map_err(|_| bad("the index must be 1 to 999"))?;
        Ok(Self { key: s.into(), kind, index })
    }
}

impl fmt::Display for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// A key as an error shows it: keys are not secret, but a key of any length is cut.
fn shown_key(key: &str) -> String {
    let mut shown: String = key.chars().take(DataKey::MAX_LEN).collect();
    if shown.len() < key.len() {
        shown.push('…');
    }
    shown
}

/// A message's `data` was refused. Names the key and the rule, never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A key is not a keyword type followed by an index.
    #[error("`data.{key}` is not a key like thing3: {reason}")]
    BadKey {
        /// The key (cut when long).
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value breaks its keyword type's rule.
    #[error("`data.{key}.value` breaks the {} rule ({}): {fault}", key.keyword_type(), key.keyword_type().rule())]
    BadValue {
        /// The key.
        key: DataKey,
        /// What is wrong.
        fault: ValueFault,
    },
    /// A key appears twice.
    #[error("`data.{key}` is given twice")]
    Duplicate {
        /// The key.
        key: DataKey,
    },
    /// More keys than a message may carry.
    #[error("`data` has more than {max} keys")]
    TooMany {
        /// The limit ([`MessageData::MAX_KEYS`]).
        max: usize,
    },
    /// No key at all.
    #[error("`data` must have at least one key")]
    Empty,
    /// The template lists a key the data does not have.
    #[error("`data.{key}` is missing: the template has it")]
    MissingKey {
        /// The template's key.
        key: String,
    },
    /// The data has a key the template does not list.
    #[error("`data.{key}` is not one of the template's keys")]
    UnknownKey {
        /// The key.
        key: DataKey,
    },
    /// An `enum` value is not one of the template's values for its key.
    #[error("`data.{key}.value` is not one of the template's {count} values for it")]
    NotInList {
        /// The key.
        key: DataKey,
        /// How many values the template lists.
        count: usize,
    },
}

impl DataError {
    /// The wire name of the field at fault (`data.thing3.value`, `data.thing3`, `data`), as
    /// WeChat's 47003 names it.
    pub fn field(&self) -> String {
        match self {
            Self::BadValue { key, .. } | Self::NotInList { key, .. } => format!("data.{key}.value"),
            Self::Duplicate { key } | Self::UnknownKey { key } => format!("data.{key}"),
            Self::BadKey { key, .. } | Self::MissingKey { key } => format!("data.{key}"),
            Self::TooMany { .. } | Self::Empty => "data".to_owned(),
        }
    }
}

/// The `data` of a mini-program message or a subscribe notification: keys with values that
/// keep their keyword types' rules. Serializes as `{"thing1":{"value":"…"},…}`.
///
/// ```
/// use subscribe_types::{DataError, MessageData};
///
/// let data = MessageData::from_pairs([("thing1", "亚麻衬衫"), ("time2", "2019-10-01 15:01")])?;
/// assert_eq!(
///     serde_json::to_string(&data).unwrap(),
///     r#"{"thing1":{"value":"亚麻衬衫"},"time2":{"value":"2019-10-01 15:01"}}"#
/// );
///
/// let err = MessageData::from_pairs([("thing1", "一个超过二十个字符的商品名称会被微信拒绝的哦")]).unwrap_err();
/// assert_eq!(err.field(), "data.thing1.value");
/// assert_eq!(
///     err.to_string(),
///     "`data.thing1.value` breaks the thing rule (at most 20 characters): it is 22 characters long; at most 20 are allowed"
/// );
/// # Ok::<(), DataError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MessageData {
    values: BTreeMap<DataKey, Box<str>>,
}

impl MessageData {
    /// The most keys one message may carry. WeChat's templates have at most 5 keywords when
    /// chosen from the library (`addtemplate`); older service-account templates have a few
    /// more; 32 bounds what a caller can make this build.
    pub const MAX_KEYS: usize = 32;

    /// No keys yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` with `value`, checked against the key's keyword type.
    ///
    /// # Errors
    /// [`DataError`] naming the key and the rule.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) -> Result<&mut Self, DataError> {
        let key: DataKey = key.parse()?;
        let value = value.into();
        key.kind.check(&value).map_err(|fault| DataError::BadValue { key: key.clone(), fault })?;
        if self.values.contains_key(&key) {
            return Err(DataError::Duplicate { key });
        }
        if self.values.len() >= Self::MAX_KEYS {
            return Err(DataError::TooMany { max: Self::MAX_KEYS });
        }
        self.values.insert(key, value.into());
        Ok(self)
    }

    /// Data from `(key, value)` pairs, each checked; at least one.
    ///
    /// # Errors
    /// The first [`DataError`].
    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, DataError> {
        let mut data = Self::new();
        for (k, v) in pairs {
            data.insert(k.as_ref(), v)?;
        }
        if data.values.is_empty() {
            return Err(DataError::Empty);
        }
        Ok(data)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| &**v)
    }

    /// The keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&DataKey, &str)> {
        self.values.iter().map(|(k, v)| (k, &**v))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Checks the data against a template from the library ([`Template`](crate::Template),
    /// as `gettemplate` lists it): every key the template has is present, no other key is,
    /// and each `enum` value is one of the template's values for its key (when it lists
    /// them).
    ///
    /// # Errors
    /// The first [`DataError::MissingKey`], [`DataError::UnknownKey`] or
    /// [`DataError::NotInList`].
    pub fn check_against(&self, template: &crate::Template) -> Result<(), DataError> {
        let keys = template.keys();
        if let Some(missing) = keys.iter().find(|k| self.get(k).is_none()) {
            return Err(DataError::MissingKey { key: shown_key(missing) });
        }
        if let Some((unknown, _)) = self.values.iter().find(|(k, _)| !keys.contains(&k.as_str())) {
            return Err(DataError::UnknownKey { key: unknown.clone() });
        }
        for (key, value) in &self.values {
            if let Some(list) = template.enum_values(key.as_str())
                && !list.iter().any(|v| v == &**value)
            {
                return Err(DataError::NotInList { key: key.clone(), count: list.len() });
            }
        }
        Ok(())
    }
}

impl Serialize for MessageData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Value<'a> {
            value: &'a str,
        }
        let mut map = s.serialize_map(Some(self.values.len()))?;
        for (k, v) in &self.values {
            map.serialize_entry(k.as_str(), &Value { value: v })?;
        }
        map.end()
    }
}
