//! [`ConfigError`]: why a configuration was refused, naming the key and the rule it broke.

use std::fmt;
use std::path::PathBuf;

/// A configuration refused at start: the key it concerns (`apps[1].secret_env`,
/// `keys[0].scopes.wx0123456789abcdef`, `store.url`…) and the rule it broke.
///
/// Its `Display` and `Debug` never hold a secret: neither an AppSecret, nor an API key, nor a
/// database password, nor the text of a line of the file (a TOML syntax error is reported by
/// line and column only).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The key, as a path from the top of the file (empty for the file itself).
    pub key: String,
    /// The rule it broke.
    pub problem: ConfigProblem,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, problem: ConfigProblem) -> Self {
        Self { key: key.into(), problem }
    }
}

/// The rule a configuration key broke.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The configuration file could not be read.
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// What the operating system said (its kind, no content).
        reason: String,
    },
    /// The file is not valid TOML.
    Syntax {
        /// The line (from 1).
        line: usize,
        /// The column (from 1).
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The key is unknown, missing, or of the wrong type, as serde reports it.
    Shape(String),
    /// A secret written into the file itself: refused, whatever its value.
    InlineSecret {
        /// The keys to use instead.
        instead: &'static str,
    },
    /// Both of two exclusive keys were given.
    Exclusive {
        /// The other key.
        other: &'static str,
    },
    /// None of the keys that give this value was given.
    Missing {
        /// The keys, one of which is needed.
        one_of: &'static str,
    },
    /// The environment variable named is not set.
    EnvNotSet {
        /// The variable.
        name: String,
    },
    /// The environment variable named is not valid UTF-8.
    EnvNotUnicode {
        /// The variable.
        name: String,
    },
    /// The file named could not be read.
    SecretFileUnreadable {
        /// The file (resolved against the configuration file's directory).
        path: PathBuf,
        /// What the operating system said (its kind, no content).
        reason: String,
    },
    /// The value (from wherever it came) breaks a rule of its type.
    Invalid {
        /// The rule, in words. Never quotes a secret.
        rule: String,
    },
    /// An API key shorter than [`MIN_KEY_CHARS`](crate::MIN_KEY_CHARS).
    KeyTooShort {
        /// Its length in characters.
        chars: usize,
    },
    /// The same value is given twice where each must be unique.
    Duplicate {
        /// Where it was first given.
        first: String,
    },
    /// A key's scope names an app that `[[apps]]` does not list.
    UnknownApp,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileUnreadable { path, reason } => {
                write!(f, "cannot read the configuration file {}: {reason}", path.display())
            }
            Self::Syntax { line, column, message } => {
                write!(f, "not valid TOML at line {line}, column {column}: {message}")
            }
            Self::Shape(message) => f.write_str(message),
            Self::InlineSecret { instead } => {
                write!(f, "secrets are never written into the configuration file; use {instead}")
            }
            Self::Exclusive { other } => write!(f, "give this or `{other}`, not both"),
            Self::Missing { one_of } => write!(f, "missing: give one of {one_of}"),
            Self::EnvNotSet { name } => write!(f, "environment variable {name} is not set"),
            Self::EnvNotUnicode { name } => write!(f, "environment variable {name} is not valid UTF-8"),
            Self::SecretFileUnreadable { path, reason } => {
                write!(f, "cannot read {}: {reason}", path.display())
            }
            Self::Invalid { rule } => f.write_str(rule),
            Self::KeyTooShort { chars } => write!(
                f,
                "the API key has {chars} characters; at least {} are needed (a random key: \
                 `head -c 32 /dev/urandom | base64`)",
                crate::MIN_KEY_CHARS
            ),
            Self::Duplicate { first } => write!(f, "the same as {first}; each must be unique"),
            Self::UnknownApp => f.write_str("no app with this appid is listed in [[apps]]"),
        }
    }
}
