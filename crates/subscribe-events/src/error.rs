//! Why a push was refused ([`PushError`], with the HTTP status to answer), and why one that
//! verified did not open ([`OpenFailure`]).

use crate::MAX_BODY;

/// Why a push (or the URL check) was refused. Never holds the body, a key or the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A query parameter is missing.
    #[error("the query has no `{0}`")]
    Missing(&'static str),
    /// A query parameter appears more than once (whichever copy would verify): the push is
    /// not read, so no two readers of the query can see two different values.
    #[error("parameter `{0}` appears more than once")]
    Repeated(&'static str),
    /// The signature does not match.
    #[error("the `{0}` does not match")]
    BadSignature(&'static str),
    /// `timestamp` is outside the freshness window.
    #[error("the timestamp is {skew} s away from now; at most {window} s are allowed")]
    Stale {
        /// How far, in seconds.
        skew: u64,
        /// The window.
        window: u64,
    },
    /// This push (its signed `timestamp` and `nonce`, however spelt: swapped, in another case,
    /// in whichever mode, with whatever body) was read before and can still pass the freshness
    /// check: nothing is recorded again.
    #[error("this push was already received")]
    Replayed,
    /// The body is larger than [`MAX_BODY`].
    #[error("the body is over {MAX_BODY} bytes")]
    TooLarge,
    /// The body is not the push's XML or JSON.
    #[error("malformed push: {0}")]
    Malformed(&'static str),
    /// A push whose signatures verified but whose body did not open: it does not decrypt
    /// (with the current or the previous key), the message is another app's, or it is not an
    /// event. One text and one status for every one of those, since an answer that differed
    /// would be a padding oracle to anyone holding the Token: it would decrypt and forge
    /// safe-mode pushes without the `EncodingAESKey`. The [`OpenFailure`] is the detail, for
    /// the integrator's logs; never answer it.
    #[error("the push could not be opened")]
    Unopened(OpenFailure),
    /// The mode requires encryption and the push is plain.
    #[error("a plain push in safe mode")]
    NotEncrypted,
    /// An `EncodingAESKey` that is not 43 base64 characters.
    #[error("an EncodingAESKey must be 43 base64 characters")]
    BadKey,
    /// The replay cache could not say whether the push was read before (it failed, or it is
    /// full of pushes still fresh): the push is not read, and WeChat's retry may be.
    #[error("the push cannot be checked for a replay now")]
    Unavailable,
}

impl PushError {
    /// The HTTP status to answer: 401 for a push that is not WeChat's (signature, time, a plain
    /// push in safe mode), 400 for one that cannot be read (and for every push that verified
    /// but did not open, whatever the reason), 413 for an oversized body; 200 for a replay,
    /// which WeChat itself sends when an answer was slow (it stops retrying; nothing is
    /// recorded); 503 when the replay cache cannot answer.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Replayed => 200,
            Self::BadSignature(_) | Self::Stale { .. } | Self::NotEncrypted => 401,
            Self::TooLarge => 413,
            Self::Unavailable => 503,
            Self::Missing(_) | Self::Repeated(_) | Self::Malformed(_) | Self::Unopened(_) | Self::BadKey => {
                400
            }
        }
    }
}

/// Why a push whose signatures verified did not open: the detail behind
/// [`PushError::Unopened`], for the integrator's logs only (the endpoint logs it; the answer
/// is the same for every one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenFailure {
    /// The compatible or safe mode without an `EncodingAESKey`.
    NoKey,
    /// `Encrypt` is not base64.
    NotBase64,
    /// Not whole AES blocks.
    NotWholeBlocks,
    /// The PKCS#7 padding is not 1 to 32 bytes of its own length.
    BadPadding,
    /// Shorter than the 16 random bytes and the length.
    TooShort,
    /// The message's length runs past the end.
    LengthPastEnd,
    /// The message is for another AppID (or the key is another app's).
    WrongAppId,
    /// The message is not UTF-8.
    NotUtf8,
    /// The message is not a push's XML or JSON event.
    NotAnEvent,
    /// The event was created (`CreateTime`) more than [`NONCE_HORIZON`](crate::replay::NONCE_HORIZON)
    /// before the push's `timestamp`: WeChat pushes an event within seconds, so this is an old
    /// push resent with its timestamp and nonce swapped (see [`replay`](crate::replay)).
    OutdatedEvent,
}

impl OpenFailure {
    /// What went wrong, in a few words.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoKey => "no EncodingAESKey is configured",
            Self::NotBase64 => "not base64",
            Self::NotWholeBlocks => "not whole AES blocks",
            Self::BadPadding => "bad padding",
            Self::TooShort => "too short",
            Self::LengthPastEnd => "the length runs past the end",
            Self::WrongAppId => "the message is for another appid",
            Self::NotUtf8 => "the message is not UTF-8",
            Self::NotAnEvent => "the message is not a push's XML or JSON",
            Self::OutdatedEvent => "the event was created more than a day before the push",
        }
    }
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
