//! [`AuthorizationError`]: an authorization answer could not be accepted, and [`RecordError`]:
//! one could not be verified and recorded.

use std::time::Duration;

use subscribe_types::QueryError;

use super::ErrorKind;

/// An authorization answer could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizationError {
    /// The callback query could not be parsed.
    #[error("callback is malformed")]
    Query(#[from] QueryError),
    /// `reserved` is empty: nothing proves this answer belongs to a request of ours.
    #[error("callback carries no state")]
    MissingState,
    /// `reserved` is not a state of ours, was tampered with, or belongs to another app,
    /// template, scene or session.
    #[error("callback state is not valid for this app, template, scene and session")]
    ForgedState,
    /// The state's lifetime is over.
    #[error("callback state expired {ago:?} ago")]
    ExpiredState {
        /// How long ago.
        ago: Duration,
    },
    /// The state already confirmed another answer (another openid): each authorization
    /// confirms one grant, so this answer is a replay and refused. (The same answer before it
    /// was accepted, after a failure of the store or the ledger, is a retry and goes through;
    /// after it was accepted, it is [`AlreadyAccepted`](Self::AlreadyAccepted).)
    #[error("callback state was already used: each authorization confirms once")]
    ReplayedState,
    /// This very answer (same state, same openid) was accepted before: the user refreshed the
    /// page, or the app forwarded the answer again, after success. Nothing is recorded again
    /// (a grant that was delivered is not renewed); tell the user they are already
    /// subscribed. Kind `Invalid`: completing it again fails the same way.
    #[error("this answer was already accepted")]
    AlreadyAccepted,
    /// This very answer is being completed by another call right now (a double submit, a
    /// reloaded webview): only one completion of an answer goes on at a time. Nothing was
    /// recorded by this call. Kind `Retryable`: the same answer is being completed; retry
    /// shortly (it then finds the answer accepted, or, if that completion failed, goes on).
    #[error("the same answer is being completed; retry shortly")]
    InProgress,
    /// Whether the state was used before could not be checked: the store of used states failed
    /// or did not answer in time. Nothing was recorded; the same answer can be completed later
    /// (even when the store did mark the state and only its answer was lost).
    #[error("the store of used states failed")]
    UsedStates(#[source] crate::used_states::UsedStatesError),
}

impl AuthorizationError {
    /// What to do about it: `Retryable` when the store of used states failed or the same
    /// answer is being completed ([`InProgress`](Self::InProgress)), `Invalid` otherwise (the
    /// answer cannot be accepted as it is; offer the user a fresh authorization link, or, for
    /// [`AlreadyAccepted`](Self::AlreadyAccepted), tell them they are already subscribed).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UsedStates(e) => e.kind(),
            Self::InProgress => ErrorKind::Retryable,
            _ => ErrorKind::Invalid,
        }
    }
}

/// Verifying and recording an authorization answer failed: [`Client::complete`](crate::Client::complete)'s
/// error (through `?`), or [`Completion::record`](crate::Completion::record)'s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The answer was rejected; nothing was recorded.
    #[error(transparent)]
    Authorization(#[from] AuthorizationError),
    /// The answer was valid but the ledger failed: ask the user to try again.
    #[error("grant ledger failed")]
    Ledger(#[from] crate::grants::LedgerError),
}

impl RecordError {
    /// What to do about it: the authorization error's kind, or the ledger error's
    /// ([`LedgerError::kind`](crate::LedgerError::kind): `Retryable` when its backend failed;
    /// the answer was valid, so ask the user to try again).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Authorization(e) => e.kind(),
            Self::Ledger(e) => e.kind(),
        }
    }
}
