//! The keyword types (`thing`, `time`, `amount`…) and the rule each holds a `data` value to
//! ([`KeywordType::check`], [`ValueFault`]).
//!
//! The rules are WeChat's table (`../shared/successors.md` §3, from the mini-program
//! documentation; an official reply says subscribe notifications use the same). Where the
//! table is vague, the choice made here is written on the rule and errs on the side of
//! accepting: a value WeChat might take is not refused here.

use std::fmt;

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
    /// non-empty here: its list is the template's
    /// ([`MessageData::check_against`](crate::MessageData::check_against)).
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
