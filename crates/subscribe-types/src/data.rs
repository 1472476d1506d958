//! The `data` of the successors' messages (mini-program subscribe messages and
//! service-account subscribe notifications): keys like `thing3`, each value checked against
//! its keyword type's rule before anything is sent.
//!
//! The rules are WeChat's table (`../shared/successors.md` §3, from the mini-program
//! documentation; an official reply says subscribe notifications use the same). Where the
//! table is vague, the choice made here is written on the rule and errs on the side of
//! accepting: a value WeChat might take is not refused here.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// A keyword type: the part of a key before its index (`thing` in `thing3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeywordType {
    /// `thing`: at most 20 characters of any kind.
    Thing,
    /// `number`: at most 32 digits, decimals allowed.
    Number,
    /// `letter`: at most 32 letters.
    Letter,
    /// `symbol`: at most 5 symbols.
    Symbol,
    /// `character_string`: at most 32 digits, letters or symbols.
    CharacterString,
    /// `time`: a 24-hour time, a date may precede it; a range joined with `~`.
    Time,
    /// `date`: a date, a time may follow; a range joined with `~`.
    Date,
    /// `amount`: a currency symbol, at most 10 digits, decimals allowed, `元` may follow.
    Amount,
    /// `phone_number`: at most 17 digits or symbols.
    PhoneNumber,
    /// `car_number`: at most 8 characters; only the first and last may be Chinese.
    CarNumber,
    /// `name`: at most 10 Chinese characters or 20 letters; a mix counts as Chinese.
    Name,
    /// `phrase`: at most 5 Chinese characters.
    Phrase,
    /// `enum`: one of the values the template lists for the key.
    Enum,
}

impl KeywordType {
    /// Every keyword type.
    pub const ALL: [Self; 13] = [
        Self::Thing,
        Self::Number,
        Self::Letter,
        Self::Symbol,
        Self::CharacterString,
        Self::Time,
        Self::Date,
        Self::Amount,
        Self::PhoneNumber,
        Self::CarNumber,
        Self::Name,
        Self::Phrase,
        Self::Enum,
    ];

    /// The name as it starts a key (`character_string`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Thing => "thing",
            Self::Number => "number",
            Self::Letter => "letter",
            Self::Symbol => "symbol",
            Self::CharacterString => "character_string",
            Self::Time => "time",
            Self::Date => "date",
            Self::Amount => "amount",
            Self::PhoneNumber => "phone_number",
            Self::CarNumber => "car_number",
            Self::Name => "name",
            Self::Phrase => "phrase",
            Self::Enum => "enum",
        }
    }

    /// The rule a value of this type must keep, in words.
    pub const fn rule(self) -> &'static str {
        match self {
            Self::Thing => "at most 20 characters",
            Self::Number => "at most 32 characters of digits, with an optional sign and decimal part",
            Self::Letter => "at most 32 letters A-Z a-z",
            Self::Symbol => "at most 5 symbols (characters that are neither letters, digits nor spaces)",
            Self::CharacterString => "at most 32 digits, letters A-Z a-z or symbols",
            Self::Time => "a 24-hour time (15:01), a date may precede it; a range joined with ~",
            Self::Date => "a date (2019-10-01 or 2019年10月1日), a time may follow; a range joined with ~",
            Self::Amount => "an optional currency symbol, at most 10 digits, decimals allowed, 元 may follow",
            Self::PhoneNumber => "at most 17 digits, symbols or spaces",
            Self::CarNumber => "at most 8 letters or digits; the first and last may be Chinese",
            Self::Name => "at most 10 characters with Chinese, or 20 letters without",
            Self::Phrase => "at most 5 Chinese characters",
            Self::Enum => "one of the template's values for the key",
        }
    }

    /// The type named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Checks `value` against this type's rule. An `enum` value is only checked for being
    /// non-empty here: its list is the template's ([`MessageData::check_against`]).
    ///
    /// # Errors
    /// The [`ValueFault`] found first.
    pub fn check(self, value: &str) -> Result<(), ValueFault> {
        if value.is_empty() {
            return Err(ValueFault::Empty);
        }
        let chars = value.chars().count();
        let at_most = |max: usize| {
            if chars > max { Err(ValueFault::TooLong { max, actual: chars }) } else { Ok(()) }
        };
        let only = |allowed: &'static str, ok: &dyn Fn(char) -> bool| match value.chars().position(|c| !ok(c))
        {
            Some(position) => Err(ValueFault::Character { position, allowed }),
            None => Ok(()),
        };
        let shape = |ok: bool| if ok { Ok(()) } else { Err(ValueFault::Shape { expected: self.rule() }) };
        match self {
            Self::Thing => at_most(20),
            Self::Number => {
                at_most(32)?;
                shape(is_decimal(value.strip_prefix(['-', '+']).unwrap_or(value)))
            }
            Self::Letter => {
                at_most(32)?;
                only("letters A-Z a-z", &|c| c.is_ascii_alphabetic())
            }
            Self::Symbol => {
                at_most(5)?;
                only("symbols", &is_symbol)
            }
            Self::CharacterString => {
                at_most(32)?;
                only("digits, letters A-Z a-z and symbols", &|c| c.is_ascii_alphanumeric() || is_symbol(c))
            }
            Self::Time => {
                at_most(64)?;
                shape(is_range(value, |part| {
                    let (date, time) = split_date_time(part);
                    date.is_none_or(is_date) && time.is_some_and(is_time)
                }))
            }
            Self::Date => {
                at_most(64)?;
                shape(is_range(value, |part| {
                    let (date, time) = split_date_time(part);
                    date.is_some_and(is_date) && time.is_none_or(is_time)
                }))
            }
            Self::Amount => {
                at_most(16)?;
                shape(is_amount(value))
            }
            Self::PhoneNumber => {
                at_most(17)?;
                only("digits, symbols and spaces", &|c| c.is_ascii_digit() || is_symbol(c) || c == ' ')
            }
            Self::CarNumber => {
                at_most(8)?;
                let last = chars - 1;
                match value.chars().enumerate().position(|(i, c)| {
                    !(c.is_ascii_alphanumeric() || (is_chinese(c) && (i == 0 || i == last)))
                }) {
                    Some(position) => Err(ValueFault::Character {
                        position,
                        allowed: "letters and digits, and Chinese first or last",
                    }),
                    None => Ok(()),
                }
            }
            Self::Name => {
                at_most(if value.is_ascii() { 20 } else { 10 })?;
                only("letters, Chinese characters, symbols and spaces", &|c| {
                    c.is_alphabetic() || is_symbol(c) || c == ' '
                })
            }
            Self::Phrase => {
                at_most(5)?;
                only("Chinese characters", &is_chinese)
            }
            Self::Enum => at_most(64),
        }
    }
}

