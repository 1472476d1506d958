//! What a dispatch reports: each recipient's outcome, the running counts, the end, and the
//! error that stops one early.

use subscribe_types::{ErrCode, OpenId};

use crate::grants::LedgerError;

/// How one recipient's grant ended in this dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// Delivered; the grant is used.
    Delivered,
    /// A definite failure; the grant is pending again for a later dispatch.
    Failed,
    /// The outcome is unknown; the grant is under review and will not be resent automatically.
    Unknown,
    /// The grant is gone (WeChat refused it, or the openid is invalid).
    Dropped,
}

impl OutcomeKind {
    /// `delivered`, `failed`, `unknown` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Dropped => "dropped",
        }
    }
}

/// One recipient's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecipientOutcome {
    /// The recipient.
    pub openid: OpenId,
    /// How it ended.
    pub kind: OutcomeKind,
    /// WeChat's errcode, when it gave one.
    pub errcode: Option<ErrCode>,
    /// Why, in words, when it did not deliver.
    pub detail: Option<String>,
    /// The ledger could not record the outcome (the grant's lease had lapsed, or the ledger
    /// failed); the grant may be retried by another dispatch, which WeChat then refuses.
    pub ledger_error: Option<String>,
    /// The message's id, when WeChat gives one (a delivered subscribe notification's `msgid`,
    /// which its `subscribe_msg_sent_event` names).
    pub msgid: Option<u64>,
}

/// Counts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Grants taken and sent.
    pub sent: u64,
    /// Delivered.
    pub delivered: u64,
    /// Failed (pending again).
    pub failed: u64,
    /// Unknown (under review).
    pub unknown: u64,
    /// Dropped.
    pub dropped: u64,
    /// Pending grants not yet taken (an estimate when several dispatchers share a ledger).
    pub remaining: u64,
}

/// Receives progress and each recipient's outcome, on the dispatching task.
pub trait DispatchObserver: Send {
    /// After each outcome.
    fn on_outcome(&mut self, outcome: &RecipientOutcome) {
        let _ = outcome;
    }
    /// After each outcome, with the running counts.
    fn on_progress(&mut self, progress: &Progress) {
        let _ = progress;
    }
}

/// Observes nothing.
impl DispatchObserver for () {}

impl<F: FnMut(&Progress) + Send> DispatchObserver for F {
    fn on_progress(&mut self, progress: &Progress) {
        self(progress);
    }
}

/// The end of a dispatch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchReport {
    /// The final counts.
    pub progress: Progress,
    /// Whether it was cancelled before the end.
    pub cancelled: bool,
    /// Each recipient's outcome, in completion order (empty with
    /// [`Dispatcher::keep_outcomes`](super::Dispatcher::keep_outcomes)`(false)`: then use an observer, and memory stays flat).
    pub outcomes: Vec<RecipientOutcome>,
}

/// A dispatch stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The ledger could not be read or a grant could not be reserved; sends in flight were
    /// finished and recorded first.
    #[error("grant ledger failed")]
    Ledger(#[from] LedgerError),
}

impl DispatchError {
    /// What to do about it: the ledger error's kind ([`LedgerError::kind`]: `Retryable` when
    /// its backend failed; run the dispatch again, reserved grants come back after their lease).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Self::Ledger(e) => e.kind(),
        }
    }
}