impl fmt::Display for KeywordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CJK ideograph (the unified blocks, their extensions, the compatibility block, `〇`).
fn is_chinese(c: char) -> bool {
    matches!(c as u32,
        0x3007 | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2EBEF | 0x30000..=0x323AF)
}

/// WeChat never defines "symbol": here it is any visible character that is neither a letter
/// nor a digit of any script, nor a space (so `%`, `-`, `+`, `#`, `，`, `¥` and `★` are).
fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

/// `123` or `12.5`.
fn is_decimal(v: &str) -> bool {
    let (int, frac) = v.split_once('.').map_or((v, None), |(i, f)| (i, Some(f)));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// One part, or two joined by `~` (spaces around it allowed), each passing `part`.
fn is_range(v: &str, part: impl Fn(&str) -> bool) -> bool {
    match v.split_once(['~', '～']) {
        Some((a, b)) => part(a.trim()) && part(b.trim()),
        None => part(v),
    }
}

/// Splits `2019-10-01 15:01` into its date and its time: the time is the last
/// space-separated part when it has a `:`; a date alone has none.
fn split_date_time(v: &str) -> (Option<&str>, Option<&str>) {
    match v.rsplit_once(' ') {
        Some((date, time)) => (Some(date.trim_end()), Some(time)),
        None if v.contains(':') => (None, Some(v)),
        None => (Some(v), None),
    }
}

/// `H:MM` or `HH:MM:SS`, 24-hour.
fn is_time(v: &str) -> bool {
    let mut parts = v.split(':');
    let num = |p: Option<&str>, len: std::ops::RangeInclusive<usize>, max: u32| {
        p.is_some_and(|p| {
            len.contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| n <= max)
        })
    };
    let ok = num(parts.next(), 1..=2, 23) && num(parts.next(), 2..=2, 59);
    match parts.next() {
        None => ok,
        second => ok && num(second, 2..=2, 59) && parts.next().is_none(),
    }
}

/// `2019-10-01`, `2019/10/1`, `2019.10.01` or `2019年10月1日`, a day that exists.
fn is_date(v: &str) -> bool {
    let fields: Vec<&str> = if let Some(rest) = v.strip_suffix('日') {
        rest.split(['年', '月']).collect()
    } else {
        let sep = if v.contains('-') {
            '-'
        } else if v.contains('/') {
            '/'
        } else {
            '.'
        };
        v.split(sep).collect()
    };
    let [y, m, d] = fields[..] else { return false };
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !(digits(y, 4..=4) && digits(m, 1..=2) && digits(d, 1..=2)) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else { return false };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// `¥100`, `$12.50`, `100元`, `-¥3.20`: the currency symbol is optional (WeChat's table asks
/// for one, but its own examples and many templates' values go without).
fn is_amount(v: &str) -> bool {
    let v = v.strip_suffix('元').unwrap_or(v);
    let v = v.strip_prefix('-').unwrap_or(v);
    let v = v.strip_prefix(['¥', '￥', '$', '€', '£', '₩', '₹', '₽']).unwrap_or(v);
    let v = v.strip_prefix('-').unwrap_or(v);
    let int = v.split_once('.').map_or(v, |(i, _)| i);
    is_decimal(v) && int.len() <= 10
}

/// Why a value breaks its keyword type's rule. Never holds the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueFault {
    /// The value is empty.
    Empty,
    /// Longer than the type allows, in characters.
    TooLong {
        /// The limit.
        max: usize,
        /// The value's length.
        actual: usize,
    },
    /// A character the type does not allow, at a zero-based character position.
    Character {
        /// Where.
        position: usize,
        /// What is allowed, in words.
        allowed: &'static str,
    },
    /// Not the type's shape (a time, a date, an amount, a number).
    Shape {
        /// The shape, in words.
        expected: &'static str,
    },
}

impl fmt::Display for ValueFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong { max, actual } => {
                write!(f, "it is {actual} characters long; at most {max} are allowed")
            }
            Self::Character { position, allowed } => {
                write!(f, "the character at position {position} is not allowed; allowed: {allowed}")
            }
            Self::Shape { expected } => write!(f, "it must be {expected}"),
        }
    }
}

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
